"""Integrations: connections to external services, their credentials sealed at rest.

Credentials are validated against the provider's form (``domain.integrations``), encrypted with
the keyring under associated data naming the organization and the row, and never leave this
module except through ``resolve_credentials`` (for the engine). Reads report an OAuth
integration whose token expired as ``expired`` and store that status.

The auth kind is kept under the reserved ``auth_kind`` key of the ``settings`` column (no
provider has a setting of that name); ``public_settings`` and ``auth_kind_of`` split them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db.models import IntegrationRow, OrganizationRow
from turbocat.domain import integrations as domain
from turbocat.domain import plans
from turbocat.domain.access import Principal
from turbocat.domain.enums import IntegrationProvider, IntegrationStatus, MemberRole, Plan
from turbocat.domain.errors import Conflict, FieldError, NotFound, ValidationFailed
from turbocat.domain.ids import new_id
from turbocat.domain.integrations import AuthKind, IntegrationUnavailable
from turbocat.domain.pagination import Cursor
from turbocat.security.crypto import CryptoError, Keyring, row_aad
from turbocat.services import audit

AUTH_KIND_KEY = "auth_kind"
WRITE_ROLE = MemberRole.ADMIN
"""Credentials act for the whole organization: owners and admins manage them; members use them
in workflows and, like viewers, read everything but the secrets."""
READ_ROLE = MemberRole.VIEWER
PlanLimitsFor = Callable[[Plan], plans.PlanLimits]


def auth_kind_of(row: IntegrationRow) -> AuthKind:
    return AuthKind(row.settings.get(AUTH_KIND_KEY, domain.spec(row.provider).default_auth_kind))


def public_settings(row: IntegrationRow) -> dict[str, Any]:
    return {k: v for k, v in row.settings.items() if k != AUTH_KIND_KEY}


def _snapshot(row: IntegrationRow) -> dict[str, Any]:
    """What an audit entry records: never the credentials, not even a hint of them."""
    return {
        "name": row.name,
        "provider": row.provider.value,
        "auth_kind": auth_kind_of(row).value,
        "settings": public_settings(row),
        "status": row.status.value,
        "expires_at": row.expires_at.isoformat() if row.expires_at else None,
    }


def _seal(
    keyring: Keyring, organization_id: uuid.UUID, row: IntegrationRow, creds: dict[str, str]
) -> None:
    row.credentials_encrypted = keyring.encrypt_json(creds, row_aad(organization_id, row.id))
    row.credentials_key_id = keyring.active_id


def _validated(
    provider: IntegrationProvider,
    auth_kind: AuthKind,
    credentials: Mapping[str, object] | None,
    settings: Mapping[str, object] | None,
) -> tuple[dict[str, str] | None, dict[str, str] | None]:
    """Both forms checked together, so one response lists every bad field."""
    errors: list[FieldError] = []
    creds = conf = None
    try:
        creds = None if credentials is None else domain.validate_credentials(auth_kind, credentials)
    except ValidationFailed as exc:
        errors += exc.errors
    try:
        conf = None if settings is None else domain.validate_settings(provider, settings)
    except ValidationFailed as exc:
        errors += exc.errors
    if errors:
        raise ValidationFailed(
            "; ".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors), errors
        )
    return creds, conf


def _clean_name(name: str) -> str:
    if not name.strip():
        raise ValidationFailed.field(("body", "name"), "must not be blank")
    return name.strip()


async def _name_taken(
    session: AsyncSession, organization_id: uuid.UUID, name: str, except_id: uuid.UUID | None
) -> bool:
    stmt = select(IntegrationRow.id).where(
        IntegrationRow.organization_id == organization_id, IntegrationRow.name == name
    )
    if except_id is not None:
        stmt = stmt.where(IntegrationRow.id != except_id)
    return (await session.execute(stmt.limit(1))).first() is not None


async def create(
    session: AsyncSession,
    principal: Principal,
    *,
    name: str,
    provider: IntegrationProvider,
    auth_kind: str | None,
    credentials: Mapping[str, object],
    settings: Mapping[str, object],
    keyring: Keyring,
    plan_limits: PlanLimitsFor,
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> IntegrationRow:
    """A new integration of the current organization, within its plan's limit."""
    principal.require("integrations:write", WRITE_ROLE)
    clean_name = _clean_name(name)
    kind = domain.resolve_auth_kind(provider, auth_kind)
    creds, conf = _validated(provider, kind, credentials, settings)
    assert creds is not None
    assert conf is not None
    org_id = principal.organization_id
    # Locking the organization serializes concurrent creates, so the count below holds.
    org = (
        await session.execute(
            select(OrganizationRow).where(OrganizationRow.id == org_id).with_for_update()
        )
    ).scalar_one()
    current = (
        await session.execute(
            select(func.count())
            .select_from(IntegrationRow)
            .where(IntegrationRow.organization_id == org_id)
        )
    ).scalar_one()
    plans.check(org.plan, plan_limits(org.plan), "integrations", int(current))
    if await _name_taken(session, org_id, clean_name, None):
        raise Conflict(f"an integration named {clean_name!r} already exists")
    expires_at = domain.credentials_expiry(kind, creds)
    row = IntegrationRow(
        id=new_id(),  # before sealing: the id is part of the associated data
        organization_id=org_id,
        created_by_id=principal.user_id,
        name=clean_name,
        provider=provider,
        settings={**conf, AUTH_KIND_KEY: kind.value},
        status=domain.credential_status(expires_at, now),
        expires_at=expires_at,
        created_at=now,
        updated_at=now,
    )
    _seal(keyring, org_id, row, creds)
    session.add(row)
    await session.flush()
    audit.record(
        session,
        organization_id=org_id,
        actor=audit.Actor.of(principal),
        action="integration.create",
        resource_type="integration",
        resource_id=row.id,
        now=now,
        meta=meta,
        after=_snapshot(row),
    )
    return row


