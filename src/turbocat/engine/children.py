"""Child executions of ``workflow`` steps: which workflow a step names, starting the child in
the transaction that records the step, and what the child's end means for the step.

A child carries its link in durable columns and in ``trigger_data`` (no migration needed):
``parent_execution_id`` and ``parent_step_key`` on the row; ``parent_step_run_id``,
``parent_close_policy``, ``wait`` and ``depth`` in ``trigger_data``. Its idempotency key is the
parent step's key plus the attempt, so recording the same attempt twice (a retried
transaction, a rescued step) finds the child it already started instead of starting another,
while a retry of the step (a new attempt) starts a fresh child.

An llm step's workflow tool is a child too (``ChildRequest.tool_key`` set): its key adds
``:tool:<tool key>`` (one step may start several), ``trigger_data`` carries ``tool_call_id``,
and its end does not complete the step: ``answer_tool`` appends its result (or its error) to
the conversation checkpointed in the step's output and makes the step ready again, so the
model's loop goes on where it stopped.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db.models import ExecutionRow, StepRunRow, WorkflowRow
from turbocat.domain import events
from turbocat.domain.enums import ExecutionStatus, ParentClosePolicy, StepStatus, WorkflowStatus
from turbocat.domain.errors import NotFound, TurbocatError, ValidationFailed
from turbocat.engine.agents import checkpoint
from turbocat.engine.agents.workflow import ChildRequest
from turbocat.engine.plan import Plan, PlanCache
from turbocat.engine.runner import StepFailure, StepOutcome
from turbocat.services import executions, versions

ENDED = (
    ExecutionStatus.COMPLETED,
    ExecutionStatus.FAILED,
    ExecutionStatus.CANCELLED,
    ExecutionStatus.TIMEOUT,
)


def depth_of(execution: ExecutionRow) -> int:
    """0 for an execution nobody started as a child, else its parent's depth plus one."""
    if execution.parent_execution_id is None:
        return 0
    depth = (execution.trigger_data or {}).get("depth", 1)
    return depth if isinstance(depth, int) else 1


def policy_of(child: ExecutionRow) -> ParentClosePolicy:
    raw = (child.trigger_data or {}).get("parent_close_policy")
    try:
        return ParentClosePolicy(str(raw))
    except ValueError:
        return ParentClosePolicy.TERMINATE


def waited_step(child: ExecutionRow) -> uuid.UUID | None:
    """The parent's step run waiting for this child's result (None: fire and forget)."""
    data = child.trigger_data or {}
    raw = data.get("parent_step_run_id")
    if child.parent_execution_id is None or not data.get("wait") or not isinstance(raw, str):
        return None
    return uuid.UUID(raw)


async def resolve(
    session: AsyncSession, organization_id: uuid.UUID, ref: str, version: int | None
) -> WorkflowRow:
    """The version of workflow ``ref`` (an id of any of its versions, or its kebab name) that
    a child runs: ``version`` when pinned, else the newest active version, else the newest."""
    try:
        ident: uuid.UUID | None = uuid.UUID(ref)
    except ValueError:
        ident = None
    if ident is not None:
        row = await session.get(WorkflowRow, ident)
        if row is None or row.organization_id != organization_id:
            raise NotFound("workflow", ref)
        stmt = versions.history(WorkflowRow, versions.lineage_id(row))
    else:
        stmt = (
            select(WorkflowRow)
            .where(WorkflowRow.organization_id == organization_id, WorkflowRow.kebab_name == ref)
            .order_by(WorkflowRow.version.desc())
        )
    rows: list[WorkflowRow] = [
        r for r in (await session.execute(stmt)).scalars() if r.deleted_at is None
    ]
    if not rows:
        raise NotFound("workflow", ref)
    if version is not None:
        pinned = next((r for r in rows if r.version == version), None)
        if pinned is None:
            raise NotFound("workflow version", f"{version} of {ref}")
        return pinned
    return next((r for r in rows if r.status == WorkflowStatus.ACTIVE), rows[0])


def declared(request: ChildRequest, plan: Plan) -> ChildRequest:
    """A step may name a child the definition declares (``child_workflows``, seed 003) by its
    local name: the declaration's workflow and parent close policy then apply."""
    found = next((c for c in plan.definition.child_workflows if c.name == request.workflow), None)
    if found is None:
        return request
    policy = ParentClosePolicy(found.parent_close_policy.value)
    return dataclasses.replace(request, workflow=found.workflow, parent_close_policy=policy)


