"""The engine's transactions over step_runs and executions.

Every transition is committed before it is acted on. Recording an outcome is one transaction
that is fenced on the lease epoch the claim gave (``claims``: a worker that lost its lease
cannot commit), decides retries, moves the graph forward, finishes the execution when nothing
is left, and writes logs and counters with it. Starting, cancelling and timing out executions
live here too; the waits that end from outside (signals, work queues) are in ``waits``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, assert_never, cast

from sqlalchemy import Integer, bindparam, func, inspect, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db import signals
from turbocat.db.engine import at_commit
from turbocat.db.models import (
    ExecutionRow,
    StepRunRow,
    WorkflowRow,
    step_status_is,
)
from turbocat.db.types import GUID, UTCDateTime
from turbocat.domain import progress
from turbocat.domain.enums import (
    ExecutionResult,
    ExecutionStatus,
    LogLevel,
    OnError,
    ParentClosePolicy,
    StepStatus,
    StepType,
)
from turbocat.domain.expressions import JSONValue, render_value
from turbocat.domain.redaction import redact
from turbocat.domain.runs import Retry, result_of
from turbocat.engine import activity, admission, children, claims, execution_log, frames, queues
from turbocat.engine.plan import Plan, PlanCache
from turbocat.engine.platform import LogLine
from turbocat.engine.runner import StepFailure, StepOutcome
from turbocat.services import outbox

S = StepStatus
DEFAULT_RETRY_ON_ERROR_RETRY = Retry(count=3)
"""``on_error: retry`` without a retry policy retries three times."""


def log(
    session: AsyncSession, execution: ExecutionRow, message: str, now: dt.datetime, *,
    level: LogLevel = LogLevel.INFO, run: StepRunRow | None = None, **metadata: Any,
) -> None:  # fmt: skip
    execution_log.add(
        session, organization_id=execution.organization_id, execution_id=execution.id,
        message=message, at=now, level=level, run=run, run_id=run.id if run else None,
        metadata=metadata,
    )  # fmt: skip


async def begin(
    session: AsyncSession,
    execution: ExecutionRow,
    workflow: WorkflowRow,
    plan: Plan,
    now: dt.datetime,
) -> None:
    """Start an admitted execution: its clock starts and its first steps are made ready."""
    timeout = plan.definition.timeout_seconds or workflow.execution_timeout_seconds
    execution.status = ExecutionStatus.RUNNING
    execution.started_at, execution.updated_at = now, now
    execution.timeout_at = now + dt.timedelta(seconds=timeout) if timeout else None
    log(session, execution, f"execution started ({execution.trigger_type.value})", now)
    await create_runs(session, execution, plan, now)


_PLANS = PlanCache()


def _starter(session: AsyncSession, now: dt.datetime) -> admission.Begin:
    async def start(queued: ExecutionRow, workflow: WorkflowRow) -> None:
        plan = await _PLANS.load(session, workflow)
        await begin(session, queued, workflow, plan, now)

    return start


async def _release(session: AsyncSession, execution: ExecutionRow, now: dt.datetime) -> None:
    """An execution stopped running: pending executions of its workflow or queue may start."""
    await admission.admit(session, execution, now, _starter(session, now))


async def admit_pending(session: AsyncSession, now: dt.datetime) -> int:
    """Start any pending executions that fit their limits (workers run this now and then)."""
    return await admission.sweep(session, now, _starter(session, now))


async def create_runs(
    session: AsyncSession, execution: ExecutionRow, plan: Plan, now: dt.datetime
) -> None:
    """The top-level frame: one pending run per step; steps without dependencies are made
    ready (loops and parallel steps open their bodies) and their queues told."""
    opening = frames.Opening()
    keys = list(plan.nodes[None])
    await frames.open_frame(session, execution, plan, keys, now, opening)
    recorded = Recorded()
    await _settle_opened(session, execution, plan, opening, now, recorded)
    await announce(session, recorded)
    await refresh_status(session, execution, plan, now)


async def create_rerun_runs(
    session: AsyncSession,
    execution: ExecutionRow,
    previous: dict[str, StepRunRow],
    plan: Plan,
    now: dt.datetime,
) -> None:
    """Runs for a re-run: top-level steps that completed before keep their outputs (they do
    not run again); the rest start over from where the graph now stands. A loop or parallel
    step that did not complete runs again as a whole."""
    runs: dict[str, StepRunRow] = {}
    for key in plan.nodes[None]:
        old = previous.get(key)
        run = frames.new_run(execution, plan, key, now)
        session.add(run)
        if old is not None and old.status == S.COMPLETED:
            run.status, run.input, run.output = S.COMPLETED, old.input, old.output
            run.completed_at, run.duration_ms = now, 0
            execution.steps_completed += 1
        runs[key] = run
    execution.steps_total += len(runs)
    await session.flush()  # the runs exist before the log lines that point at them
    for key, run in runs.items():
        if run.status == S.COMPLETED:
            log(session, execution, f"step {key} reused from the previous execution", now, run=run)
    decision = progress.advance(plan.nodes[None], states_of(runs))
    opening = frames.Opening()

    async def context() -> frames.Context:
        return frames.context_for(execution, plan, runs)

    for key in decision.skipped:
        runs[key].status, runs[key].completed_at = S.SKIPPED, now
    await frames.make_ready(
        session, execution, plan, [runs[k] for k in decision.ready], context, now, opening
    )
    recorded = Recorded()
    await _settle_opened(session, execution, plan, opening, now, recorded)
    await announce(session, recorded)
    if progress.finished(states_of(runs), plan.nodes[None]) and execution.status in LIVE:
        await _finish(session, execution, plan, runs, now)
    else:
        await refresh_status(session, execution, plan, now)


def states_of(runs: dict[str, StepRunRow]) -> dict[str, progress.State]:
    return {key: progress.State(run.status, frames.branch_of(run)) for key, run in runs.items()}


def _retry_policy(plan: Plan, key: str) -> Retry | None:
    """The step's policy; loop and parallel steps are not retried (their body steps are)."""
    step = plan.steps[key]
    if plan.is_container(key):
        return None
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
    queues: set[str] = field(default_factory=set)
    """Queues with new ready steps; announced when the caller is done."""
    chained: list[StepRunRow] = field(default_factory=list)
    """Ready steps the recording worker claimed in the same transaction (it runs them next,
    without another claim or wake-up): this execution's new ones, else any that wait."""
    own_chained: int = 0
    """How many of ``chained`` are this execution's (the rest need no announcement)."""
    ready_rows: list[StepRunRow] = field(default_factory=list)
    """Rows made ready here that the caller may claim without searching."""
    execution: ExecutionRow | None = None
    """The execution recorded in. Holding it keeps it in the session's identity map (which
    holds rows weakly), so loading its chained steps does not read it again."""