async def _expire_due(session: AsyncSession, organization_id: uuid.UUID, now: dt.datetime) -> None:
    """Store ``expired`` on active integrations whose token expiry has passed."""
    stmt = select(IntegrationRow).where(
        IntegrationRow.organization_id == organization_id,
        IntegrationRow.status == IntegrationStatus.ACTIVE,
        IntegrationRow.expires_at <= now,
    )
    for row in (await session.execute(stmt)).scalars():
        before = _snapshot(row)
        row.status = IntegrationStatus.EXPIRED
        row.updated_at = now
        audit.record(
            session,
            organization_id=organization_id,
            actor=audit.SYSTEM,
            action="integration.expire",
            resource_type="integration",
            resource_id=row.id,
            now=now,
            before=before,
            after=_snapshot(row),
        )
    await session.flush()


@dataclass(frozen=True)
class IntegrationFilter:
    provider: IntegrationProvider | None = None
    status: IntegrationStatus | None = None


async def list_integrations(
    session: AsyncSession,
    principal: Principal,
    *,
    filters: IntegrationFilter,
    limit: int,
    cursor: Cursor | None,
    now: dt.datetime,
) -> list[IntegrationRow]:
    """The organization's integrations, newest first."""
    principal.require("integrations:read", READ_ROLE)
    await _expire_due(session, principal.organization_id, now)
    stmt = select(IntegrationRow).where(IntegrationRow.organization_id == principal.organization_id)
    if filters.provider is not None:
        stmt = stmt.where(IntegrationRow.provider == filters.provider)
    if filters.status is not None:
        stmt = stmt.where(IntegrationRow.status == filters.status)
    if cursor is not None:
        stmt = stmt.where(IntegrationRow.id < cursor.id)
    stmt = stmt.order_by(IntegrationRow.id.desc()).limit(limit)
    return list((await session.execute(stmt)).scalars())


async def _load(
    session: AsyncSession, organization_id: uuid.UUID, integration_id: uuid.UUID
) -> IntegrationRow:
    row = await session.get(IntegrationRow, integration_id)
    if row is None or row.organization_id != organization_id:
        raise NotFound("integration", integration_id)
    return row


async def get(
    session: AsyncSession, principal: Principal, integration_id: uuid.UUID, *, now: dt.datetime
) -> IntegrationRow:
    principal.require("integrations:read", READ_ROLE)
    row = await _load(session, principal.organization_id, integration_id)
    await _expire_due(session, principal.organization_id, now)
    return row


@dataclass(frozen=True)
class IntegrationPatch:
    """Fields to change; ``None`` leaves one as it is."""

    name: str | None = None
    settings: Mapping[str, object] | None = None
    """Replaces all settings."""
    auth_kind: str | None = None
    """A new auth kind needs new credentials."""
    credentials: Mapping[str, object] | None = field(default=None, repr=False)
    """Replaces the credentials (they are never merged or returned)."""
    status: IntegrationStatus | None = None
    """``active`` (enable) or ``disabled``."""


