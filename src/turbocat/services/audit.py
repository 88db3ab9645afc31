"""Audit trail: one row per change, written in the same transaction as the change."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db.models import AuditLogRow
from turbocat.domain.access import Principal
from turbocat.domain.enums import MemberRole
from turbocat.domain.redaction import redact


@dataclass(frozen=True)
class RequestMeta:
    """Where a change came from."""

    ip_address: str | None = None
    user_agent: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class Actor:
    """Who made a change: a user, optionally through an API key (None for the system/CLI)."""

    user_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None

    @classmethod
    def of(cls, principal: Principal) -> Actor:
        return cls(principal.user_id, principal.api_key_id)


SYSTEM = Actor()


def record(
    session: AsyncSession,
    *,
    organization_id: uuid.UUID,
    actor: Actor,
    action: str,
    resource_type: str,
    resource_id: uuid.UUID | None,
    now: dt.datetime,
    meta: RequestMeta | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> AuditLogRow:
    changes: dict[str, Any] = {}
    if before is not None:
        changes["before"] = redact(before)
    if after is not None:
        changes["after"] = redact(after)
    meta = meta or RequestMeta()
    metadata: dict[str, Any] = redact(extra or {})
    if meta.request_id:
        metadata["request_id"] = meta.request_id
    row = AuditLogRow(
        organization_id=organization_id,
        user_id=actor.user_id,
        api_key_id=actor.api_key_id,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        changes=changes,
        metadata_=metadata,
        ip_address=meta.ip_address,
        user_agent=meta.user_agent,
        created_at=now,
    )
    session.add(row)
    return row


def snapshot(row: object, fields: tuple[str, ...]) -> dict[str, Any]:
    """JSON-safe view of some attributes of a row, for the before/after of an audit entry."""
    out: dict[str, Any] = {}
    for name in fields:
        value = getattr(row, name)
        if isinstance(value, uuid.UUID | dt.datetime):
            value = value.isoformat() if isinstance(value, dt.datetime) else str(value)
        elif hasattr(value, "value"):
            value = value.value
        out[name] = value
    return out


@dataclass(frozen=True)
class AuditFilter:
    action: str | None = None
    resource_type: str | None = None
    resource_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


async def list_entries(
    session: AsyncSession,
    principal: Principal,
    *,
    filters: AuditFilter,
    limit: int,
    cursor_id: uuid.UUID | None,
) -> list[AuditLogRow]:
    """Newest first; owners and admins only."""
    principal.require("audit_logs:read", MemberRole.ADMIN)
    stmt = select(AuditLogRow).where(AuditLogRow.organization_id == principal.organization_id)
    if filters.action:
        stmt = stmt.where(AuditLogRow.action == filters.action)
    if filters.resource_type:
        stmt = stmt.where(AuditLogRow.resource_type == filters.resource_type)
    if filters.resource_id:
        stmt = stmt.where(AuditLogRow.resource_id == filters.resource_id)
    if filters.user_id:
        stmt = stmt.where(AuditLogRow.user_id == filters.user_id)
    if filters.since:
        stmt = stmt.where(AuditLogRow.created_at >= filters.since)
    if filters.until:
        stmt = stmt.where(AuditLogRow.created_at < filters.until)
    if cursor_id is not None:
        stmt = stmt.where(AuditLogRow.id < cursor_id)
    stmt = stmt.order_by(AuditLogRow.id.desc()).limit(limit)
    return list((await session.execute(stmt)).scalars())
