"""Organizations (the tenants) and their members."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db import tenancy
from turbocat.db.engine import TenantContext
from turbocat.db.models import MembershipRow, OrganizationRow, UserRow
from turbocat.domain.access import Principal, assignable_roles, role_at_least
from turbocat.domain.enums import MemberRole
from turbocat.domain.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from turbocat.domain.ids import new_id
from turbocat.domain.slugs import slugify
from turbocat.services import audit

_MEMBER_FIELDS = ("user_id", "role")
_ORG_FIELDS = ("name", "slug", "plan")


async def create_organization_row(
    session: AsyncSession,
    *,
    name: str,
    owner: UserRow,
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> OrganizationRow:
    """A new organization on the starter plan with ``owner`` as its owner."""
    name = name.strip()
    if not name:
        raise ValidationFailed.field(("body", "organization_name"), "must not be blank")
    org_id = new_id()
    base = slugify(name)
    for attempt in range(5):
        slug = base if attempt == 0 else f"{base}-{secrets.token_hex(3)}"
        org = OrganizationRow(id=org_id, name=name, slug=slug, created_at=now, updated_at=now)
        await tenancy.enter(session, TenantContext(organization_id=org_id, user_id=owner.id))
        try:
            # add inside the savepoint: begin_nested() flushes what is pending before it starts
            async with session.begin_nested():
                session.add(org)
                await session.flush()
            break
        except IntegrityError:
            continue  # slug taken by another tenant (invisible to us under RLS): add a suffix
    else:  # pragma: no cover - five random suffixes colliding
        raise Conflict("could not choose a unique slug for the organization")
    session.add(
        MembershipRow(
            organization_id=org_id,
            user_id=owner.id,
            role=MemberRole.OWNER,
            created_at=now,
            updated_at=now,
        )
    )
    audit.record(
        session,
        organization_id=org_id,
        actor=audit.Actor(owner.id),
        action="organization.create",
        resource_type="organization",
        resource_id=org_id,
        now=now,
        meta=meta,
        after=audit.snapshot(org, _ORG_FIELDS),
    )
    await session.flush()
    return org


async def list_for_user(
    session: AsyncSession, user_id: uuid.UUID
) -> list[tuple[OrganizationRow, MemberRole]]:
    stmt = (
        select(OrganizationRow, MembershipRow.role)
        .join(MembershipRow, MembershipRow.organization_id == OrganizationRow.id)
        .where(MembershipRow.user_id == user_id)
        .order_by(MembershipRow.created_at, OrganizationRow.id)
    )
    return [(org, role) for org, role in (await session.execute(stmt)).all()]


async def get(session: AsyncSession, principal: Principal) -> OrganizationRow:
    org = await session.get(OrganizationRow, principal.organization_id)
    if org is None:  # pragma: no cover - the membership guarantees it
        raise NotFound("organization", principal.organization_id)
    return org


async def update(
    session: AsyncSession,
    principal: Principal,
    *,
    name: str | None,
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> OrganizationRow:
    principal.require("organizations:write", MemberRole.ADMIN)
    org = await get(session, principal)
    before = audit.snapshot(org, _ORG_FIELDS)
    if name is not None:
        if not name.strip():
            raise ValidationFailed.field(("body", "name"), "must not be blank")
        org.name = name.strip()
    org.updated_at = now
    audit.record(
        session,
        organization_id=org.id,
        actor=audit.Actor.of(principal),
        action="organization.update",
        resource_type="organization",
        resource_id=org.id,
        now=now,
        meta=meta,
        before=before,
        after=audit.snapshot(org, _ORG_FIELDS),
    )
    return org


async def list_members(
    session: AsyncSession, principal: Principal
) -> list[tuple[MembershipRow, UserRow]]:
    principal.require_access("members")
    stmt = (
        select(MembershipRow, UserRow)
        .join(UserRow, UserRow.id == MembershipRow.user_id)
        .where(MembershipRow.organization_id == principal.organization_id)
        .order_by(MembershipRow.created_at, MembershipRow.id)
    )
    return [(m, u) for m, u in (await session.execute(stmt)).all()]


async def _member(session: AsyncSession, principal: Principal, user_id: uuid.UUID) -> MembershipRow:
    stmt = select(MembershipRow).where(
        MembershipRow.organization_id == principal.organization_id, MembershipRow.user_id == user_id
    )
    row = (await session.execute(stmt)).scalar_one_or_none()
    if row is None:
        raise NotFound("member", user_id)
    return row


async def _owner_count(session: AsyncSession, organization_id: uuid.UUID) -> int:
    stmt = select(func.count()).where(
        MembershipRow.organization_id == organization_id, MembershipRow.role == MemberRole.OWNER
    )
    return int((await session.execute(stmt)).scalar_one())


def _check_assignable(principal: Principal, role: MemberRole) -> None:
    if role not in assignable_roles(principal.role):
        raise PermissionDenied(f"a {principal.role.value} cannot give the {role.value} role")


async def add_member(
    session: AsyncSession,
    principal: Principal,
    *,
    email: str,
    role: MemberRole,
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> tuple[MembershipRow, UserRow]:
    """Add an existing user (by email) to the caller's organization."""
    principal.require("members:write", MemberRole.ADMIN)
    _check_assignable(principal, role)
    from turbocat.services.auth import find_user_by_email

    user = await find_user_by_email(session, email)
    if user is None or user.deleted_at is not None:
        raise NotFound("user with email", email.strip())
    membership = await insert_membership(
        session,
        organization_id=principal.organization_id,
        user=user,
        role=role,
        actor=audit.Actor.of(principal),
        now=now,
        meta=meta,
    )
    return membership, user


