"""Running model calls off the request thread, so a request can time out.

A Python thread cannot be interrupted, so the per-request timeout is
implemented by handing the call to a model thread and waiting for it with a
deadline.  ``concurrent.futures`` would do, but its Condition-based futures
cost more per hand-off than a bare lock, and this sits on the hot path of
every request, so the one-shot ``Job`` below uses a single pre-acquired lock.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any


class Job:
    """A one-shot call whose result is awaited with a timeout."""

    __slots__ = ("fn", "arg", "value", "error", "_done", "_on_done")

    def __init__(
        self,
        fn: Callable[[Any], Any] | None,
        arg: Any,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        self.fn = fn
        self.arg = arg
        self.value: Any = None
        self.error: BaseException | None = None
        self._done = threading.Lock()
        self._done.acquire()
        self._on_done = on_done

    def run(self) -> None:
        """Execute ``fn(arg)`` and publish the outcome (called on a model thread)."""
        try:
            self.value = self.fn(self.arg)  # type: ignore[misc]
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
            self.error = exc
        self.finish()

    def set_result(self, value: Any) -> None:
        self.value = value
        self.finish()

    def set_error(self, error: BaseException) -> None:
        self.error = error
        self.finish()

    def finish(self) -> None:
        if self._on_done is not None:
            self._on_done()
        self._done.release()

    def wait(self, timeout: float | None) -> bool:
        """True once finished; False if ``timeout`` seconds passed first (None = forever)."""
        return self._done.acquire(timeout=-1 if timeout is None else max(timeout, 0.0))


class ModelThreads:
    """A fixed set of daemon threads that run ``Job``s from one queue.

    Sized to the concurrency limit, so an admitted request never waits in the
    queue behind another: the limit itself is enforced by the caller.
    """

    def __init__(self, size: int, name: str = "ociforge-model") -> None:
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True)
            for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            job.run()

    def submit(self, job: Job) -> Job:
        self._queue.put(job)
        return job

    def stop(self) -> None:
        for _ in self._threads:
            self._queue.put(None)


class RequestTimeout(BaseException):  # noqa: N818 - mirrors KeyboardInterrupt
    """Raised inside a request thread whose model call overran its deadline.

    A ``BaseException`` so that a model's ``except Exception`` does not swallow it.
    """


def _set_async_exc(thread_id: int, exc: type[BaseException] | None) -> None:
    import ctypes

    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
    )


class Watchdog:
    """Interrupts request threads that overrun their deadline, without a thread hand-off.

    Handing every call to a model thread costs two thread switches per request
    (measurable against a bare Flask app on small models).  Instead the model
    runs inline and one watchdog thread raises ``RequestTimeout`` in a thread
    that is still inside the model after its deadline.  CPython delivers it at
    the next bytecode, so a model stuck inside one long C call is interrupted
    only when that call returns; ``OCIFORGE_TIMEOUT_MODE=thread`` trades the
    hand-off cost for a deadline that holds even then.
    """

    def __init__(self, tick_s: float) -> None:
        self.tick_s = tick_s
        self._lock = threading.Lock()
        self._entries: dict[int, list[Any]] = {}
        threading.Thread(target=self._loop, name="ociforge-watchdog", daemon=True).start()

    def arm(self, deadline: float) -> int:
        """Watch the calling thread until ``disarm``; returns its id."""
        tid = threading.get_ident()
        with self._lock:
            self._entries[tid] = [deadline, False]
        return tid

    def disarm(self, tid: int) -> bool:
        """Stop watching; True if the deadline had fired (a pending interrupt is cancelled)."""
        with self._lock:
            entry = self._entries.pop(tid, None)
        if entry is not None and entry[1]:
            _set_async_exc(tid, None)
            return True
        return False

    def _loop(self) -> None:
        import time

        while True:
            time.sleep(self.tick_s)
            now = time.monotonic()
            with self._lock:
                for tid, entry in self._entries.items():
                    if not entry[1] and entry[0] <= now:
                        entry[1] = True
                        _set_async_exc(tid, RequestTimeout)
