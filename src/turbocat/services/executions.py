"""Executions: start a run of a workflow version, read it with its steps, list, logs."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db import partitions
from turbocat.db.engine import after_commit
from turbocat.db.listing import PageRequest, apply_page
from turbocat.db.models import ExecutionLogRow, ExecutionRow, StepRunRow, WorkflowRow
from turbocat.domain import work_queues
from turbocat.domain.access import Principal
from turbocat.domain.definitions import WaitStep
from turbocat.domain.enums import (
    ExecutionResult,
    ExecutionStatus,
    LogLevel,
    StepStatus,
    TriggerType,
    WorkflowStatus,
)
from turbocat.domain.errors import Conflict, IdempotencyMismatch, NotFound
from turbocat.domain.expressions import compile_template
from turbocat.domain.ids import new_id_at
from turbocat.domain.jsonschemas import validate_instance
from turbocat.engine import admission, frames, store, waits, work_items
from turbocat.engine.plan import Plan, PlanCache
from turbocat.services import quotas, workflows

RUNNABLE = (WorkflowStatus.DRAFT, WorkflowStatus.ACTIVE)
"""Statuses in which a workflow may be run on demand (paused, inactive and archived may not)."""

_LEVELS = list(LogLevel)


@dataclass(frozen=True)
class ExecutionFilter:
    workflow_id: uuid.UUID | None = None
    status: ExecutionStatus | None = None
    trigger_type: TriggerType | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    parent_execution_id: uuid.UUID | None = None
    """Only the child executions this execution started."""


async def start(
    session: AsyncSession,
    principal: Principal,
    workflow_id: uuid.UUID,
    *,
    input_data: dict[str, Any],
    trigger_type: TriggerType,
    trigger_data: dict[str, Any] | None,
    plans: PlanCache,
    notify: Callable[[], None],
    now: dt.datetime,
    idempotency_key: str | None = None,
) -> ExecutionRow:
    """Create an execution of this exact version. It runs at once (its first steps are ready)
    unless the workflow already runs its ``max_concurrent_executions``: then it waits as
    ``pending`` and starts, in order, when a running one ends.

    With ``idempotency_key``, a second call with the same key and the same input returns the
    first execution (``Started.created`` false) and one with another input is refused (409)."""
    principal.require_access("executions", write=True)
    workflow = await workflows.get(session, principal, workflow_id)
    if workflow.organization_id != principal.organization_id:
        raise NotFound("workflow", workflow_id)
    started = await launch(
        session, workflow, input_data=input_data, trigger_type=trigger_type,
        trigger_data=trigger_data, plans=plans, notify=notify, now=now,
        user_id=principal.user_id, api_key_id=principal.api_key_id,
        idempotency_key=idempotency_key,
    )  # fmt: skip
    return started.execution


@dataclass(frozen=True)
class Started:
    execution: ExecutionRow
    created: bool
    """False when an earlier call with the same idempotency key made it."""


async def launch(
    session: AsyncSession,
    workflow: WorkflowRow,
    *,
    input_data: dict[str, Any],
    trigger_type: TriggerType,
    trigger_data: dict[str, Any] | None,
    plans: PlanCache,
    notify: Callable[[], None],
    now: dt.datetime,
    user_id: uuid.UUID | None = None,
    api_key_id: uuid.UUID | None = None,
    idempotency_key: str | None = None,
    input_path: tuple[str | int, ...] = ("body", "input"),
    parent_execution_id: uuid.UUID | None = None,
    parent_step_key: str | None = None,
) -> Started:
    """Start ``workflow`` (a version row the caller may run) for whoever the caller vouches
    for: a request, a webhook, an event, a schedule. Checks the status and the input schema
    before writing anything.

    ``idempotency_key`` is unique per (organization, workflow version): the same key with the
    same input returns the existing execution; another input is a 409. Two concurrent calls
    with one key make one execution: the loser's insert fails on the unique index inside a
    savepoint and it returns the winner's row."""
    if idempotency_key is not None:  # a retry gets the first answer, whatever changed since
        earlier = await _by_key(session, workflow, idempotency_key)
        if earlier is not None:
            return Started(_same_request(earlier, input_data), created=False)
    if workflow.status not in RUNNABLE:
        raise Conflict(f"a {workflow.status.value} workflow cannot be run; activate it first")
    plan = await plans.load(session, workflow)
    if plan.definition.inputs:
        validate_instance(input_data, plan.definition.inputs, input_path)
    execution = ExecutionRow(
        # Known before the insert (its first steps are added with it), and carrying ``now``:
        # the id picks the month partition on PostgreSQL and lists prune by it.
        id=new_id_at(now),
        organization_id=workflow.organization_id,
        workflow_id=workflow.id,
        user_id=user_id,
        api_key_id=api_key_id,
        status=ExecutionStatus.PENDING,
        trigger_type=trigger_type,
        trigger_data=trigger_data or {},
        input_data=input_data,
        output_data={},
        steps_total=0,  # set here, not by column defaults: the row is used before its insert
        steps_completed=0,
        steps_failed=0,
        result=ExecutionResult.PENDING,
        task_queue=plan.task_queue,
        idempotency_key=idempotency_key,
        parent_execution_id=parent_execution_id,
        parent_step_key=parent_step_key,
        created_at=now,
        updated_at=now,
    )
    await quotas.check_execution(session, workflow.organization_id, plans.quotas, now)
    runs_now = await admission.may_start(session, workflow, plan.task_queue)
    if idempotency_key is None:
        # No flush here: a start that runs now inserts the execution already running, with
        # its first steps, in one flush (no UPDATE of the row just inserted).
        session.add(execution)
    else:
        try:
            async with session.begin_nested():
                session.add(execution)
                await session.flush()
        except IntegrityError:
            # A concurrent call with the same key committed first (PostgreSQL made this
            # insert wait for it): answer with its execution.
            earlier = await _by_key(session, workflow, idempotency_key)
            if earlier is None:
                raise
            return Started(_same_request(earlier, input_data), created=False)
    if runs_now:
        await store.begin(session, execution, workflow, plan, now)
    else:
        store.log(session, execution, "queued: the workflow runs its maximum of "
                  f"{workflow.max_concurrent_executions} executions at once", now)  # fmt: skip
    # Last: on PostgreSQL the organization's usage row stays locked until the commit.
    await quotas.count_execution(session, workflow.organization_id, now)
    after_commit(session, notify)
    return Started(execution, created=True)


