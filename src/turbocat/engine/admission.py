"""Execution concurrency: a workflow version's ``max_concurrent_executions`` and its task
queue's ``max_concurrent_workflows`` bound the executions that run (or wait for a signal) at
once, across every API and worker process.

An execution started beyond a limit is stored ``pending`` without step runs, behind the ones
already pending; when a live one ends, the oldest pending ones that now fit are admitted in
the same transaction, and workers sweep now and then for any left behind.

Locks: starting locks the workflow row, then the queue row. A finishing transaction holds the
execution, locks its workflow row before the queue row when the queue may have limits (its
counters are updated as it commits), and takes the rows of *other* workflows and pending
executions with SKIP LOCKED, never waiting for them: so no two of these transactions wait on
each other in a cycle.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db.models import ExecutionRow, TaskQueueRow, WorkflowRow
from turbocat.domain.enums import ExecutionStatus
from turbocat.engine import queues

RUNNING = (ExecutionStatus.RUNNING, ExecutionStatus.WAITING)
BATCH = 50

Begin = Callable[[ExecutionRow, WorkflowRow], Awaitable[None]]
"""Starts an admitted execution: creates its first step runs."""


async def _workflow_is_full(
    session: AsyncSession, workflow_id: uuid.UUID, limit: int, *, before: ExecutionRow | None
) -> bool:
    """Whether the workflow runs ``limit`` executions already, or has pending ones ahead in
    line (all of them, without ``before``): one statement for both questions."""
    mine = ExecutionRow.workflow_id == workflow_id
    live = select(func.count()).where(mine, ExecutionRow.status.in_(RUNNING)).scalar_subquery()
    waiting = exists().where(mine, ExecutionRow.status == ExecutionStatus.PENDING, *_ahead(before))
    running, pending = (await session.execute(select(live, waiting))).one()
    return int(running) >= limit or bool(pending)


def _ahead(before: ExecutionRow | None) -> tuple[Any, ...]:
    """Pending executions ahead of ``before`` in line (all of them without it)."""
    if before is None:
        return ()
    return (
        (ExecutionRow.created_at < before.created_at)
        | ((ExecutionRow.created_at == before.created_at) & (ExecutionRow.id < before.id)),
    )


async def _queue_of(
    session: AsyncSession, organization_id: uuid.UUID, name: str
) -> TaskQueueRow | None:
    return (await queues.rows_for(session, [(organization_id, name)])).get((organization_id, name))


async def _pending_exist(session: AsyncSession, *where: Any, before: ExecutionRow | None) -> bool:
    stmt = select(ExecutionRow.id).where(
        ExecutionRow.status == ExecutionStatus.PENDING, *where, *_ahead(before)
    )
    return (await session.execute(stmt.limit(1))).first() is not None


async def _fits(
    session: AsyncSession,
    workflow: WorkflowRow,
    organization_id: uuid.UUID,
    queue_name: str,
    *,
    ahead_of: ExecutionRow | None = None,
) -> bool:
    limit = workflow.max_concurrent_executions
    if limit is not None and await _workflow_is_full(session, workflow.id, limit, before=ahead_of):
        return False
    queue = await _queue_of(session, organization_id, queue_name)
    if queue is None:
        return True
    if await queues.live_executions(session, queue) >= queue.max_concurrent_workflows:
        return False
    scope = queues.execution_scope(queue)
    return not await _pending_exist(session, *scope, before=ahead_of)


async def may_start(session: AsyncSession, workflow: WorkflowRow, queue_name: str) -> bool:
    """Whether a new execution of ``workflow`` on ``queue_name`` may run now (else it waits as
    pending, behind the ones already waiting)."""
    if workflow.max_concurrent_executions is not None:
        # Serializes the starts of a limited workflow; an unlimited one needs no lock (its
        # queue's limit, if any, locks the queue row), so starts never queue behind finishes.
        await session.execute(
            select(WorkflowRow.id).where(WorkflowRow.id == workflow.id).with_for_update()
        )
    return await _fits(session, workflow, workflow.organization_id, queue_name)


async def admit(session: AsyncSession, ended: ExecutionRow, now: dt.datetime, begin: Begin) -> int:
    """``ended`` stopped running: start the oldest pending executions of its workflow and of
    its task queue that now fit."""
    if await queues.may_be_limited(session, ended.task_queue):
        # the workflow row before the queue row, as starts take them
        await session.execute(
            select(WorkflowRow.id).where(WorkflowRow.id == ended.workflow_id).with_for_update()
        )
    queue = await _queue_of(session, ended.organization_id, ended.task_queue)
    related = [ExecutionRow.workflow_id == ended.workflow_id]
    if queue is not None:
        related.append(queues.execution_scope_clause(queue))
    return await _admit(session, or_(*related), now, begin)


async def sweep(session: AsyncSession, now: dt.datetime, begin: Begin) -> int:
    """Admit pending executions that fit, wherever they are (a safety net run by workers)."""
    return await _admit(session, ExecutionRow.status == ExecutionStatus.PENDING, now, begin)


async def _admit(session: AsyncSession, where: Any, now: dt.datetime, begin: Begin) -> int:
    candidates = (
        await session.execute(
            select(ExecutionRow)
            .where(ExecutionRow.status == ExecutionStatus.PENDING, where)
            .order_by(ExecutionRow.created_at, ExecutionRow.id)
            .limit(BATCH)
            .with_for_update(skip_locked=True)
        )
    ).scalars()
    admitted = 0
    for execution in list(candidates):
        workflow = (
            await session.execute(
                select(WorkflowRow)
                .where(WorkflowRow.id == execution.workflow_id)
                .with_for_update(skip_locked=True)
                .execution_options(include_deleted=True)
            )
        ).scalar_one_or_none()
        if workflow is None:  # busy elsewhere: a later release or sweep admits it
            continue
        fits = await _fits(
            session, workflow, execution.organization_id, execution.task_queue, ahead_of=execution
        )
        if fits:
            execution.status = ExecutionStatus.RUNNING
            execution.started_at, execution.updated_at = now, now
            await begin(execution, workflow)
            admitted += 1
    return admitted
