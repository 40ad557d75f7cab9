"""A bounded request queue in front of a model thread: back-pressure, batching, per-request deadlines.

Models are not thread-safe and a tiny model on a CPU gains nothing from running two requests side by
side, so one thread owns each model. Requests wait in a bounded asyncio queue: a full queue answers
at once (Busy) instead of piling up. The consumer takes the next job and, when it may be batched,
every compatible job already waiting (up to `max_batch`), and runs them in one call. A request that
waits past its deadline gets TimedOut; its job is flagged so the model thread skips it, or stops
spending steps on it when the batch runner looks at `Job.stop()`.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


class Busy(Exception):
    """The queue is full."""


class TimedOut(Exception):
    """The request passed its deadline."""


@dataclass
class Job:
    payload: Any
    future: asyncio.Future
    deadline: float  # time.monotonic()
    batch_key: Hashable | None = None
    abandoned: bool = False
    queued_at: float = field(default_factory=time.monotonic)

    def stop(self) -> bool:
        """True once nobody waits for the result (read from the model thread)."""
        return self.abandoned or time.monotonic() > self.deadline


class Worker:
    """Jobs from a bounded queue run on `threads` threads; `run_batch` (if given) takes lists of jobs
    with the same batch key, `run_one` single jobs. Both get Job objects and return results."""

    def __init__(self, name: str, run_one: Callable[[Job], Any],
                 run_batch: Callable[[list[Job]], list[Any]] | None = None,
                 queue_size: int = 64, max_batch: int = 1, threads: int = 1):
        self.name = name
        self.run_one = run_one
        self.run_batch = run_batch
        self.queue_size = queue_size
        self.max_batch = max(1, max_batch)
        self.threads = threads
        self.queue: asyncio.Queue[Job] | None = None
        self.deferred: collections.deque[Job] = collections.deque()
        self.executor: ThreadPoolExecutor | None = None
        self.tasks: list[asyncio.Task] = []
        self.current: list[Job] = []
        self.running = 0
        self.done = 0
        self.batches = 0
        self.largest_batch = 0

    def start(self) -> None:
        self.queue = asyncio.Queue(self.queue_size)
        self.executor = ThreadPoolExecutor(self.threads, thread_name_prefix=f"midilm-{self.name}")
        self.tasks = [asyncio.create_task(self._consume()) for _ in range(self.threads)]

    async def stop(self) -> None:
        for job in self.current:  # a running batch stops at its next step instead of holding up the exit
            job.abandoned = True
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.executor:
            self.executor.shutdown(wait=False, cancel_futures=True)

    def stats(self) -> dict:
        return {"waiting": (self.queue.qsize() if self.queue else 0) + len(self.deferred), "running": self.running,
                "queue_size": self.queue_size, "done": self.done, "batches": self.batches,
                "largest_batch": self.largest_batch}

    async def submit(self, payload: Any, timeout: float, batch_key: Hashable | None = None) -> Any:
        """Queue a job and wait for its result; Busy when the queue is full, TimedOut after `timeout` s."""
        if self.queue is None:
            raise RuntimeError(f"worker {self.name} is not started")
        future = asyncio.get_running_loop().create_future()
        job = Job(payload, future, time.monotonic() + timeout, batch_key)
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            raise Busy(f"the server is busy ({self.queue_size} requests waiting); retry in a few seconds") from None
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            job.abandoned = True
            future.cancel()
            raise TimedOut(f"the request took longer than the {timeout:g} s limit") from None
        except asyncio.CancelledError:  # the client went away
            job.abandoned = True
            future.cancel()
            raise

    def _next(self) -> Job | None:
        return self.deferred.popleft() if self.deferred else None

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            job = self._next() or await self.queue.get()
            if job.future.done():
                continue
            batch = [job]
            if job.batch_key is not None and self.run_batch is not None:
                # everything compatible that is already waiting joins; the rest keeps its place
                while len(batch) < self.max_batch:
                    try:
                        other = self.queue.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                    if other.future.done():
                        continue
                    (batch if other.batch_key == job.batch_key else self.deferred).append(other)
            self.running += len(batch)
            self.current += batch
            try:
                results = await loop.run_in_executor(self.executor, self._run, batch)
            finally:
                self.running -= len(batch)
                self.current = [j for j in self.current if j not in batch]
            self.batches += 1
            self.largest_batch = max(self.largest_batch, len(batch))
            for j, result in zip(batch, results):
                self.done += 1
                if j.future.done():
                    continue
                if isinstance(result, BaseException):
                    j.future.set_exception(result)
                else:
                    j.future.set_result(result)

    def _run(self, batch: list[Job]) -> list[Any]:
        """On the model thread: results, or the exception, for each job."""
        try:
            if len(batch) > 1 or (batch[0].batch_key is not None and self.run_batch is not None):
                return list(self.run_batch(batch))
            return [self.run_one(batch[0])]
        except Exception as e:  # every job of the batch gets the error
            return [e] * len(batch)
