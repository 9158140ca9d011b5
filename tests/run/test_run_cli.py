"""``ociforge run`` as a user runs it (the CLI, in a subprocess): the example image answers
``POST /predict`` on linux/amd64 (bubblewrap) and linux/arm64 (qemu-user) and stops cleanly on
SIGTERM and Ctrl-C; a host without bubblewrap or qemu-user is told which Debian package to
install before anything is downloaded or unpacked; a hostile image from a layout is refused with
no cache entry left."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from ociforge.examples import iris
from ociforge.run.probe import free_port
from ociforge.run.sandbox import can_run
from ociforge.transports.transport import open_source, write_to
from tests.conftest import run_cli
from tests.run.test_run_rootfs import image_of, tar


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The README's example image (``ociforge example``: iris, amd64 + arm64) in a layout."""
    out = tmp_path_factory.mktemp("run-example") / "out"
    done = run_cli("example", "--to", f"oci:{out}:example", cwd=out.parent)
    assert done.returncode == 0, done.stderr
    return f"oci:{out}:example"


def _in_use(root: Path) -> list[int]:
    """Processes whose command line names ``root`` (a bwrap left running)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(root).encode() in (entry / "cmdline").read_bytes():
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


@pytest.mark.parametrize(
    ("platform", "stop"),
    [("linux/amd64", signal.SIGTERM), ("linux/arm64", signal.SIGINT)],
    ids=["amd64-sigterm", "arm64-ctrl-c"],
)
def test_run_answers_predict_and_stops_cleanly(example, tmp_path, platform, stop):
    assert not can_run(platform), can_run(platform)  # bubblewrap and qemu-user are test deps
    port = free_port()
    log = tmp_path / "run.log"
    cmd = [sys.executable, "-m", "ociforge", "run", "--platform", platform,
           "-p", str(port), "-e", "OCIFORGE_WORKERS=1", example]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        for _ in range(800):  # polls, 0.3 s apart: a server that never gets ready fails
            assert proc.poll() is None, f"ociforge run exited {proc.returncode}:\n{log.read_text()}"
            try:
                if requests.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.3)
        else:
            pytest.fail(f"not ready after 800 polls:\n{log.read_text()}")
        answer = requests.post(f"http://127.0.0.1:{port}/predict", json=iris.SAMPLE, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json() == ociforge_local_answer()
        proc.send_signal(stop)
        assert proc.wait(timeout=60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    arch = platform.split("/")[1]
    assert f"running {platform} " in text and ("under qemu-aarch64-static" in text) == (
        arch == "arm64"
    )
    # the server itself got the signal (gunicorn's graceful stop), not a SIGKILL from bwrap
    assert f"Handling signal: {'term' if stop == signal.SIGTERM else 'int'}" in text, text
    assert '"workers":1' in text  # -e reached the image's environment
    digest = open_source(example, platform=platform).digest.split(":")[1]
    root = Path(os.environ["OCIFORGE_CACHE"]) / "rootfs" / digest
    assert root.is_dir() and not _in_use(root)  # cached, and nothing left running in it
    # the emulator's mount point was made at unpack time: a run writes nothing into the cache
    assert (root / ".qemu-static").is_file() == (arch == "arm64")


def ociforge_local_answer():
    import ociforge

    return ociforge.test(iris.make_model(), iris.SAMPLE)


def test_missing_bubblewrap_or_qemu_names_the_debian_package(example, tmp_path):
    cache = tmp_path / "cache"
    empty = tmp_path / "bin-empty"
    empty.mkdir()
    out = run_cli("run", example, env={"PATH": str(empty), "OCIFORGE_CACHE": str(cache)})
    assert out.returncode == 2
    assert "bubblewrap" in out.stderr and "apt-get install bubblewrap" in out.stderr
    if os.uname().machine == "x86_64":  # bwrap, but no qemu-user for arm64
        only_bwrap = tmp_path / "bin-bwrap"
        only_bwrap.mkdir()
        (only_bwrap / "bwrap").symlink_to(shutil.which("bwrap"))
        out = run_cli(
            "run", "--platform", "linux/arm64", example,
            env={"PATH": str(only_bwrap), "OCIFORGE_CACHE": str(cache)},
        )  # fmt: skip
        assert out.returncode == 2
        assert "qemu-aarch64-static" in out.stderr and "qemu-user-static" in out.stderr
    assert not (cache / "rootfs").exists()  # refused before anything was unpacked


def test_a_hostile_image_is_refused_with_no_cache_entry(tmp_path):
    layer = tar(("up", "sym", "../../.."), ("up/tmp/pwned", "file", b"x"))
    write_to(image_of(layer, user="0"), f"oci:{tmp_path / 'layout'}:bad")
    cache = tmp_path / "cache"
    out = run_cli("run", f"oci:{tmp_path / 'layout'}:bad", env={"OCIFORGE_CACHE": str(cache)})
    assert out.returncode == 2 and "'up/tmp/pwned'" in out.stderr and "refused" in out.stderr
    assert os.listdir(cache / "rootfs") == []


SCRIPT = """
import os, sys
open("/tmp/scratch", "w").write("ok")
try:
    open("/etc/x", "w")
except OSError as e:
    print(os.getuid(), os.getcwd(), e.errno)
sys.exit(7)
"""


def test_a_command_runs_as_the_images_user_and_its_status_comes_back(example):
    out = run_cli("run", "--entrypoint", "python3", example, "-c", SCRIPT)
    assert out.returncode == 7, out.stderr
    # the image's user and working folder; a read-only root (EROFS) with a writable /tmp
    assert out.stdout.split() == ["65532", "/opt/ociforge/app", "30"]
    late = run_cli("run", example, "-p", "8080")
    assert late.returncode == 2 and "put options before IMAGE" in late.stderr
