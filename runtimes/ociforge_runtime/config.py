"""Runtime settings, read once from ``OCIFORGE_*`` environment variables.

The image is configured only through its environment (that is what every
orchestrator can set), so all knobs live here with their defaults, and a bad
value stops the container at start-up with a message naming the variable
rather than surfacing later as odd behaviour.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

DEFAULT_MODEL_DIR = "/opt/ociforge/model"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _env(env: dict[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def _int(env: dict[str, str], name: str, default: int | None, minimum: int = 0) -> int | None:
    raw = _env(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ValueError(f"{name}={raw!r} must be >= {minimum}")
    return value


def _float(env: dict[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = _env(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value) or value < minimum:
        raise ValueError(f"{name}={raw!r} must be a finite number >= {minimum}")
    return value


def _bool(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean (use 1/0, true/false)")


def available_cpus() -> int:
    """CPUs this process may really use: the affinity mask, capped by a cgroup v2 quota.

    ``os.cpu_count()`` reports the host's CPUs, which in a container limited
    to 2 CPUs on a 64-core node would start 64 workers and thrash.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to know that is not in the model package."""

    model_dir: str = DEFAULT_MODEL_DIR
    host: str = "0.0.0.0"
    port: int = 8080
    workers: int = 1
    threads: int = 8
    max_request_bytes: int = 32 * 1024 * 1024
    read_timeout_s: float = 30.0
    header_timeout_s: float = 10.0
    max_buffered_bytes: int = 64 * 1024 * 1024
    max_connections: int = 1000
    max_json_values: int = 1_000_000
    max_form_parts: int = 1000
    error_details: bool = False
    timeout_s: float = 60.0
    timeout_mode: str = "interrupt"
    max_concurrency: int = 8
    batch_max_wait_ms: float = 5.0
    batch_size: int | None = None
    enable_shutdown: bool = False
    graceful_timeout_s: float = 30.0
    keepalive_s: int = 5
    access_log: bool = True
    log_level: str = "info"
    metrics_dir: str | None = None
    user: str | None = None
    grpc: bool = False
    grpc_port: int = 8081

    @classmethod
    def from_env(
        cls, env: dict[str, str] | None = None, package_batch_size: int | None = None
    ) -> Settings:
        """Build settings from the environment; raises ``ValueError`` naming a bad variable.

        ``package_batch_size`` (from model.json) only sizes the default thread
        count: a batch can fill up only if that many requests are in flight in
        one worker.
        """
        env = dict(os.environ if env is None else env)
        batch_size = _int(env, "OCIFORGE_BATCH_SIZE", None, minimum=1)
        threads = _int(env, "OCIFORGE_THREADS", None, minimum=1)
        if threads is None:
            threads = max(8, 2 * (batch_size or package_batch_size or 0))
        max_conc = _int(env, "OCIFORGE_MAX_CONCURRENCY", threads, minimum=1)
        timeout_mode = (_env(env, "OCIFORGE_TIMEOUT_MODE") or "interrupt").lower()
        if timeout_mode not in {"interrupt", "thread"}:
            raise ValueError(
                f"OCIFORGE_TIMEOUT_MODE={timeout_mode!r} must be 'interrupt' or 'thread'"
            )
        max_request_bytes = _int(env, "OCIFORGE_MAX_REQUEST_BYTES", 32 * 1024 * 1024, 1)
        read_timeout = _float(env, "OCIFORGE_READ_TIMEOUT", 30.0)
        header_timeout = _float(env, "OCIFORGE_HEADER_TIMEOUT", min(10.0, read_timeout))
        if read_timeout <= 0 or header_timeout <= 0:
            bad = "OCIFORGE_READ_TIMEOUT" if read_timeout <= 0 else "OCIFORGE_HEADER_TIMEOUT"
            raise ValueError(f"{bad} must be > 0 (a request must arrive within a deadline)")
        log_level = (_env(env, "OCIFORGE_LOG_LEVEL") or "info").lower()
        if log_level not in {"debug", "info", "warning", "error", "critical"}:
            raise ValueError(f"OCIFORGE_LOG_LEVEL={log_level!r} is not a log level")
        return cls(
            model_dir=_env(env, "OCIFORGE_MODEL_DIR") or DEFAULT_MODEL_DIR,
            host=_env(env, "OCIFORGE_HOST") or "0.0.0.0",
            port=_int(env, "PORT", 8080, minimum=0),
            workers=_int(env, "OCIFORGE_WORKERS", None, minimum=1) or available_cpus(),
            threads=threads,
            max_request_bytes=max_request_bytes,
            read_timeout_s=read_timeout,
            header_timeout_s=min(header_timeout, read_timeout),
            max_buffered_bytes=_int(
                env, "OCIFORGE_MAX_BUFFERED_BYTES", 2 * max_request_bytes, max_request_bytes
            ),
            max_connections=_int(env, "OCIFORGE_MAX_CONNECTIONS", 1000, minimum=1),
            max_json_values=_int(env, "OCIFORGE_MAX_JSON_VALUES", 1_000_000, minimum=1),
            max_form_parts=_int(env, "OCIFORGE_MAX_FORM_PARTS", 1000, minimum=1),
            error_details=_bool(env, "OCIFORGE_ERROR_DETAILS", False),
            timeout_s=_float(env, "OCIFORGE_TIMEOUT", 60.0),
            timeout_mode=timeout_mode,
            max_concurrency=max_conc,
            batch_max_wait_ms=_float(env, "OCIFORGE_BATCH_MAX_WAIT_MS", 5.0),
            batch_size=batch_size,
            enable_shutdown=_bool(env, "OCIFORGE_ENABLE_SHUTDOWN", False),
            graceful_timeout_s=_float(env, "OCIFORGE_GRACEFUL_TIMEOUT", 30.0),
            keepalive_s=_int(env, "OCIFORGE_KEEPALIVE", 5, minimum=0),
            access_log=_bool(env, "OCIFORGE_ACCESS_LOG", True),
            log_level=log_level,
            metrics_dir=_env(env, "OCIFORGE_METRICS_DIR"),
            user=_env(env, "OCIFORGE_USER"),
            grpc=_bool(env, "OCIFORGE_GRPC", False),
            grpc_port=_int(env, "GRPC_PORT", 8081, minimum=0),
        )
