"""Frames: where a step run sits among loops and parallel steps, what it sees, and how loop
and parallel steps open, feed and close their bodies.

A frame is one instance of a graph: the top level (scope ``""``), one loop iteration
(``/each[3]``) or the branches of one parallel step (``/fan[]``); nested frames concatenate
(``/each[3]/fan[]``). Keys cannot hold ``/`` or ``[``, so a scope parses unambiguously and the
frames under a container share the prefix ``<scope>/<key>[``.

Loop and parallel steps never reach a worker: when one becomes ready it is *opened* in the
same transaction (its ``over`` evaluated, the first frames created) and stays ``running``
without a lease; when its last frame finishes, the step completes with the ordered list (loop)
or the object by branch label (parallel) of its bodies' outputs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, distinct, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from turbocat.db import signals
from turbocat.db.models import ExecutionRow, StepRunRow
from turbocat.domain.definitions import LoopStep, ParallelStep, WaitStep
from turbocat.domain.enums import StepStatus, StepType
from turbocat.domain.errors import ValidationFailed
from turbocat.domain.expressions import JSONValue, compile_template
from turbocat.domain.ids import new_id
from turbocat.domain.progress import State as GraphState
from turbocat.domain.scopes import (
    ancestors,
    innermost_loop,
    loop_indices,
    loop_scope,
    parallel_scope,
)
from turbocat.engine import work_items
from turbocat.engine.plan import Body, Plan
from turbocat.engine.runner import StepFailure

S = StepStatus
Context = dict[str, JSONValue]
ContextSource = Callable[[], Awaitable[Context]]


def idempotency_key(execution_id: uuid.UUID, step_key: str, scope: str) -> str:
    """``execution_id:step_key:iteration``; nested loop indices join with dots."""
    indices = loop_indices(scope)
    iteration = ".".join(map(str, indices)) if indices else "0"
    return f"{execution_id}:{step_key}:{iteration}"


def subtree(container: StepRunRow) -> Any:
    """A WHERE clause for every run inside ``container``'s frames, nested ones included."""
    return StepRunRow.scope.startswith(f"{container.scope}/{container.step_key}[", autoescape=True)


def _cache(session: AsyncSession) -> dict[tuple[uuid.UUID, str], dict[str, StepRunRow]]:
    """Frames already loaded in this transaction. The execution row is locked for the whole
    transaction, so nobody else changes its runs; changes made here go through the same ORM
    objects, and new rows are added to the cache where they are created."""
    cache: dict[tuple[uuid.UUID, str], dict[str, StepRunRow]]
    cache = session.info.setdefault("turbocat.frames", {})
    return cache


def remember(session: AsyncSession, run: StepRunRow) -> None:
    """A new run (a retry, a new frame's step) replaces its step's entry in a cached frame."""
    frame = _cache(session).get((run.execution_id, run.scope))
    if frame is not None:
        frame[run.step_key] = run


def step_reads(session: AsyncSession) -> contextlib.AbstractContextManager[object]:
    """How to read step runs: without flushing first when no step run is new or changed in
    this session (what is pending then, such as the execution's counters and log lines,
    cannot change the answer), so those writes go out together in one later flush."""
    sync = session.sync_session
    if any(isinstance(o, StepRunRow) for o in sync.new) or any(
        isinstance(o, StepRunRow) for o in sync.dirty
    ):
        return contextlib.nullcontext()
    return sync.no_autoflush


async def frame_runs(
    session: AsyncSession, execution_id: uuid.UUID, scope: str
) -> dict[str, StepRunRow]:
    """The latest attempt of every step of one frame."""
    return (await chain_runs(session, execution_id, scope, only_self=True))[scope]


async def chain_runs(
    session: AsyncSession, execution_id: uuid.UUID, scope: str, *, only_self: bool = False
) -> dict[str, dict[str, StepRunRow]]:
    """The latest attempts of the frames from the top level down to ``scope``."""
    cache = _cache(session)
    scopes = [scope] if only_self else ancestors(scope)
    missing = [s for s in scopes if (execution_id, s) not in cache]
    if missing:
        loaded: dict[str, dict[str, StepRunRow]] = {s: {} for s in missing}
        params = {"execution_id": execution_id, "scopes": missing}
        with step_reads(session):
            rows = (await session.execute(_FRAMES, params)).scalars()
        for row in rows:
            loaded[row.scope][row.step_key] = row
        for s, runs in loaded.items():
            cache[(execution_id, s)] = runs
    return {s: cache[(execution_id, s)] for s in scopes}


