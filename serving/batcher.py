"""Coalesce concurrent requests into one model call.

KServe's Python server has no batcher. On a CPU, one forward pass over 8 images costs far less than 8
passes over one, so under concurrent load the server stacks whatever requests are waiting into a
single ``predict`` call. There is no timer: while the model is busy, new requests queue up, and the next
call takes them all (up to ``max_batch_size`` images). A lone request never waits for company, so
latency at concurrency 1 is that of a plain call. Requests that have arrived but are still being decoded
are announced (:meth:`MicroBatcher.expect`); the next call waits for them, at most ``max_wait`` seconds.

All model calls run on one dedicated thread: TensorFlow is not asked to run two graphs at once, and
the event loop stays free to read and decode the next requests meanwhile.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

PredictFn = Callable[[np.ndarray], np.ndarray]
ANNOUNCEMENT_TTL = 1.0


@dataclass
class _Job:
    images: np.ndarray
    future: asyncio.Future[np.ndarray]


class MicroBatcher:
    """``await batcher.predict(images)`` -> that request's rows of one (possibly shared) model call."""

    def __init__(
        self,
        predict_fn: PredictFn,
        executor: concurrent.futures.Executor,
        max_batch_size: int = 16,
        on_batch: Callable[[int], None] | None = None,
        max_wait: float = 0.01,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self._predict_fn = predict_fn
        self._executor = executor
        self.max_batch_size = max_batch_size
        self._on_batch = on_batch
        self.max_wait = max_wait
        self._expected: dict[int, float] = {}
        self._tokens = itertools.count()
        self._pending: collections.deque[_Job] = collections.deque()
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None

    def expect(self) -> int:
        """Announce a request that is on its way (being decoded); pass the token to :meth:`predict` or
        :meth:`withdraw`. An announcement is forgotten after ``ANNOUNCEMENT_TTL`` seconds in any case."""
        token = next(self._tokens)
        self._expected[token] = time.monotonic()
        return token

    def withdraw(self, token: int) -> None:
        """An announced request will not come (it was refused)."""
        self._expected.pop(token, None)
        if self._wakeup is not None:
            self._wakeup.set()

    def _announced(self) -> int:
        stale = time.monotonic() - ANNOUNCEMENT_TTL
        for token in [t for t, when in self._expected.items() if when < stale]:
            del self._expected[token]
        return len(self._expected)

    async def predict(self, images: np.ndarray, token: int | None = None) -> np.ndarray:
        """This request's rows of the model's answer; ``token`` if it was announced with :meth:`expect`.

        A request of more than ``max_batch_size`` images is queued as several jobs of at most that many:
        no model call is ever larger (the activations of MobileNetV2 on 64 images at 224 px take
        0.4-0.5 GiB more than on 16; docs/benchmarks.md)."""
        if token is not None:
            self._expected.pop(token, None)
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._wakeup = asyncio.Event()
            self._worker = loop.create_task(self._run(), name="radpipe-batcher")
        step = self.max_batch_size
        jobs = [_Job(images[i : i + step], loop.create_future()) for i in range(0, max(len(images), 1), step)]
        self._pending.extend(jobs)
        assert self._wakeup is not None
        self._wakeup.set()
        rows = await asyncio.gather(*(job.future for job in jobs))
        return rows[0] if len(rows) == 1 else np.concatenate(rows)

    def _take(self) -> list[_Job]:
        """The next batch: the first job (never larger than ``max_batch_size``), then whole jobs while they fit."""
        jobs = [self._pending.popleft()]
        count = len(jobs[0].images)
        while self._pending and count + len(self._pending[0].images) <= self.max_batch_size:
            job = self._pending.popleft()
            jobs.append(job)
            count += len(job.images)
        return [j for j in jobs if not j.future.cancelled()]

    async def _wait_for_announced(self, loop: asyncio.AbstractEventLoop) -> None:
        """Give requests that are still being decoded a moment to join the next call, if there is room."""
        assert self._wakeup is not None
        deadline = loop.time() + self.max_wait
        while self._announced() > 0 and sum(len(j.images) for j in self._pending) < self.max_batch_size:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                await self._wait_for_announced(loop)
                jobs = self._take()
                if not jobs:
                    continue
                x = np.concatenate([np.asarray(j.images, dtype=np.float32) for j in jobs])
                if self._on_batch is not None:
                    self._on_batch(len(x))
                try:
                    y = await loop.run_in_executor(self._executor, self._predict_fn, x)
                except Exception as exc:  # every waiting request gets the failure; the batcher goes on
                    for job in jobs:
                        if not job.future.done():
                            job.future.set_exception(exc)
                    continue
                start = 0
                for job in jobs:
                    end = start + len(job.images)
                    if not job.future.done():
                        job.future.set_result(y[start:end])
                    start = end