@dataclass(frozen=True)
class Chain:
    """How a worker takes successors of the step it records: its id, queues, free slots."""

    worker_id: str
    queues: Sequence[str]
    limit: int
    lease: dt.timedelta


async def record_outcome(
    session: AsyncSession,
    *,
    run_id: uuid.UUID,
    epoch: int,
    outcome: StepOutcome,
    plan: Plan,
    now: dt.datetime,
    rand: float,
    chain: Chain | None = None,
    claimed: tuple[uuid.UUID, dt.datetime | None] | None = None,
    lines: Sequence[LogLine] = (),
    plans: PlanCache | None = None,
) -> Recorded:
    """Commit a step's result and everything that follows from it, or nothing if the lease
    was lost (the row was given to another worker or the execution ended). With ``chain``,
    the worker also claims the steps this made ready, up to its free slots. ``lines`` are the
    log lines the step's runtime wrote while it ran. ``plans`` is the worker's cache (with the
    operator's quotas, which a child execution this step starts counts against)."""
    counted = outcome.failure is None and outcome.child is None
    settled = await settle(
        session,
        epoch=epoch,
        run_id=run_id,
        outcome=outcome,
        now=now,
        known=claimed,
        wait_for_child=outcome.child is not None,
        count_completed=counted,
    )
    if settled is None:
        return Recorded(lost_lease=True)
    execution = settled[0]
    recorded = Recorded(execution=execution)
    for line in lines:
        log(session, execution, line.message, line.at, level=line.level, run=settled[1],
            **line.metadata)  # fmt: skip
    if outcome.child is not None:
        await _start_child(session, *settled, outcome, plan, plans or _PLANS, now, rand, recorded)
    else:
        await carry_on(
            session, *settled, outcome.failure, plan, now, rand, recorded, counted=counted,
            chain=chain,
        )  # fmt: skip
    if chain is not None and chain.limit > 0 and not recorded.chained:
        if recorded.made_ready:  # this execution's next steps first: they are warm
            if len(recorded.ready_rows) == recorded.made_ready:  # all known: no search
                recorded.chained = await claims.claim_made_ready(
                    session, recorded.ready_rows, worker_id=chain.worker_id,
                    queues=chain.queues, limit=chain.limit, now=now, lease=chain.lease,
                )  # fmt: skip
            else:
                recorded.chained = await claims.claim(
                    session, worker_id=chain.worker_id, queues=chain.queues,
                    limit=chain.limit, now=now, lease=chain.lease, execution_id=execution.id,
                )  # fmt: skip
            recorded.own_chained = len(recorded.chained)
        if not recorded.chained:  # else whatever waits: the slot never goes idle
            recorded.chained = await claims.claim(
                session, worker_id=chain.worker_id, queues=chain.queues, limit=chain.limit,
                now=now, lease=chain.lease,
            )  # fmt: skip
    await announce(session, recorded)
    return recorded


