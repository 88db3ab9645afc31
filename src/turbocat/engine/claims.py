"""What a worker takes: ready step runs of its queues, leased to it within the agents' and
task queues' limits, and the next instant something becomes due when nothing is ready.

Claiming takes ready rows with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL; SQLite serializes
writers) and bumps ``lease_epoch``, which fences the outcome the worker records later.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db.models import AgentRow, StepRunRow, step_status_is
from turbocat.db.types import UTCDateTime
from turbocat.domain.enums import StepStatus
from turbocat.engine.queues import within_activity_limits

S = StepStatus


async def claim(
    session: AsyncSession, *, worker_id: str, queues: Sequence[str], limit: int,
    now: dt.datetime, lease: dt.timedelta, execution_id: uuid.UUID | None = None,
    also: Sequence[Any] = (),
) -> list[StepRunRow]:  # fmt: skip
    """Take up to ``limit`` ready rows of ``queues`` whose time has come, oldest first (of
    one execution only, when ``execution_id`` is given; ``also``: more WHERE clauses)."""
    if limit <= 0:
        return []
    only = () if execution_id is None else (StepRunRow.execution_id == execution_id,)
    candidates = (
        await session.execute(
            select(StepRunRow.id, StepRunRow.agent_id, StepRunRow.organization_id, StepRunRow.queue)
            .where(
                step_status_is(S.READY),
                StepRunRow.queue.in_(list(queues)),
                StepRunRow.scheduled_for <= now,
                *only,
                *also,
            )
            .order_by(StepRunRow.scheduled_for, StepRunRow.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    return await _take(session, [tuple(row) for row in candidates], worker_id, now, lease)


async def claim_made_ready(
    session: AsyncSession, rows: Sequence[StepRunRow], *, worker_id: str,
    queues: Sequence[str], limit: int, now: dt.datetime, lease: dt.timedelta,
) -> list[StepRunRow]:  # fmt: skip
    """Like ``claim``, for rows this transaction just made ready (so it holds their locks and
    knows them): no search for candidates, and no statement of its own: the rows go out
    running with the flush that writes them ready (nobody else can see them ready)."""
    due = [
        run
        for run in rows
        if run.status == S.READY
        and run.queue in queues
        and run.scheduled_for is not None
        and run.scheduled_for <= now
    ][:limit]
    if not due:
        return []
    ids = set(
        await _fitting(session, [(r.id, r.agent_id, r.organization_id, r.queue) for r in due])
    )
    taken = [run for run in due if run.id in ids]
    for run in taken:
        run.status, run.lease_owner, run.lease_expires_at = S.RUNNING, worker_id, now + lease
        run.lease_epoch = (run.lease_epoch or 0) + 1
        run.started_at = run.updated_at = now
    return taken


async def claim_pending(
    session: AsyncSession, *, execution_id: uuid.UUID, organization_id: uuid.UUID, scope: str,
    step_key: str, agent_id: uuid.UUID | None, queue: str, worker_id: str, now: dt.datetime,
    lease: dt.timedelta,
) -> StepRunRow | None:  # fmt: skip
    """Take the pending run of ``step_key`` in a frame straight to running for ``worker_id``,
    in one statement, when the caller knows it is due now (its one dependency just completed)
    and it fits its agent's and task queue's limits; None when it does not fit or is no
    longer pending (nothing was changed then)."""
    if not await _fitting(session, [(step_key, agent_id, organization_id, queue)]):
        return None
    params = {
        "of_execution": execution_id, "in_scope": scope, "of_step": step_key, "now": now,
        "owner": worker_id, "expires": now + lease,
    }  # fmt: skip
    taken = await session.execute(
        _CLAIM_PENDING,
        params,
        execution_options={"synchronize_session": False, "populate_existing": True},
    )
    return taken.scalars().one_or_none()


_CLAIM_PENDING = (
    update(StepRunRow)
    .where(
        StepRunRow.execution_id == bindparam("of_execution"),
        StepRunRow.scope == bindparam("in_scope"),
        StepRunRow.step_key == bindparam("of_step"),
        step_status_is(S.PENDING),
    )
    .values(
        status=S.RUNNING,
        scheduled_for=bindparam("now", type_=UTCDateTime),
        lease_owner=bindparam("owner"),
        lease_expires_at=bindparam("expires", type_=UTCDateTime),
        lease_epoch=StepRunRow.lease_epoch + 1,
        started_at=bindparam("now", type_=UTCDateTime),
        updated_at=bindparam("now", type_=UTCDateTime),
    )
    .returning(StepRunRow)
)


async def _take(
    session: AsyncSession,
    candidates: Sequence[tuple[Any, ...]],
    worker_id: str,
    now: dt.datetime,
    lease: dt.timedelta,
) -> list[StepRunRow]:
    """Lease the candidates ``(id, agent_id, organization_id, queue)`` that fit the agent and
    task queue limits to ``worker_id``."""
    if not candidates:
        return []
    ids = await _fitting(session, candidates)
    if not ids:
        return []
    result = await session.execute(
        update(StepRunRow)
        .where(StepRunRow.id.in_(ids), StepRunRow.status == S.READY)
        .values(
            status=S.RUNNING,
            lease_owner=worker_id,
            lease_expires_at=now + lease,
            lease_epoch=StepRunRow.lease_epoch + 1,
            started_at=now,
            updated_at=now,
        )
        .returning(StepRunRow),
        # the rows may already be loaded in this transaction (chaining): refresh them
        execution_options={"synchronize_session": False, "populate_existing": True},
    )
    return list(result.scalars().all())


async def _fitting(session: AsyncSession, candidates: Sequence[tuple[Any, ...]]) -> list[Any]:
    """The candidates ``(id, agent_id, organization_id, queue)`` that fit their agent's and
    their task queue's limits, in order."""
    fit = set(await _within_agent_limits(session, [(row[0], row[1]) for row in candidates]))
    return await within_activity_limits(
        session, [(row[0], row[2], row[3]) for row in candidates if row[0] in fit]
    )


