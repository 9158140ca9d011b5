"""The model inside one worker: loading, readiness, admission, timeouts, batching.

Everything that decides *whether and how* the model is called lives here, and
knows nothing about HTTP, so the server and the local test path share it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from .batching import Batcher
from .config import Settings
from .errors import Busy, ModelError, NotReady, RuntimeHTTPError, Timeout
from .execution import Job, ModelThreads, RequestTimeout, Watchdog
from .metrics import BATCH_BUCKETS, Registry, record_model_metrics
from .package import LoadedModel

MAX_ERROR_CHARS = 300


def model_error(exc: BaseException) -> RuntimeHTTPError:
    """Wrap whatever the model raised into a 500: a short detailed message (log, and clients
    only with ``OCIFORGE_ERROR_DETAILS=1``) and a generic public one."""
    if isinstance(exc, RuntimeHTTPError):
        return exc
    text = f"model raised {type(exc).__name__}: {exc}"
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 3] + "..."
    return ModelError(text, exc, public=ModelError.GENERIC)


class Admission:
    """A concurrency slot taken for one request, and the request's deadline.

    Taken before the request body is decoded (decoding a large JSON body costs many times
    its size in memory), and handed to ``predict``/``predict_many``, which release it;
    ``release`` gives it back when the request fails before reaching the model.
    """

    __slots__ = ("deadline", "_release")

    def __init__(self, deadline: float | None, release: Callable[[], None]) -> None:
        self.deadline = deadline
        self._release: Callable[[], None] | None = release

    def take(self) -> Callable[[], None]:
        """The slot's release function, handed over once (to the model call that frees it)."""
        release = self._release
        if release is None:
            raise RuntimeError("admission already used")
        self._release = None
        return release

    def release(self) -> None:
        """Give the slot back if it was not handed over (the request failed before the model)."""
        release, self._release = self._release, None
        if release is not None:
            release()


class _Slots:
    """A counting semaphore whose acquire never waits: admission answers 503 at once.

    ``threading.Semaphore`` builds on a Condition and costs several Python calls per
    acquire and release; every request takes and returns a slot, so a plain lock
    around a counter is used instead.
    """

    __slots__ = ("_free", "_lock")

    def __init__(self, count: int) -> None:
        self._free = count
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        """Take a slot if one is free; never blocks."""
        with self._lock:
            if self._free <= 0:
                return False
            self._free -= 1
            return True

    def release(self) -> None:
        with self._lock:
            self._free += 1