async def announce(session: AsyncSession, recorded: Recorded) -> None:
    """Wake workers for the new ready steps nobody has claimed yet."""
    if recorded.made_ready and recorded.own_chained >= recorded.made_ready:
        return
    for queue in sorted(recorded.queues):
        await signals.announce(session, signals.READY, queue)


async def settle(
    session: AsyncSession,
    *,
    epoch: int | None = None,
    run_id: uuid.UUID,
    outcome: StepOutcome,
    now: dt.datetime,
    known: tuple[uuid.UUID, dt.datetime | None] | None = None,
    wait_for_child: bool = False,
    count_completed: bool = False,
) -> tuple[ExecutionRow, StepRunRow] | None:
    """Write a step run's final state if it is still as the caller left it: running under
    lease ``epoch`` (a worker's outcome), else waiting (a signal, a work-queue item, a child
    execution, a timeout); None when it is not. ``known`` is the run's (execution id,
    started_at) when the caller has them. With ``wait_for_child``, the run waits for the child
    execution its outcome asks for instead. With ``count_completed`` (a worker's successful
    outcome), the statement that locks the execution also counts the step in its
    ``steps_completed`` (one statement fewer than locking, then writing the counter at the
    flush); the count is taken back when the fence finds the run no longer as it was left.

    The execution row is locked first, then the step run: every transaction that moves an
    execution forward takes its locks in that order, so two of them cannot deadlock."""
    failure = outcome.failure
    found = (
        known
        or (
            await session.execute(
                select(StepRunRow.execution_id, StepRunRow.started_at).where(
                    StepRunRow.id == run_id
                )
            )
        ).one_or_none()
    )
    if found is None:
        return None
    execution_id, started = found
    execution = await locked_execution(session, execution_id, count_completed)
    duration = int((now - started).total_seconds() * 1000) if started else None
    values: dict[str, Any] = {
        "status": S.FAILED if failure else S.COMPLETED,
        "output": None if failure else outcome.output,
        "error": redact(failure.as_json()) if failure else None,
        "completed_at": now,
        "duration_ms": duration,
        "lease_owner": None,
        "lease_expires_at": None,
        "updated_at": now,
    }
    if outcome.rendered_input is not None:  # a wait ending keeps the input it was given
        values["input"] = redact(outcome.rendered_input)
    if wait_for_child:
        values.update(status=S.WAITING, completed_at=None, duration_ms=None, scheduled_for=None)
    params = {f"new_{key}": value for key, value in values.items()}
    params.update(fenced_id=run_id, fenced_epoch=epoch)
    # Without flushing first: what is pending cannot change which row this matches (a run
    # is settled in a later transaction than the one that claimed it), and the counts kept
    # in memory (``locked_execution``) then go out once, at the end.
    with session.no_autoflush:
        fenced = await session.execute(
            _settling(epoch is not None, tuple(values)),
            params,
            execution_options={"synchronize_session": False, "populate_existing": True},
        )
    run = fenced.scalars().one_or_none()
    if run is None:
        if count_completed:
            execution.steps_completed -= 1  # written at the flush
        return None
    return execution, run


_SETTLING: dict[tuple[bool, tuple[str, ...]], Any] = {}


def _settling(leased: bool, keys: tuple[str, ...]) -> Any:
    """``settle``'s fenced UPDATE for these columns, built once per shape (every outcome runs
    one; building it each time cost more than running it)."""
    stmt = _SETTLING.get((leased, keys))
    if stmt is None:
        columns = StepRunRow.__table__.c
        fence = (
            (StepRunRow.lease_epoch == bindparam("fenced_epoch"), step_status_is(S.RUNNING))
            if leased
            else (step_status_is(S.WAITING),)
        )
        stmt = _SETTLING[(leased, keys)] = (
            update(StepRunRow)
            .where(StepRunRow.id == bindparam("fenced_id"), *fence)
            .values({key: bindparam(f"new_{key}", type_=columns[key].type) for key in keys})
            .returning(StepRunRow)
        )
    return stmt


async def locked_execution(
    session: AsyncSession, execution_id: uuid.UUID, count_completed: bool = False
) -> ExecutionRow:
    """The execution, locked (and read afresh); with ``count_completed``, one more of its
    steps completed, in the same statement (an UPDATE takes the same row lock). Locked once
    per transaction: a second call (the next outcome of a batch for the same execution)
    finds the row already locked and loaded, and counts in memory (one UPDATE at the flush
    for all of them)."""
    held = _already_locked(session, execution_id)
    if held is not None:
        if count_completed:
            held.steps_completed += 1
        return held
    stmt = _COUNT if count_completed else _LOCK_EXECUTION
    result = await session.execute(
        stmt,
        {"execution_id": execution_id},
        execution_options={"synchronize_session": False, "populate_existing": True},
    )
    execution: ExecutionRow = result.scalar_one()
    if not session.in_nested_transaction():  # a savepoint's rollback would release the lock
        sync = session.sync_session
        root, locked = sync.info.get(_LOCKED, (None, set()))
        if root is not sync.get_transaction():
            root, locked = sync.get_transaction(), set()
            sync.info[_LOCKED] = (root, locked)
        locked.add(execution_id)
    return execution


