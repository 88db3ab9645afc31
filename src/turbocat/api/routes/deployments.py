"""Deployments: a workflow or agent version behind an endpoint with its own key, and its
lifecycle.

Invoking runs outside the request's usual single transaction: the execution is started and
committed first (so a worker can run it), the request then waits for it without holding a
transaction, and the counters are updated last in one UPDATE of their own.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse

from turbocat.api.deps import (
    ContextDep,
    MetaDep,
    NowDep,
    PrincipalDep,
    SessionDep,
    _bearer,
    _keyring,
    _principal_in,
)
from turbocat.api.errors import problem
from turbocat.api.paging import PageDep, make_page
from turbocat.api.schemas.common import PROBLEM_RESPONSES, Page
from turbocat.api.schemas.deployments import (
    DeploymentCreate,
    DeploymentCreated,
    DeploymentRead,
    DeploymentUpdate,
    InvokeRequest,
    InvokeResult,
)
from turbocat.bootstrap import AppContext
from turbocat.db.engine import TenantContext
from turbocat.db.models import ExecutionRow
from turbocat.domain import deployments as rules
from turbocat.domain.enums import DeploymentStatus, Environment, ExecutionStatus
from turbocat.domain.runs import EXECUTION_TERMINAL
from turbocat.services import auth, deployments

router = APIRouter(tags=["deployments"], responses=PROBLEM_RESPONSES)
_ERRORS = (ExecutionStatus.FAILED, ExecutionStatus.TIMEOUT, ExecutionStatus.CANCELLED)


@router.post(
    "/deployments", name="deployments-create", status_code=status.HTTP_201_CREATED,
    response_model=DeploymentCreated,
)  # fmt: skip
async def create_deployment(
    body: DeploymentCreate, ctx: ContextDep, principal: PrincipalDep, session: SessionDep,
    now: NowDep, meta: MetaDep,
) -> DeploymentCreated:  # fmt: skip
    """Deploy a workflow or agent version (exactly one) to an environment. It starts
    ``stopped``; the answer carries the endpoint key, shown this once."""
    values = deployments.DeploymentValues(**body.model_dump())
    row, key = await deployments.create(
        session, principal, values, keyring=lambda: _keyring(ctx),
        public_url=ctx.settings.api.public_url, now=now, meta=meta,
    )  # fmt: skip
    return DeploymentCreated(**DeploymentRead.model_validate(row).model_dump(), api_key=key)


@router.get("/deployments", name="deployments-list", response_model=Page[DeploymentRead])
async def list_deployments(
    principal: PrincipalDep,
    session: SessionDep,
    page: PageDep,
    environment: Environment | None = None,
    status_: Annotated[DeploymentStatus | None, Query(alias="status")] = None,
) -> Page[DeploymentRead]:
    rows = await deployments.list_deployments(
        session, principal, page, environment=environment, status=status_
    )
    return make_page(rows, page, DeploymentRead)


@router.get("/deployments/{deployment_id}", name="deployments-get", response_model=DeploymentRead)
async def get_deployment(
    deployment_id: uuid.UUID, principal: PrincipalDep, session: SessionDep
) -> DeploymentRead:
    return DeploymentRead.model_validate(await deployments.get(session, principal, deployment_id))


@router.patch(
    "/deployments/{deployment_id}", name="deployments-update", response_model=DeploymentRead
)
async def update_deployment(
    deployment_id: uuid.UUID, body: DeploymentUpdate, ctx: ContextDep, principal: PrincipalDep,
    session: SessionDep, now: NowDep, meta: MetaDep,
) -> DeploymentRead:  # fmt: skip
    row = await deployments.update_deployment(
        session, principal, deployment_id, body.model_dump(exclude_unset=True),
        keyring=lambda: _keyring(ctx), now=now, meta=meta,
    )  # fmt: skip
    return DeploymentRead.model_validate(row)


@router.delete(
    "/deployments/{deployment_id}",
    name="deployments-delete",
    status_code=status.HTTP_204_NO_CONTENT,
)
async def delete_deployment(
    deployment_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, now: NowDep,
    meta: MetaDep,
) -> Response:  # fmt: skip
    """Delete a stopped (or failed) deployment; its key stops working at once."""
    await deployments.delete(session, principal, deployment_id, now=now, meta=meta)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


_INVOKE_DOC = """Run the deployed workflow or agent version with ``input`` (an agent
deployment answers the agent's own output as ``output``). Authenticate with the
deployment's own key (``Authorization: Bearer tcd_...``) or an organization token or API key
with ``executions:write``. With ``wait`` (default) the answer is the output once the execution
ends (200), or 202 with the execution id if it runs longer than ``timeout_seconds``. A stopped
deployment answers 409, one in maintenance 503 with Retry-After; bad input 422 (nothing
written). Steps read the deployment's environment variables as ``vars``."""


@router.post(
    "/deployments/{deployment_id}/invoke", name="deployments-invoke", description=_INVOKE_DOC,
    response_model=InvokeResult, responses={202: {"model": InvokeResult}},
)  # fmt: skip
async def invoke_deployment(
    deployment_id: uuid.UUID,
    body: InvokeRequest,
    ctx: ContextDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    return await _invoke(ctx, body, authorization, deployment_id=deployment_id, slug=None)


@router.post(
    "/d/{slug}/invoke", name="deployments-invoke-by-slug", description=_INVOKE_DOC,
    response_model=InvokeResult, responses={202: {"model": InvokeResult}},
)  # fmt: skip
async def invoke_by_slug(
    slug: str,
    body: InvokeRequest,
    ctx: ContextDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    return await _invoke(ctx, body, authorization, deployment_id=None, slug=slug)


# Declared after the invoke routes: FastAPI matches in order, and /invoke is not an action.
@router.post(
    "/deployments/{deployment_id}/{action}",
    name="deployments-act",
    response_model=DeploymentRead,
)
async def act_on_deployment(
    deployment_id: uuid.UUID,
    action: Annotated[
        str,
        Path(
            pattern="^(start|stop|maintenance|resume)$",
            description="start (stopped|failed -> starting -> running), stop (running -> "
            "stopping -> stopped), maintenance (running -> maintenance), resume "
            "(maintenance -> running)",
        ),
    ],
    principal: PrincipalDep,
    session: SessionDep,
    now: NowDep,
    meta: MetaDep,
    request: Request,
) -> DeploymentRead | Response:
    """A lifecycle action; 409 when the lifecycle does not allow it from the current status,
    or when a start finds the version gone (the deployment is then ``failed``)."""
    row, refused = await deployments.act(
        session, principal, deployment_id, action, now=now, meta=meta
    )
    if refused is not None:  # answered, not raised: the failed status is committed
        return problem(
            409, refused.title, refused.detail, code=refused.code, instance=request.url.path
        )
    return DeploymentRead.model_validate(row)


async def _invoke(
    ctx: AppContext,
    body: InvokeRequest,
    authorization: str | None,
    *,
    deployment_id: uuid.UUID | None,
    slug: str | None,
) -> Response:
    started = time.monotonic()
    secret = _bearer(authorization)
    now = ctx.clock()
    async with ctx.db.transaction() as session:
        if rules.is_well_formed_key(secret):
            row = await deployments.find_by_key(
                session, secret, deployment_id=deployment_id, slug=slug
            )
            principal = None
        else:
            identity = await auth.authenticate(session, secret, now)
            principal = await _principal_in(ctx, session, identity, None, now)
            principal.require_access("executions", write=True)
            row = (
                await deployments.get(session, principal, deployment_id)
                if deployment_id is not None
                else await deployments.find_by_slug(session, principal, slug or "")
            )
        execution = await deployments.invoke(
            session, row, principal, body.input, plans=ctx.plans, notify=ctx.notifier.notify,
            now=now,
        )  # fmt: skip
        org_id, dep_id, execution_id = row.organization_id, row.id, execution.id
        agent = row.agent_id is not None
        result = _result(execution, dep_id, agent)
    if body.wait:
        result = (
            await _wait(ctx, org_id, dep_id, execution_id, body.timeout_seconds, agent) or result
        )
    elapsed = int((time.monotonic() - started) * 1000)
    async with ctx.db.transaction(TenantContext(organization_id=org_id)) as session:
        await deployments.record_request(
            session, dep_id, elapsed_ms=elapsed, error=result.status in _ERRORS
        )
    code = 200 if result.status in EXECUTION_TERMINAL else 202
    return JSONResponse(result.model_dump(mode="json"), status_code=code)


def _result(row: ExecutionRow, deployment_id: uuid.UUID, agent: bool) -> InvokeResult:
    """``agent``: an agent deployment, whose workflow's one output is the agent's output."""
    output: Any = row.output_data if row.status in EXECUTION_TERMINAL else None
    if agent and isinstance(output, dict):
        output = output.get(deployments.AGENT_OUTPUT)
    return InvokeResult(
        execution_id=row.id, deployment_id=deployment_id, status=row.status, output=output,
        error=row.error_message, duration_ms=row.duration_ms,
    )  # fmt: skip


async def _wait(
    ctx: AppContext,
    organization_id: uuid.UUID,
    deployment_id: uuid.UUID,
    execution_id: uuid.UUID,
    seconds: float,
    agent: bool,
) -> InvokeResult | None:
    """The result once the execution ended, or as it is when ``seconds`` ran out."""
    deadline = time.monotonic() + seconds
    interval = 0.01
    context = TenantContext(organization_id=organization_id)
    while True:
        async with ctx.db.transaction(context, readonly=True) as session:
            row = await session.get(ExecutionRow, execution_id)
            result = _result(row, deployment_id, agent) if row is not None else None
        left = deadline - time.monotonic()
        if result is None or result.status in EXECUTION_TERMINAL or left <= 0:
            return result
        await asyncio.sleep(min(interval, left))
        interval = min(interval * 2, 0.25)