async def _by_key(session: AsyncSession, workflow: WorkflowRow, key: str) -> ExecutionRow | None:
    stmt = select(ExecutionRow).where(
        ExecutionRow.organization_id == workflow.organization_id,
        ExecutionRow.workflow_id == workflow.id,
        ExecutionRow.idempotency_key == key,
    )
    return (await session.execute(stmt)).scalar_one_or_none()


def _same_request(earlier: ExecutionRow, input_data: dict[str, Any]) -> ExecutionRow:
    if earlier.input_data != input_data:
        raise IdempotencyMismatch(
            "this Idempotency-Key was already used with a different request body "
            f"(execution {earlier.id}); use a new key for a new request"
        )
    return earlier


RERUNNABLE = (ExecutionStatus.FAILED, ExecutionStatus.TIMEOUT, ExecutionStatus.CANCELLED)


async def rerun(
    session: AsyncSession,
    principal: Principal,
    execution_id: uuid.UUID,
    *,
    plans: PlanCache,
    notify: Callable[[], None],
    now: dt.datetime,
) -> ExecutionRow:
    """A new execution of the same version and input that starts from the failed step: steps
    that completed keep their outputs and do not run again."""
    principal.require_access("executions", write=True)
    old = await get(session, principal, execution_id)
    if old.status not in RERUNNABLE:
        raise Conflict(
            "only failed, timed-out or cancelled executions can be re-run; "
            f"this one is {old.status.value}"
        )
    plan = await _plan(session, old, plans)
    await quotas.check_execution(session, old.organization_id, plans.quotas, now)
    previous = await frames.frame_runs(session, old.id, "")
    timeout = plan.definition.timeout_seconds
    execution = ExecutionRow(
        organization_id=old.organization_id,
        workflow_id=old.workflow_id,
        user_id=principal.user_id,
        api_key_id=principal.api_key_id,
        status=ExecutionStatus.RUNNING,
        trigger_type=old.trigger_type,
        trigger_data={"rerun_of": str(old.id)},
        input_data=old.input_data,
        output_data={},
        steps_total=0,
        task_queue=plan.task_queue,
        rerun_of_execution_id=old.id,
        started_at=now,
        timeout_at=now + dt.timedelta(seconds=timeout) if timeout else None,
        created_at=now,
        updated_at=now,
    )
    session.add(execution)
    await session.flush()
    store.log(session, execution, f"re-run of execution {old.id}", now)
    await store.create_rerun_runs(session, execution, previous, plan, now)
    await quotas.count_execution(session, execution.organization_id, now)
    after_commit(session, notify)
    return execution