_LOCKED = "turbocat.locked_executions"
"""The executions this session's transaction locked, with that transaction."""


def _already_locked(session: AsyncSession, execution_id: uuid.UUID) -> ExecutionRow | None:
    """The execution, when this transaction locked it (outside a savepoint) and holds it
    loaded and unexpired: every engine transaction that writes an execution locks it first,
    so nobody else has changed it since, and this one's own changes went through the object
    (or through statements that return the row into it)."""
    sync = session.sync_session
    root, locked = sync.info.get(_LOCKED, (None, ()))
    if execution_id not in locked or root is not sync.get_transaction():
        return None
    held = sync.identity_map.get(sync.identity_key(ExecutionRow, execution_id))
    if held is None or inspect(held).expired_attributes:
        return None
    return cast(ExecutionRow, held)


_LOCK_EXECUTION = (
    select(ExecutionRow)
    .where(ExecutionRow.id == bindparam("execution_id"))
    .with_for_update()
    .execution_options(populate_existing=True)
)
_COUNT = (
    update(ExecutionRow)
    .where(ExecutionRow.id == bindparam("execution_id"))
    .values(steps_completed=ExecutionRow.steps_completed + 1)
    .returning(ExecutionRow)
)


async def carry_on(
    session: AsyncSession,
    execution: ExecutionRow,
    run: StepRunRow,
    failure: StepFailure | None,
    plan: Plan,
    now: dt.datetime,
    rand: float,
    recorded: Recorded,
    *,
    counted: bool = False,
    chain: Chain | None = None,
) -> None:
    """Move the execution on from ``run``'s end (``counted``: its completion is already in
    the execution's counters, see ``settle``; ``chain``: the recording worker takes on the
    next step of a sequence, see ``_chain_next``)."""
    winding = execution.cancel_requested_at is not None and execution.status in LIVE
    delay = None if failure is None or winding else _retry_delay(plan, run, failure, rand)
    if delay is None and run.step_type == StepType.AGENT:
        activity.step_ended(session, execution, run, plan.steps[run.step_key], failure is None, now)
    if failure is None:
        if not counted:
            execution.steps_completed += 1
        log(session, execution, f"step {_name(run)} completed", now, run=run)
    else:
        if delay is not None:
            _schedule_retry(session, run, now + dt.timedelta(milliseconds=delay))
            log(
                session,
                execution,
                f"step {_name(run)} failed, retry in {delay} ms: {failure.message}",
                now,
                level=LogLevel.WARN,
                run=run,
                attempt=run.attempt,
                error=failure.as_json(),
            )
            recorded.made_ready += 1
            recorded.queues.add(run.queue)
            return
        execution.steps_failed += 1
        log(session, execution, f"step {_name(run)} failed: {failure.message}", now,
            level=LogLevel.ERROR, run=run, error=failure.as_json())  # fmt: skip
    if execution.status not in LIVE:
        return
    if winding:  # a cancel was requested: nothing new starts; the last running step ends it
        if not await _running_work(session, execution.id):
            await cancel(session, execution.id, now, by="request (its running steps finished)")
        return
    if failure is not None and plan.steps[run.step_key].on_error.value != OnError.CONTINUE.value:
        await _fail_frame(session, execution, run, failure, plan, now, rand, recorded)
        return
    owner = plan.owner[run.step_key]
    nodes = plan.nodes[owner]
    after = plan.dependents.get(run.step_key, ())
    if failure is None and await _dependent_still_waits(session, run, nodes, after):
        await refresh_status(session, execution, plan, now)  # nor is the frame finished
        return
    if failure is None and chain is not None:
        taken = await _chain_next(session, execution, run, plan, nodes, after, chain, now)
        if taken is not None:
            recorded.made_ready += 1
            recorded.chained.append(taken)
            recorded.own_chained += 1
            await refresh_status(session, execution, plan, now)
            return
    # The steps around this one (its dependents and what they depend on): a step's cost does
    # not grow with its frame. A skip needs the whole frame. A step alone in its frame (a
    # one-step workflow, a loop body of one step) needs no read at all.
    deciding, reads = progress.neighbourhood(nodes, after)
    some = reads if 2 * len(reads) < len(nodes) else None  # else the whole frame costs less
    alone = len(nodes) == 1
    view = (
        frames.alone(run)
        if alone
        else await frames.frame_states(session, plan, execution.id, run.scope, some)
    )
    states = view.graph_states()
    decision = progress.advance(nodes, states, None if view.whole else deciding)
    if decision.skipped and not view.whole:
        view = await frames.frame_states(session, plan, execution.id, run.scope)
        states = view.graph_states()
        decision = progress.advance(nodes, states)
    ids = view.states
    touched = [ids[key].id for key in (*decision.skipped, *decision.ready)]
    changed = await frames.runs_by_id(session, touched, view.runs)
    for key in decision.skipped:
        skipped = changed[ids[key].id]
        skipped.status, skipped.completed_at, skipped.updated_at = S.SKIPPED, now, now
        states[key] = progress.State(S.SKIPPED)

    async def context() -> frames.Context:
        return await frames.context_at(session, execution, plan, run.scope)

    opening = frames.Opening()
    ready = [changed[ids[key].id] for key in decision.ready]
    await frames.make_ready(session, execution, plan, ready, context, now, opening)
    recorded.ready_rows.extend(run for run in ready if run.status == S.READY)
    if await _settle_opened(session, execution, plan, opening, now, recorded):
        return
    if view.whole:
        finished = progress.finished(states, nodes)
    else:  # nothing was skipped: the frame's counts are as they were read
        finished = view.unfinished == 0 and view.steps == len(nodes)
    if ready or not finished:
        await refresh_status(session, execution, plan, now)
        return
    # it finished: all of it
    frame = (
        {run.step_key: run} if alone else await frames.frame_runs(session, execution.id, run.scope)
    )
    if run.parent_id is None:
        await _finish(session, execution, plan, frame, now)
        recorded.finished = True
        return
    container = await session.get(StepRunRow, run.parent_id)
    if container is None or container.status != S.RUNNING:
        return
    opening = frames.Opening()
    output = await frames.close_frame(session, execution, plan, container, frame, now, opening)
    if await _settle_opened(session, execution, plan, opening, now, recorded):
        return
    if output is None:  # a loop with iterations still to finish
        await refresh_status(session, execution, plan, now)
        return
    _end_container(container, now, output=output)
    await carry_on(session, execution, container, None, plan, now, rand, recorded)


