"""Task queue limits (seed 003), enforced across every process.

A step run or an execution names its queue; the organization's ``task_queues`` row of that
name applies, else the system row of that name, else nothing limits it. A system queue's
counts cover every organization that has no queue of its own by that name.

- ``max_concurrent_activities``: steps running at once on the queue (checked when claiming).
- ``max_concurrent_workflows``: executions running or waiting at once on the queue (checked
  when an execution starts or is admitted; extra ones wait as ``pending``).

Deciding locks the queue rows involved (ordered by id), so two workers cannot both take the
last slot of a queue.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db.models import ExecutionRow, StepRunRow, TaskQueueRow
from turbocat.domain.enums import ExecutionStatus, StepStatus

Key = tuple[uuid.UUID, str]
"""(organization, queue name)."""

LIVE = (ExecutionStatus.RUNNING, ExecutionStatus.WAITING)


NAMES_TTL_SECONDS = 2.0
"""How long a process trusts its list of queue names that have rows (a new queue's limits
apply within this time)."""
_names: tuple[float, frozenset[str]] = (-1e9, frozenset())


async def _limited_names(session: AsyncSession) -> frozenset[str]:
    """Names of the queues that have a row anywhere (most queues have none: no limit)."""
    global _names
    checked, names = _names
    if time.monotonic() - checked < NAMES_TTL_SECONDS:
        return names
    names = frozenset((await session.execute(select(TaskQueueRow.name).distinct())).scalars())
    _names = (time.monotonic(), names)
    return names


async def may_be_limited(session: AsyncSession, name: str) -> bool:
    """Whether a queue row by this name exists somewhere (per the cached list)."""
    return name in await _limited_names(session)


def forget_names() -> None:
    """Look the queue names up again on next use (after a queue is created or deleted)."""
    global _names
    _names = (-1e9, frozenset())


async def rows_for(session: AsyncSession, keys: Iterable[Key]) -> dict[Key, TaskQueueRow]:
    """The queue row that applies to each (organization, name), locked; keys without one are
    left out (no limit)."""
    limited = await _limited_names(session)
    wanted = {key for key in keys if key[1] in limited}
    if not wanted:
        return {}
    names = sorted({name for _, name in wanted})
    orgs = sorted({org for org, _ in wanted})
    rows = (
        await session.execute(
            select(TaskQueueRow)
            .where(
                TaskQueueRow.name.in_(names),
                TaskQueueRow.organization_id.in_(orgs) | TaskQueueRow.organization_id.is_(None),
            )
            .order_by(TaskQueueRow.id)
            .with_for_update()
        )
    ).scalars()
    own: dict[Key, TaskQueueRow] = {}
    system: dict[str, TaskQueueRow] = {}
    for row in rows:
        if row.organization_id is None:
            system[row.name] = row
        else:
            own[(row.organization_id, row.name)] = row
    out: dict[Key, TaskQueueRow] = {}
    for key in wanted:
        applies = own.get(key) or system.get(key[1])
        if applies is not None:
            out[key] = applies
    return out


def _scope(row: TaskQueueRow, org_col: Any, queue_col: Any) -> list[Any]:
    """WHERE clauses for the work counted against ``row``."""
    if row.organization_id is not None:
        return [org_col == row.organization_id, queue_col == row.name]
    overriding = select(TaskQueueRow.organization_id).where(
        TaskQueueRow.name == row.name, TaskQueueRow.organization_id.is_not(None)
    )
    return [queue_col == row.name, org_col.not_in(overriding)]


def execution_scope(row: TaskQueueRow) -> list[Any]:
    """WHERE clauses for the executions counted against ``row``."""
    return _scope(row, ExecutionRow.organization_id, ExecutionRow.task_queue)


def execution_scope_clause(row: TaskQueueRow) -> Any:
    return and_(*execution_scope(row))


async def running_steps(session: AsyncSession, row: TaskQueueRow) -> int:
    where = _scope(row, StepRunRow.organization_id, StepRunRow.queue)
    stmt = select(func.count()).where(StepRunRow.status == StepStatus.RUNNING, *where)
    return int((await session.execute(stmt)).scalar_one())


async def live_executions(session: AsyncSession, row: TaskQueueRow) -> int:
    stmt = select(func.count()).where(ExecutionRow.status.in_(LIVE), *execution_scope(row))
    return int((await session.execute(stmt)).scalar_one())


async def within_activity_limits(
    session: AsyncSession, candidates: list[tuple[uuid.UUID, uuid.UUID, str]]
) -> list[uuid.UUID]:
    """The candidate step runs (id, organization, queue) that fit their queue's
    ``max_concurrent_activities``, in order."""
    rows = await rows_for(session, ((org, queue) for _, org, queue in candidates))
    if not rows:
        return [run_id for run_id, _, _ in candidates]
    free: dict[uuid.UUID, int] = {}
    for limited in {r.id: r for r in rows.values()}.values():
        free[limited.id] = limited.max_concurrent_activities - await running_steps(session, limited)
    taken = []
    for run_id, org, queue in candidates:
        row = rows.get((org, queue))
        if row is not None:
            if free[row.id] <= 0:
                continue
            free[row.id] -= 1
        taken.append(run_id)
    return taken
