"""Who serves which task queue: the live workers (seed 003's workflow_workers) and what a step
that no live worker can take is waiting for.

A worker is live while its status is ``running`` and its last heartbeat is fresher than
``scheduler.worker_heartbeat_timeout_seconds``. The table records the queues each worker
serves, not its components: a ready step on a queue without a live worker is shown as waiting
for one (a worker of that queue that lacks the step's custom component does not count, but the
table cannot tell; docs/components.md).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db.models import StepRunRow, WorkerRow
from turbocat.domain.enums import StepStatus, WorkerStatus


async def live_queues(
    session: AsyncSession, now: dt.datetime, heartbeat_timeout: dt.timedelta
) -> set[str]:
    """The queues some live worker serves."""
    rows = await session.execute(
        select(WorkerRow.queues).where(
            WorkerRow.status == WorkerStatus.RUNNING,
            WorkerRow.last_heartbeat_at >= now - heartbeat_timeout,
        )
    )
    return {queue for queues in rows.scalars() for queue in queues}


def waiting_for_worker(run: StepRunRow, live: set[str], now: dt.datetime) -> str | None:
    """Why a ready run has not started, when the reason is that no live worker serves its
    queue; None otherwise."""
    if run.status != StepStatus.READY or run.queue in live:
        return None
    if run.scheduled_for is not None and run.scheduled_for > now:
        return None  # a retry or a timed wait that is not due yet
    return f"waiting for a worker serving queue {run.queue}"
