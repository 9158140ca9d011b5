"""The CI recipes in docs/ci run their commands for real: ``docs/ci/build-and-push.sh`` (what
the GitHub Actions and GitLab CI jobs run) against a real registry with basic auth, credentials
from the environment only, no TTY, and ``build.json`` as machine-readable output. The registry is
their cache: a second job on a fresh runner (empty ociforge cache and HOME) downloads no wheel."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.airgap.conftest import MODEL, PLATFORM
from tests.conftest import ROOT
from tests.support.registry import RegistryServer

CI = ROOT / "docs" / "ci"


def test_recipes_run_the_script():
    gh = yaml.safe_load((CI / "github-actions.yml").read_text())
    steps = gh["jobs"]["image"]["steps"]
    assert any("docs/ci/build-and-push.sh" in s.get("run", "") for s in steps)
    # the registry is the cache: no CI cache kept between jobs
    assert not any(s.get("uses", "").startswith("actions/cache") for s in steps)
    assert "OCIFORGE_CACHE" not in gh["jobs"]["image"]["env"]
    assert gh["jobs"]["image"]["permissions"]["packages"] == "write"  # image and cache entries
    gl = yaml.safe_load((CI / "gitlab-ci.yml").read_text())["model-image"]
    assert any("docs/ci/build-and-push.sh" in line for line in gl["script"])
    assert "cache" not in gl
    assert "services" not in gl  # no docker:dind
    script = (CI / "build-and-push.sh").read_text()
    assert "--offline" not in script and '--cache "$CACHE"' in script


def test_build_and_push_script_with_env_credentials(project, tool, tmp_path):
    (tmp_path / "model.py").write_text(MODEL)
    (tmp_path / "ociforge.lock").write_bytes((project / "ociforge.lock").read_bytes())
    with RegistryServer(tmp_path, mode="tls") as reg:
        image = reg.ref("team/model:ci")
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "OCIFORGE": f"{sys.executable} -m ociforge",
            "IMAGE": image,
            "PLATFORMS": PLATFORM,
            "OCIFORGE_REGISTRY_USERNAME": reg.username,
            "OCIFORGE_REGISTRY_PASSWORD": reg.password,
            "SSL_CERT_FILE": reg.ca_file,
            "REQUESTS_CA_BUNDLE": reg.ca_file,
            "CI": "true",
        }
        env.pop("DOCKER_CONFIG", None)
        proc = _run_script(tmp_path, env)
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert reg.password not in proc.stdout + proc.stderr
        result = json.loads(Path(tmp_path / "build.json").read_text())
        assert result["reference"].endswith("team/model:ci")
        raw = tool(
            "skopeo",
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            f"{reg.username}:{reg.password}",
            f"docker://{image}",
        ).stdout.encode()
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == result["digest"]
        assert "\r" not in proc.stderr  # plain lines, no TTY progress bars
        # the next job, on a fresh runner (the first used the warm session cache), after a change
        # of the model: the registry is the cache
        (tmp_path / "model.py").write_text(MODEL.replace("2.0", "3.0"))
        runner = tmp_path / "runner-2"
        env = {**env, "OCIFORGE_CACHE": str(runner / "cache"), "HOME": str(runner)}
        env["IMAGE"] = reg.ref("team/model:ci2")
        proc = _run_script(tmp_path, env)
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert not (runner / "cache" / "wheels").exists()  # no wheel downloaded
        assert not (runner / "cache" / "debs").exists()  # no .deb either
        again = json.loads(Path(tmp_path / "build.json").read_text())
        changed = [
            layer["what"]
            for layer, before in zip(
                again["layers"][PLATFORM], result["layers"][PLATFORM], strict=True
            )
            if layer["digest"] != before["digest"]
        ]
        assert changed == ["model"]


def _run_script(cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sh", str(CI / "build-and-push.sh")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def test_bad_input_exits_2_with_one_line():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "IMAGE": "reg.example/x:1", "MODEL": "nope.py:f"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ociforge",
            "bundle",
            "import",
            "/nonexistent.tar",
            "--to-registry",
            "reg.example",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("ociforge bundle: error:") and "nonexistent" in proc.stderr