async def insert_membership(
    session: AsyncSession,
    *,
    organization_id: uuid.UUID,
    user: UserRow,
    role: MemberRole,
    actor: audit.Actor,
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> MembershipRow:
    """Add ``user`` with ``role`` (callers check permissions); audited."""
    existing = await session.execute(
        select(MembershipRow.id).where(
            MembershipRow.organization_id == organization_id, MembershipRow.user_id == user.id
        )
    )
    if existing.first() is not None:
        raise Conflict(f"{user.email} is already a member of this organization")
    membership = MembershipRow(
        organization_id=organization_id,
        user_id=user.id,
        role=role,
        invited_by_id=actor.user_id,
        created_at=now,
        updated_at=now,
    )
    session.add(membership)
    await session.flush()
    audit.record(
        session,
        organization_id=organization_id,
        actor=actor,
        action="member.add",
        resource_type="membership",
        resource_id=membership.id,
        now=now,
        meta=meta,
        after=audit.snapshot(membership, _MEMBER_FIELDS),
    )
    return membership


async def change_role(
    session: AsyncSession,
    principal: Principal,
    *,
    user_id: uuid.UUID,
    role: MemberRole,
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> MembershipRow:
    principal.require("members:write", MemberRole.ADMIN)
    membership = await _member(session, principal, user_id)
    _check_assignable(principal, role)
    if membership.role == MemberRole.OWNER and principal.role != MemberRole.OWNER:
        raise PermissionDenied("only an owner can change an owner's role")
    if (
        membership.role == MemberRole.OWNER
        and role != MemberRole.OWNER
        and await _owner_count(session, principal.organization_id) <= 1
    ):
        raise Conflict("the last owner cannot be demoted; make someone else owner first")
    before = audit.snapshot(membership, _MEMBER_FIELDS)
    membership.role = role
    membership.updated_at = now
    audit.record(
        session,
        organization_id=principal.organization_id,
        actor=audit.Actor.of(principal),
        action="member.change_role",
        resource_type="membership",
        resource_id=membership.id,
        now=now,
        meta=meta,
        before=before,
        after=audit.snapshot(membership, _MEMBER_FIELDS),
    )
    return membership


async def remove_member(
    session: AsyncSession,
    principal: Principal,
    *,
    user_id: uuid.UUID,
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> None:
    """Remove a member; anyone may leave, admins remove non-owners, owners remove anyone."""
    leaving = user_id == principal.user_id
    principal.require("members:write", MemberRole.VIEWER if leaving else MemberRole.ADMIN)
    membership = await _member(session, principal, user_id)
    if membership.role == MemberRole.OWNER:
        if not leaving and not role_at_least(principal.role, MemberRole.OWNER):
            raise PermissionDenied("only an owner can remove an owner")
        if await _owner_count(session, principal.organization_id) <= 1:
            raise Conflict("the last owner cannot be removed; make someone else owner first")
    before = audit.snapshot(membership, _MEMBER_FIELDS)
    await session.delete(membership)
    audit.record(
        session,
        organization_id=principal.organization_id,
        actor=audit.Actor.of(principal),
        action="member.leave" if leaving else "member.remove",
        resource_type="membership",
        resource_id=membership.id,
        now=now,
        meta=meta,
        before=before,
    )
