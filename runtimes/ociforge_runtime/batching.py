"""Dynamic batching: gather concurrent requests into one call of a batch model.

Batch models (``fn(list) -> list``) are much faster per item on a full batch,
but each HTTP request carries one item.  A single gatherer thread per worker
takes the first waiting item, then keeps collecting until ``batch_size`` items
or ``max_wait`` seconds have passed, calls the model once, and hands each
caller its own result.  One thread keeps calls serialised, which is what a
CPU-bound batch model wants anyway.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from .errors import ModelError
from .execution import Job


class Batcher:
    """Collects ``Job``s and runs them through ``fn`` in batches."""

    def __init__(
        self,
        fn: Callable[[list[Any]], Any],
        batch_size: int,
        max_wait_s: float,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.fn = fn
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch
        self.calls = 0
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="ociforge-batcher", daemon=True)
        self._thread.start()

    def submit(self, item: Any, on_done: Callable[[], None] | None = None) -> Job:
        """Queue one input; the returned ``Job`` finishes when its batch has run."""
        job = Job(None, item, on_done)
        self._queue.put(job)
        return job

    def stop(self) -> None:
        self._queue.put(None)

    def _gather(self, first: Job) -> tuple[list[Job], bool]:
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.batch_size:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    job = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if job is None:
                return batch, True
            batch.append(job)
        return batch, False

    def _loop(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._gather(first)
            self._run(batch)

    def _run(self, batch: list[Job]) -> None:
        self.calls += 1
        if self.on_batch is not None:
            self.on_batch(len(batch))
        try:
            results = self.fn([job.arg for job in batch])
            results = list(results)
            if len(results) != len(batch):
                raise ModelError(
                    f"batch model returned {len(results)} results for {len(batch)} inputs"
                )
        except BaseException as exc:  # noqa: BLE001 - every caller of the batch gets it
            for job in batch:
                job.set_error(exc)
            return
        for job, result in zip(batch, results, strict=True):
            job.set_result(result)