async def _within_agent_limits(
    session: AsyncSession, candidates: list[tuple[uuid.UUID, uuid.UUID | None]]
) -> list[uuid.UUID]:
    """The candidates whose saved agent is below its ``max_concurrent_executions``, counting
    the runs of that agent already running anywhere. Locking the agents' rows serializes the
    claims of one agent across workers, so two of them cannot both take its last slot."""
    agents = sorted({agent for _, agent in candidates if agent is not None})
    limits: dict[uuid.UUID, int] = {}
    if agents:
        rows = await session.execute(
            select(AgentRow.id, AgentRow.max_concurrent_executions)
            .where(AgentRow.id.in_(agents), AgentRow.max_concurrent_executions.is_not(None))
            .order_by(AgentRow.id)
            .with_for_update()
            .execution_options(include_deleted=True)
        )
        limits = {agent: int(limit) for agent, limit in rows.all() if limit is not None}
    if not limits:
        return [run_id for run_id, _ in candidates]
    running: dict[uuid.UUID | None, int] = dict(
        (
            await session.execute(
                select(StepRunRow.agent_id, func.count())
                .where(StepRunRow.status == S.RUNNING, StepRunRow.agent_id.in_(list(limits)))
                .group_by(StepRunRow.agent_id)
            )
        ).all()
    )
    taken: list[uuid.UUID] = []
    for run_id, agent in candidates:
        if agent is not None and agent in limits:
            if running.get(agent, 0) >= limits[agent]:
                continue
            running[agent] = running.get(agent, 0) + 1
        taken.append(run_id)
    return taken


async def next_due(
    session: AsyncSession, queues: Sequence[str], now: dt.datetime
) -> dt.datetime | None:
    """The next instant something becomes due: a delayed ready step (a retry or a timed wait)
    of ``queues``, or the timeout of a signal wait."""
    due = (await session.execute(_NEXT_DUE, {"queues": list(queues), "now": now})).one()
    return min((d for d in due if d is not None), default=None)


_NEXT_DUE = select(  # one round trip; built once (every idle tick runs it)
    select(func.min(StepRunRow.scheduled_for))
    .where(
        step_status_is(S.READY),
        StepRunRow.queue.in_(bindparam("queues", expanding=True)),
        StepRunRow.scheduled_for > bindparam("now"),
    )
    .scalar_subquery(),
    select(func.min(StepRunRow.scheduled_for)).where(step_status_is(S.WAITING)).scalar_subquery(),
)