async def _chain_next(
    session: AsyncSession,
    execution: ExecutionRow,
    run: StepRunRow,
    plan: Plan,
    nodes: dict[str, progress.Node],
    after: Sequence[str],
    chain: Chain,
    now: dt.datetime,
) -> StepRunRow | None:
    """The next step of a sequence, taken straight from pending to running by the worker
    that recorded ``run`` (which completed), in one statement: no read of the frame and no
    flush. Only where the general path would decide the same: ``run`` is no condition (its
    edge is live), it is the only dependency of its only dependent, that dependent is a step
    that simply becomes ready (no loop, parallel or wait), on one of the worker's queues,
    within its limits. None otherwise (nothing changed): the general path follows."""
    key = _sole_live_dependent(run, after)
    if chain.limit <= 0 or key is None:
        return None
    if nodes[key].depends_on != (run.step_key,) or plan.steps[key].type in _NOT_PLAIN:
        return None
    queue = plan.queue_of(key)
    if queue not in chain.queues:
        return None
    return await claims.claim_pending(
        session, execution_id=execution.id, organization_id=execution.organization_id,
        scope=run.scope, step_key=key, agent_id=plan.agent_ids.get(key), queue=queue,
        worker_id=chain.worker_id, now=now, lease=chain.lease,
    )  # fmt: skip


_NOT_PLAIN = frozenset({StepType.LOOP, StepType.PARALLEL, StepType.WAIT})
"""Steps that do more than become ready when their dependencies are met (``frames.make_ready``)."""


async def _dependent_still_waits(
    session: AsyncSession, run: StepRunRow, nodes: dict[str, progress.Node], after: Sequence[str]
) -> bool:
    """Whether the one step that depends on ``run`` (which completed) still waits for another
    of its dependencies. Then this completion decides nothing: a completed step's edge is
    live (it is no condition choosing a branch), so its dependent can only become ready, and
    only once every dependency has finished (a dead edge would already have skipped it).
    The step of a fan-in (a join after 100 parallel steps) then costs one index probe
    instead of reading its whole frame."""
    key = _sole_live_dependent(run, after)
    if key is None:
        return False
    others = [dep for dep in nodes[key].depends_on if dep != run.step_key]
    return bool(others) and await frames.any_open(session, run.execution_id, run.scope, others)


def _sole_live_dependent(run: StepRunRow, after: Sequence[str]) -> str | None:
    """The one step that depends on ``run`` (which completed), when the edge between them is
    live (``run`` is no condition choosing a branch): that step can then only become ready,
    once all its dependencies have finished. None with no or several dependents."""
    if len(after) != 1 or run.step_type == StepType.CONDITION:
        return None
    return after[0]


def _name(run: StepRunRow) -> str:
    """A step as logs name it: its key, and where it runs inside loops and parallel steps."""
    return f"{run.step_key} ({run.scope.lstrip('/')})" if run.scope else run.step_key