async def cancel(
    session: AsyncSession,
    principal: Principal,
    execution_id: uuid.UUID,
    *,
    notify: Callable[[], None],
    now: dt.datetime,
) -> ExecutionRow:
    """Cancel a live execution; its running steps stop within a second."""
    principal.require_access("executions", write=True)
    execution = await get(session, principal, execution_id)
    # Expired, the row is reloaded by the engine's UPDATE ... RETURNING: the counters and the
    # execution.cancelled event it writes must see the new status, not the one read above.
    session.expire(execution)
    if not await store.cancel(session, execution_id, now, by=_who(principal)):
        await session.refresh(execution)
        raise Conflict(f"the execution is already {execution.status.value}")
    after_commit(session, notify)
    await session.refresh(execution)
    return execution


def _who(principal: Principal) -> str:
    return (
        f"api key {principal.api_key_id}" if principal.api_key_id else f"user {principal.user_id}"
    )


async def get(session: AsyncSession, principal: Principal, execution_id: uuid.UUID) -> ExecutionRow:
    principal.require_access("executions")
    row = await session.get(ExecutionRow, execution_id)
    if row is None or row.organization_id != principal.organization_id:
        raise NotFound("execution", execution_id)
    return row


async def step_runs(session: AsyncSession, execution: ExecutionRow) -> list[StepRunRow]:
    stmt = (
        select(StepRunRow)
        .where(StepRunRow.execution_id == execution.id)
        .order_by(StepRunRow.created_at, StepRunRow.step_key, StepRunRow.attempt)
    )
    return list((await session.execute(stmt)).scalars())


async def list_executions(
    session: AsyncSession, principal: Principal, filters: ExecutionFilter, page: PageRequest
) -> list[ExecutionRow]:
    principal.require_access("executions")
    stmt = select(ExecutionRow).where(ExecutionRow.organization_id == principal.organization_id)
    if filters.workflow_id is not None:
        lineage = await workflows.history(session, principal, filters.workflow_id)
        stmt = stmt.where(ExecutionRow.workflow_id.in_([w.id for w in lineage]))
    if filters.status is not None:
        stmt = stmt.where(ExecutionRow.status == filters.status)
    if filters.trigger_type is not None:
        stmt = stmt.where(ExecutionRow.trigger_type == filters.trigger_type)
    if filters.parent_execution_id is not None:
        stmt = stmt.where(ExecutionRow.parent_execution_id == filters.parent_execution_id)
    if filters.since is not None:
        stmt = stmt.where(ExecutionRow.created_at >= filters.since)
    if filters.until is not None:
        stmt = stmt.where(ExecutionRow.created_at < filters.until)
    # The same window on the id, which carries created_at: PostgreSQL then reads only the
    # months it spans (and, after a cursor, only the months before it).
    since, until = filters.since, filters.until
    at = page.cursor.created_at() if page.cursor is not None else None
    if at is not None and at.tzinfo is not None:
        if page.sort == "-created_at":
            at += dt.timedelta(microseconds=1)
            until = at if until is None else min(until, at)
        elif page.sort == "created_at":
            since = at if since is None else max(since, at)
    stmt = stmt.where(*partitions.created_window(ExecutionRow.id, since, until))
    stmt = apply_page(stmt, page, id_col=ExecutionRow.id, created_col=ExecutionRow.created_at)
    return list((await session.execute(stmt)).scalars())


async def logs(
    session: AsyncSession,
    principal: Principal,
    execution_id: uuid.UUID,
    *,
    min_level: LogLevel | None,
    after_id: uuid.UUID | None,
    limit: int,
) -> list[ExecutionLogRow]:
    """An execution's log lines, oldest first, at or above ``min_level``."""
    execution = await get(session, principal, execution_id)
    stmt = select(ExecutionLogRow).where(ExecutionLogRow.execution_id == execution.id)
    if min_level is not None:
        stmt = stmt.where(ExecutionLogRow.level.in_(_LEVELS[_LEVELS.index(min_level) :]))
    if after_id is not None:
        stmt = stmt.where(ExecutionLogRow.id > after_id)
    stmt = stmt.order_by(ExecutionLogRow.id).limit(limit)
    return list((await session.execute(stmt)).scalars())


