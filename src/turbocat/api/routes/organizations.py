"""Organizations the caller belongs to, and their members."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from turbocat.api.deps import IdentityDep, MetaDep, NowDep, OrgPrincipalDep, SessionDep
from turbocat.api.schemas.common import PROBLEM_RESPONSES
from turbocat.api.schemas.identity import (
    MemberCreate,
    MemberRead,
    MemberUpdate,
    MyOrganizationRead,
    OrganizationCreate,
    OrganizationRead,
    OrganizationUpdate,
)
from turbocat.db.models import MembershipRow, OrganizationRow, UserRow
from turbocat.domain.enums import MemberRole
from turbocat.services import organizations

router = APIRouter(prefix="/organizations", tags=["organizations"], responses=PROBLEM_RESPONSES)


def _mine(org: OrganizationRow, role: MemberRole) -> MyOrganizationRead:
    return MyOrganizationRead(**OrganizationRead.model_validate(org).model_dump(), role=role)


def _member(membership: MembershipRow, user: UserRow) -> MemberRead:
    return MemberRead(
        user_id=user.id,
        email=user.email,
        full_name=user.full_name,
        role=membership.role,
        created_at=membership.created_at,
    )


@router.get(
    "",
    name="organizations-list",
    response_model=list[MyOrganizationRead],
    summary="Organizations I belong to",
)
async def list_organizations(
    identity: IdentityDep, session: SessionDep
) -> list[MyOrganizationRead]:
    return [
        _mine(org, role)
        for org, role in await organizations.list_for_user(session, identity.user.id)
    ]


@router.post(
    "",
    name="organizations-create",
    status_code=status.HTTP_201_CREATED,
    response_model=MyOrganizationRead,
    summary="Create an organization (I become its owner)",
)
async def create_organization(
    body: OrganizationCreate, identity: IdentityDep, session: SessionDep, now: NowDep, meta: MetaDep
) -> MyOrganizationRead:
    if identity.api_key is not None:
        from turbocat.domain.errors import PermissionDenied

        raise PermissionDenied("API keys act inside one organization; log in to create another")
    org = await organizations.create_organization_row(
        session, name=body.name, owner=identity.user, now=now, meta=meta
    )
    return _mine(org, MemberRole.OWNER)


@router.get(
    "/{org_id}",
    name="organizations-get",
    response_model=MyOrganizationRead,
    summary="One organization",
)
async def get_organization(principal: OrgPrincipalDep, session: SessionDep) -> MyOrganizationRead:
    principal.require("organizations:read", MemberRole.VIEWER)
    return _mine(await organizations.get(session, principal), principal.role)


@router.patch(
    "/{org_id}",
    name="organizations-update",
    response_model=MyOrganizationRead,
    summary="Rename an organization (admins and owners)",
)
async def update_organization(
    body: OrganizationUpdate,
    principal: OrgPrincipalDep,
    session: SessionDep,
    now: NowDep,
    meta: MetaDep,
) -> MyOrganizationRead:
    org = await organizations.update(session, principal, name=body.name, now=now, meta=meta)
    return _mine(org, principal.role)


@router.get(
    "/{org_id}/members", name="members-list", response_model=list[MemberRead], summary="Members"
)
async def list_members(principal: OrgPrincipalDep, session: SessionDep) -> list[MemberRead]:
    return [_member(m, u) for m, u in await organizations.list_members(session, principal)]


@router.post(
    "/{org_id}/members",
    name="members-add",
    status_code=status.HTTP_201_CREATED,
    response_model=MemberRead,
    summary="Add an existing user by email (admins and owners)",
)
async def add_member(
    body: MemberCreate, principal: OrgPrincipalDep, session: SessionDep, now: NowDep, meta: MetaDep
) -> MemberRead:
    membership, user = await organizations.add_member(
        session, principal, email=str(body.email), role=body.role, now=now, meta=meta
    )
    return _member(membership, user)


@router.patch(
    "/{org_id}/members/{user_id}",
    name="members-change-role",
    response_model=MemberRead,
    summary="Change a member's role",
)
async def change_member_role(
    user_id: uuid.UUID,
    body: MemberUpdate,
    principal: OrgPrincipalDep,
    session: SessionDep,
    now: NowDep,
    meta: MetaDep,
) -> MemberRead:
    """Admins may give admin, member or viewer; only owners give or take the owner role; the
    last owner cannot be demoted."""
    membership = await organizations.change_role(
        session, principal, user_id=user_id, role=body.role, now=now, meta=meta
    )
    user = await session.get(UserRow, membership.user_id)
    assert user is not None
    return _member(membership, user)


@router.delete(
    "/{org_id}/members/{user_id}",
    name="members-remove",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a member, or leave (your own id)",
)
async def remove_member(
    user_id: uuid.UUID, principal: OrgPrincipalDep, session: SessionDep, now: NowDep, meta: MetaDep
) -> Response:
    await organizations.remove_member(session, principal, user_id=user_id, now=now, meta=meta)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
