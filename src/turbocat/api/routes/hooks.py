"""``POST /hooks/{token}``: the public side of webhooks, outside the authenticated API.

The token is the credential. The body is read up to ``triggers.webhook_max_body_bytes`` before
any transaction opens; the execution starts in a transaction of its own, committed before the
answer, so a waiting webhook holds no transaction while the workflow runs.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, status
from fastapi.responses import JSONResponse, Response

from turbocat.api.deps import ContextDep, require_keyring
from turbocat.api.errors import problem
from turbocat.api.schemas.common import PROBLEM_RESPONSES
from turbocat.api.schemas.triggers import WebhookAccepted
from turbocat.api.waiting import WaitForExecution
from turbocat.db.models import ExecutionRow
from turbocat.domain.enums import ExecutionStatus
from turbocat.domain.errors import PayloadTooLarge
from turbocat.services import webhooks

router = APIRouter(tags=["webhooks"], responses=PROBLEM_RESPONSES)

_HOOK_PATH = re.compile(r"(/hooks/)([A-Za-z0-9_]{12})[A-Za-z0-9_]*")


class _HideTokens(logging.Filter):
    """Access log lines show ``/hooks/whk_12345678...`` (the listing's ``token_prefix``), never
    the whole token: it is the webhook's credential."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _HOOK_PATH.sub(r"\1\2...", a) if isinstance(a, str) else a for a in record.args
            )
        return True


def hide_tokens_in_access_log() -> None:
    """Install the filter on the HTTP server's access log (once per process)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _HideTokens) for f in access.filters):
        access.addFilter(_HideTokens())


async def _body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length", "")
    too_large = PayloadTooLarge(f"a webhook body may have at most {limit} bytes")
    if length.isdigit() and int(length) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _query(request: Request) -> dict[str, Any]:
    query: dict[str, Any] = {}
    for key in request.query_params:
        values = request.query_params.getlist(key)
        query[key] = values[0] if len(values) == 1 else values
    return query


def _accepted(execution: ExecutionRow, duplicate: bool) -> JSONResponse:
    body = WebhookAccepted(
        execution_id=execution.id, status=execution.status.value, duplicate=duplicate
    )
    return JSONResponse(
        body.model_dump(mode="json"),
        status_code=status.HTTP_202_ACCEPTED,
        headers={"X-Turbocat-Execution-Id": str(execution.id)},
    )


@router.post(
    "/hooks/{token}",
    name="webhooks-receive",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=WebhookAccepted,
    responses={
        200: {
            "description": "waiting webhook: the workflow's output (status from its "
            "trigger_config.webhook.response_status)"
        },
        502: {"description": "waiting webhook: the workflow failed"},
    },
)
async def receive_webhook(
    token: Annotated[str, Path(max_length=100)], request: Request, ctx: ContextDep
) -> Response:
    """Start the workflow with the request body as its input (a JSON object; other bodies
    arrive as ``input.body``); method, headers, query and body are in the execution's
    ``trigger_data``. Answers 202 with the execution id, or, for a waiting webhook, with the
    output once the workflow ends (202 with the id if it takes longer than the wait).

    404 for any token that starts nothing (unknown, disabled, rotated), 413 over the body
    limit, 415 for a content type the webhook does not accept, 401 for a missing, wrong,
    stale or replayed signature, 422 for a body the workflow's inputs schema refuses."""
    settings = ctx.settings.triggers
    raw = await _body(request, settings.webhook_max_body_bytes)
    incoming = webhooks.Incoming(
        method=request.method, headers=dict(request.headers), query=_query(request), body=raw
    )
    async with ctx.db.transaction() as session:
        received = await webhooks.receive(
            session, token, incoming, keyring=lambda: require_keyring(ctx), settings=settings,
            plans=ctx.plans, notify=ctx.notifier.notify, now=ctx.clock(),
        )  # fmt: skip
    execution, duplicate = received.started.execution, not received.started.created
    if received.wait_seconds is None:
        return _accepted(execution, duplicate)

    def answer(row: ExecutionRow | None, ended: bool) -> Response:
        if row is None or not ended:
            return _accepted(row or execution, duplicate)
        headers = {"X-Turbocat-Execution-Id": str(row.id)}
        if row.status == ExecutionStatus.COMPLETED:
            return JSONResponse(
                row.output_data, status_code=received.response_status, headers=headers
            )
        return problem(
            status.HTTP_502_BAD_GATEWAY, "Workflow failed",
            f"the execution ended {row.status.value}: {row.error_message or 'no message'}",
            code="execution_failed", instance=request.url.path, headers=headers,
            execution_id=str(row.id),
        )  # fmt: skip

    return WaitForExecution(
        ctx.db, execution.organization_id, execution.id, received.wait_seconds, answer
    )
