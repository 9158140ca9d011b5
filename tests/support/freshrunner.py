"""A model project built for amd64 + arm64 from a lock, and the environment of a fresh CI runner
(empty HOME, XDG_CACHE_HOME and ociforge cache): what the registry-cache tests and benchmark
row 2c (benchmarks/freshrunner.py) share."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli

PLATFORMS = "linux/amd64,linux/arm64"
MODEL = """
WEIGHTS = [0.5, -0.25, {w}]


def predict(row):
    return sum(w * x for w, x in zip(WEIGHTS, row))
"""


def ok(proc):
    """``proc``, or the test fails with the end of its output."""
    if proc.returncode != 0:
        pytest.fail(f"exited {proc.returncode}:\n{proc.stderr[-4000:]}\n{proc.stdout[-2000:]}")
    return proc


def make_project(d: Path) -> Path:
    """A model project in ``d`` and its lock for both platforms."""
    (d / "model.py").write_text(MODEL.format(w="2.0"))
    ok(run_cli("fetch", "--platform", PLATFORMS, "--lock", "ociforge.lock", cwd=d))
    return d


def build(project: Path, to: str, *extra: str, env: dict | None = None, lock="ociforge.lock"):
    """``ociforge build`` of the project's model from its lock, for both platforms, as JSON."""
    return run_cli(
        "build", "model.py:predict", "--platform", PLATFORMS, "--lock", lock, "--to", to,
        "--json", *extra, cwd=project, env=env,
    )  # fmt: skip


def fresh_runner_env(home: Path, proxy_url: str | None = None) -> dict[str, str]:
    """An empty HOME, XDG_CACHE_HOME and ociforge cache under ``home`` (new folders); with
    ``proxy_url``, every request but loopback's goes through it."""
    for sub in ("home", "xdg", "cache"):
        (home / sub).mkdir(parents=True)
    env = {
        "HOME": str(home / "home"),
        "XDG_CACHE_HOME": str(home / "xdg"),
        "OCIFORGE_CACHE": str(home / "cache"),
        "UV_CACHE_DIR": str(home / "xdg" / "uv"),
    }
    if proxy_url:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            env[name] = proxy_url
        env |= {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    return env