async def start(
    session: AsyncSession,
    parent: ExecutionRow,
    run: StepRunRow,
    request: ChildRequest,
    plan: Plan,
    plans: PlanCache,
    now: dt.datetime,
) -> StepOutcome | None:
    """Start the child of workflow step ``run`` (now ``waiting``). Returns the step's outcome
    when it ends at once (fire and forget, a child that cannot start, one that already ended),
    else None: the step waits and the child's end completes it."""
    request = declared(request, plan)
    depth = depth_of(parent) + 1
    if depth > request.max_depth:
        return _refused(
            "child_depth_exceeded",
            f"child executions nest deeper than {request.max_depth} levels "
            "([runtimes.workflow] max_depth); does a workflow start itself?",
        )
    key = f"{run.idempotency_key}:{run.attempt}"
    link: dict[str, Any] = {}
    if request.tool_key is not None:
        key, link = f"{key}:tool:{request.tool_key}", {"tool_call_id": request.tool_call_id}
    try:
        target = await resolve(session, parent.organization_id, request.workflow, request.version)
        started = await executions.launch(
            session, target, input_data=request.input, trigger_type=parent.trigger_type,
            trigger_data={
                "parent_execution_id": str(parent.id), "parent_step_key": run.step_key,
                "parent_step_run_id": str(run.id), "wait": request.wait, "depth": depth,
                "parent_close_policy": request.parent_close_policy.value,
                events.CHILD_CHAIN_KEY: events.chain_depth(
                    parent.trigger_data or {}, child=parent.parent_execution_id is not None
                ),
                **link,
            },
            plans=plans, notify=_nothing, now=now, user_id=parent.user_id,
            api_key_id=parent.api_key_id, idempotency_key=key,
            input_path=("inputs",), parent_execution_id=parent.id, parent_step_key=run.step_key,
        )  # fmt: skip
    except TurbocatError as exc:
        return _refused("child_not_started", f"workflow {request.workflow!r}: {_explain(exc)}")
    child = started.execution
    if not request.wait:
        return StepOutcome(output={"execution_id": str(child.id)})
    if child.status in ENDED:  # started by an earlier recording of this attempt, and done
        return outcome_of(child)
    held = run.output if request.tool_key is not None and isinstance(run.output, dict) else {}
    run.output = {**held, "execution_id": str(child.id)}  # an llm step keeps its checkpoint
    return None


def _nothing() -> None:
    """Workers are woken by the recording worker itself and by NOTIFY (PostgreSQL)."""


def _refused(kind: str, message: str) -> StepOutcome:
    return StepOutcome(failure=StepFailure(kind, message, False))


def _explain(exc: TurbocatError) -> str:
    detail = str(exc)
    if isinstance(exc, ValidationFailed) and exc.errors:
        fields = "; ".join(".".join(map(str, e.path)) + ": " + e.message for e in exc.errors)
        detail = f"{detail} ({fields})"
    return detail


def outcome_of(child: ExecutionRow) -> StepOutcome:
    """The waiting step's outcome once its child ended: the child's outputs, or its error.
    A failed or timed-out child may be retried by the step's retry policy (a new child); a
    cancelled one is final."""
    if child.status == ExecutionStatus.COMPLETED:
        return StepOutcome(output=child.output_data)
    details: dict[str, Any] = {"execution_id": str(child.id), "status": child.status.value}
    reason = child.error_message or child.status.value
    failure = StepFailure(
        f"child_{child.status.value}",
        f"child execution {child.id} {child.status.value}: {reason}",
        child.status != ExecutionStatus.CANCELLED,
        details=details,
    )
    return StepOutcome(failure=failure)


async def live_children(session: AsyncSession, parent_id: uuid.UUID) -> list[ExecutionRow]:
    """The parent's children still running (or pending), oldest first."""
    stmt = (
        select(ExecutionRow)
        .where(
            ExecutionRow.parent_execution_id == parent_id,
            ExecutionRow.status.in_(
                [ExecutionStatus.PENDING, ExecutionStatus.RUNNING, ExecutionStatus.WAITING]
            ),
        )
        .order_by(ExecutionRow.created_at, ExecutionRow.id)
    )
    return list((await session.execute(stmt)).scalars())


def child_id(run: StepRunRow, ended: StepOutcome | None = None) -> uuid.UUID | None:
    """The child a workflow step started (its output while it waits, or once it fired and
    forgot)."""
    source = ended.output if ended is not None else run.output
    raw = source.get("execution_id") if isinstance(source, dict) else None
    try:
        return uuid.UUID(str(raw)) if raw is not None else None
    except ValueError:
        return None


# --- workflows as llm tools -------------------------------------------------------------------


def tool_call_of(child: ExecutionRow) -> str | None:
    """The llm tool call ``child`` answers (None: a workflow step's child)."""
    raw = (child.trigger_data or {}).get("tool_call_id")
    return raw if isinstance(raw, str) and child.parent_execution_id is not None else None


def answer_tool(
    run: StepRunRow, call_id: str, ended: StepOutcome, now: dt.datetime, child: str | None = None
) -> bool:
    """The llm step ``run`` (waiting) gets its workflow tool's answer: the child's output, or
    its failure as an error the model reads (as an agent tool's failure is), appended to the
    checkpoint in its output; the step is ready to run on at once. False when ``run`` holds
    no checkpoint waiting for ``call_id`` (nothing changes)."""
    failure = ended.failure
    output = checkpoint.answered(
        run.output, call_id, result=None if failure else ended.output,
        error=f"{failure.type}: {failure.message}" if failure else None, execution_id=child,
    )  # fmt: skip
    if output is None:
        return False
    run.output = output
    run.status, run.scheduled_for, run.updated_at = StepStatus.READY, now, now
    run.lease_owner = run.lease_expires_at = run.completed_at = None
    run.error = None
    return True


async def resume_tool(
    session: AsyncSession, child: ExecutionRow, call_id: str, now: dt.datetime
) -> StepRunRow | None:
    """``child``, an llm step's workflow tool, ended (its parent is locked by the caller):
    the step runs on with its result. The step run made ready, or None when it no longer
    waits (timed out, cancelled)."""
    run_id = waited_step(child)
    if run_id is None:
        return None
    run = await session.get(StepRunRow, run_id, populate_existing=True)
    if run is None or run.status != StepStatus.WAITING:
        return None
    if not answer_tool(run, call_id, outcome_of(child), now, str(child.id)):
        return None
    return run
