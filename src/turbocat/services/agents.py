"""Agents: typed configurations, versions via parent_id, status lifecycle, sharing."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db.listing import PageRequest, apply_page, tags_any, text_search
from turbocat.db.models import AgentRow
from turbocat.domain import agents as agent_rules
from turbocat.domain import lifecycle
from turbocat.domain.access import Principal
from turbocat.domain.enums import AgentStatus, AgentType
from turbocat.domain.errors import NotFound, ValidationFailed
from turbocat.domain.jsonschemas import check_json_schema
from turbocat.services import audit, versions

_FIELDS = (
    "name", "description", "type", "status", "version", "config", "parameters", "capabilities",
    "max_execution_time", "max_memory_mb", "max_concurrent_executions", "tags", "is_public",
    "is_template",
)  # fmt: skip
VERSIONED_FIELDS = frozenset({"config", "parameters", "agent_prompt_id"})
"""Changing these on an agent that has run makes a new version; other fields edit in place."""
EDITABLE = frozenset(
    {
        "name", "description", "config", "parameters", "capabilities", "max_execution_time",
        "max_memory_mb", "max_concurrent_executions", "tags", "is_public", "is_template",
        "agent_prompt_id",
    }
)  # fmt: skip


@dataclass(frozen=True)
class AgentFilter:
    type: AgentType | None = None
    status: AgentStatus | None = None
    tags: list[str] = field(default_factory=list)
    created_by: uuid.UUID | None = None
    public: bool = False
    """Public agents of every organization instead of this organization's own."""
    q: str | None = None
    all_versions: bool = False


def _check(agent_type: AgentType, values: dict[str, Any]) -> dict[str, Any]:
    if "config" in values:
        values["config"] = agent_rules.validate_config(agent_type, values["config"] or {})
    if values.get("parameters"):
        check_json_schema(values["parameters"], ("body", "parameters"))
    if "name" in values:
        values["name"] = str(values["name"]).strip()
        if not values["name"]:
            raise ValidationFailed.field(("body", "name"), "must not be blank")
    if "tags" in values:
        values["tags"] = sorted({t.strip().lower() for t in values["tags"] if t.strip()})
    return values


def _audit(
    session: AsyncSession, principal: Principal, action: str, row: AgentRow, now: dt.datetime,
    meta: audit.RequestMeta, before: dict[str, Any] | None = None,
) -> None:  # fmt: skip
    audit.record(
        session, organization_id=principal.organization_id, actor=audit.Actor.of(principal),
        action=action, resource_type="agent", resource_id=row.id, now=now, meta=meta,
        before=before, after=audit.snapshot(row, _FIELDS) if action != "agent.delete" else None,
    )  # fmt: skip