def _end_container(
    container: StepRunRow,
    now: dt.datetime,
    *,
    output: JSONValue = None,
    failure: StepFailure | None = None,
) -> None:
    container.status = S.FAILED if failure else S.COMPLETED
    container.output = None if failure else output
    container.error = redact(failure.as_json()) if failure else None
    container.completed_at, container.updated_at = now, now
    if container.started_at is not None:
        container.duration_ms = max(0, int((now - container.started_at).total_seconds() * 1000))


async def _settle_opened(
    session: AsyncSession,
    execution: ExecutionRow,
    plan: Plan,
    opening: frames.Opening,
    now: dt.datetime,
    recorded: Recorded,
) -> bool:
    """Tell the queues about new ready steps, and carry on from loop or parallel steps that
    ended as soon as they opened. True when there were such steps (they moved the graph)."""
    recorded.queues |= opening.queues
    recorded.made_ready += opening.ready
    for container, failure in opening.ended:
        _end_container(container, now, output=container.output, failure=failure)
    for container, failure in opening.ended:
        await carry_on(session, execution, container, failure, plan, now, 0.5, recorded)
    return bool(opening.ended)


async def _fail_frame(
    session: AsyncSession,
    execution: ExecutionRow,
    run: StepRunRow,
    failure: StepFailure,
    plan: Plan,
    now: dt.datetime,
    rand: float,
    recorded: Recorded,
) -> None:
    """A step failed for good with on_error fail (or retry, retries spent). At the top level
    the execution fails; inside a loop iteration or parallel branch the loop or parallel step
    fails (its other frames stop), and its own on_error decides what follows."""
    if run.parent_id is None:
        await _end_others(session, execution.id, now)
        frame = await frames.frame_runs(session, execution.id, "")
        await _finish(session, execution, plan, frame, now, failed_step=run, failure=failure)
        recorded.finished = True
        return
    container = await session.get(StepRunRow, run.parent_id)
    if container is None or container.status != S.RUNNING:
        return
    await frames.end_subtree(session, container, now)
    where = f"item {run.iteration}" if plan.steps[container.step_key].type == "loop" else ""
    if not where:
        where = next(
            (
                f"branch {b.label}"
                for b in plan.bodies[container.step_key]
                if run.step_key in b.keys
            ),
            "a branch",
        )
    body_failure = StepFailure(
        "body_failed",
        f"{where}: step {run.step_key} failed: {failure.message}",
        False,
        failure.stack,
    )
    _end_container(container, now, failure=body_failure)
    await carry_on(session, execution, container, body_failure, plan, now, rand, recorded)


async def refresh_status(
    session: AsyncSession, execution: ExecutionRow, plan: Plan, now: dt.datetime
) -> None:
    """``waiting`` while a step waits for a signal and no step is ready or running (steps
    pending behind the wait do not count; loop and parallel steps are not work), else
    ``running``."""
    if not plan.has_signal_waits or execution.status not in LIVE:
        return
    statuses = set(
        (
            await session.execute(
                select(StepRunRow.status)
                .where(
                    StepRunRow.execution_id == execution.id,
                    StepRunRow.step_type.not_in([StepType.LOOP, StepType.PARALLEL]),
                    StepRunRow.status.in_([S.READY, S.RUNNING, S.WAITING]),
                )
                .distinct()
            )
        ).scalars()
    )
    waiting = S.WAITING in statuses and not statuses & {S.READY, S.RUNNING}
    status = ExecutionStatus.WAITING if waiting else ExecutionStatus.RUNNING
    if execution.status != status:
        execution.status = status
        execution.updated_at = now


def _retry_delay(plan: Plan, run: StepRunRow, failure: StepFailure, rand: float) -> int | None:
    policy = _retry_policy(plan, run.step_key)
    if policy is None or not failure.retryable:
        return None
    delay = policy.delay_before(run.attempt + 1, rand)
    if delay is not None and failure.retry_after is not None:  # the server asked for a pause
        delay = max(delay, int(failure.retry_after * 1000))
    return delay


