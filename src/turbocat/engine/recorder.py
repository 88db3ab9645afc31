"""Group commit of step outcomes on one worker.

A step's outcome is recorded in a transaction that locks its execution row (see
``store.record_outcome``). When many steps end at once (a fan-out, a burst of one-step
executions), recording each in a transaction of its own makes them queue on that lock, or on
SQLite's single writer, one commit after another. Here an outcome that ends while another
batch is being recorded waits for that batch to commit and is then recorded with every other
outcome that arrived meanwhile, in one transaction: the first outcome never waits for a
batch to fill (a lone step is recorded at once, as before), and under load the batches grow
by themselves. The worker keeps two batches in flight: while one commits, the next is already
being written (with one at a time, a step's slot waited for a whole batch of others to commit,
and the two-worker burst's p50 latency rose by about 50 ms).

Each outcome keeps its own fence (lease epoch): one that lost its lease is skipped and the
rest of its batch is recorded. If a batch fails for any other reason, its outcomes are
recorded again one by one, so that one outcome's failure is not another's.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from turbocat.engine.plan import Plan
from turbocat.engine.platform import LogLine
from turbocat.engine.runner import StepOutcome

MAX_BATCH = 32
"""Outcomes recorded in one transaction at most (a transaction holds its locks until it
commits; a bounded batch bounds that time)."""


@dataclass
class Pending:
    """A step's outcome, waiting to be recorded."""

    run_id: uuid.UUID
    epoch: int
    outcome: StepOutcome
    plan: Plan
    claimed: tuple[uuid.UUID, dt.datetime | None]
    """The run's execution id and start, as claimed."""
    lines: Sequence[LogLine]
    organization_id: uuid.UUID
    tokens: int
    """Model tokens the step spent (metered whatever its outcome)."""
    done: asyncio.Future[Any] | None = field(default=None, repr=False)

    @property
    def execution_id(self) -> uuid.UUID:
        return self.claimed[0]


RecordBatch = Callable[[list[Pending]], Awaitable[list[Any]]]
"""Records a batch in one transaction; returns one result per outcome, in the batch's order."""


class Recorder:
    """Queues outcomes and records them in batches, at most ``in_flight`` at a time."""

    def __init__(
        self,
        record_batch: RecordBatch,
        *,
        orphaned: Callable[[Any], None] | None = None,
        max_batch: int = MAX_BATCH,
        in_flight: int = 1,
    ) -> None:
        self._record_batch = record_batch
        self._orphaned = orphaned
        """Given the result of an outcome whose caller stopped waiting (what it claimed for
        the caller, for instance, must not be lost)."""
        self._max_batch = max_batch
        self._queue: list[Pending] = []
        self._in_flight = in_flight
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.recorded = 0

    async def record(self, item: Pending) -> Any:
        """The result of recording ``item`` (or the error that prevented it). A caller that is
        cancelled while it waits does not take its outcome back: it is still recorded."""
        item.done = asyncio.get_running_loop().create_future()
        self._queue.append(item)
        if len(self._tasks) < self._in_flight:
            task = asyncio.create_task(self._drain(), name="turbocat-recorder")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await item.done

    async def _drain(self) -> None:
        while self._queue:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
            self.batches += 1
            self.recorded += len(batch)
            try:
                results = await self._record_batch(batch)
            except Exception as exc:
                if len(batch) == 1:
                    self._settle(batch[0], error=exc)
                    continue
                await self._one_by_one(batch)
                continue
            for item, result in zip(batch, results, strict=True):
                self._settle(item, result=result)

    async def _one_by_one(self, batch: list[Pending]) -> None:
        for item in batch:
            try:
                (result,) = await self._record_batch([item])
            except Exception as exc:
                self._settle(item, error=exc)
            else:
                self._settle(item, result=result)

    def _settle(
        self, item: Pending, *, result: Any = None, error: BaseException | None = None
    ) -> None:
        done = item.done
        if done is None or done.done():  # its caller was cancelled meanwhile
            if error is None and self._orphaned is not None:
                self._orphaned(result)
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)
