"""Fixtures for the runtime tests: model packages and real server processes.

A server is started exactly as in the image: ``python -m ociforge_runtime``
in a subprocess, configured only through the environment, with PYTHONPATH
pointing at ``runtimes/`` and the interpreter's own site-packages.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest
import requests
import runtime_models

RUNTIMES = Path(__file__).resolve().parents[2] / "runtimes"
if str(RUNTIMES) not in sys.path:
    sys.path.insert(0, str(RUNTIMES))

from ociforge_runtime.app import create_app  # noqa: E402
from ociforge_runtime.config import Settings  # noqa: E402
from ociforge_runtime.metrics import Registry  # noqa: E402
from ociforge_runtime.package import (  # noqa: E402
    MODEL_JSON,
    MODEL_PKL,
    instantiate,
    normalize_card,
    package_files,
    write_package,
)
from ociforge_runtime.predictor import Predictor  # noqa: E402

cloudpickle.register_pickle_by_value(runtime_models)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running ``python -m ociforge_runtime`` process and its logs."""

    def __init__(self, model_dir: Path, logdir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stdout_path = logdir / "stdout.log"
        self.stderr_path = logdir / "stderr.log"
        full_env = {
            **os.environ,
            "PYTHONPATH": str(RUNTIMES),
            "OCIFORGE_MODEL_DIR": str(model_dir),
            "PORT": str(self.port),
            "OCIFORGE_WORKERS": "1",
            "OCIFORGE_GRACEFUL_TIMEOUT": "10",
            **env,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ociforge_runtime"],
            env=full_env,
            cwd=logdir,
            stdout=open(self.stdout_path, "wb"),  # noqa: SIM115 - closed with the process
            stderr=open(self.stderr_path, "wb"),  # noqa: SIM115
            start_new_session=True,  # its own process group, so cleanup reaches the workers
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.logs()}")
            try:
                if requests.get(self.url + "/v2/health/ready", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server not ready after {timeout}s:\n{self.logs()}")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def log_records(self) -> list[dict]:
        time.sleep(0.2)  # request lines are flushed every 50 ms
        return [json.loads(line) for line in self.stdout().splitlines() if line.startswith("{")]

    def logs(self) -> str:
        return self.stdout() + self.stderr_path.read_text(errors="replace")

    def terminate(self, timeout: float = 20.0) -> int:
        """Stop the server gracefully (SIGTERM, as the container runtime does); return its code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.wait(5)

    def kill(self) -> None:
        """Cleanup only: kill the whole process group at once."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)


@pytest.fixture
def make_package(tmp_path_factory):
    """Write a model package for ``model`` into a fresh directory; returns the path."""

    def make(model, **kwargs) -> Path:
        path = tmp_path_factory.mktemp("pkg")
        write_package(path, package_files(model, **kwargs))
        return path

    return make


@pytest.fixture
def start_server(make_package, tmp_path_factory) -> Iterator:
    """Start a server for ``model`` (waits for readiness unless ``wait=False``)."""
    servers: list[Server] = []

    def start(
        model, *, env: dict[str, str] | None = None, wait: bool = True, **package_kwargs
    ) -> Server:
        server = Server(
            make_package(model, **package_kwargs), tmp_path_factory.mktemp("srv"), env or {}
        )
        servers.append(server)
        if wait:
            server.wait_ready()
        return server

    yield start
    for server in servers:
        server.kill()  # graceful stops are tested explicitly


@pytest.fixture(scope="module")
def module_server(tmp_path_factory) -> Iterator:
    """A module-scoped variant: ``module_server(model, **kw)`` started once per module and key."""
    servers: dict[str, Server] = {}

    def start(key: str, model, *, env: dict[str, str] | None = None, **package_kwargs) -> Server:
        if key not in servers:
            path = tmp_path_factory.mktemp("pkg")
            write_package(path, package_files(model, **package_kwargs))
            servers[key] = Server(path, tmp_path_factory.mktemp("srv"), env or {})
            servers[key].wait_ready()
        return servers[key]

    yield start
    for server in servers.values():
        server.kill()


def app_for(model, *, card: dict | None = None, **settings):
    """The Flask app (and its Predictor) for ``model``, in this process, loaded: for the
    Flask test client. ``settings`` override ``Settings`` fields."""
    files = package_files(model, card=card)
    manifest = json.loads(files[MODEL_JSON])
    manifest["card"] = normalize_card(manifest["card"])
    obj = cloudpickle.loads(files[MODEL_PKL])
    config = Settings(**{"workers": 1, "access_log": False, **settings})
    predictor = Predictor(config, lambda: instantiate(obj, manifest), Registry(), manifest)
    predictor.load()
    return create_app(predictor, config), predictor


@pytest.fixture
def log_lines(tmp_path, monkeypatch):
    """Send the runtime's JSON log to a file; returns a reader of its records."""
    from ociforge_runtime import logs

    path = tmp_path / "stdout"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    monkeypatch.setattr(logs, "STDOUT", fd)
    logs.flush()

    def records() -> list[dict]:
        logs.flush()
        return [json.loads(line) for line in path.read_text().splitlines()]

    yield records
    logs.flush()
    monkeypatch.setattr(logs, "STDOUT", 1)  # before the descriptor's number can be reused
    os.close(fd)
