"""Dynamic micro-batching: requests that arrive within a few milliseconds share one forward
pass.

Handlers :meth:`MicroBatcher.submit` a job (a task name and its inputs) to a bounded asyncio
queue and await its result. One worker takes the first waiting job, keeps collecting jobs for
up to ``wait_s`` seconds or until ``max_batch`` inputs are gathered, groups them by task and
runs each group as one call of ``run(task, inputs)`` in a single worker thread (the event loop
stays free to accept and answer other requests), then hands every job its slice of the
results. A full queue refuses the job at once (:class:`QueueFull`: the server answers 503).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import time
from collections.abc import Callable
from dataclasses import dataclass, field


class QueueFull(Exception):
    """More jobs are waiting than the queue holds."""


@dataclass
class Job:
    task: str
    inputs: list
    future: asyncio.Future


@dataclass
class BatchStats:
    """Counters shown in ``/v1/info``: ``forward_passes`` < ``jobs`` means batching happened."""

    jobs: int = 0
    inputs: int = 0
    forward_passes: int = 0
    largest_batch: int = 0
    rejected_queue_full: int = 0
    failed: int = 0
    model_seconds: float = 0.0
    by_task: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"jobs": self.jobs, "inputs": self.inputs, "forward_passes": self.forward_passes,
                "largest_batch": self.largest_batch,
                "rejected_queue_full": self.rejected_queue_full, "failed": self.failed,
                "model_seconds": round(self.model_seconds, 3), "by_task": dict(self.by_task)}


class MicroBatcher:
    """``run(task, inputs) -> outputs`` (one output per input, in order) is called from one
    worker thread, never concurrently."""

    def __init__(self, run: Callable[[str, list], list], *, max_batch: int = 32,
                 wait_s: float = 0.005, max_queue: int = 256,
                 unbatched: tuple[str, ...] = ()):
        if max_batch < 1 or max_queue < 1 or wait_s < 0:
            raise ValueError(f"max_batch={max_batch} and max_queue={max_queue} must be >= 1, "
                             f"wait_s={wait_s} >= 0")
        self.run = run
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.max_queue = max_queue
        self.unbatched = set(unbatched)  # tasks whose jobs always run alone (attention)
        self.stats = BatchStats()
        self.in_flight = 0  # jobs submitted and not answered yet
        self._queue: asyncio.Queue[Job] | None = None
        self._carry: collections.deque[Job] = collections.deque()
        self._worker: asyncio.Task | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lanistr-model")

    # -- lifecycle (called from the server's lifespan) ---------------------------------------

    def start(self) -> None:
        self._queue = asyncio.Queue(self.max_queue)
        self._worker = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._pool.shutdown(wait=True)

    def pending(self) -> int:
        return (self._queue.qsize() if self._queue is not None else 0) + len(self._carry)

    # -- handlers ----------------------------------------------------------------------------

    async def submit(self, task: str, inputs: list) -> list:
        """The outputs for ``inputs``, computed in some batch; :class:`QueueFull` at once when
        the queue is full."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(Job(task, list(inputs), future))
        except asyncio.QueueFull:
            self.stats.rejected_queue_full += 1
            raise QueueFull(f"{self.max_queue} requests are waiting") from None
        self.in_flight += 1
        try:
            return await future
        finally:
            self.in_flight -= 1

    # -- the worker --------------------------------------------------------------------------

    async def _next(self, timeout: float | None) -> Job | None:
        if self._carry:
            return self._carry.popleft()
        if timeout is None:
            return await self._queue.get()
        if timeout <= 0:
            try:
                return self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def _gather(self) -> list[Job]:
        loop = asyncio.get_running_loop()
        first = await self._next(None)
        batch, size = [first], len(first.inputs)
        if first.task in self.unbatched:
            return batch
        deadline = loop.time() + self.wait_s
        while size < self.max_batch:
            job = await self._next(deadline - loop.time())
            if job is None:
                break
            if job.task in self.unbatched or size + len(job.inputs) > self.max_batch:
                self._carry.append(job)  # first in the next batch
                break
            batch.append(job)
            size += len(job.inputs)
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            groups: dict[str, list[Job]] = {}
            for job in batch:
                if not job.future.done():  # a client that went away is not computed
                    groups.setdefault(job.task, []).append(job)
            for task, jobs in groups.items():
                await self._run_group(loop, task, jobs)

    async def _run_group(self, loop, task: str, jobs: list[Job]) -> None:
        inputs = [x for job in jobs for x in job.inputs]
        started = time.perf_counter()
        try:
            outputs = await loop.run_in_executor(self._pool, self.run, task, inputs)
            if len(outputs) != len(inputs):
                raise RuntimeError(f"{task}: {len(outputs)} outputs for {len(inputs)} inputs")
        except Exception as exc:
            if len(jobs) > 1:  # one bad job must not fail the others: run each alone
                self._count(task, 0, 0, time.perf_counter() - started)
                for job in jobs:
                    await self._run_group(loop, task, [job])
                return
            self.stats.failed += 1
            if not jobs[0].future.done():
                jobs[0].future.set_exception(exc)  # answered as an error; the worker goes on
            self._count(task, 1, len(inputs), time.perf_counter() - started)
            return
        self._count(task, len(jobs), len(inputs), time.perf_counter() - started)
        start = 0
        for job in jobs:
            part = outputs[start:start + len(job.inputs)]
            start += len(job.inputs)
            if not job.future.done():
                job.future.set_result(part)

    def _count(self, task: str, jobs: int, inputs: int, seconds: float) -> None:
        s = self.stats
        s.jobs += jobs
        s.inputs += inputs
        s.forward_passes += 1
        s.largest_batch = max(s.largest_batch, inputs)
        s.model_seconds += seconds
        t = s.by_task.setdefault(task, {"jobs": 0, "forward_passes": 0})
        t["jobs"] += jobs
        t["forward_passes"] += 1