async def _plan(session: AsyncSession, execution: ExecutionRow, plans: PlanCache) -> Plan:
    workflow = await session.get(WorkflowRow, execution.workflow_id)
    assert workflow is not None
    return await plans.load(session, workflow)


async def signal(
    session: AsyncSession,
    principal: Principal,
    execution_id: uuid.UUID,
    name: str,
    payload: Any,
    *,
    plans: PlanCache,
    notify: Callable[[], None],
    now: dt.datetime,
) -> waits.Delivery:
    """Deliver a declared signal: the steps waiting for it complete with ``payload``; when it
    feeds a work queue, the payload is added to the queue (unless it is a duplicate) and a step
    waiting on the queue takes it. 409 when nobody receives a plain signal, or the queue is
    full."""
    principal.require_access("executions", write=True)
    execution = await get(session, principal, execution_id)
    if execution.status not in store.LIVE:
        raise Conflict(f"the execution is already {execution.status.value}")
    plan = await _plan(session, execution, plans)
    declared = {s.name: s for s in plan.definition.signals}
    if name not in declared:
        raise NotFound(
            "signal", f"{name!r} (the workflow declares: {', '.join(declared) or 'none'})"
        )
    schema = declared[name].payload_schema
    if schema is not None:
        validate_instance(payload, schema, ("body", "payload"))
    queue = plan.work_queue_fed_by(name)
    item = work_queues.new_item(queue, payload, ("body", "payload")) if queue else None
    delivery = await waits.deliver_signal(session, execution, plan, name, payload, now, item=item)
    if delivery.delivered == 0 and queue is None:
        raise Conflict(f"no step of this execution is waiting for signal {name!r} now")
    after_commit(session, notify)
    return delivery


BUILTIN_QUERY = "state"


async def query(
    session: AsyncSession,
    principal: Principal,
    execution_id: uuid.UUID,
    name: str,
    *,
    plans: PlanCache,
) -> Any:
    """Read an execution's live state (the built-in ``state``) or a declared query; changes
    nothing."""
    execution = await get(session, principal, execution_id)
    plan = await _plan(session, execution, plans)
    runs = await frames.frame_runs(session, execution.id, "")
    if name == BUILTIN_QUERY:
        waiting = (
            await session.execute(
                select(StepRunRow.step_key).where(
                    StepRunRow.execution_id == execution.id,
                    StepRunRow.status == StepStatus.WAITING,
                )
            )
        ).scalars()
        sizes = await work_items.sizes(session, execution.id)
        return {
            "status": execution.status.value,
            "result": execution.result.value,
            "steps": {
                key: {"status": r.status.value, "attempt": r.attempt} for key, r in runs.items()
            },
            "waiting_for": sorted(
                {signal for key in waiting if (signal := _awaited_signal(plan, key)) is not None}
            ),
            "queues": {queue: sizes.get(queue, 0) for queue in plan.work_queues},
        }
    declared = {q.name: q for q in plan.definition.queries}
    if name not in declared:
        names = ", ".join([BUILTIN_QUERY, *declared])
        raise NotFound("query", f"{name!r} (available: {names})")
    queue = next((q for q in plan.work_queues.values() if q.query == name), None)
    if queue is not None:
        return {
            "name": queue.name,
            "order": queue.order.value,
            "size": await work_items.pending_count(session, execution.id, queue.name),
            "items": await work_items.pending(session, execution.id, queue),
        }
    expression = declared[name].expression
    assert expression is not None  # validation: only a work queue's query has none
    return compile_template(expression).render(frames.context_for(execution, plan, runs))


def _awaited_signal(plan: Plan, key: str) -> str | None:
    """The signal that would end this wait: its own, or the one feeding its work queue."""
    step = plan.steps[key]
    if not isinstance(step, WaitStep):
        return None
    if step.signal is not None:
        return step.signal.name
    if step.queue is not None:
        return plan.work_queues[step.queue.name].signal
    return None


async def find(
    session: AsyncSession, organization_id: uuid.UUID, execution_id: uuid.UUID
) -> ExecutionRow | None:
    """An execution of this organization, for callers that already proved their right to it
    (a request waiting on the execution it just started)."""
    row = await session.get(ExecutionRow, execution_id, populate_existing=True)
    return row if row is not None and row.organization_id == organization_id else None