class Predictor:
    """Calls the model for requests, within the configured limits."""

    def __init__(
        self,
        settings: Settings,
        loader: Callable[[], LoadedModel],
        registry: Registry | None = None,
        manifest: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry or Registry()
        self.manifest = manifest or {}
        self._loader = loader
        self._loaded = threading.Event()
        self.model: LoadedModel | None = None
        self.load_error: BaseException | None = None
        self._slots = _Slots(settings.max_concurrency)
        self._threads: ModelThreads | None = None
        self._watchdog: Watchdog | None = None
        self._batcher: Batcher | None = None
        self.registry.describe(
            "ociforge_model_ready", "gauge", "1 per worker whose model has loaded"
        )
        self.registry.describe("ociforge_model_calls_total", "counter", "calls into the model")
        self.registry.describe(
            "ociforge_batch_size", "histogram", "inputs per batch model call", BATCH_BUCKETS
        )
        self.registry.set("ociforge_model_ready", 0)

    # ------------------------------------------------------------------ loading

    @property
    def ready(self) -> bool:
        return self._loaded.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the model has loaded (True), or ``timeout`` seconds pass (False)."""
        return self._loaded.wait(timeout)

    @property
    def card(self) -> dict[str, Any]:
        if self.model is not None:
            return self.model.card
        return self.manifest.get("card") or {}

    @property
    def batch_size(self) -> int | None:
        if self.settings.batch_size is not None:
            return self.settings.batch_size
        if self.model is not None:
            return self.model.batch_size
        return self.manifest.get("batch_size")

    def load(self) -> LoadedModel:
        """Load the model now (in the calling thread) and start serving it."""
        model = self._loader()
        self.model = model
        if self.batch_size:
            self._batcher = Batcher(
                model.predict,
                self.batch_size,
                self.settings.batch_max_wait_ms / 1000.0,
                on_batch=self._on_batch,
            )
        if self.settings.timeout_s > 0 and self.settings.timeout_mode == "thread":
            self._threads = ModelThreads(self.settings.max_concurrency)
        elif self.settings.timeout_s > 0:
            self._watchdog = Watchdog(min(0.1, max(0.005, self.settings.timeout_s / 20)))
        self.registry.set("ociforge_model_ready", 1)
        self._loaded.set()
        return model

    def load_in_background(
        self,
        on_error: Callable[[BaseException], None],
        on_loaded: Callable[[LoadedModel], None] | None = None,
    ) -> threading.Thread:
        """Load on a thread so the worker answers health checks (and heartbeats) meanwhile.

        A load that takes minutes would otherwise block the gunicorn worker's
        main loop and get it killed by the arbiter's heartbeat timeout.
        """

        def run() -> None:
            try:
                model = self.load()
            except BaseException as exc:  # noqa: BLE001 - reported, then the worker exits
                self.load_error = exc
                on_error(exc)
                return
            if on_loaded is not None:
                on_loaded(model)

        thread = threading.Thread(target=run, name="ociforge-load", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        if self._batcher is not None:
            self._batcher.stop()
        if self._threads is not None:
            self._threads.stop()

    # ------------------------------------------------------------------ predicting

    def _on_batch(self, size: int) -> None:
        self.registry.inc("ociforge_model_calls_total")
        self.registry.observe("ociforge_batch_size", size)

    def _call_one(self, x: Any) -> Any:
        model = self.model
        assert model is not None
        self.registry.inc("ociforge_model_calls_total")
        result = model.predict(x)
        if model.metrics is not None:
            record_model_metrics(self.registry, model.metrics())
        return result

    def _call_many(self, xs: list[Any]) -> list[Any]:
        return [self._call_one(x) for x in xs]

    def _admit(self, deadline: float | None) -> None:
        if not self._loaded.is_set():
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._loaded.wait(wait):
                raise NotReady("model is still loading; retry when /v2/health/ready is 200")
        if not self._slots.try_acquire():
            raise Busy(
                f"server busy: {self.settings.max_concurrency} requests already in flight "
                "in this worker (OCIFORGE_MAX_CONCURRENCY)"
            )

    def _deadline(self) -> float | None:
        timeout = self.settings.timeout_s
        return time.monotonic() + timeout if timeout > 0 else None

    def _timeout(self) -> Timeout:
        return Timeout(
            f"prediction did not finish within {self.settings.timeout_s:g}s (OCIFORGE_TIMEOUT)"
        )

    def _await(self, job: Job, deadline: float | None) -> Any:
        remaining = None if deadline is None else deadline - time.monotonic()
        if not job.wait(remaining):
            raise self._timeout()
        if job.error is not None:
            raise model_error(job.error)
        return job.value

    def admit(self) -> Admission:
        """Wait for the model to load (up to the timeout) and take a concurrency slot.

        Raises ``NotReady`` or ``Busy`` (503). The deadline of ``OCIFORGE_TIMEOUT`` runs from
        here, so it covers decoding the request as well as the model call.
        """
        deadline = self._deadline()
        self._admit(deadline)
        return Admission(deadline, self._slots.release)

    def _run(
        self,
        fn: Callable[[Any], Any],
        arg: Any,
        deadline: float | None,
        release: Callable[[], None],
    ) -> Any:
        if self._threads is None:  # inline: no hand-off (the watchdog, if any, interrupts)
            watchdog = self._watchdog
            try:
                if watchdog is None or deadline is None:
                    return fn(arg)
                tid = watchdog.arm(deadline)
                try:
                    return fn(arg)
                finally:
                    watchdog.disarm(tid)
            except RequestTimeout:
                raise self._timeout() from None
            except BaseException as exc:
                raise model_error(exc) from exc
            finally:
                release()
        return self._await(self._threads.submit(Job(fn, arg, release)), deadline)

    def predict(self, x: Any, admission: Admission | None = None) -> Any:
        """One input -> one result (through the batcher for batch models).

        ``admission`` is a slot already taken with ``admit`` (released here); without one,
        a slot is taken now.
        """
        if admission is None:
            admission = self.admit()
        deadline, release = admission.deadline, admission.take()
        if self._batcher is None:
            return self._run(self._call_one, x, deadline, release)
        return self._await(self._batcher.submit(x, release), deadline)

    def predict_many(self, xs: list[Any], admission: Admission | None = None) -> list[Any]:
        """A list of inputs -> a list of results; one concurrency slot for the whole list."""
        if admission is None:
            admission = self.admit()
        deadline, release = admission.deadline, admission.take()
        if self._batcher is None:
            return self._run(self._call_many, xs, deadline, release)
        if not xs:
            release()
            return []
        pending = [len(xs)]
        lock = threading.Lock()

        def one_done() -> None:
            with lock:
                pending[0] -= 1
                last = pending[0] == 0
            if last:
                release()

        jobs = [self._batcher.submit(x, one_done) for x in xs]
        return [self._await(job, deadline) for job in jobs]

    def call(self, fn: Callable[[], Any], admission: Admission | None = None) -> Any:
        """Run ``fn()`` (a call into the model other than its plain ``predict``: the Seldon
        routes) under a concurrency slot and the request deadline, as ``predict`` runs."""
        if admission is None:
            admission = self.admit()
        deadline, release = admission.deadline, admission.take()
        self.registry.inc("ociforge_model_calls_total")
        return self._run(lambda _: fn(), None, deadline, release)

    def tags(self) -> dict[str, Any] | None:
        """Seldon-style ``tags()`` of the model, if it has one (never fails a request)."""
        model = self.model
        if model is None or model.tags is None:
            return None
        try:
            tags = model.tags()
        except Exception:  # noqa: BLE001 - tags are decoration, not the answer
            return None
        return tags if isinstance(tags, dict) else None
