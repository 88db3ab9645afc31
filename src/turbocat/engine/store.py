"""The engine's transactions over step_runs and executions.

Every transition is committed before it is acted on. Claiming takes ready rows with
``FOR UPDATE SKIP LOCKED`` (PostgreSQL; SQLite serializes writers) and bumps ``lease_epoch``;
recording an outcome is one transaction that is fenced on that epoch (a worker that lost its
lease cannot commit), decides retries, moves the graph forward, finishes the execution when
nothing is left, and writes logs and counters with it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db import signals
from turbocat.db.models import ExecutionLogRow, ExecutionRow, StepRunRow, WorkflowRow
from turbocat.domain import progress
from turbocat.domain.definitions import WaitStep
from turbocat.domain.enums import (
    ExecutionResult,
    ExecutionStatus,
    LogLevel,
    OnError,
    StepStatus,
    StepType,
)
from turbocat.domain.errors import ValidationFailed
from turbocat.domain.expressions import JSONValue, compile_template, render_value
from turbocat.domain.redaction import redact
from turbocat.domain.runs import Retry, execution_result
from turbocat.engine.plan import Plan
from turbocat.engine.runner import StepFailure, StepOutcome

S = StepStatus
DEFAULT_RETRY_ON_ERROR_RETRY = Retry(count=3)
"""``on_error: retry`` without a retry policy retries three times."""


def idempotency_key(execution_id: uuid.UUID, step_key: str, iteration: int) -> str:
    return f"{execution_id}:{step_key}:{iteration}"


def log(
    session: AsyncSession, execution: ExecutionRow, message: str, now: dt.datetime, *,
    level: LogLevel = LogLevel.INFO, run: StepRunRow | None = None, **metadata: Any,
) -> None:  # fmt: skip
    session.add(
        ExecutionLogRow(
            organization_id=execution.organization_id,
            execution_id=execution.id,
            step_run_id=run.id if run else None,
            level=level,
            message=message,
            metadata_=redact(metadata),
            step_key=run.step_key if run else None,
            step_status=run.status if run else None,
            step_started_at=run.started_at if run else None,
            step_completed_at=run.completed_at if run else None,
            step_duration_ms=run.duration_ms if run else None,
            created_at=now,
        )
    )


def create_runs(
    session: AsyncSession, execution: ExecutionRow, plan: Plan, now: dt.datetime
) -> dict[str, StepRunRow]:
    """One pending row per step; steps without dependencies are made ready at once."""
    roots = set(progress.roots(plan.nodes))
    context = context_for(execution, plan, {})
    runs: dict[str, StepRunRow] = {}
    for key, step in plan.steps.items():
        run = StepRunRow(
            organization_id=execution.organization_id,
            execution_id=execution.id,
            step_key=key,
            step_type=StepType(step.type),
            iteration=0,
            attempt=1,
            status=S.PENDING,
            queue=plan.queue_of(key),
            idempotency_key=idempotency_key(execution.id, key, 0),
            created_at=now,
            updated_at=now,
        )
        if key in roots:
            make_ready(run, plan, context, now)
        session.add(run)
        runs[key] = run
    refresh_status(execution, runs, now)
    return runs


def create_rerun_runs(
    session: AsyncSession,
    execution: ExecutionRow,
    previous: dict[str, StepRunRow],
    plan: Plan,
    now: dt.datetime,
) -> dict[str, StepRunRow]:
    """Rows for a re-run: steps that completed before keep their outputs (they do not run
    again); the rest start over from where the graph now stands."""
    runs: dict[str, StepRunRow] = {}
    for key, step in plan.steps.items():
        old = previous.get(key)
        reused = old is not None and old.status == S.COMPLETED
        run = StepRunRow(
            organization_id=execution.organization_id,
            execution_id=execution.id,
            step_key=key,
            step_type=StepType(step.type),
            iteration=0,
            attempt=1,
            status=S.COMPLETED if reused else S.PENDING,
            input=old.input if reused and old else None,
            output=old.output if reused and old else None,
            queue=plan.queue_of(key),
            idempotency_key=idempotency_key(execution.id, key, 0),
            completed_at=now if reused else None,
            duration_ms=0 if reused else None,
            created_at=now,
            updated_at=now,
        )
        session.add(run)
        runs[key] = run
        if reused:
            execution.steps_completed += 1
            log(session, execution, f"step {key} reused from the previous execution", now, run=run)
    decision = progress.advance(plan.nodes, states_of(runs))
    context = context_for(execution, plan, runs)
    for key in decision.ready:
        make_ready(runs[key], plan, context, now)
    for key in decision.skipped:
        runs[key].status, runs[key].completed_at = S.SKIPPED, now
    refresh_status(execution, runs, now)
    return runs


async def claim(
    session: AsyncSession, *, worker_id: str, queues: Sequence[str], limit: int,
    now: dt.datetime, lease: dt.timedelta,
) -> list[StepRunRow]:  # fmt: skip
    """Take up to ``limit`` ready rows of ``queues`` whose time has come, oldest first."""
    if limit <= 0:
        return []
    ids = (
        (
            await session.execute(
                select(StepRunRow.id)
                .where(
                    StepRunRow.status == S.READY,
                    StepRunRow.queue.in_(list(queues)),
                    StepRunRow.scheduled_for <= now,
                )
                .order_by(StepRunRow.scheduled_for, StepRunRow.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        .scalars()
        .all()
    )
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
        execution_options={"synchronize_session": False},
    )
    return list(result.scalars().all())


async def latest_runs(session: AsyncSession, execution_id: uuid.UUID) -> dict[str, StepRunRow]:
    """The latest attempt of every step of an execution."""
    rows = (
        await session.execute(
            select(StepRunRow)
            .where(StepRunRow.execution_id == execution_id)
            .order_by(StepRunRow.step_key, StepRunRow.attempt)
        )
    ).scalars()
    return {row.step_key: row for row in rows}


def _branch(run: StepRunRow) -> str | None:
    """The label a completed condition chose."""
    if run.step_type != StepType.CONDITION or not isinstance(run.output, dict):
        return None
    label = run.output.get("label")
    return label if isinstance(label, str) else None


def states_of(runs: dict[str, StepRunRow]) -> dict[str, progress.State]:
    return {key: progress.State(run.status, _branch(run)) for key, run in runs.items()}


def context_for(
    execution: ExecutionRow, plan: Plan, runs: dict[str, StepRunRow]
) -> dict[str, JSONValue]:
    """What expressions of a step see: input, finished steps, vars, the execution."""
    steps: dict[str, JSONValue] = {
        key: {"output": run.output, "status": run.status.value, "error": run.error}
        for key, run in runs.items()
        if run.status in (S.COMPLETED, S.FAILED)
    }
    return {
        "input": execution.input_data,
        "steps": steps,
        "vars": plan.definition.vars,
        "execution": {
            "id": str(execution.id),
            "workflow_id": str(execution.workflow_id),
            "started_at": execution.started_at.isoformat() if execution.started_at else None,
            "trigger_type": execution.trigger_type.value,
        },
    }


def _retry_policy(plan: Plan, key: str) -> Retry | None:
    step = plan.steps[key]
    if step.retry is not None and step.retry.count > 0:
        r = step.retry
        return Retry(
            r.count, r.delay_ms, r.backoff.value == "exponential", r.max_delay_ms, r.jitter
        )
    if step.on_error.value == OnError.RETRY.value:
        return DEFAULT_RETRY_ON_ERROR_RETRY
    return None


@dataclass
class Recorded:
    """What recording an outcome did, for the worker (wake others, stats)."""

    lost_lease: bool = False
    made_ready: int = 0
    finished: bool = False


async def record_outcome(
    session: AsyncSession,
    *,
    run_id: uuid.UUID,
    epoch: int,
    outcome: StepOutcome,
    plan: Plan,
    now: dt.datetime,
    rand: float,
) -> Recorded:
    """Commit a step's result and everything that follows from it, or nothing if the lease
    was lost (the row was given to another worker or the execution ended)."""
    run = await _settle(
        session,
        StepRunRow.lease_epoch == epoch,
        StepRunRow.status == S.RUNNING,
        run_id=run_id,
        outcome=outcome,
        now=now,
    )
    if run is None:
        return Recorded(lost_lease=True)
    return await after_step(session, run, outcome, plan, now, rand)


async def _settle(
    session: AsyncSession, *fence: Any, run_id: uuid.UUID, outcome: StepOutcome, now: dt.datetime
) -> StepRunRow | None:
    """Write a step run's final state if ``fence`` still holds; None when it does not."""
    failure = outcome.failure
    started = (
        await session.execute(select(StepRunRow.started_at).where(StepRunRow.id == run_id))
    ).scalar()
    duration = int((now - started).total_seconds() * 1000) if started else None
    fenced = await session.execute(
        update(StepRunRow)
        .where(StepRunRow.id == run_id, *fence)
        .values(
            status=S.FAILED if failure else S.COMPLETED,
            output=None if failure else outcome.output,
            input=redact(outcome.rendered_input) if outcome.rendered_input is not None else None,
            error=redact(failure.as_json()) if failure else None,
            completed_at=now,
            duration_ms=duration,
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
        )
        .returning(StepRunRow),
        execution_options={"synchronize_session": False},
    )
    return fenced.scalars().one_or_none()


