"""The work_items table: adding an execution's queue items, taking them in queue order, and
reading what is pending.

Callers hold the execution's row lock (every transaction that moves an execution forward takes
it first), so arrivals, takes and ``seq`` numbering of one execution never interleave.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db.models import ExecutionRow, WorkItemRow
from turbocat.domain import work_queues
from turbocat.domain.definitions import WorkQueueDef
from turbocat.domain.enums import WorkItemStatus
from turbocat.domain.expressions import JSONValue

PENDING = WorkItemStatus.PENDING
QUERY_ITEMS = 1000
"""A queue query lists at most this many items (its ``size`` still counts them all)."""


def _of(execution_id: uuid.UUID, queue: str) -> tuple[Any, ...]:
    return (WorkItemRow.execution_id == execution_id, WorkItemRow.queue_name == queue)


def _order_by(queue: WorkQueueDef) -> list[Any]:
    columns = {"priority": WorkItemRow.priority, "seq": WorkItemRow.seq}
    return [
        columns[name].desc() if descending else columns[name].asc()
        for name, descending in work_queues.ordering(queue.order)
    ]


async def pending_count(session: AsyncSession, execution_id: uuid.UUID, queue: str) -> int:
    count = await session.execute(
        select(func.count()).where(*_of(execution_id, queue), WorkItemRow.status == PENDING)
    )
    return int(count.scalar_one())


async def is_duplicate(
    session: AsyncSession, execution_id: uuid.UUID, queue: str, key: str
) -> bool:
    """Whether a pending item of the queue has this dedupe key."""
    found = await session.execute(
        select(WorkItemRow.id)
        .where(
            *_of(execution_id, queue),
            WorkItemRow.status == PENDING,
            WorkItemRow.dedupe_key == key,
        )
        .limit(1)
    )
    return found.first() is not None


async def add(
    session: AsyncSession,
    execution: ExecutionRow,
    queue: WorkQueueDef,
    new: work_queues.NewItem,
    now: dt.datetime,
) -> WorkItemRow:
    """Store a pending item at the end of the queue's arrivals (``seq`` = last + 1)."""
    last = await session.execute(
        select(func.max(WorkItemRow.seq)).where(*_of(execution.id, queue.name))
    )
    row = WorkItemRow(
        organization_id=execution.organization_id,
        execution_id=execution.id,
        queue_name=queue.name,
        item=new.item,
        priority=new.priority,
        seq=int(last.scalar() or 0) + 1,
        dedupe_key=new.dedupe_key,
        status=PENDING,
        created_at=now,
    )
    session.add(row)
    await session.flush()
    return row


async def take(
    session: AsyncSession,
    execution_id: uuid.UUID,
    queue: WorkQueueDef,
    limit: int,
    run_id: uuid.UUID,
    now: dt.datetime,
) -> list[JSONValue]:
    """Mark up to ``limit`` pending items taken by step run ``run_id``, in queue order; their
    payloads, in that order (empty when the queue is)."""
    rows = (
        await session.execute(
            select(WorkItemRow.id, WorkItemRow.item)
            .where(*_of(execution_id, queue.name), WorkItemRow.status == PENDING)
            .order_by(*_order_by(queue))
            .limit(limit)
        )
    ).all()
    if not rows:
        return []
    await session.execute(
        update(WorkItemRow)
        .where(WorkItemRow.id.in_([row.id for row in rows]))
        .values(status=WorkItemStatus.TAKEN, taken_by=run_id, taken_at=now),
        execution_options={"synchronize_session": False},
    )
    return [row.item for row in rows]


async def pending(
    session: AsyncSession, execution_id: uuid.UUID, queue: WorkQueueDef, limit: int = QUERY_ITEMS
) -> list[JSONValue]:
    """The first ``limit`` pending items in queue order."""
    rows = await session.execute(
        select(WorkItemRow.item)
        .where(*_of(execution_id, queue.name), WorkItemRow.status == PENDING)
        .order_by(*_order_by(queue))
        .limit(limit)
    )
    return list(rows.scalars())


async def sizes(session: AsyncSession, execution_id: uuid.UUID) -> dict[str, int]:
    """Pending items per queue (queues with none are absent)."""
    rows = await session.execute(
        select(WorkItemRow.queue_name, func.count())
        .where(WorkItemRow.execution_id == execution_id, WorkItemRow.status == PENDING)
        .group_by(WorkItemRow.queue_name)
    )
    return {name: int(count) for name, count in rows.all()}
