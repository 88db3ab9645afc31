"""The signed-in user's profile, and system administration of accounts (soft delete, restore)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.config import AuthSettings
from turbocat.db import tenancy
from turbocat.db.engine import TenantContext
from turbocat.db.models import MembershipRow, UserRow, UserSessionRow
from turbocat.domain.enums import MemberRole
from turbocat.domain.errors import AuthenticationFailed, Conflict, NotFound, ValidationFailed
from turbocat.domain.pagination import Cursor
from turbocat.security.passwords import PasswordHasher
from turbocat.services import audit
from turbocat.services.auth import check_password

_FIELDS = ("email", "full_name", "avatar_url", "role", "is_active")


async def update_profile(
    session: AsyncSession,
    user: UserRow,
    *,
    changes: dict[str, Any],
    now: dt.datetime,
) -> UserRow:
    for name in ("full_name", "avatar_url", "preferences"):
        if name in changes:
            setattr(user, name, changes[name])
    user.updated_at = now
    return user


async def change_password(
    session: AsyncSession,
    user: UserRow,
    *,
    hasher: PasswordHasher,
    settings: AuthSettings,
    current_password: str,
    new_password: str,
    keep_session_id: uuid.UUID | None,
    now: dt.datetime,
) -> None:
    """Change the password and end every other login session of the user."""
    if not await hasher.verify(user.password_hash, current_password):
        raise AuthenticationFailed("the current password is wrong")
    check_password(new_password, settings)
    user.password_hash = await hasher.hash(new_password)
    user.updated_at = now
    await end_sessions(session, user.id, now, keep=keep_session_id)


async def end_sessions(
    session: AsyncSession, user_id: uuid.UUID, now: dt.datetime, keep: uuid.UUID | None = None
) -> None:
    """Revoke the user's login sessions (all, or all but ``keep``)."""
    stmt = update(UserSessionRow).where(
        UserSessionRow.user_id == user_id, UserSessionRow.revoked_at.is_(None)
    )
    if keep is not None:
        stmt = stmt.where(UserSessionRow.id != keep)
    await session.execute(stmt.values(revoked_at=now))


async def list_all(
    session: AsyncSession, *, include_deleted: bool, limit: int, cursor: Cursor | None
) -> list[UserRow]:
    stmt = select(UserRow)
    if cursor is not None:
        stmt = stmt.where(UserRow.id > cursor.id)
    stmt = stmt.order_by(UserRow.id).limit(limit)
    result = await session.execute(stmt.execution_options(include_deleted=include_deleted))
    return list(result.scalars())


async def get_any(session: AsyncSession, user_id: uuid.UUID) -> UserRow:
    stmt = select(UserRow).where(UserRow.id == user_id).execution_options(include_deleted=True)
    user = (await session.execute(stmt)).scalar_one_or_none()
    if user is None:
        raise NotFound("user", user_id)
    return user


async def _audit_in_orgs(
    session: AsyncSession,
    user: UserRow,
    action: str,
    actor: audit.Actor,
    now: dt.datetime,
    before: dict[str, Any],
    meta: audit.RequestMeta,
) -> None:
    # Users are global; the change is recorded in every organization they belong to, each
    # under its own tenant context so that row-level security admits the row.
    org_ids = (
        (
            await session.execute(
                select(MembershipRow.organization_id).where(MembershipRow.user_id == user.id)
            )
        )
        .scalars()
        .all()
    )
    for org_id in org_ids:
        await tenancy.enter(session, TenantContext(organization_id=org_id, user_id=user.id))
        audit.record(
            session,
            organization_id=org_id,
            actor=actor,
            action=action,
            resource_type="user",
            resource_id=user.id,
            now=now,
            meta=meta,
            before=before,
            after=audit.snapshot(user, _FIELDS)
            | {"deleted_at": user.deleted_at and user.deleted_at.isoformat()},
        )
        await session.flush()


async def soft_delete(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    actor: audit.Actor,
    now: dt.datetime,
    meta: audit.RequestMeta | None = None,
) -> UserRow:
    """Hide the account and end its sessions; restorable until retention purges it."""
    user = await get_any(session, user_id)
    if user.deleted_at is not None:
        return user
    before = audit.snapshot(user, _FIELDS)
    user.deleted_at = now
    user.updated_at = now
    await end_sessions(session, user.id, now)
    await _audit_in_orgs(
        session, user, "user.delete", actor, now, before, meta or audit.RequestMeta()
    )
    return user


async def restore(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    actor: audit.Actor,
    now: dt.datetime,
    meta: audit.RequestMeta | None = None,
) -> UserRow:
    user = await get_any(session, user_id)
    if user.deleted_at is None:
        raise ValidationFailed.field(("path", "user_id"), "the user is not deleted", "not_deleted")
    before = audit.snapshot(user, _FIELDS)
    user.deleted_at = None
    user.updated_at = now
    await _audit_in_orgs(
        session, user, "user.restore", actor, now, before, meta or audit.RequestMeta()
    )
    return user


async def set_active(
    session: AsyncSession,
    user_id: uuid.UUID,
    active: bool,
    *,
    actor: audit.Actor,
    now: dt.datetime,
    meta: audit.RequestMeta | None = None,
) -> UserRow:
    user = await get_any(session, user_id)
    before = audit.snapshot(user, _FIELDS)
    user.is_active = active
    user.updated_at = now
    await _audit_in_orgs(
        session,
        user,
        "user.activate" if active else "user.deactivate",
        actor,
        now,
        before,
        meta or audit.RequestMeta(),
    )
    return user


async def delete_self(
    session: AsyncSession, user: UserRow, *, now: dt.datetime, meta: audit.RequestMeta
) -> UserRow:
    """Soft-delete the caller, unless that would leave an organization with members but no owner."""
    owned = (
        (
            await session.execute(
                select(MembershipRow.organization_id).where(
                    MembershipRow.user_id == user.id, MembershipRow.role == MemberRole.OWNER
                )
            )
        )
        .scalars()
        .all()
    )
    for org_id in owned:
        await tenancy.enter(session, TenantContext(organization_id=org_id, user_id=user.id))
        roles = (
            (
                await session.execute(
                    select(MembershipRow.role).where(MembershipRow.organization_id == org_id)
                )
            )
            .scalars()
            .all()
        )
        if roles.count(MemberRole.OWNER) == 1 and len(roles) > 1:
            raise Conflict(
                f"you are the last owner of organization {org_id}, which has other members; "
                "make someone else owner first"
            )
    return await soft_delete(session, user.id, actor=audit.Actor(user.id), now=now, meta=meta)
