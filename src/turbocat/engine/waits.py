"""Waits that end from outside: signals (``POST .../signals/{name}``), the work queues they
feed (seed 003), and the timeouts of both. A signal completes the steps waiting for it with its
payload; a work queue item goes to the step that has waited longest on its queue.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db.models import ExecutionRow, StepRunRow, step_status_is
from turbocat.domain import work_queues
from turbocat.domain.definitions import AgentStep, AnyStep, WaitStep, WorkQueueDef
from turbocat.domain.enums import StepStatus
from turbocat.domain.expressions import JSONValue
from turbocat.engine import children, store, work_items
from turbocat.engine.plan import Plan
from turbocat.engine.runner import StepFailure, StepOutcome

S = StepStatus


@dataclass(frozen=True)
class Delivery:
    """What a signal did."""

    delivered: int = 0
    """Steps that received it: signal waits (the payload is their output) and the queue wait
    that took it as a work item."""
    queued: bool = False
    """It was added to the work queue it feeds."""
    duplicate: bool = False
    """It was dropped: its deduplicating work queue holds an equal pending item."""


async def deliver_signal(
    session: AsyncSession,
    execution: ExecutionRow,
    plan: Plan,
    name: str,
    payload: JSONValue,
    now: dt.datetime,
    *,
    item: work_queues.NewItem | None = None,
) -> Delivery:
    """Complete the steps waiting for signal ``name`` with ``payload`` as their output. When
    ``name`` feeds a work queue, the payload is first added to it as ``item`` (checked by the
    caller; None: checked here), and the oldest step waiting on the queue takes it at once."""
    queued = duplicate = False
    delivered = 0
    queue = plan.work_queue_fed_by(name)
    if queue is not None:
        new = item or work_queues.new_item(queue, payload, ("payload",))
        execution = await store.locked_execution(session, execution.id)
        if new.dedupe_key is not None and await work_items.is_duplicate(
            session, execution.id, queue.name, new.dedupe_key
        ):
            duplicate = True
        else:
            pending = await work_items.pending_count(session, execution.id, queue.name)
            work_queues.check_room(queue, pending)
            await work_items.add(session, execution, queue, new, now)
            queued = True
            delivered += await _hand_out(session, execution, plan, queue, now)
    waiting = [
        key
        for key, step in plan.steps.items()
        if isinstance(step, WaitStep) and step.signal is not None and step.signal.name == name
    ]
    if not waiting:
        return Delivery(delivered, queued, duplicate)
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
    for run_id in rows:
        outcome = StepOutcome(output=payload)
        settled = await store.settle(session, run_id=run_id, outcome=outcome, now=now)
        if settled is not None:
            recorded = store.Recorded()
            await store.carry_on(session, *settled, None, plan, now, 0.5, recorded)
            await store.announce(session, recorded)
            delivered += 1
    return Delivery(delivered, queued, duplicate)


async def _hand_out(
    session: AsyncSession,
    execution: ExecutionRow,
    plan: Plan,
    queue: WorkQueueDef,
    now: dt.datetime,
) -> int:
    """The step that has waited longest on ``queue`` takes what is there, in queue order (the
    item just added, unless a wait was left due, see ``frames.TAKE_AT_ONCE``), and completes;
    1 if there was one."""
    keys = plan.waits_on_queue(queue.name)
    if not keys:
        return 0
    oldest = (
        await session.execute(
            select(StepRunRow.id, StepRunRow.step_key)
            .where(
                StepRunRow.execution_id == execution.id,
                StepRunRow.step_key.in_(keys),
                StepRunRow.status == S.WAITING,
            )
            .order_by(StepRunRow.started_at, StepRunRow.id)
            .limit(1)
        )
    ).first()
    if oldest is None:
        return 0
    step = plan.steps[oldest.step_key]
    assert isinstance(step, WaitStep)
    assert step.queue is not None
    items = await work_items.take(
        session, execution.id, queue, step.queue.max_items, oldest.id, now
    )
    settled = await store.settle(
        session,
        run_id=oldest.id,
        outcome=StepOutcome(output=items),
        now=now,
    )
    assert settled is not None  # the execution's lock keeps the wait as it was
    recorded = store.Recorded()
    await store.carry_on(session, *settled, None, plan, now, 0.5, recorded)
    await store.announce(session, recorded)
    return 1


async def due_signal_waits(
    session: AsyncSession, now: dt.datetime, limit: int = 100
) -> list[StepRunRow]:
    """Signal waits whose timeout has passed."""
    stmt = (
        select(StepRunRow)
        .where(step_status_is(S.WAITING), StepRunRow.scheduled_for <= now)
        .order_by(StepRunRow.scheduled_for)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def expire_signal_wait(
    session: AsyncSession, run: StepRunRow, plan: Plan, now: dt.datetime
) -> bool:
    """The signal (or work queue item) did not come in time: the step fails (its on_error
    decides what follows). A due wait on a work queue first takes what is there."""
    step = plan.steps[run.step_key]
    if isinstance(step, WaitStep) and step.queue is not None:
        return await _serve_queue_wait(session, run.id, step, plan, now)
    outcome = StepOutcome(failure=_wait_timeout(step))
    settled = await store.settle(session, run_id=run.id, outcome=outcome, now=now)
    if settled is None:
        return False
    recorded = store.Recorded()
    await store.carry_on(session, *settled, outcome.failure, plan, now, 0.5, recorded)
    await store.announce(session, recorded)
    if isinstance(step, AgentStep):  # a workflow step gave up on its child
        child_id = children.child_id(run)
        child = await session.get(ExecutionRow, child_id) if child_id else None
        if child is not None and child.status in store.LIVE:
            await store.close_child(session, settled[0], child, now)
    return True


async def _serve_queue_wait(
    session: AsyncSession, run_id: uuid.UUID, step: WaitStep, plan: Plan, now: dt.datetime
) -> bool:
    """A due wait on a work queue: it completes with the items pending (a wait left due when
    its transaction had completed enough of them, see ``frames.TAKE_AT_ONCE``), else fails
    once its timeout has passed, else waits on until then. True when it ended."""
    assert step.queue is not None
    execution_id = (
        await session.execute(select(StepRunRow.execution_id).where(StepRunRow.id == run_id))
    ).scalar_one_or_none()
    if execution_id is None:
        return False
    # locked: the wait cannot change under us
    execution = await store.locked_execution(session, execution_id)
    found = (
        await session.execute(
            select(StepRunRow.status, StepRunRow.started_at).where(StepRunRow.id == run_id)
        )
    ).one()
    if found.status != S.WAITING or found.started_at is None:
        return False
    queue = plan.work_queues[step.queue.name]
    items = await work_items.take(session, execution.id, queue, step.queue.max_items, run_id, now)
    timeout = step.queue.timeout_ms
    deadline = found.started_at + dt.timedelta(milliseconds=timeout) if timeout else None
    if not items and (deadline is None or deadline > now):
        await session.execute(
            update(StepRunRow)
            .where(StepRunRow.id == run_id, StepRunRow.status == S.WAITING)
            .values(scheduled_for=deadline, updated_at=now),
            execution_options={"synchronize_session": False},
        )
        return False
    outcome = StepOutcome(output=items) if items else StepOutcome(failure=_wait_timeout(step))
    settled = await store.settle(session, run_id=run_id, outcome=outcome, now=now)
    assert settled is not None  # still waiting: checked under the execution's lock
    recorded = store.Recorded()
    await store.carry_on(session, *settled, outcome.failure, plan, now, 0.5, recorded)
    await store.announce(session, recorded)
    return True


def _wait_timeout(step: AnyStep) -> StepFailure:
    if isinstance(step, AgentStep):  # a workflow step waiting for its child
        message = f"the child execution did not end within {step.timeout_ms} ms"
        return StepFailure("timeout", message)
    if isinstance(step, WaitStep) and step.queue is not None:
        message = f"no item of work queue {step.queue.name!r} arrived in time"
        return StepFailure("queue_timeout", message, False)
    name = step.signal.name if isinstance(step, WaitStep) and step.signal else "?"
    return StepFailure("signal_timeout", f"signal {name!r} did not arrive in time", False)
