"""Deployments (seeds 000/001): a workflow or agent version behind an endpoint with its own key.

An agent deployment runs through a hidden single-step workflow (``agent_workflow``), made when
it starts: kebab name ``deployment-<slug>``, tagged ``workflows.MANAGED_TAG`` (left out of
listings, plan limits and exports; read-only through the workflows API). Its step names the
agent version by id, so it runs exactly that version however the agent is edited later, and
takes the invoke input as its inputs (``"{{ input }}"``); its output is ``{"output": <the
agent's output>}``, which the endpoint answers unwrapped.

The endpoint key is shown once and stored as its SHA-256 (``api_key_hash``); a request that
presents it finds the row through the credential row-level-security policy before any tenant is
known. ``environment_vars`` are sealed with the keyring (registered in
``key_rotation.SEALED_COLUMNS``) and reach the steps of the deployment's executions as ``vars``.
Counters are single UPDATE statements with arithmetic, so concurrent invocations never lose one.
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db import tenancy
from turbocat.db.engine import TenantContext
from turbocat.db.listing import PageRequest, apply_page
from turbocat.db.models import AgentRow, DeploymentRow, ExecutionRow, WorkerRow, WorkflowRow
from turbocat.domain import credentials
from turbocat.domain import deployments as rules
from turbocat.domain.access import Principal
from turbocat.domain.enums import (
    DeploymentStatus,
    Environment,
    ExecutionStatus,
    TriggerType,
    WorkerStatus,
)
from turbocat.domain.errors import (
    AuthenticationFailed,
    Conflict,
    NotFound,
    Unavailable,
    ValidationFailed,
)
from turbocat.domain.slugs import slugify
from turbocat.engine.plan import PlanCache
from turbocat.security.crypto import Keyring, row_aad
from turbocat.services import agents, audit, executions, outbox, versions, workflows

_FIELDS = (
    "name", "slug", "workflow_id", "agent_id", "environment", "status", "config",
    "allocated_memory_mb", "allocated_cpu_shares", "api_key_prefix",
)  # fmt: skip
MAINTENANCE_RETRY_AFTER = 60
"""Seconds a client is told to wait (Retry-After) while a deployment is in maintenance."""
INVOKE_PATH = "/api/v1/d/{slug}/invoke"


@dataclass
class DeploymentValues:
    name: str
    workflow_id: uuid.UUID | None = None
    agent_id: uuid.UUID | None = None
    environment: Environment = Environment.PRODUCTION
    description: str | None = None
    config: dict[str, Any] | None = None
    environment_vars: dict[str, str] | None = None
    allocated_memory_mb: int = 512
    allocated_cpu_shares: int = 1024


def _seal(keyring: Keyring, row: DeploymentRow, env: dict[str, str] | None) -> None:
    if not env:
        row.environment_vars_encrypted = row.environment_vars_key_id = None
        return
    row.environment_vars_encrypted = keyring.encrypt_json(env, row_aad(row.organization_id, row.id))
    row.environment_vars_key_id = keyring.active_id


def environment_vars(keyring: Keyring, row: DeploymentRow) -> dict[str, Any]:
    """The decrypted environment variables (never returned by the API, only given to steps)."""
    if row.environment_vars_encrypted is None:
        return {}
    value = keyring.decrypt_json(
        row.environment_vars_encrypted, row_aad(row.organization_id, row.id)
    )
    return dict(value) if isinstance(value, dict) else {}


async def create(
    session: AsyncSession,
    principal: Principal,
    values: DeploymentValues,
    *,
    keyring: Callable[[], Keyring],
    public_url: str | None,
    now: dt.datetime,
    meta: audit.RequestMeta | None = None,
) -> tuple[DeploymentRow, str]:
    """A stopped deployment of exactly one workflow or agent version; returns the row and its
    endpoint key (shown once)."""
    principal.require_access("deployments", write=True)
    if (values.workflow_id is None) == (values.agent_id is None):
        raise ValidationFailed.field(
            ("body", "workflow_id"), "give exactly one of workflow_id and agent_id"
        )
    if not values.name.strip():
        raise ValidationFailed.field(("body", "name"), "must not be blank")
    if values.workflow_id is not None:
        await workflows.get(session, principal, values.workflow_id, for_write=True)
    if values.agent_id is not None:
        await agents.get(session, principal, values.agent_id, for_write=True)
    key = rules.make_key(secrets.token_bytes(24))
    slug = f"{slugify(values.name, 80)}-{secrets.token_hex(4)}"
    row = DeploymentRow(
        id=uuid.uuid4(),
        organization_id=principal.organization_id,
        created_by_id=principal.user_id,
        name=values.name.strip(),
        slug=slug,
        description=values.description,
        workflow_id=values.workflow_id,
        agent_id=values.agent_id,
        environment=values.environment,
        status=DeploymentStatus.STOPPED,
        config=values.config or {},
        endpoint_url=(public_url or "").rstrip("/") + INVOKE_PATH.format(slug=slug),
        api_key_hash=credentials.secret_hash(key),
        api_key_prefix=key[: credentials.DISPLAY_PREFIX_LEN],
        allocated_memory_mb=values.allocated_memory_mb,
        allocated_cpu_shares=values.allocated_cpu_shares,
        total_requests=0,
        total_errors=0,
        avg_response_time_ms=0,
        created_at=now,
        updated_at=now,
    )
    if values.environment_vars:
        _seal(keyring(), row, values.environment_vars)
    session.add(row)
    await session.flush()
    _audit(session, principal, row, "deployment.create", now, meta, before=None)
    return row, key


def _audit(
    session: AsyncSession,
    principal: Principal,
    row: DeploymentRow,
    action: str,
    now: dt.datetime,
    meta: audit.RequestMeta | None,
    *,
    before: dict[str, Any] | None,
) -> None:
    audit.record(
        session, organization_id=row.organization_id, actor=audit.Actor.of(principal),
        action=action, resource_type="deployment", resource_id=row.id, now=now, meta=meta,
        before=before, after=audit.snapshot(row, _FIELDS),
    )  # fmt: skip


async def get(
    session: AsyncSession, principal: Principal, deployment_id: uuid.UUID, *, write: bool = False
) -> DeploymentRow:
    principal.require_access("deployments", write=write)
    row = await session.get(DeploymentRow, deployment_id)
    if (
        row is None
        or row.deleted_at is not None
        or row.organization_id != principal.organization_id
    ):
        raise NotFound("deployment", deployment_id)
    return row


async def list_deployments(
    session: AsyncSession,
    principal: Principal,
    page: PageRequest,
    *,
    environment: Environment | None = None,
    status: DeploymentStatus | None = None,
) -> list[DeploymentRow]:
    principal.require_access("deployments")
    stmt = select(DeploymentRow).where(DeploymentRow.organization_id == principal.organization_id)
    if environment is not None:
        stmt = stmt.where(DeploymentRow.environment == environment)
    if status is not None:
        stmt = stmt.where(DeploymentRow.status == status)
    stmt = apply_page(
        stmt, page, id_col=DeploymentRow.id, created_col=DeploymentRow.created_at,
        name_col=DeploymentRow.name,
    )  # fmt: skip
    return list((await session.execute(stmt)).scalars())


async def update_deployment(
    session: AsyncSession,
    principal: Principal,
    deployment_id: uuid.UUID,
    changes: dict[str, Any],
    *,
    keyring: Callable[[], Keyring],
    now: dt.datetime,
    meta: audit.RequestMeta | None = None,
) -> DeploymentRow:
    """Rename, describe, reconfigure, or replace the environment variables (all at once)."""
    row = await get(session, principal, deployment_id, write=True)
    before = audit.snapshot(row, _FIELDS)
    for name in ("name", "description", "config", "allocated_memory_mb", "allocated_cpu_shares"):
        if name in changes and changes[name] is not None:
            setattr(row, name, changes[name])
    if "environment_vars" in changes:
        _seal(keyring(), row, changes["environment_vars"])
    row.updated_at = now
    await session.flush()
    _audit(session, principal, row, "deployment.update", now, meta, before=before)
    return row


Action = str
ACTIONS: dict[Action, tuple[DeploymentStatus, ...]] = {
    "start": (DeploymentStatus.STARTING, DeploymentStatus.RUNNING),
    "stop": (DeploymentStatus.STOPPING, DeploymentStatus.STOPPED),
    "maintenance": (DeploymentStatus.MAINTENANCE,),
    "resume": (DeploymentStatus.RUNNING,),
}
"""Each lifecycle action and the statuses it passes through (all checked before any is set)."""


async def act(
    session: AsyncSession,
    principal: Principal,
    deployment_id: uuid.UUID,
    action: Action,
    *,
    now: dt.datetime,
    meta: audit.RequestMeta | None = None,
) -> tuple[DeploymentRow, Conflict | None]:
    """Apply a lifecycle action; 409 when the lifecycle does not allow it from here.

    ``start`` goes through ``starting``: the target version is checked (it still exists and may
    run); if it may not, the deployment ends ``failed`` and the 409 to answer is returned
    rather than raised, so that the caller commits the failed status (and its event and audit
    entry) before answering it.
    """
    row = await get(session, principal, deployment_id, write=True)
    before = audit.snapshot(row, _FIELDS)
    steps = rules.path(row.status, *ACTIONS[action])
    if action == "start" and (problem := await _start_problem(session, row, now)) is not None:
        steps = rules.path(row.status, DeploymentStatus.STARTING, DeploymentStatus.FAILED)
        _emit(session, row, row.status, steps[-1], now, reason=problem)
        row.status = steps[-1]
        row.updated_at = now
        await session.flush()
        _audit(session, principal, row, "deployment.start", now, meta, before=before)
        return row, Conflict(f"the deployment could not start: {problem}")
    _emit(session, row, row.status, steps[-1], now)
    row.status = steps[-1]
    if action == "start":
        row.deployed_at = now
    row.updated_at = now
    await session.flush()
    _audit(session, principal, row, f"deployment.{action}", now, meta, before=before)
    return row, None


async def _start_problem(session: AsyncSession, row: DeploymentRow, now: dt.datetime) -> str | None:
    if row.agent_id is not None:
        if await _live_agent(session, row) is None:
            return "its agent version was deleted"
        await agent_workflow(session, row, now)
        return None
    if row.workflow_id is None:
        return None
    workflow = await session.get(WorkflowRow, row.workflow_id)
    if workflow is None or workflow.deleted_at is not None:
        return "its workflow version was deleted"
    if workflow.status not in executions.RUNNABLE:
        return f"its workflow version is {workflow.status.value}"
    return None


def _emit(
    session: AsyncSession,
    row: DeploymentRow,
    before: DeploymentStatus,
    after: DeploymentStatus,
    now: dt.datetime,
    *,
    reason: str | None = None,
) -> None:
    """The one place this module emits an event (into the change's transaction)."""
    payload: dict[str, Any] = {
        "deployment_id": str(row.id), "from": before.value, "to": after.value,
    }  # fmt: skip
    if reason:
        payload["reason"] = reason
    outbox.emit(session, row.organization_id, "deployment.status_changed", payload, now)


async def delete(
    session: AsyncSession,
    principal: Principal,
    deployment_id: uuid.UUID,
    *,
    now: dt.datetime,
    meta: audit.RequestMeta | None = None,
) -> None:
    """Soft-delete; the key stops working at once. A running deployment must be stopped first."""
    row = await get(session, principal, deployment_id, write=True)
    if row.status not in (DeploymentStatus.STOPPED, DeploymentStatus.FAILED):
        raise Conflict(f"stop the deployment first (it is {row.status.value})")
    before = audit.snapshot(row, _FIELDS)
    if row.agent_id is not None and (hidden := await _find_agent_workflow(session, row)):
        await versions.soft_delete_lineage(session, WorkflowRow, hidden, now)
    row.deleted_at = now
    row.api_key_hash = None
    row.updated_at = now
    await session.flush()
    _audit(session, principal, row, "deployment.delete", now, meta, before=before)


# --- invocation -------------------------------------------------------------------------------


async def find_by_key(
    session: AsyncSession, secret: str, *, deployment_id: uuid.UUID | None, slug: str | None
) -> DeploymentRow:
    """The deployment whose endpoint key this is (and which the URL names), then act in its
    organization; 401 otherwise."""
    digest = credentials.secret_hash(secret)
    await tenancy.enter(session, TenantContext(api_key_hash=digest))
    stmt = select(DeploymentRow).where(DeploymentRow.api_key_hash == digest)
    row = (await session.execute(stmt)).scalar_one_or_none()
    if (
        row is None
        or row.api_key_hash is None
        or not secrets.compare_digest(row.api_key_hash, digest)
    ):
        raise AuthenticationFailed("the deployment key is unknown")
    if (deployment_id is not None and row.id != deployment_id) or (
        slug is not None and row.slug != slug
    ):
        raise AuthenticationFailed("this key belongs to another deployment")
    await tenancy.enter(session, TenantContext(organization_id=row.organization_id))
    return row


async def find_by_slug(session: AsyncSession, principal: Principal, slug: str) -> DeploymentRow:
    principal.require_access("deployments")
    stmt = select(DeploymentRow).where(
        DeploymentRow.slug == slug, DeploymentRow.organization_id == principal.organization_id
    )
    row = (await session.execute(stmt)).scalar_one_or_none()
    if row is None:
        raise NotFound("deployment", slug)
    return row


async def invoke(
    session: AsyncSession,
    row: DeploymentRow,
    principal: Principal | None,
    input_data: dict[str, Any],
    *,
    plans: PlanCache,
    notify: Callable[[], None],
    now: dt.datetime,
) -> ExecutionRow:
    """Start an execution of the pinned version for an invocation. ``principal`` is the caller
    with an organization credential, None for the deployment's own key."""
    if row.status is DeploymentStatus.MAINTENANCE:
        raise Unavailable("the deployment is in maintenance", MAINTENANCE_RETRY_AFTER)
    if row.status not in rules.SERVING:
        raise Conflict(f"the deployment is {row.status.value}; start it first")
    if principal is not None:
        principal.require_access("executions", write=True)
    trigger_data = {"deployment_id": str(row.id), "environment": row.environment.value}
    if row.agent_id is not None:
        alive = await _live_agent(session, row) is not None
        workflow = await agent_workflow(session, row, now) if alive else None
        if workflow is None:
            raise Conflict("the deployed agent version was deleted")
        trigger_data["agent_id"] = str(row.agent_id)
    else:
        workflow = await session.get(WorkflowRow, row.workflow_id)
        if workflow is None or workflow.deleted_at is not None:
            raise Conflict("the deployed workflow version was deleted")
    started = await executions.launch(
        session, workflow, input_data=input_data, trigger_type=TriggerType.API,
        trigger_data=trigger_data,
        plans=plans, notify=notify, now=now,
        user_id=principal.user_id if principal else None,
        api_key_id=principal.api_key_id if principal else None,
    )  # fmt: skip
    execution = started.execution
    execution.deployment_id = row.id
    await session.flush()
    return execution


# --- agent deployments: the hidden workflow ---------------------------------------------------

AGENT_STEP = "agent"
"""The key of the one step of an agent deployment's workflow."""
AGENT_OUTPUT = "output"
"""The name of that workflow's one output: the step's output."""


def agent_document(agent: AgentRow) -> dict[str, Any]:
    """The definition of an agent deployment's workflow: the agent version by id, the invoke
    input as its inputs, its output as the workflow's, and the agent's ``parameters`` (its
    input JSON Schema) as the workflow's input schema, so bad input is a 422 before any run."""
    doc: dict[str, Any] = {
        "steps": [
            {"key": AGENT_STEP, "type": "agent", "agent": str(agent.id), "inputs": "{{ input }}"}
        ],
        "outputs": {AGENT_OUTPUT: f"{{{{ steps.{AGENT_STEP}.output }}}}"},
    }
    schema = agent.parameters or {}
    if schema and schema.get("type", "object") == "object":
        doc["inputs"] = schema
    return doc


def _agent_kebab(row: DeploymentRow) -> str:
    return f"deployment-{row.slug}"


async def _live_agent(session: AsyncSession, row: DeploymentRow) -> AgentRow | None:
    agent = await session.get(AgentRow, row.agent_id)
    if agent is None or agent.deleted_at is not None:
        return None
    return agent


async def _find_agent_workflow(session: AsyncSession, row: DeploymentRow) -> WorkflowRow | None:
    stmt = select(WorkflowRow).where(
        WorkflowRow.organization_id == row.organization_id,
        WorkflowRow.kebab_name == _agent_kebab(row),
    )
    return (await session.execute(stmt.limit(1))).scalar_one_or_none()


async def agent_workflow(
    session: AsyncSession, row: DeploymentRow, now: dt.datetime
) -> WorkflowRow | None:
    """The hidden workflow an agent deployment runs, made on first need (its start; an
    invocation of a deployment started before agent deployments could run). None when the
    agent version is gone. Two concurrent makers: the loser's insert fails on the unique
    (organization, kebab name, version) inside a savepoint and it reads the winner's."""
    found = await _find_agent_workflow(session, row)
    if found is not None:
        return found
    agent = await _live_agent(session, row)
    if agent is None:
        return None
    try:
        async with session.begin_nested():
            return await workflows.create_managed(
                session, organization_id=row.organization_id, created_by_id=row.created_by_id,
                name=f"Deployment {row.name}", kebab_name=_agent_kebab(row),
                description=f"Runs agent {agent.name!r} version {agent.version} for deployment "
                f"{row.id}; managed by the deployment.",
                document=agent_document(agent), agents_by_ref={str(agent.id): agent}, now=now,
            )  # fmt: skip
    except IntegrityError:
        return await _find_agent_workflow(session, row)


async def record_request(
    session: AsyncSession, deployment_id: uuid.UUID, *, elapsed_ms: int, error: bool
) -> None:
    """Count one served request: one UPDATE whose arithmetic runs in the database, so
    concurrent requests serialize on the row and none is lost. The average is a running mean
    rounded to the millisecond."""
    n, avg = DeploymentRow.total_requests, DeploymentRow.avg_response_time_ms
    await session.execute(
        update(DeploymentRow)
        .where(DeploymentRow.id == deployment_id)
        .values(
            total_requests=n + 1,
            total_errors=DeploymentRow.total_errors + int(error),
            avg_response_time_ms=(avg * n + max(0, elapsed_ms) + (n + 1) // 2) // (n + 1),
        ),
        execution_options={"synchronize_session": False},
    )


# --- health -----------------------------------------------------------------------------------

CHECKED = (DeploymentStatus.RUNNING, DeploymentStatus.MAINTENANCE)


async def any_to_check(session: AsyncSession) -> bool:
    """Whether a health check has anything to do (read-only, so an idle scheduler never takes
    SQLite's write lock)."""
    stmt = select(DeploymentRow.id).where(DeploymentRow.status.in_(CHECKED)).limit(1)
    return (await session.execute(stmt)).first() is not None


async def check_health(
    session: AsyncSession,
    now: dt.datetime,
    *,
    window: dt.timedelta,
    heartbeat_timeout: dt.timedelta,
    thresholds: rules.HealthThresholds,
) -> int:
    """Set ``health_status`` and ``last_health_check_at`` of every running deployment (system
    context): from its executions that ended within ``window`` and whether a worker with a
    fresh heartbeat serves the queue its workflow runs on. Returns how many were checked."""
    rows = (
        (await session.execute(select(DeploymentRow).where(DeploymentRow.status.in_(CHECKED))))
        .scalars()
        .all()
    )
    if not rows:
        return 0
    live_queues: set[str] = set()
    for queues in (
        await session.execute(
            select(WorkerRow.queues).where(
                WorkerRow.status == WorkerStatus.RUNNING,
                WorkerRow.last_heartbeat_at >= now - heartbeat_timeout,
            )
        )
    ).scalars():
        live_queues.update(queues)
    for row in rows:
        traffic = await _recent_traffic(session, row.id, now - window)
        queue = "default"
        if row.workflow_id is not None:
            workflow = await session.get(WorkflowRow, row.workflow_id)
            queue = workflow.task_queue if workflow is not None else queue
        row.health_status = rules.health(traffic, queue in live_queues, thresholds)
        row.last_health_check_at = now
    await session.flush()
    return len(rows)


FAILED = (ExecutionStatus.FAILED, ExecutionStatus.TIMEOUT)


async def _recent_traffic(
    session: AsyncSession, deployment_id: uuid.UUID, since: dt.datetime
) -> rules.RecentTraffic:
    ended = (
        ExecutionRow.deployment_id == deployment_id,
        ExecutionRow.completed_at.is_not(None),
        ExecutionRow.completed_at >= since,
    )
    finished, failed, avg = (
        await session.execute(
            select(
                func.count(),
                func.count().filter(ExecutionRow.status.in_(FAILED)),
                func.avg(ExecutionRow.duration_ms),
            ).where(*ended)
        )
    ).one()
    return rules.RecentTraffic(int(finished), int(failed), float(avg) if avg is not None else None)


async def with_environment(
    session: AsyncSession,
    keyring: Callable[[], Keyring],
    deployment_id: uuid.UUID,
    context: dict[str, Any],
) -> dict[str, Any]:
    """A step's expression context with the deployment's environment variables over the
    definition's ``vars`` (the worker calls this for executions started by a deployment)."""
    row = await session.get(DeploymentRow, deployment_id)
    if row is None or row.environment_vars_encrypted is None:
        return context
    base = context.get("vars")
    merged = {**(base if isinstance(base, dict) else {}), **environment_vars(keyring(), row)}
    return {**context, "vars": merged}