async def after_step(
    session: AsyncSession,
    run: StepRunRow,
    outcome: StepOutcome,
    plan: Plan,
    now: dt.datetime,
    rand: float,
) -> Recorded:
    """Everything that follows a step's result: retry, graph advance, execution end."""
    failure = outcome.failure
    execution = (
        await session.execute(
            select(ExecutionRow).where(ExecutionRow.id == run.execution_id).with_for_update()
        )
    ).scalar_one()
    recorded = Recorded()
    fatal = False
    if failure is None:
        execution.steps_completed += 1
        log(session, execution, f"step {run.step_key} completed", now, run=run)
    else:
        delay = _retry_delay(plan, run, failure, rand)
        if delay is not None:
            _schedule_retry(session, run, now + dt.timedelta(milliseconds=delay))
            log(
                session,
                execution,
                f"step {run.step_key} failed, retry in {delay} ms: {failure.message}",
                now,
                level=LogLevel.WARN,
                run=run,
                attempt=run.attempt,
                error=failure.as_json(),
            )
            return Recorded(made_ready=1)
        execution.steps_failed += 1
        log(session, execution, f"step {run.step_key} failed: {failure.message}", now,
            level=LogLevel.ERROR, run=run, error=failure.as_json())  # fmt: skip
        fatal = plan.steps[run.step_key].on_error.value != OnError.CONTINUE.value
    runs = await latest_runs(session, execution.id)
    if fatal:
        await _end_others(session, execution.id, now)
        await _finish(session, execution, plan, runs, now, failed_step=run, failure=failure)
        recorded.finished = True
        return recorded
    decision = progress.advance(plan.nodes, states_of(runs))
    context = context_for(execution, plan, runs) if decision.ready else {}
    for key in decision.ready:
        make_ready(runs[key], plan, context, now)
    for key in decision.skipped:
        runs[key].status, runs[key].completed_at, runs[key].updated_at = S.SKIPPED, now, now
    recorded.made_ready = len(decision.ready)
    for queue in sorted({runs[key].queue for key in decision.ready}):
        await signals.announce(session, signals.READY, queue)
    if progress.finished(states_of(runs), plan.nodes):
        await _finish(session, execution, plan, runs, now)
        recorded.finished = True
    else:
        refresh_status(execution, runs, now)
    return recorded


