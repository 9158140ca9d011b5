"""Run an image's own entrypoint from its unpacked rootfs under bubblewrap, as the tests do.

The rootfs comes from ``tests.support.rootfs.unpack``; the process gets the image's Env,
WorkingDir and User, the host network (loopback only is used) and nothing else: no container
engine, so what is timed is the image's own start, the same way for every image.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ociforge.oci.image import Image  # noqa: E402
from tests.support.rootfs import command, unpack  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Rootfs:
    """An unpacked image and how to start processes in it."""

    def __init__(self, image: Image, dest: Path) -> None:
        self.image = image
        self.path = unpack(image, dest)
        cfg = image.config.config
        self.env = cfg.env_dict()
        self.argv = list(cfg.entrypoint or ()) + list(cfg.cmd or ())
        self.cwd = cfg.working_dir or "/"
        uid, _, gid = (cfg.user or "0:0").partition(":")
        self.uid, self.gid = int(uid), int(gid or uid)

    def popen(
        self, argv: list[str] | None = None, env: dict | None = None, binds=(), log=None
    ) -> subprocess.Popen:
        """Start ``argv`` (default: the entrypoint). Output goes to ``log`` (a file) when given,
        so a server's request log costs what it costs under a container runtime, not a pipe
        read by this process; else to a pipe (text)."""
        cmd, cenv, cwd = command(
            self.path,
            argv or self.argv,
            "linux/amd64",
            env={**self.env, **(env or {})},
            cwd=self.cwd,
            share_net=True,
            uid=self.uid,
            gid=self.gid,
            binds=tuple(binds),
        )
        out = log if log is not None else subprocess.PIPE
        return subprocess.Popen(
            cmd, env=cenv or None, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, text=True
        )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout:
        proc.stdout.close()


def predict(port: int, body: bytes, timeout: float = 5.0) -> tuple[int, object]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, json.loads(data) if resp.status == 200 else data
    finally:
        conn.close()


def until_predicts(
    proc: subprocess.Popen,
    port: int,
    body: bytes,
    expect,
    timeout: float = 120.0,
    *,
    expect_any: bool = False,
) -> float:
    """Poll until ``/predict`` answers ``expect`` (any 200 with ``expect_any``); returns the time
    it did (perf_counter)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            said = proc.stdout.read()[-3000:] if proc.stdout else "(see its log)"
            raise RuntimeError(f"server exited {proc.returncode}: {said}")
        try:
            status, answer = predict(port, body)
            if status == 200:
                got = answer.get("prediction") if isinstance(answer, dict) else answer
                if got != expect and not expect_any:
                    raise RuntimeError(f"wrong prediction {got!r}, expected {expect!r}")
                return time.perf_counter()
        except OSError:
            pass
        time.sleep(0.005)
    raise RuntimeError("server never answered a prediction")