def _schedule_retry(session: AsyncSession, run: StepRunRow, at: dt.datetime) -> None:
    retry = StepRunRow(
        organization_id=run.organization_id,
        execution_id=run.execution_id,
        step_key=run.step_key,
        scope=run.scope,
        parent_id=run.parent_id,
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
    session.add(retry)
    frames.remember(session, retry)


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
    if failed_step is not None and failure is not None:
        status = ExecutionStatus.FAILED
        execution.error_message = f"step {failed_step.step_key} failed: {failure.message}"
        execution.error_stack = failure.stack
    else:
        status = ExecutionStatus.COMPLETED
        try:
            context = frames.context_for(execution, plan, runs)
            execution.output_data = {
                name: render_value(template, context)
                for name, template in plan.definition.outputs.items()
            }
        except Exception as exc:  # an outputs expression failed: the execution fails clearly
            status = ExecutionStatus.FAILED
            execution.error_message = f"outputs could not be computed: {exc}"
    execution.status = status
    execution.result = result_of(
        failed=execution.steps_failed > 0 or status == ExecutionStatus.FAILED,
        completed=execution.steps_completed > 0,
    )
    execution.completed_at = now
    started = execution.started_at or execution.created_at
    execution.duration_ms = max(0, int((now - started).total_seconds() * 1000))
    execution.updated_at = now
    log(session, execution, f"execution {status.value} ({execution.result.value})", now,
        level=LogLevel.INFO if status == ExecutionStatus.COMPLETED else LogLevel.ERROR)  # fmt: skip
    await _count(session, execution, now)
    if plan.unlimited and not await queues.may_be_limited(session, execution.task_queue):
        return  # nothing can be waiting for the slot this execution frees
    await _release(session, execution, now)


async def _count(session: AsyncSession, execution: ExecutionRow, now: dt.datetime) -> None:
    """Workflow counters, updated atomically as the finishing transaction commits; and the
    ``execution.<status>`` event in the outbox (every end passes here exactly once)."""
    outbox.execution_ended(session, execution, now)
    ok = execution.status == ExecutionStatus.COMPLETED
    failed = execution.status in (ExecutionStatus.FAILED, ExecutionStatus.TIMEOUT)
    params = {
        "workflow_id": execution.workflow_id, "ok": int(ok), "failed": int(failed),
        "duration": execution.duration_ms or 0, "now": now,
    }  # fmt: skip
    # As the transaction commits: every end of the workflow's executions updates this row.
    at_commit(
        session,
        f"1-workflow:{execution.workflow_id}",
        lambda s: s.connection().execute(_COUNTERS, params),  # Core: no ORM bookkeeping
    )
    if execution.parent_execution_id is not None:
        await _to_parent(session, execution, now)
    if execution.status != ExecutionStatus.COMPLETED:
        await _close_children(session, execution, now)


_TOTAL = WorkflowRow.total_executions
_DURATION = bindparam("duration", type_=Integer)
_COUNTERS = (
    update(WorkflowRow)
    .where(WorkflowRow.id == bindparam("workflow_id", type_=GUID))
    .values(
        total_executions=_TOTAL + 1,
        successful_executions=WorkflowRow.successful_executions + bindparam("ok", type_=Integer),
        failed_executions=WorkflowRow.failed_executions + bindparam("failed", type_=Integer),
        avg_execution_time_ms=func.round(
            (WorkflowRow.avg_execution_time_ms * 1.0 * _TOTAL + _DURATION) / (_TOTAL + 1)
        ),
        last_execution_at=bindparam("now", type_=UTCDateTime),
        # Counters are not an edit: updated_at stays (it also keys the plan cache, which
        # this bump made miss on every start of a workflow that had run).
        updated_at=WorkflowRow.updated_at,
    )
)
"""A workflow's counters after one of its executions ended (built once: it runs for each)."""

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
        # the row may be loaded in this transaction (a cancel request's last step ending)
        execution_options={"synchronize_session": False, "populate_existing": True},
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
    await _release(session, execution, now)
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
        await _release(session, execution, now)
        expired += 1
    return expired


def _close(session: AsyncSession, execution: ExecutionRow, now: dt.datetime) -> None:
    started = execution.started_at or execution.created_at
    execution.duration_ms = max(0, int((now - started).total_seconds() * 1000))
    log(session, execution, f"execution {execution.status.value}: {execution.error_message}", now,
        level=LogLevel.WARN)  # fmt: skip


# --- child executions (the workflow kind) ---------------------------------------------------


async def _start_child(
    session: AsyncSession,
    execution: ExecutionRow,
    run: StepRunRow,
    outcome: StepOutcome,
    plan: Plan,
    plans: PlanCache,
    now: dt.datetime,
    rand: float,
    recorded: Recorded,
) -> None:
    """The workflow step ``run`` (now waiting) starts its child in this transaction. It waits
    until the child ends (``_to_parent``), or its ``timeout_ms`` from its claim; a fire and
    forget step, or a child that cannot start, ends at once."""
    assert outcome.child is not None
    if execution.cancel_requested_at is not None:  # winding down: nothing new starts
        failure = StepFailure("child_not_started", "the execution is being cancelled", False)
        ended: StepOutcome | None = StepOutcome(failure=failure)
    else:
        ended = await children.start(session, execution, run, outcome.child, plan, plans, now)
        call_id = outcome.child.tool_call_id  # an llm step's workflow tool that ended at once:
        if ended is not None and call_id and children.answer_tool(run, call_id, ended, now):
            recorded.made_ready += 1  # the model is told, the step runs on
            recorded.queues.add(run.queue)
            recorded.ready_rows.append(run)
            return
    if ended is None:
        timeout = plan.steps[run.step_key].timeout_ms
        if timeout is not None and run.started_at is not None:
            run.scheduled_for = run.started_at + dt.timedelta(milliseconds=timeout)
        log(session, execution, f"step {_name(run)} waits for child execution "
            f"{children.child_id(run)}", now, run=run)  # fmt: skip
        return
    if ended.failure is None:
        log(session, execution, f"step {_name(run)} started child execution "
            f"{children.child_id(run, ended)}", now, run=run)  # fmt: skip
    ended = dataclasses.replace(ended, rendered_input=outcome.rendered_input)
    settled = await settle(
        session, run_id=run.id, outcome=ended, now=now,
        known=(execution.id, run.started_at),
    )  # fmt: skip
    assert settled is not None  # this transaction holds the execution and made the wait
    await carry_on(session, *settled, ended.failure, plan, now, rand, recorded)


async def _to_parent(session: AsyncSession, child: ExecutionRow, now: dt.datetime) -> None:
    """``child`` ended: the parent's step waiting for it completes with its outputs (or fails
    with its error), and the parent's graph moves on, in this transaction."""
    run_id = children.waited_step(child)
    if run_id is None or child.parent_execution_id is None:
        return
    parent = await locked_execution(session, child.parent_execution_id)
    if parent.status not in LIVE:
        return
    call_id = children.tool_call_of(child)
    if call_id is not None:  # an llm step's workflow tool: the step runs on with its result
        resumed = await children.resume_tool(session, child, call_id, now)
        if resumed is not None:
            await signals.announce(session, signals.READY, resumed.queue)
        return
    workflow = (
        await session.execute(
            select(WorkflowRow)
            .where(WorkflowRow.id == parent.workflow_id)
            .execution_options(include_deleted=True)
        )
    ).scalar_one()
    plan = await _PLANS.load(session, workflow)
    outcome = children.outcome_of(child)
    settled = await settle(session, run_id=run_id, outcome=outcome, now=now)
    if settled is None:  # the step already ended (timed out, cancelled)
        return
    recorded = Recorded()
    await carry_on(session, *settled, outcome.failure, plan, now, 0.5, recorded)
    await announce(session, recorded)


async def _close_children(session: AsyncSession, parent: ExecutionRow, now: dt.datetime) -> None:
    """``parent`` ended without completing: each live child follows its parent close policy.
    (A completed parent leaves its fire and forget children running.)"""
    for child in await children.live_children(session, parent.id):
        await close_child(session, parent, child, now)


async def close_child(
    session: AsyncSession, parent: ExecutionRow, child: ExecutionRow, now: dt.datetime
) -> None:
    policy = children.policy_of(child)
    by = f"parent execution {parent.id} ({policy.value})"
    match policy:
        case ParentClosePolicy.TERMINATE:
            await cancel(session, child.id, now, by=by)
        case ParentClosePolicy.REQUEST_CANCEL:
            await request_cancel(session, child.id, now, by=by)
        case ParentClosePolicy.ABANDON:
            log(session, child, f"parent execution {parent.id} is {parent.status.value}; "
                "this child runs on (abandon)", now)  # fmt: skip
        case _:
            assert_never(policy)


async def request_cancel(
    session: AsyncSession, execution_id: uuid.UUID, now: dt.datetime, *, by: str
) -> bool:
    """Cancel gracefully (the ``request_cancel`` close policy): steps not started yet and
    waits are cancelled, nothing new starts, running steps finish and are recorded; the last
    of them ends the execution as cancelled (at once when none runs)."""
    execution = await locked_execution(session, execution_id)
    if execution.status not in LIVE:
        return False
    execution.cancel_requested_at = now
    await session.execute(
        update(StepRunRow)
        .where(
            StepRunRow.execution_id == execution.id,
            StepRunRow.status.in_([S.PENDING, S.READY, S.WAITING]),
        )
        .values(status=S.CANCELLED, completed_at=now, updated_at=now),
        execution_options={"synchronize_session": False},
    )
    if not await _running_work(session, execution.id):
        return await cancel(session, execution.id, now, by=by)
    log(session, execution, f"cancel requested by {by}: running steps finish, nothing new "
        "starts", now, level=LogLevel.WARN)  # fmt: skip
    return True


async def _running_work(session: AsyncSession, execution_id: uuid.UUID) -> bool:
    """Whether a step of the execution still runs on a worker (loop and parallel steps do
    not count: they are only containers)."""
    found = await session.execute(
        select(StepRunRow.id)
        .where(
            StepRunRow.execution_id == execution_id,
            StepRunRow.status == S.RUNNING,
            StepRunRow.step_type.not_in([StepType.LOOP, StepType.PARALLEL]),
        )
        .limit(1)
    )
    return found.first() is not None