def refresh_status(execution: ExecutionRow, runs: dict[str, StepRunRow], now: dt.datetime) -> None:
    """``waiting`` while a step waits for a signal and none is ready or running (steps still
    pending behind the wait do not count), else ``running``."""
    statuses = {r.status for r in runs.values()}
    waiting = S.WAITING in statuses and not statuses & {S.READY, S.RUNNING}
    status = ExecutionStatus.WAITING if waiting else ExecutionStatus.RUNNING
    if execution.status != status:
        execution.status = status
        execution.updated_at = now


async def deliver_signal(
    session: AsyncSession,
    execution: ExecutionRow,
    plan: Plan,
    name: str,
    payload: JSONValue,
    now: dt.datetime,
) -> int:
    """Complete the steps waiting for signal ``name`` with ``payload`` as their output."""
    waiting = [
        key
        for key, step in plan.steps.items()
        if isinstance(step, WaitStep) and step.signal is not None and step.signal.name == name
    ]
    if not waiting:
        return 0
    rows = (
        (
            await session.execute(
                select(StepRunRow.id).where(
                    StepRunRow.execution_id == execution.id,
                    StepRunRow.step_key.in_(waiting),
                    StepRunRow.status == S.WAITING,
                )
            )
        )
        .scalars()
        .all()
    )
    delivered = 0
    for run_id in rows:
        outcome = StepOutcome(output=payload)
        run = await _settle(
            session, StepRunRow.status == S.WAITING, run_id=run_id, outcome=outcome, now=now
        )
        if run is not None:
            await after_step(session, run, outcome, plan, now, 0.5)
            delivered += 1
    return delivered