async def update(
    session: AsyncSession,
    principal: Principal,
    integration_id: uuid.UUID,
    patch: IntegrationPatch,
    *,
    keyring: Keyring,
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> IntegrationRow:
    principal.require("integrations:write", WRITE_ROLE)
    row = await _load(session, principal.organization_id, integration_id)
    if patch.status not in (None, IntegrationStatus.ACTIVE, IntegrationStatus.DISABLED):
        raise ValidationFailed.field(
            ("body", "status"), "may only be set to active (enable) or disabled"
        )
    kind = auth_kind_of(row)
    if patch.auth_kind is not None:
        kind = domain.resolve_auth_kind(row.provider, patch.auth_kind)
        if patch.credentials is None and kind is not auth_kind_of(row):
            raise ValidationFailed.field(
                ("body", "credentials"), "are required when the auth kind changes", "missing"
            )
    creds, conf = _validated(row.provider, kind, patch.credentials, patch.settings)
    new_name = None if patch.name is None else _clean_name(patch.name)
    if new_name is not None and await _name_taken(session, row.organization_id, new_name, row.id):
        raise Conflict(f"an integration named {new_name!r} already exists")

    before = _snapshot(row)
    if new_name is not None:
        row.name = new_name
    if conf is not None or creds is not None:
        row.settings = {
            **(public_settings(row) if conf is None else conf),
            AUTH_KIND_KEY: kind.value,
        }
    if creds is not None:
        _seal(keyring, row.organization_id, row, creds)
        row.expires_at = domain.credentials_expiry(kind, creds)
        row.last_error = None
    if patch.status is IntegrationStatus.DISABLED:
        row.status = IntegrationStatus.DISABLED
    elif patch.status is IntegrationStatus.ACTIVE or (
        creds is not None and row.status is not IntegrationStatus.DISABLED
    ):
        # enabling, or fresh credentials: the status follows the (new) expiry
        row.status = domain.credential_status(row.expires_at, now)
    row.updated_at = now
    after = _snapshot(row)
    audit.record(
        session,
        organization_id=row.organization_id,
        actor=audit.Actor.of(principal),
        action="integration.update",
        resource_type="integration",
        resource_id=row.id,
        now=now,
        meta=meta,
        before=before,
        after=after,
        extra={"replaced_auth": creds is not None},
    )
    await session.flush()
    return row


async def delete(
    session: AsyncSession,
    principal: Principal,
    integration_id: uuid.UUID,
    *,
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> None:
    """Delete for good (integrations have no soft delete): the sealed credentials go with it."""
    principal.require("integrations:write", WRITE_ROLE)
    row = await _load(session, principal.organization_id, integration_id)
    before = _snapshot(row)
    await session.delete(row)
    audit.record(
        session,
        organization_id=principal.organization_id,
        actor=audit.Actor.of(principal),
        action="integration.delete",
        resource_type="integration",
        resource_id=integration_id,
        now=now,
        meta=meta,
        before=before,
    )
    await session.flush()


@dataclass(frozen=True)
class ResolvedCredentials:
    """What a step needs to call the provider; ``repr`` leaves the secrets out."""

    integration_id: uuid.UUID
    provider: IntegrationProvider
    auth_kind: AuthKind
    settings: dict[str, Any]
    credentials: dict[str, str] = field(repr=False)


async def resolve_credentials(
    session: AsyncSession,
    organization_id: uuid.UUID,
    integration_id: uuid.UUID,
    keyring: Keyring,
    now: dt.datetime,
) -> ResolvedCredentials:
    """Decrypt an integration's credentials for use, and note the use (``last_used_at``).

    Refuses a disabled, expired or errored integration, naming it and what to do.
    """
    row = await _load(session, organization_id, integration_id)
    status = domain.effective_status(row.status, row.expires_at, now)
    if status is not IntegrationStatus.ACTIVE:
        hints = {
            IntegrationStatus.DISABLED: "enable it first",
            IntegrationStatus.EXPIRED: "its token expired; replace the credentials",
            IntegrationStatus.ERROR: f"it is in error ({row.last_error or 'no detail'})",
        }
        raise IntegrationUnavailable(
            f"integration {row.name!r} ({row.id}) is {status.value}: {hints.get(status, '')}",
            status=status,
        )
    if row.credentials_encrypted is None:
        raise IntegrationUnavailable(
            f"integration {row.name!r} ({row.id}) has no credentials", status=status
        )
    try:
        value = keyring.decrypt_json(row.credentials_encrypted, row_aad(organization_id, row.id))
    except CryptoError as exc:
        raise IntegrationUnavailable(
            f"the credentials of integration {row.name!r} ({row.id}) cannot be decrypted: {exc}",
            status=IntegrationStatus.ERROR,
        ) from exc
    if not isinstance(value, dict):
        raise IntegrationUnavailable(
            f"the credentials of integration {row.name!r} ({row.id}) are malformed",
            status=IntegrationStatus.ERROR,
        )
    row.last_used_at = now
    await session.flush()
    return ResolvedCredentials(
        integration_id=row.id,
        provider=row.provider,
        auth_kind=auth_kind_of(row),
        settings=public_settings(row),
        credentials={str(k): str(v) for k, v in value.items()},
    )
