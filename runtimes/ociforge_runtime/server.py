"""Serving the app with gunicorn, configured from ``Settings``.

gunicorn is started programmatically (no config file, no CLI parsing) so the
image's entrypoint is just ``python3 -m ociforge_runtime``.  Workers
(``worker.BufferingWorker``): one process per available CPU for throughput, in
each an event loop that reads whole requests within deadlines and threads that
run the app, so that slow clients cannot hold the threads and batching (which
needs several requests in flight in one process) works.  The model is loaded once per worker, after the fork, on a
background thread: the worker answers liveness probes while a large model
loads, and readiness turns true only when it has loaded.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import threading
from typing import Any

from gunicorn.app.base import BaseApplication

from . import logs
from .app import create_app
from .config import Settings
from .metrics import Exporter, Registry
from .package import load_package, read_manifest
from .predictor import Predictor
from .worker import BufferingWorker

WORKER_CLASS = f"{BufferingWorker.__module__}.{BufferingWorker.__qualname__}"

# gunicorn's arbiter stops the whole server (and exits with this code) when a
# worker exits with it, instead of restarting the worker forever.
WORKER_BOOT_ERROR = 3


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    """The gunicorn settings derived from ours (only those the installed gunicorn knows are used)."""
    options: dict[str, Any] = {
        "bind": [f"{settings.host}:{settings.port}"],
        "workers": settings.workers,
        # whole requests are read by an event loop with deadlines before a thread runs the
        # app: slow or idle clients cannot hold the threads (see worker.py)
        # (by name: gunicorn < 24 cannot log a worker class given as an object)
        "worker_class": WORKER_CLASS,
        "threads": settings.threads,
        "keepalive": settings.keepalive_s,
        "graceful_timeout": max(1, round(settings.graceful_timeout_s)),
        "timeout": 30,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": settings.log_level,
        "proc_name": "ociforge",
        "preload_app": False,
        "control_socket_disable": True,
        "limit_request_line": 8190,
    }
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        # Heartbeat files on an overlay filesystem can stall workers; tmpfs cannot.
        options["worker_tmp_dir"] = "/dev/shm"
    if settings.user:
        user, _, group = settings.user.partition(":")
        options["user"] = user
        if group:
            options["group"] = group
    return options


class RuntimeApplication(BaseApplication):
    """gunicorn application whose ``load`` builds the Flask app inside each worker."""

    def __init__(
        self, settings: Settings, manifest: dict[str, Any], metrics_dir: str | None
    ) -> None:
        self.settings = settings
        self.manifest = manifest
        self.metrics_dir = metrics_dir
        self.exporter: Exporter | None = None
        self.grpc_server: Any = None  # grpc_server.GrpcServer, in a worker with OCIFORGE_GRPC=1
        super().__init__()

    def load_config(self) -> None:
        BufferingWorker.settings = self.settings  # inherited by the workers gunicorn forks
        for key, value in gunicorn_options(self.settings).items():
            if key in self.cfg.settings:
                self.cfg.set(key, value)
        self.cfg.set("worker_exit", self._worker_exit)
        self.cfg.set("when_ready", self._when_ready)

    def _when_ready(self, server: Any) -> None:
        logs.event(
            "listening",
            bind=f"{self.settings.host}:{self.settings.port}",
            workers=self.settings.workers,
            threads=self.settings.threads,
            model=self.manifest["card"]["name"],
        )

    def _worker_exit(self, server: Any, worker: Any) -> None:
        if self.grpc_server is not None:
            self.grpc_server.stop()  # RPCs in flight finish (up to the graceful timeout)
        logs.flush()
        if self.exporter is not None:
            self.exporter.stop()

    def load(self) -> Any:
        """Called in each worker after the fork: build the app, start loading the model."""
        settings = self.settings
        registry = Registry()
        self.exporter = Exporter(registry, self.metrics_dir)
        predictor = Predictor(
            settings,
            loader=lambda: load_package(settings.model_dir),
            registry=registry,
            manifest=self.manifest,
        )
        arbiter_pid = os.getppid()

        def shutdown() -> None:
            os.kill(arbiter_pid, signal.SIGTERM)  # graceful: in-flight requests finish

        def load_failed(exc: BaseException) -> None:
            logs.event(
                "model_load_failed",
                level="error",
                error=f"{type(exc).__name__}: {exc}",
                model_dir=settings.model_dir,
                traceback=logs.format_exception(exc),
            )
            print(
                f"ociforge: model failed to load: {type(exc).__name__}: {exc}",
                file=sys.stderr,
                flush=True,
            )
            os._exit(WORKER_BOOT_ERROR)

        def loaded(model: Any) -> None:
            logs.event("model_loaded", model=model.name, kind=model.kind)

        app = create_app(predictor, settings, exporter=self.exporter, shutdown=shutdown)
        if settings.grpc:
            self.grpc_server = start_grpc(predictor, settings)
        predictor.load_in_background(on_error=load_failed, on_loaded=loaded)
        return app


def start_grpc(predictor: Predictor, settings: Settings) -> Any:
    """Start this worker's OIP v2 gRPC server (after the fork; see grpc_server.py).

    Without grpcio (an image built without ``--grpc``) HTTP serves alone and a warning is
    logged; a port that cannot be bound stops the server (exit 3) like a model that cannot load.
    """
    from . import grpc_server

    missing = grpc_server.available()
    if missing is not None:
        logs.event("grpc_unavailable", level="warning", error=missing)
        return None
    try:
        server = grpc_server.GrpcServer(predictor, settings)
        server.start()
    except Exception as exc:  # noqa: BLE001 - reported, then the worker stops the server
        logs.event("grpc_failed", level="error", error=f"{type(exc).__name__}: {exc}")
        print(f"ociforge: gRPC server failed: {exc}", file=sys.stderr, flush=True)
        logs.flush()
        os._exit(WORKER_BOOT_ERROR)
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(sig: int, frame: Any) -> None:
        # refuse new RPCs at once (on a thread: grpc takes locks), then gunicorn's own handling
        threading.Thread(target=server.begin_stop, name="ociforge-grpc-stop").start()
        if callable(previous):
            previous(sig, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    return server


def preimport(manifest: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    """Import the modules the model's pickle needs once, in the arbiter, before the fork.

    The builder records them in ``model.json`` (``build.imports``). Workers then inherit them
    instead of each importing numpy, scipy, sklearn... at the same time on the same CPUs, which
    dominates cold start. The model itself is still unpickled in each worker. A module that fails
    to import here is left for the worker to report. ``OCIFORGE_PREIMPORT=0`` turns this off
    (for libraries that must not be initialized before a fork).
    """
    source = os.environ if env is None else env
    if source.get("OCIFORGE_PREIMPORT", "1").strip().lower() in ("0", "false", "no", "off"):
        return []
    import importlib

    done = []
    for name in (manifest.get("build") or {}).get("imports") or []:
        try:
            importlib.import_module(str(name))
            done.append(str(name))
        except Exception:  # noqa: BLE001 - the worker's own load reports the real error
            continue
    return done


def main(env: dict[str, str] | None = None) -> int:
    """Entrypoint: validate configuration and the package cheaply, then run gunicorn."""
    try:
        settings = Settings.from_env(env)
    except ValueError as exc:
        logs.event("bad_configuration", level="error", error=str(exc))
        print(f"ociforge: bad configuration: {exc}", file=sys.stderr, flush=True)
        return 2
    try:
        manifest = read_manifest(settings.model_dir)
    except (OSError, ValueError, TypeError) as exc:
        logs.event("model_load_failed", level="error", error=str(exc), model_dir=settings.model_dir)
        print(f"ociforge: model failed to load: {exc}", file=sys.stderr, flush=True)
        return WORKER_BOOT_ERROR
    if manifest.get("batch_size"):
        settings = Settings.from_env(env, package_batch_size=manifest["batch_size"])
    preimport(manifest, env)
    if os.geteuid() == 0 and not settings.user:
        logs.event(
            "running_as_root",
            level="warning",
            message="the image should run as a non-root user (or set OCIFORGE_USER)",
        )
    created_dir = None
    metrics_dir = settings.metrics_dir
    if metrics_dir is None and settings.workers > 1:
        try:
            metrics_dir = created_dir = tempfile.mkdtemp(prefix="ociforge-metrics-")
        except OSError:
            metrics_dir = None  # metrics then cover the answering worker only
    try:
        RuntimeApplication(settings, manifest, metrics_dir).run()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        if created_dir:
            shutil.rmtree(created_dir, ignore_errors=True)
    return 0
