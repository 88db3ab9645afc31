"""Executions: start a run of a workflow version, read it with its steps, list, logs."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db import signals
from turbocat.db.engine import after_commit
from turbocat.db.listing import PageRequest, apply_page
from turbocat.db.models import ExecutionLogRow, ExecutionRow, StepRunRow, WorkflowRow
from turbocat.domain import progress
from turbocat.domain.access import Principal
from turbocat.domain.definitions import WaitStep
from turbocat.domain.enums import (
    ExecutionStatus,
    LogLevel,
    StepStatus,
    TriggerType,
    WorkflowStatus,
)
from turbocat.domain.errors import Conflict, NotFound
from turbocat.domain.expressions import compile_template
from turbocat.domain.jsonschemas import validate_instance
from turbocat.engine import store
from turbocat.engine.plan import Plan, PlanCache
from turbocat.services import workflows

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
) -> ExecutionRow:
    """Create a running execution of this exact version; its first steps are ready at once."""
    principal.require_access("executions", write=True)
    workflow = await workflows.get(session, principal, workflow_id)
    if workflow.organization_id != principal.organization_id:
        raise NotFound("workflow", workflow_id)
    if workflow.status not in RUNNABLE:
        raise Conflict(f"a {workflow.status.value} workflow cannot be run; activate it first")
    plan = plans.get(
        workflow.id, workflow.updated_at.isoformat(), workflow.definition, workflow.task_queue
    )
    if plan.definition.inputs:
        validate_instance(input_data, plan.definition.inputs, ("body", "input"))
    timeout = plan.definition.timeout_seconds or workflow.execution_timeout_seconds
    execution = ExecutionRow(
        organization_id=principal.organization_id,
        workflow_id=workflow.id,
        user_id=principal.user_id,
        api_key_id=principal.api_key_id,
        status=ExecutionStatus.RUNNING,
        trigger_type=trigger_type,
        trigger_data=trigger_data or {},
        input_data=input_data,
        output_data={},
        steps_total=len(plan.steps),
        task_queue=plan.task_queue,
        started_at=now,
        timeout_at=now + dt.timedelta(seconds=timeout) if timeout else None,
        created_at=now,
        updated_at=now,
    )
    session.add(execution)
    await session.flush()
    store.create_runs(session, execution, plan, now)
    store.log(session, execution, f"execution started ({trigger_type.value})", now)
    for queue in sorted({plan.queue_of(key) for key in progress.roots(plan.nodes)}):
        await signals.announce(session, signals.READY, queue)
    after_commit(session, notify)
    return execution


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
    previous = await store.latest_runs(session, old.id)
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
        steps_total=len(plan.steps),
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
    runs = store.create_rerun_runs(session, execution, previous, plan, now)
    queues = {r.queue for r in runs.values() if r.status == StepStatus.READY}
    for queue in sorted(queues):
        await signals.announce(session, signals.READY, queue)
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
    if not await store.cancel(session, execution.id, now, by=_who(principal)):
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
    if filters.since is not None:
        stmt = stmt.where(ExecutionRow.created_at >= filters.since)
    if filters.until is not None:
        stmt = stmt.where(ExecutionRow.created_at < filters.until)
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
    return plans.get(
        workflow.id, workflow.updated_at.isoformat(), workflow.definition, workflow.task_queue
    )


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
) -> int:
    """Deliver a declared signal: the steps waiting for it complete with ``payload``."""
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
    delivered = await store.deliver_signal(session, execution, plan, name, payload, now)
    if delivered == 0:
        raise Conflict(f"no step of this execution is waiting for signal {name!r} now")
    after_commit(session, notify)
    return delivered


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
    runs = await store.latest_runs(session, execution.id)
    if name == BUILTIN_QUERY:
        return {
            "status": execution.status.value,
            "result": execution.result.value,
            "steps": {
                key: {"status": r.status.value, "attempt": r.attempt} for key, r in runs.items()
            },
            "waiting_for": sorted(
                step.signal.name
                for key, step in plan.steps.items()
                if isinstance(step, WaitStep)
                and step.signal is not None
                and runs.get(key) is not None
                and runs[key].status == StepStatus.WAITING
            ),
        }
    declared = {q.name: q for q in plan.definition.queries}
    if name not in declared:
        names = ", ".join([BUILTIN_QUERY, *declared])
        raise NotFound("query", f"{name!r} (available: {names})")
    context = store.context_for(execution, plan, runs)
    return compile_template(declared[name].expression).render(context)
