"""Executions: start a run, watch it step by step, read its logs."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, status
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import AwareDatetime

from turbocat.api.deps import ContextDep, NowDep, PrincipalDep, SessionDep
from turbocat.api.paging import PageDep, make_page
from turbocat.api.schemas.common import PROBLEM_RESPONSES, Page
from turbocat.api.schemas.executions import (
    ExecutionCreate,
    ExecutionDetail,
    ExecutionLogRead,
    ExecutionRead,
    SignalDelivered,
    SignalSend,
    StepRunRead,
)
from turbocat.api.waiting import WaitForExecution
from turbocat.db.engine import TenantContext
from turbocat.db.models import ExecutionRow
from turbocat.domain.enums import ExecutionStatus, LogLevel, StepStatus, TriggerType
from turbocat.domain.errors import ValidationFailed
from turbocat.domain.runs import EXECUTION_TERMINAL as TERMINAL
from turbocat.services import executions, workers

STREAM_POLL_SECONDS = 0.2
STREAM_MAX_SECONDS = 3600

router = APIRouter(tags=["executions"], responses=PROBLEM_RESPONSES)


@router.post(
    "/workflows/{workflow_id}/executions",
    name="executions-start",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ExecutionRead,
    responses={200: {"model": ExecutionRead, "description": "ended within ?wait"}},
)
async def start_execution(
    workflow_id: uuid.UUID,
    body: ExecutionCreate,
    ctx: ContextDep,
    principal: PrincipalDep,
    session: SessionDep,
    now: NowDep,
    wait: Annotated[
        float | None,
        Query(
            ge=0,
            description="seconds to wait for the execution to end (200 with its "
            "output when it does; 202 as without wait when it does not)",
        ),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=200,
            description="the same key with the same body "
            "returns the same execution; with another body it is a 409",
        ),
    ] = None,
) -> Response:
    """Run this workflow version with ``input`` (validated against the definition's
    ``inputs`` schema before anything is written). Answers at once with 202; follow the
    execution at ``GET /api/v1/executions/{id}``, or pass ``?wait=`` to get the output."""
    limit = ctx.settings.triggers.max_wait_seconds
    if wait is not None and wait > limit:
        raise ValidationFailed.field(("query", "wait"), f"must be at most {limit:g} seconds")
    row = await executions.start(
        session, principal, workflow_id, input_data=body.input, trigger_type=body.trigger_type,
        trigger_data=None, plans=ctx.plans, notify=ctx.notifier.notify, now=now,
        idempotency_key=idempotency_key,
    )  # fmt: skip
    if not wait:
        return _execution(row, status.HTTP_202_ACCEPTED)

    def answer(ended_row: ExecutionRow | None, ended: bool) -> Response:
        latest = ended_row or row
        return _execution(latest, status.HTTP_200_OK if ended else status.HTTP_202_ACCEPTED)

    return WaitForExecution(ctx.db, row.organization_id, row.id, wait, answer)


def _execution(row: ExecutionRow, code: int) -> JSONResponse:
    return JSONResponse(
        ExecutionRead.model_validate(row).model_dump(mode="json"),
        status_code=code,
        headers={"Location": f"/api/v1/executions/{row.id}"},
    )


@router.get("/executions", name="executions-list", response_model=Page[ExecutionRead])
async def list_executions(
    principal: PrincipalDep,
    session: SessionDep,
    page: PageDep,
    workflow_id: Annotated[
        uuid.UUID | None, Query(description="any version of this workflow")
    ] = None,
    status_: Annotated[ExecutionStatus | None, Query(alias="status")] = None,
    trigger_type: TriggerType | None = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    parent_execution_id: Annotated[
        uuid.UUID | None, Query(description="only the children this execution started")
    ] = None,
) -> Page[ExecutionRead]:
    filters = executions.ExecutionFilter(
        workflow_id, status_, trigger_type, since, until, parent_execution_id
    )
    return make_page(
        await executions.list_executions(session, principal, filters, page), page, ExecutionRead
    )


@router.get("/executions/{execution_id}", name="executions-get", response_model=ExecutionDetail)
async def get_execution(
    execution_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, ctx: ContextDep,
    now: NowDep,
) -> ExecutionDetail:  # fmt: skip
    """The execution with every step run (one per step and attempt). A ready step that no live
    worker's queue covers says so in ``status_detail`` (its queue is in
    ``waiting_for_workers``)."""
    row = await executions.get(session, principal, execution_id)
    runs = await executions.step_runs(session, row)
    live: set[str] = set()
    if any(r.status == StepStatus.READY for r in runs):
        timeout = dt.timedelta(seconds=ctx.settings.scheduler.worker_heartbeat_timeout_seconds)
        live = await workers.live_queues(session, now, timeout)
    steps = [
        StepRunRead.model_validate(r).model_copy(
            update={"status_detail": workers.waiting_for_worker(r, live, now)}
        )
        for r in runs
    ]
    waiting = sorted({s.queue for s in steps if s.status_detail})
    return ExecutionDetail(
        **ExecutionRead.model_validate(row).model_dump(), steps=steps, waiting_for_workers=waiting
    )


@router.post(
    "/executions/{execution_id}/rerun",
    name="executions-rerun",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ExecutionRead,
)
async def rerun_execution(
    execution_id: uuid.UUID,
    ctx: ContextDep,
    principal: PrincipalDep,
    session: SessionDep,
    now: NowDep,
) -> ExecutionRead:
    """Re-run a failed, timed-out or cancelled execution from its failed step: a new execution
    (``rerun_of``) where completed steps keep their outputs and do not run again."""
    row = await executions.rerun(
        session, principal, execution_id, plans=ctx.plans, notify=ctx.notifier.notify, now=now
    )
    return ExecutionRead.model_validate(row)


@router.post(
    "/executions/{execution_id}/cancel", name="executions-cancel", response_model=ExecutionRead
)
async def cancel_execution(
    execution_id: uuid.UUID,
    ctx: ContextDep,
    principal: PrincipalDep,
    session: SessionDep,
    now: NowDep,
) -> ExecutionRead:
    """Cancel a pending, running or waiting execution: steps not yet run are cancelled and
    running ones stop within a second. 409 when it has already ended."""
    row = await executions.cancel(
        session, principal, execution_id, notify=ctx.notifier.notify, now=now
    )
    return ExecutionRead.model_validate(row)


@router.post(
    "/executions/{execution_id}/signals/{name}",
    name="executions-signal",
    response_model=SignalDelivered,
)
async def send_signal(
    execution_id: uuid.UUID,
    name: str,
    body: SignalSend,
    ctx: ContextDep,
    principal: PrincipalDep,
    session: SessionDep,
    now: NowDep,
) -> SignalDelivered:
    """Deliver a signal the workflow declares (human approval is one): the steps waiting for
    it complete with ``payload`` as their output. 409 when no step is waiting for it.

    A signal that feeds a work queue adds ``payload`` to the queue (``queued``), checked
    against the queue's ``item_schema`` (422); the step waiting longest on the queue takes it
    at once. A deduplicating queue drops an item equal to a pending one (``duplicate``, 200);
    a queue holding ``max_size`` items refuses more (409)."""
    delivery = await executions.signal(
        session, principal, execution_id, name, body.payload,
        plans=ctx.plans, notify=ctx.notifier.notify, now=now,
    )  # fmt: skip
    return SignalDelivered(
        signal=name,
        delivered_to=delivery.delivered,
        queued=delivery.queued,
        duplicate=delivery.duplicate,
    )


@router.get("/executions/{execution_id}/queries/{name}", name="executions-query")
async def run_query(
    execution_id: uuid.UUID,
    name: str,
    ctx: ContextDep,
    principal: PrincipalDep,
    session: SessionDep,
) -> Any:
    """Read live state without changing it: the built-in ``state`` query, or one the workflow
    declares (an expression over input, steps and vars)."""
    return {
        "query": name,
        "result": await executions.query(session, principal, execution_id, name, plans=ctx.plans),
    }


@router.get(
    "/executions/{execution_id}/logs/stream",
    name="executions-logs-stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_logs(
    execution_id: uuid.UUID,
    ctx: ContextDep,
    principal: PrincipalDep,
    session: SessionDep,
    level: Annotated[LogLevel | None, Query(description="this level and above")] = None,
    last_event_id: Annotated[
        uuid.UUID | None, Header(description="resume after this log id")
    ] = None,
) -> StreamingResponse:
    """Server-Sent Events: every log line of the execution as it is written (``event: log``,
    the line as JSON, its id as the event id), then ``event: end`` once the execution has
    finished. Authenticated and scoped like every other route; resumable with Last-Event-ID."""
    await executions.get(session, principal, execution_id)  # 404 for another tenant's id
    context = TenantContext(organization_id=principal.organization_id, user_id=principal.user_id)

    async def events() -> AsyncIterator[bytes]:
        after = last_event_id
        idle_since = time.monotonic()
        deadline = time.monotonic() + STREAM_MAX_SECONDS
        while time.monotonic() < deadline:
            async with ctx.db.transaction(context) as tx:
                # The status before the lines: PostgreSQL reads each statement at a snapshot
                # of its own, so lines read after seeing the execution ended include the last
                # ones (read the other way round, a commit between the two reads ended the
                # stream without the lines written with the end).
                execution = await executions.get(tx, principal, execution_id)
                finished = execution.status in TERMINAL
                rows = await executions.logs(
                    tx, principal, execution_id, min_level=level, after_id=after, limit=500
                )
            for row in rows:
                body = ExecutionLogRead.model_validate(row).model_dump_json()
                yield f"id: {row.id}\nevent: log\ndata: {body}\n\n".encode()
                after = row.id
            if rows:
                idle_since = time.monotonic()
                continue
            if finished:
                end = json.dumps({"status": execution.status.value})
                yield f"event: end\ndata: {end}\n\n".encode()
                return
            if time.monotonic() - idle_since > 15:
                idle_since = time.monotonic()
                yield b": keep-alive\n\n"
            await asyncio.sleep(STREAM_POLL_SECONDS)

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


@router.get(
    "/executions/{execution_id}/logs", name="executions-logs", response_model=list[ExecutionLogRead]
)
async def execution_logs(
    execution_id: uuid.UUID,
    principal: PrincipalDep,
    session: SessionDep,
    level: Annotated[LogLevel | None, Query(description="this level and above")] = None,
    after: Annotated[uuid.UUID | None, Query(description="log id to continue after")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[ExecutionLogRead]:
    rows = await executions.logs(
        session, principal, execution_id, min_level=level, after_id=after, limit=limit
    )
    return [ExecutionLogRead.model_validate(r) for r in rows]