async def create(
    session: AsyncSession,
    principal: Principal,
    *,
    agent_type: AgentType,
    values: dict[str, Any],
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> AgentRow:
    principal.require_access("agents", write=True)
    values = _check(agent_type, {"config": {}, **values})
    status = values.pop("status", AgentStatus.DRAFT)
    row = AgentRow(
        organization_id=principal.organization_id,
        created_by_id=principal.user_id,
        type=agent_type,
        status=lifecycle.agent_transition(AgentStatus.DRAFT, status),
        version=1,
        created_at=now,
        updated_at=now,
        **values,
    )
    session.add(row)
    await session.flush()
    _audit(session, principal, "agent.create", row, now, meta)
    return row


async def get(
    session: AsyncSession, principal: Principal, agent_id: uuid.UUID, *, for_write: bool = False
) -> AgentRow:
    """An agent of this organization; public agents of others are readable, never writable."""
    principal.require_access("agents", write=for_write)
    row = await session.get(AgentRow, agent_id)
    if row is None or row.deleted_at is not None:
        raise NotFound("agent", agent_id)
    mine = row.organization_id == principal.organization_id
    if not mine and (for_write or not row.is_public):
        raise NotFound("agent", agent_id)
    return row


async def list_agents(
    session: AsyncSession, principal: Principal, filters: AgentFilter, page: PageRequest
) -> list[AgentRow]:
    principal.require_access("agents")
    dialect = session.get_bind().dialect.name
    stmt = select(AgentRow)
    if filters.public:
        stmt = stmt.where(AgentRow.is_public.is_(True))
    else:
        stmt = stmt.where(AgentRow.organization_id == principal.organization_id)
    if not filters.all_versions:
        stmt = stmt.where(versions.is_latest(AgentRow))
    if filters.type:
        stmt = stmt.where(AgentRow.type == filters.type)
    if filters.status:
        stmt = stmt.where(AgentRow.status == filters.status)
    if filters.created_by:
        stmt = stmt.where(AgentRow.created_by_id == filters.created_by)
    if filters.tags:
        stmt = stmt.where(tags_any(dialect, AgentRow.tags, filters.tags))
    if filters.q:
        stmt = stmt.where(text_search(dialect, [AgentRow.name, AgentRow.description], filters.q))
    stmt = apply_page(
        stmt, page, id_col=AgentRow.id, created_col=AgentRow.created_at, name_col=AgentRow.name
    )
    return list((await session.execute(stmt)).scalars())


async def update(
    session: AsyncSession,
    principal: Principal,
    agent_id: uuid.UUID,
    *,
    changes: dict[str, Any],
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> AgentRow:
    """Edit in place, or, when a versioned field changes on an agent that has run, create the
    next version (the row that ran is never changed)."""
    row = await get(session, principal, agent_id, for_write=True)
    unknown = set(changes) - EDITABLE - {"status"}
    if unknown:
        raise ValidationFailed.field(("body", sorted(unknown)[0]), "this field cannot be changed")
    changes = _check(row.type, dict(changes))
    status = changes.pop("status", None)
    if status is not None:
        lifecycle.agent_transition(row.status, status)
    await versions.ensure_latest(session, AgentRow, row, ("path", "agent_id"))
    if row.total_executions > 0 and VERSIONED_FIELDS & set(changes):
        new = AgentRow(
            **{name: getattr(row, name) for name in (*EDITABLE, "type", "organization_id")},
            status=status or row.status,
            version=row.version + 1,
            parent_id=versions.lineage_id(row),
            created_by_id=principal.user_id,
            created_at=now,
            updated_at=now,
        )
        for name, value in changes.items():
            setattr(new, name, value)
        session.add(new)
        await session.flush()
        _audit(
            session, principal, "agent.new_version", new, now, meta, audit.snapshot(row, _FIELDS)
        )
        return new
    before = audit.snapshot(row, _FIELDS)
    for name, value in changes.items():
        setattr(row, name, value)
    if status is not None:
        row.status = status
    row.updated_at = now
    _audit(session, principal, "agent.update", row, now, meta, before)
    return row


async def history(
    session: AsyncSession, principal: Principal, agent_id: uuid.UUID
) -> list[AgentRow]:
    row = await get(session, principal, agent_id)
    return list(
        (await session.execute(versions.history(AgentRow, versions.lineage_id(row)))).scalars()
    )


async def delete(
    session: AsyncSession, principal: Principal, agent_id: uuid.UUID, *, now: dt.datetime,
    meta: audit.RequestMeta,
) -> None:  # fmt: skip
    """Soft-delete the whole lineage (every version); restorable."""
    row = await get(session, principal, agent_id, for_write=True)
    await versions.soft_delete_lineage(session, AgentRow, row, now)
    _audit(session, principal, "agent.delete", row, now, meta, audit.snapshot(row, _FIELDS))


async def restore(
    session: AsyncSession, principal: Principal, agent_id: uuid.UUID, *, now: dt.datetime,
    meta: audit.RequestMeta,
) -> AgentRow:  # fmt: skip
    principal.require_access("agents", write=True)
    row: AgentRow = await versions.find_deleted(
        session, AgentRow, agent_id, principal.organization_id, "agent"
    )
    await versions.restore_lineage(session, AgentRow, row)
    _audit(session, principal, "agent.restore", row, now, meta)
    return row


async def resolve_ref(session: AsyncSession, principal: Principal, ref: str) -> AgentRow | None:
    """An agent by id, or the latest version of the agent with that name, in this organization."""
    try:
        ident: uuid.UUID | None = uuid.UUID(ref)
    except ValueError:
        ident = None
    stmt = select(AgentRow).where(AgentRow.organization_id == principal.organization_id)
    if ident is not None:
        stmt = stmt.where(or_(AgentRow.id == ident))
    else:
        stmt = stmt.where(AgentRow.name == ref, versions.is_latest(AgentRow))
    return (await session.execute(stmt.limit(1))).scalar_one_or_none()
