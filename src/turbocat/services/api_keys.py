"""API keys: created with the secret shown once, listed, revoked at once."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db.models import ApiKeyRow
from turbocat.domain import credentials
from turbocat.domain.access import Principal, invalid_scopes, role_at_least
from turbocat.domain.enums import MemberRole
from turbocat.domain.errors import NotFound, PermissionDenied, ValidationFailed
from turbocat.domain.pagination import Cursor
from turbocat.services import audit

_FIELDS = ("name", "key_prefix", "scopes", "is_active", "expires_at", "rate_limit_per_minute")


async def create(
    session: AsyncSession,
    principal: Principal,
    *,
    name: str,
    scopes: list[str],
    expires_at: dt.datetime | None,
    rate_limit_per_minute: int | None,
    default_rate_limit: int,
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> tuple[ApiKeyRow, str]:
    """A new key for the caller in the current organization; returns the row and the secret."""
    principal.require_access("api_keys", write=True)
    if not name.strip():
        raise ValidationFailed.field(("body", "name"), "must not be blank")
    unknown = invalid_scopes(scopes)
    if unknown:
        raise ValidationFailed.field(("body", "scopes"), f"unknown scopes: {', '.join(unknown)}")
    beyond = principal.can_grant_scopes(scopes)
    if beyond:
        raise PermissionDenied(f"a key cannot grant scopes it does not hold: {', '.join(beyond)}")
    if expires_at is not None and expires_at <= now:
        raise ValidationFailed.field(("body", "expires_at"), "must be in the future")
    secret = credentials.make_api_key(secrets.token_bytes(24))
    row = ApiKeyRow(
        organization_id=principal.organization_id,
        user_id=principal.user_id,
        name=name.strip(),
        key_hash=credentials.secret_hash(secret),
        key_prefix=credentials.display_prefix(secret),
        scopes=sorted(set(scopes)),
        expires_at=expires_at,
        rate_limit_per_minute=rate_limit_per_minute or default_rate_limit,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    await session.flush()
    audit.record(
        session,
        organization_id=principal.organization_id,
        actor=audit.Actor.of(principal),
        action="api_key.create",
        resource_type="api_key",
        resource_id=row.id,
        now=now,
        meta=meta,
        after=audit.snapshot(row, _FIELDS),
    )
    return row, secret


def _sees_all(principal: Principal) -> bool:
    return role_at_least(principal.role, MemberRole.ADMIN)


async def list_keys(
    session: AsyncSession, principal: Principal, *, limit: int, cursor: Cursor | None
) -> list[ApiKeyRow]:
    """The caller's keys (admins and owners: every key of the organization), newest first."""
    principal.require_access("api_keys")
    stmt = select(ApiKeyRow).where(ApiKeyRow.organization_id == principal.organization_id)
    if not _sees_all(principal):
        stmt = stmt.where(ApiKeyRow.user_id == principal.user_id)
    if cursor is not None:
        stmt = stmt.where(ApiKeyRow.id < cursor.id)
    stmt = stmt.order_by(ApiKeyRow.id.desc()).limit(limit)
    return list((await session.execute(stmt)).scalars())


async def get(session: AsyncSession, principal: Principal, key_id: uuid.UUID) -> ApiKeyRow:
    principal.require_access("api_keys")
    row = await session.get(ApiKeyRow, key_id)
    if (
        row is None
        or row.deleted_at is not None
        or row.organization_id != principal.organization_id
        or (row.user_id != principal.user_id and not _sees_all(principal))
    ):
        raise NotFound("API key", key_id)
    return row


async def revoke(
    session: AsyncSession,
    principal: Principal,
    key_id: uuid.UUID,
    *,
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> ApiKeyRow:
    """Revoke (and soft-delete) a key; it stops working with the next request, everywhere."""
    row = await get(session, principal, key_id)
    principal.require(
        "api_keys:write",
        MemberRole.VIEWER if row.user_id == principal.user_id else MemberRole.ADMIN,
    )
    before = audit.snapshot(row, _FIELDS)
    row.is_active = False
    row.deleted_at = now
    row.updated_at = now
    audit.record(
        session,
        organization_id=principal.organization_id,
        actor=audit.Actor.of(principal),
        action="api_key.revoke",
        resource_type="api_key",
        resource_id=row.id,
        now=now,
        meta=meta,
        before=before,
        after=audit.snapshot(row, _FIELDS),
    )
    return row
