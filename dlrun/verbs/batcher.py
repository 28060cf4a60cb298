"""Gathering concurrent requests into one model call (`dlrun serve`).

Concurrent requests queue up; one worker takes the first waiting request, then keeps taking requests that
arrive within `max_wait` of it until `max_batch` rows are gathered, and runs them all as one model call in a
worker thread (one model call at a time, so the event loop keeps accepting). Each request gets its own rows
back. When a merged batch fails on one request's values, each request of it is run alone, so only that
request gets the error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from dlrun.errors import RecipeError

MAX_BATCH = 256  # rows in one model call, gathered from concurrent requests
MAX_WAIT_MS = 5.0

Rows = list[dict[str, Any]]


@dataclass
class _Pending:
    rows: Rows
    future: asyncio.Future


@dataclass
class Batcher:
    """Gathers concurrent requests into one model call (see the module docstring); counts what it did."""

    predict: Callable[[Rows], Rows]
    max_batch: int = MAX_BATCH
    max_wait: float = MAX_WAIT_MS / 1000
    batches: int = 0
    requests: int = 0
    largest: int = 0  # most requests in one model call
    _queue: asyncio.Queue | None = None
    _task: asyncio.Task | None = None
    _pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="dlrun-model"))

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def submit(self, rows: Rows) -> Rows:
        """This request's answers (a RecipeError when its values do not fit the recipe)."""
        assert self._queue is not None, "Batcher.start() first"
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(rows, future))
        return await future

    async def _gather(self) -> list[_Pending]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        count = len(batch[0].rows)
        deadline = time.monotonic() + self.max_wait
        while count < self.max_batch:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                item = await asyncio.wait_for(self._queue.get(), left)
            except asyncio.TimeoutError:
                break
            batch.append(item)
            count += len(item.rows)
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            self.batches += 1
            self.requests += len(batch)
            self.largest = max(self.largest, len(batch))
            rows = [r for p in batch for r in p.rows]
            try:
                answers = await loop.run_in_executor(self._pool, self.predict, rows)
            except RecipeError as exc:
                if len(batch) == 1:
                    _settle(batch[0].future, error=exc)
                    continue
                for p in batch:  # one request's values spoiled the batch: each alone, so only it fails
                    try:
                        _settle(p.future, await loop.run_in_executor(self._pool, self.predict, p.rows))
                    except RecipeError as alone:
                        _settle(p.future, error=alone)
                continue
            except Exception as exc:  # a bug: every waiting request gets the 500, the loop goes on
                for p in batch:
                    _settle(p.future, error=exc)
                continue
            start = 0
            for p in batch:
                _settle(p.future, answers[start : start + len(p.rows)])
                start += len(p.rows)


def _settle(future: asyncio.Future, result: Rows | None = None, *, error: BaseException | None = None) -> None:
    if future.done():  # the client went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