_FRAMES = (  # built once: every step that ends reads frames
    select(StepRunRow)
    .where(
        StepRunRow.execution_id == bindparam("execution_id"),
        StepRunRow.scope.in_(bindparam("scopes", expanding=True)),
    )
    .order_by(StepRunRow.attempt)
)


def _step_view(run: StepRunRow) -> JSONValue:
    return {"output": run.output, "status": run.status.value, "error": run.error}


def context_for(
    execution: ExecutionRow,
    plan: Plan,
    runs: dict[str, StepRunRow],
    *,
    loop: tuple[JSONValue, int] | None = None,
) -> Context:
    """What expressions see: input, finished steps, vars, the execution, item and index."""
    steps: dict[str, JSONValue] = {
        key: _step_view(run) for key, run in runs.items() if run.status in (S.COMPLETED, S.FAILED)
    }
    context: Context = {
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
    if loop is not None:
        context["item"], context["index"] = loop
    return context


def _item(container: StepRunRow | None, index: int) -> JSONValue:
    items = container.input.get("items") if container and isinstance(container.input, dict) else []
    return items[index] if isinstance(items, list) and 0 <= index < len(items) else None


async def context_at(
    session: AsyncSession,
    execution: ExecutionRow,
    plan: Plan,
    scope: str,
) -> Context:
    """The context of a step of frame ``scope``: the steps of its frame and of every frame
    around it, and the item and index of the innermost loop iteration."""
    if scope == "":
        return context_for(execution, plan, await frame_runs(session, execution.id, ""))
    chain = await chain_runs(session, execution.id, scope)
    merged: dict[str, StepRunRow] = {}
    for runs in chain.values():
        merged.update(runs)
    inner = innermost_loop(scope)
    loop = None
    if inner is not None:
        loop_at, key, index = inner
        loop = (_item(chain[loop_at].get(key), index), index)
    return context_for(execution, plan, merged, loop=loop)


async def step_context(
    session: AsyncSession,
    execution: ExecutionRow,
    plan: Plan,
    scope: str,
    key: str,
    also: frozenset[str] | None = frozenset(),
) -> Context:
    """The context step ``key`` of frame ``scope`` runs with: like ``context_at``, but with
    only the runs its expressions read (and its loop's container, for ``item``), so that a
    step of a wide graph loads a few rows rather than the whole frame. ``also``: the steps
    its saved agent's own templates read (None: any)."""
    mine = plan.reads.get(key)
    reads = None if mine is None or also is None else mine | also
    scopes = [scope] if scope == "" else ancestors(scope)
    cache = _cache(session)
    if reads is None or all((execution.id, s) in cache for s in scopes):
        return await context_at(session, execution, plan, scope)
    inner = innermost_loop(scope)
    wanted = set(reads) | ({inner[1]} if inner is not None else set())
    chain: dict[str, dict[str, StepRunRow]] = {s: {} for s in scopes}
    if wanted:
        rows = await session.execute(
            select(StepRunRow)
            .where(
                StepRunRow.execution_id == execution.id,
                StepRunRow.scope.in_(scopes),
                StepRunRow.step_key.in_(sorted(wanted)),
            )
            .order_by(StepRunRow.attempt)
        )
        for row in rows.scalars():
            chain[row.scope][row.step_key] = row
    merged: dict[str, StepRunRow] = {}
    for runs in chain.values():
        merged.update(runs)
    loop = None
    if inner is not None:
        loop_at, container_key, index = inner
        loop = (_item(chain[loop_at].get(container_key), index), index)
    return context_for(execution, plan, merged, loop=loop)


@dataclass(frozen=True)
class RunState:
    """A run as the graph sees it, without its data: its id and progress state."""

    id: uuid.UUID
    status: StepStatus
    branch: str | None


@dataclass(frozen=True)
class FrameStates:
    """The states of some steps of one frame (all of them when ``whole``), and how far the
    frame as a whole has got."""

    states: dict[str, RunState]
    unfinished: int
    """Steps of the frame whose latest run is not final yet."""
    steps: int
    """Steps of the frame that have a run (every step has one from the frame's opening)."""
    whole: bool
    runs: dict[uuid.UUID, StepRunRow] = field(default_factory=dict)
    """Whole rows read along with the states (a few steps' reads load them: the caller
    changes some of them, and one query is cheaper than two), by id."""

    def graph_states(self) -> dict[str, GraphState]:
        """The states as the graph rules (``domain.progress``) take them."""
        return {k: GraphState(s.status, s.branch) for k, s in self.states.items()}


_OPEN = (S.PENDING, S.READY, S.RUNNING, S.WAITING)


def _frame_statements() -> tuple[Any, Any, Any]:
    """The statements ``frame_states`` runs, built once (they run for every step that ends;
    building them each time cost more than running them), with the parameters
    ``execution_id``, ``scope`` and ``keys``: every step of a frame; some steps of it with the
    frame's counts (unfinished steps, and steps that have a run: only the latest attempt of a
    step can be unfinished, a retry starts after a failure); the counts alone."""
    execution_id: Any = bindparam("execution_id")
    scope: Any = bindparam("scope")
    other = aliased(StepRunRow, name="frame_step")
    inner = (other.execution_id == execution_id, other.scope == scope)
    counts = (
        select(func.count()).where(*inner, other.status.in_(_OPEN)).scalar_subquery(),
        select(func.count(distinct(other.step_key))).where(*inner).scalar_subquery(),
    )
    steps = (StepRunRow.id, StepRunRow.step_key, StepRunRow.status)
    frame = (StepRunRow.execution_id == execution_id, StepRunRow.scope == scope)
    every = select(*steps).where(*frame).order_by(StepRunRow.attempt)
    some = (
        select(StepRunRow, *counts)
        .where(*frame, StepRunRow.step_key.in_(bindparam("keys", expanding=True)))
        .order_by(StepRunRow.attempt)
    )
    return every, some, select(*counts)


_EVERY_STEP, _SOME_STEPS, _COUNTS = _frame_statements()


async def frame_states(
    session: AsyncSession,
    plan: Plan,
    execution_id: uuid.UUID,
    scope: str,
    keys: Collection[str] | None = None,
) -> FrameStates:
    """The latest attempt of the steps ``keys`` (None: every step) of one frame: what moving
    the graph forward needs. Reading only the steps around the one that ended keeps a step's
    cost the same however many steps the frame has; the counts then come from the database,
    and the few rows come whole (``FrameStates.runs``). The whole frame comes as ids and
    states only (no inputs or outputs, but a condition's chosen label)."""
    cached = _cache(session).get((execution_id, scope))
    if cached is not None:
        states = {k: RunState(r.id, r.status, branch_of(r)) for k, r in cached.items()}
        unfinished = sum(1 for r in cached.values() if r.status in _OPEN)
        return FrameStates(states, unfinished, len(cached), whole=True)
    params: dict[str, Any] = {"execution_id": execution_id, "scope": scope}
    if keys is not None:
        return await _some_states(session, params, keys)
    with step_reads(session):
        rows = list(await session.execute(_EVERY_STEP, params))
    states = {row.step_key: RunState(row.id, row.status, None) for row in rows}
    unfinished = sum(1 for state in states.values() if state.status in _OPEN)
    conditions = [k for k in states if plan.steps[k].type == "condition"]
    if conditions:
        labels = await session.execute(
            select(StepRunRow.step_key, StepRunRow.output).where(
                StepRunRow.id.in_([states[k].id for k in conditions])
            )
        )
        for key, output in labels.all():
            label = output.get("label") if isinstance(output, dict) else None
            states[key] = RunState(states[key].id, states[key].status, label)
    return FrameStates(states, unfinished, len(states), whole=True)


_ANY_OPEN = select(
    select(StepRunRow.id)
    .where(
        StepRunRow.execution_id == bindparam("execution_id"),
        StepRunRow.scope == bindparam("scope"),
        StepRunRow.step_key.in_(bindparam("keys", expanding=True)),
        StepRunRow.status.in_(_OPEN),
    )
    .exists()
)


async def any_open(
    session: AsyncSession, execution_id: uuid.UUID, scope: str, keys: Collection[str]
) -> bool:
    """Whether one of the steps ``keys`` of a frame has not finished (one index probe per
    key; none when the frame is loaded in this transaction)."""
    cached = _cache(session).get((execution_id, scope))
    if cached is not None:
        return any(key in cached and cached[key].status in _OPEN for key in keys)
    params = {"execution_id": execution_id, "scope": scope, "keys": sorted(keys)}
    with step_reads(session):
        return bool((await session.execute(_ANY_OPEN, params)).scalar())


def alone(run: StepRunRow) -> FrameStates:
    """The states of a frame whose only step is ``run`` (nothing to read)."""
    states = {run.step_key: RunState(run.id, run.status, branch_of(run))}
    unfinished = 1 if run.status in _OPEN else 0
    return FrameStates(states, unfinished, 1, whole=True, runs={run.id: run})


async def _some_states(
    session: AsyncSession, params: dict[str, Any], keys: Collection[str]
) -> FrameStates:
    """``frame_states`` of a few steps: their whole rows, with the frame's counts."""
    with step_reads(session):
        if not keys:  # nothing to read: the ended step has no dependents
            counts = (await session.execute(_COUNTS, params)).one()
            return FrameStates({}, int(counts[0]), int(counts[1]), whole=False)
        rows = (await session.execute(_SOME_STEPS, {**params, "keys": sorted(keys)})).all()
    if not rows:
        counts = (await session.execute(_COUNTS, params)).one()
        return FrameStates({}, int(counts[0]), int(counts[1]), whole=False)
    latest = {run.step_key: run for run, _unfinished, _steps in rows}  # by attempt
    states = {k: RunState(r.id, r.status, branch_of(r)) for k, r in latest.items()}
    runs = {run.id: run for run in latest.values()}
    return FrameStates(states, int(rows[0][1]), int(rows[0][2]), whole=False, runs=runs)


async def runs_by_id(
    session: AsyncSession,
    ids: Iterable[uuid.UUID],
    known: dict[uuid.UUID, StepRunRow] | None = None,
) -> dict[uuid.UUID, StepRunRow]:
    """Full rows, for the few runs a transaction changes (those in ``known`` without a
    query)."""
    ids = list(ids)
    found = {i: known[i] for i in ids if known and i in known}
    wanted = [i for i in ids if i not in found]
    if not wanted:
        return found
    with step_reads(session):
        rows = await session.execute(select(StepRunRow).where(StepRunRow.id.in_(wanted)))
    return found | {row.id: row for row in rows.scalars()}


def branch_of(run: StepRunRow) -> str | None:
    """The label a completed condition chose."""
    if run.step_type != StepType.CONDITION or not isinstance(run.output, dict):
        return None
    label = run.output.get("label")
    return label if isinstance(label, str) else None


@dataclass
class Opening:
    """What opening steps did: queues with new ready work, steps that ended at once (a loop
    over an empty list or a bad ``over``, a wait that found work queue items), to be settled
    by the caller."""

    queues: set[str] = field(default_factory=set)
    ready: int = 0
    ended: list[tuple[StepRunRow, StepFailure | None]] = field(default_factory=list)


def new_run(
    execution: ExecutionRow,
    plan: Plan,
    key: str,
    now: dt.datetime,
    *,
    scope: str = "",
    parent: StepRunRow | None = None,
) -> StepRunRow:
    indices = loop_indices(scope)
    return StepRunRow(
        id=new_id(),
        organization_id=execution.organization_id,
        execution_id=execution.id,
        step_key=key,
        scope=scope,
        parent_id=parent.id if parent is not None else None,
        step_type=StepType(plan.steps[key].type),
        iteration=indices[-1] if indices else 0,
        attempt=1,
        status=S.PENDING,
        agent_id=plan.agent_ids.get(key),
        queue=plan.queue_of(key),
        idempotency_key=idempotency_key(execution.id, key, scope),
        created_at=now,
        updated_at=now,
    )


async def open_frame(
    session: AsyncSession,
    execution: ExecutionRow,
    plan: Plan,
    keys: Iterable[str],
    now: dt.datetime,
    opening: Opening,
    *,
    scope: str = "",
    parent: StepRunRow | None = None,
) -> dict[str, StepRunRow]:
    """Create the runs of one frame; its steps without dependencies become ready."""
    owner = parent.step_key if parent is not None else None
    nodes = plan.nodes[owner]
    runs = {key: new_run(execution, plan, key, now, scope=scope, parent=parent) for key in keys}
    session.add_all(runs.values())
    _cache(session)[(execution.id, scope)] = dict(runs)
    execution.steps_total += len(runs)
    roots = [runs[key] for key in runs if not nodes[key].depends_on]

    async def context() -> Context:
        return await context_at(session, execution, plan, scope)

    await make_ready(session, execution, plan, roots, context, now, opening)
    return runs


async def make_ready(
    session: AsyncSession,
    execution: ExecutionRow,
    plan: Plan,
    runs: list[StepRunRow],
    context: ContextSource,
    now: dt.datetime,
    opening: Opening,
) -> None:
    """These steps' dependencies are satisfied: each becomes ready now, ready at a later
    instant (a timed wait), waiting for a signal, takes work queue items or waits for them,
    or (loop, parallel) opens its body."""
    cached: Context | None = None

    async def ctx() -> Context:
        nonlocal cached
        if cached is None:
            cached = await context()
        return cached

    for run in runs:
        step = plan.steps[run.step_key]
        run.updated_at = now
        if isinstance(step, LoopStep):
            await _open_loop(session, execution, plan, run, step, await ctx(), now, opening)
        elif isinstance(step, ParallelStep):
            run.status, run.started_at = S.RUNNING, now
            keys = list(plan.nodes[step.key])
            scope = parallel_scope(run.scope, run.step_key)
            await open_frame(session, execution, plan, keys, now, opening, scope=scope, parent=run)
        elif isinstance(step, WaitStep) and step.signal is not None:
            run.status = S.WAITING
            timeout = step.signal.timeout_ms
            run.scheduled_for = now + dt.timedelta(milliseconds=timeout) if timeout else None
        elif isinstance(step, WaitStep) and step.queue is not None:
            await _take_or_wait(session, execution, plan, run, step, now, opening)
        elif isinstance(step, WaitStep):
            run.status, run.scheduled_for = S.READY, wait_until(step, await ctx(), now)
            opening.queues.add(run.queue)
            opening.ready += 1
        else:
            run.status, run.scheduled_for = S.READY, now
            opening.queues.add(run.queue)
            opening.ready += 1


TAKE_AT_ONCE = 64
"""Queue waits one transaction completes as it opens them. Each completion moves the graph on
and may open the next (a loop draining a queue), nesting calls; past this many, a wait that
would find items is left due at once and the worker's wait sweep completes it in a transaction
of its own."""


async def _take_or_wait(
    session: AsyncSession,
    execution: ExecutionRow,
    plan: Plan,
    run: StepRunRow,
    step: WaitStep,
    now: dt.datetime,
    opening: Opening,
) -> None:
    """A wait on a work queue takes what is pending (up to ``max_items``) and ends at once
    with those items as output; on an empty queue it waits for the queue's signal, and
    ``started_at`` (then id) ranks it among the waiters: the oldest gets the next item."""
    assert step.queue is not None
    queue = plan.work_queues[step.queue.name]
    run.started_at, run.status = now, S.WAITING
    timeout = step.queue.timeout_ms
    run.scheduled_for = now + dt.timedelta(milliseconds=timeout) if timeout else None
    taken: int = session.info.get("turbocat.queue_takes", 0)
    if taken >= TAKE_AT_ONCE:
        if await work_items.pending_count(session, execution.id, queue.name):
            run.scheduled_for = now
            opening.queues.add(run.queue)  # wakes a worker, which sweeps due waits
        return
    items = await work_items.take(session, execution.id, queue, step.queue.max_items, run.id, now)
    if items:
        session.info["turbocat.queue_takes"] = taken + 1
        run.status, run.output, run.scheduled_for = S.RUNNING, items, None
        opening.ended.append((run, None))


def wait_until(step: WaitStep, context: Context, now: dt.datetime) -> dt.datetime:
    """When a timed wait is over (now when its ``until`` cannot be read: the run reports why)."""
    if step.duration_ms is not None:
        return now + dt.timedelta(milliseconds=step.duration_ms)
    try:
        value = compile_template(step.until or "").render(context)
        instant = dt.datetime.fromisoformat(str(value))
    except (ValueError, ValidationFailed):
        return now
    return instant if instant.tzinfo is not None else now


async def _open_loop(
    session: AsyncSession,
    execution: ExecutionRow,
    plan: Plan,
    run: StepRunRow,
    step: LoopStep,
    context: Context,
    now: dt.datetime,
    opening: Opening,
) -> None:
    run.status, run.started_at = S.RUNNING, now
    try:
        items = compile_template(step.over).render(context)
    except ValidationFailed as exc:
        opening.ended.append((run, StepFailure("expression_error", exc.detail, False)))
        return
    if not isinstance(items, list):
        shown = "null" if items is None else type(items).__name__
        message = f"over gave {shown}, not a list"
        opening.ended.append((run, StepFailure("not_a_list", message, False)))
        return
    if len(items) > step.max_items:
        message = f"over gave {len(items)} items; this loop allows at most {step.max_items}"
        opening.ended.append((run, StepFailure("too_many_items", message, False)))
        return
    run.input = {"items": items}
    if not items:
        run.output = []
        opening.ended.append((run, None))
        return
    first = min(step.max_concurrency, len(items))
    run.output = {"total": len(items), "started": first, "finished": 0}
    (body,) = plan.bodies[step.key]
    for index in range(first):
        scope = loop_scope(run.scope, run.step_key, index)
        await open_frame(session, execution, plan, body.keys, now, opening, scope=scope, parent=run)


async def close_frame(
    session: AsyncSession,
    execution: ExecutionRow,
    plan: Plan,
    container: StepRunRow,
    frame: dict[str, StepRunRow],
    now: dt.datetime,
    opening: Opening,
) -> JSONValue | None:
    """A frame of ``container`` finished. A loop starts its next iteration, if any; returns
    the container's output when its last frame is done (else None: it keeps running)."""
    step = plan.steps[container.step_key]
    if isinstance(step, ParallelStep):
        base = await context_at(session, execution, plan, container.scope)
        return {
            body.label or "": body_output(body, frame, base, None) for body in plan.bodies[step.key]
        }
    progress = dict(container.output) if isinstance(container.output, dict) else {}
    total, started = int(progress.get("total", 0)), int(progress.get("started", 0))
    finished = int(progress.get("finished", 0)) + 1
    if started < total:
        (body,) = plan.bodies[step.key]
        container.output = {"total": total, "started": started + 1, "finished": finished}
        scope = loop_scope(container.scope, container.step_key, started)
        await open_frame(
            session, execution, plan, body.keys, now, opening, scope=scope, parent=container
        )
        return None
    if finished < total:
        container.output = {"total": total, "started": started, "finished": finished}
        return None
    return await _loop_output(session, execution, plan, container)


async def _loop_output(
    session: AsyncSession, execution: ExecutionRow, plan: Plan, container: StepRunRow
) -> JSONValue:
    """The body outputs of every iteration, in item order."""
    (body,) = plan.bodies[container.step_key]
    rows = (
        await session.execute(
            select(StepRunRow)
            .where(StepRunRow.parent_id == container.id)
            .order_by(StepRunRow.attempt)
        )
    ).scalars()
    by_iteration: dict[int, dict[str, StepRunRow]] = {}
    for row in rows:
        by_iteration.setdefault(row.iteration, {})[row.step_key] = row
    base = await context_at(session, execution, plan, container.scope)
    items = container.input.get("items", []) if isinstance(container.input, dict) else []
    return [
        body_output(body, by_iteration.get(i, {}), base, (item, i)) for i, item in enumerate(items)
    ]


def body_output(
    body: Body,
    runs: dict[str, StepRunRow],
    base: Context,
    loop: tuple[JSONValue, int] | None,
) -> JSONValue:
    """A body's output: its one step's output, its sub-graph's ``output`` expression, or an
    object of its steps' outputs by key (a step that did not complete gives null)."""

    def out(key: str) -> JSONValue:
        run = runs.get(key)
        return run.output if run is not None and run.status == S.COMPLETED else None

    if body.graph is None:
        return out(body.keys[0])
    if body.graph.output is None:
        return {key: out(key) for key in body.keys}
    steps = dict(base["steps"]) if isinstance(base.get("steps"), dict) else {}  # type: ignore[arg-type]
    steps.update(
        {
            k: _step_view(r)
            for k, r in runs.items()
            if k in body.keys and r.status in (S.COMPLETED, S.FAILED)
        }
    )
    context = {**base, "steps": steps}
    if loop is not None:
        context["item"], context["index"] = loop
    return compile_template(body.graph.output).render(context)


async def end_subtree(session: AsyncSession, container: StepRunRow, now: dt.datetime) -> None:
    """``container`` ended early: what has not started inside it is skipped, what runs or
    waits is cancelled (its worker is told to stop)."""
    base = update(StepRunRow).where(
        StepRunRow.execution_id == container.execution_id, subtree(container)
    )
    await session.execute(
        base.where(StepRunRow.status.in_([S.PENDING, S.READY])).values(
            status=S.SKIPPED, completed_at=now, updated_at=now
        ),
        execution_options={"synchronize_session": "fetch"},
    )
    await session.execute(
        base.where(StepRunRow.status.in_([S.RUNNING, S.WAITING])).values(
            status=S.CANCELLED, lease_owner=None, completed_at=now, updated_at=now
        ),
        execution_options={"synchronize_session": "fetch"},
    )
    await signals.announce(session, signals.CANCEL, str(container.execution_id))
