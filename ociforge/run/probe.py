"""Starting an ociforge serving image from its tree and asking it one request: what
``build(verify=True)`` compares with the local test's answer.

The server is the image's own entrypoint under :mod:`.process`, one worker, on free ports of
the host's loopback; it is ready when ``/v2/health/ready`` answers 200 (the model loaded). A
server that exits first, or is not ready in time, is an :class:`Answer` too, with the end of
what it printed.
"""

from __future__ import annotations

import json
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from . import launch, process, sandbox
from .rootfs import remove_tree, unpack

_OUTPUT_TAIL = 3000  # characters of the server's output kept in a failed answer


@dataclass
class Answer:
    """What the image did: ``status`` (HTTP; 0 when it never answered), the JSON ``body`` (None
    when not JSON), the raw ``text``, and ``output``: the server's log when it failed."""

    status: int
    body: object = None
    text: str = ""
    output: str = ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def _request(url: str, data: bytes | None = None, content_type: str = "", timeout: float = 5):
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-_OUTPUT_TAIL:]
    except OSError:
        return ""


def ask(
    image,
    body: bytes,
    content_type: str,
    *,
    route: str = "/predict",
    ready_timeout: float = 300,
    request_timeout: float = 120,
    workdir: str | Path | None = None,
    env: dict[str, str] | None = None,
) -> Answer:
    """Unpack ``image`` into a scratch folder (removed after), start its server (``env`` added
    to the image's), wait until it is ready, ``POST`` ``body`` to ``route``, stop the server and
    return what it answered."""
    scratch = Path(tempfile.mkdtemp(prefix="ociforge-probe-", dir=workdir))
    try:
        root = unpack(image, scratch / "rootfs", mount_points=sandbox.mount_points(image.platform))
        port = free_port()
        ports = {"PORT": str(port), "GRPC_PORT": str(free_port()), "OCIFORGE_WORKERS": "1"}
        box = launch.from_image(image, root, env={**ports, **(env or {})})
        log = scratch / "server.log"
        with open(log, "wb") as out:
            started = process.start(box, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        try:
            return _ask_started(started, port, body, content_type, route, ready_timeout,
                                request_timeout, log)  # fmt: skip
        finally:
            started.stop(grace=15)
    finally:
        remove_tree(scratch)


def _ask_started(
    started: process.Started,
    port: int,
    body: bytes,
    content_type: str,
    route: str,
    ready_timeout: float,
    request_timeout: float,
    log: Path,
) -> Answer:
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_timeout
    while True:
        if started.popen.poll() is not None:
            return Answer(0, text=f"the server exited {started.wait()} before it was ready",
                          output=_tail(log))  # fmt: skip
        try:
            if _request(f"{url}/v2/health/ready", timeout=2)[0] == 200:
                break
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            return Answer(0, text=f"the server was not ready in {ready_timeout:.0f} s",
                          output=_tail(log))  # fmt: skip
        time.sleep(0.3)
    try:
        status, raw = _request(f"{url}{route}", body, content_type, timeout=request_timeout)
    except (OSError, urllib.error.URLError) as e:
        return Answer(0, text=f"no answer to POST {route}: {e}", output=_tail(log))
    text = raw.decode("utf-8", errors="replace")
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    return Answer(status, parsed, text, _tail(log) if status >= 400 else "")