async def due_signal_waits(
    session: AsyncSession, now: dt.datetime, limit: int = 100
) -> list[StepRunRow]:
    """Signal waits whose timeout has passed."""
    stmt = (
        select(StepRunRow)
        .where(StepRunRow.status == S.WAITING, StepRunRow.scheduled_for <= now)
        .order_by(StepRunRow.scheduled_for)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def expire_signal_wait(
    session: AsyncSession, run: StepRunRow, plan: Plan, now: dt.datetime
) -> bool:
    """The signal did not come in time: the step fails (its on_error decides what follows)."""
    step = plan.steps[run.step_key]
    name = step.signal.name if isinstance(step, WaitStep) and step.signal else "?"
    outcome = StepOutcome(
        failure=StepFailure("signal_timeout", f"signal {name!r} did not arrive in time", False)
    )
    settled = await _settle(
        session, StepRunRow.status == S.WAITING, run_id=run.id, outcome=outcome, now=now
    )
    if settled is None:
        return False
    await after_step(session, settled, outcome, plan, now, 0.5)
    return True


def make_ready(
    run: StepRunRow, plan: Plan, context: dict[str, JSONValue], now: dt.datetime
) -> None:
    """A step's dependencies are satisfied: it becomes ready now, ready at a later instant
    (a timed wait), or waiting for a signal (until its timeout, if any)."""
    step = plan.steps[run.step_key]
    run.updated_at = now
    if not isinstance(step, WaitStep):
        run.status, run.scheduled_for = S.READY, now
        return
    if step.signal is not None:
        run.status = S.WAITING
        timeout = step.signal.timeout_ms
        run.scheduled_for = now + dt.timedelta(milliseconds=timeout) if timeout else None
        return
    run.status, run.scheduled_for = S.READY, wait_until(step, context, now)


def wait_until(step: WaitStep, context: dict[str, JSONValue], now: dt.datetime) -> dt.datetime:
    """When a timed wait is over (now when its ``until`` cannot be read: the run reports why)."""
    if step.duration_ms is not None:
        return now + dt.timedelta(milliseconds=step.duration_ms)
    try:
        value = compile_template(step.until or "").render(context)
        instant = dt.datetime.fromisoformat(str(value))
    except (ValueError, ValidationFailed):
        return now
    return instant if instant.tzinfo is not None else now


def _retry_delay(plan: Plan, run: StepRunRow, failure: StepFailure, rand: float) -> int | None:
    policy = _retry_policy(plan, run.step_key)
    if policy is None or not failure.retryable:
        return None
    return policy.delay_before(run.attempt + 1, rand)


def _schedule_retry(session: AsyncSession, run: StepRunRow, at: dt.datetime) -> None:
    session.add(
        StepRunRow(
            organization_id=run.organization_id,
            execution_id=run.execution_id,
            step_key=run.step_key,
            step_type=run.step_type,
            iteration=run.iteration,
            attempt=run.attempt + 1,
            status=S.READY,
            agent_id=run.agent_id,
            queue=run.queue,
            idempotency_key=run.idempotency_key,
            scheduled_for=at,
            created_at=at,
            updated_at=at,
        )
    )


async def _end_others(
    session: AsyncSession,
    execution_id: uuid.UUID,
    now: dt.datetime,
    *,
    unstarted: StepStatus = S.SKIPPED,
) -> None:
    """The execution ended early: steps not yet run become ``unstarted`` (skipped after a
    failure, cancelled on cancellation or timeout); running ones are cancelled, so their
    workers can no longer commit, and are told to stop."""
    base = update(StepRunRow).where(StepRunRow.execution_id == execution_id)
    await session.execute(
        base.where(StepRunRow.status.in_([S.PENDING, S.READY])).values(
            status=unstarted, updated_at=now
        ),
        execution_options={"synchronize_session": False},
    )
    await session.execute(
        base.where(StepRunRow.status.in_([S.RUNNING, S.WAITING])).values(
            status=S.CANCELLED, lease_owner=None, completed_at=now, updated_at=now
        ),
        execution_options={"synchronize_session": False},
    )
    await signals.announce(session, signals.CANCEL, str(execution_id))


async def _finish(
    session: AsyncSession,
    execution: ExecutionRow,
    plan: Plan,
    runs: dict[str, StepRunRow],
    now: dt.datetime,
    *,
    failed_step: StepRunRow | None = None,
    failure: StepFailure | None = None,
) -> None:
    outcomes = [r.status for r in runs.values()]
    if failed_step is not None and failure is not None:
        status = ExecutionStatus.FAILED
        execution.error_message = f"step {failed_step.step_key} failed: {failure.message}"
        execution.error_stack = failure.stack
    else:
        status = ExecutionStatus.COMPLETED
        try:
            context = context_for(execution, plan, runs)
            execution.output_data = {
                name: render_value(template, context)
                for name, template in plan.definition.outputs.items()
            }
        except Exception as exc:  # an outputs expression failed: the execution fails clearly
            status = ExecutionStatus.FAILED
            execution.error_message = f"outputs could not be computed: {exc}"
    execution.status = status
    execution.result = execution_result(outcomes)
    execution.completed_at = now
    started = execution.started_at or execution.created_at
    execution.duration_ms = max(0, int((now - started).total_seconds() * 1000))
    execution.updated_at = now
    log(session, execution, f"execution {status.value} ({execution.result.value})", now,
        level=LogLevel.INFO if status == ExecutionStatus.COMPLETED else LogLevel.ERROR)  # fmt: skip
    await _count(session, execution, now)


async def _count(session: AsyncSession, execution: ExecutionRow, now: dt.datetime) -> None:
    """Workflow counters, updated atomically in the finishing transaction."""
    ok = execution.status == ExecutionStatus.COMPLETED
    failed = execution.status in (ExecutionStatus.FAILED, ExecutionStatus.TIMEOUT)
    duration = execution.duration_ms or 0
    total = WorkflowRow.total_executions
    await session.execute(
        update(WorkflowRow)
        .where(WorkflowRow.id == execution.workflow_id)
        .values(
            total_executions=total + 1,
            successful_executions=WorkflowRow.successful_executions + (1 if ok else 0),
            failed_executions=WorkflowRow.failed_executions + (1 if failed else 0),
            avg_execution_time_ms=func.round(
                (WorkflowRow.avg_execution_time_ms * 1.0 * total + duration) / (total + 1)
            ),
            last_execution_at=now,
        ),
        execution_options={"synchronize_session": False},
    )


LIVE = (ExecutionStatus.PENDING, ExecutionStatus.RUNNING, ExecutionStatus.WAITING)


async def _claim_end(
    session: AsyncSession, execution_id: uuid.UUID, status: ExecutionStatus, now: dt.datetime
) -> ExecutionRow | None:
    """Move a live execution to a terminal ``status``; None when another process ended it."""
    ended = await session.execute(
        update(ExecutionRow)
        .where(ExecutionRow.id == execution_id, ExecutionRow.status.in_(LIVE))
        .values(status=status, completed_at=now, updated_at=now)
        .returning(ExecutionRow),
        execution_options={"synchronize_session": False},
    )
    return ended.scalars().one_or_none()


async def cancel(
    session: AsyncSession, execution_id: uuid.UUID, now: dt.datetime, *, by: str
) -> bool:
    """Cancel a live execution: unstarted steps are cancelled, running ones told to stop."""
    execution = await _claim_end(session, execution_id, ExecutionStatus.CANCELLED, now)
    if execution is None:
        return False
    await _end_others(session, execution.id, now, unstarted=S.CANCELLED)
    execution.result = ExecutionResult.CANCELLED
    execution.cancel_requested_at = now
    execution.error_message = f"cancelled by {by}"
    _close(session, execution, now)
    await _count(session, execution, now)
    return True


async def expire_timeouts(session: AsyncSession, now: dt.datetime, limit: int = 100) -> int:
    """Executions past their time limit become ``timeout``; what runs is cancelled."""
    due = (
        (
            await session.execute(
                select(ExecutionRow.id)
                .where(ExecutionRow.status.in_(LIVE), ExecutionRow.timeout_at < now)
                .order_by(ExecutionRow.timeout_at)
                .limit(limit)
            )
        )
        .scalars()
        .all()
    )
    expired = 0
    for execution_id in due:
        execution = await _claim_end(session, execution_id, ExecutionStatus.TIMEOUT, now)
        if execution is None:
            continue
        await _end_others(session, execution.id, now, unstarted=S.CANCELLED)
        execution.result = ExecutionResult.FAILURE
        execution.error_message = "the execution exceeded its time limit"
        _close(session, execution, now)
        await _count(session, execution, now)
        expired += 1
    return expired


def _close(session: AsyncSession, execution: ExecutionRow, now: dt.datetime) -> None:
    started = execution.started_at or execution.created_at
    execution.duration_ms = max(0, int((now - started).total_seconds() * 1000))
    log(session, execution, f"execution {execution.status.value}: {execution.error_message}", now,
        level=LogLevel.WARN)  # fmt: skip


async def next_due(
    session: AsyncSession, queues: Sequence[str], now: dt.datetime
) -> dt.datetime | None:
    """The next instant something becomes due: a delayed ready step (a retry or a timed wait)
    of ``queues``, or the timeout of a signal wait."""
    ready = select(func.min(StepRunRow.scheduled_for)).where(
        StepRunRow.status == S.READY,
        StepRunRow.queue.in_(list(queues)),
        StepRunRow.scheduled_for > now,
    )
    waits = select(func.min(StepRunRow.scheduled_for)).where(StepRunRow.status == S.WAITING)
    due = [(await session.execute(query)).scalar() for query in (ready, waits)]
    return min((d for d in due if d is not None), default=None)
