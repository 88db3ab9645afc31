"""The signed-in user."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from turbocat.api.deps import ContextDep, IdentityDep, MetaDep, NowDep, SessionDep
from turbocat.api.schemas.common import PROBLEM_RESPONSES
from turbocat.api.schemas.identity import (
    MyOrganizationRead,
    PasswordChange,
    UserMeRead,
    UserRead,
    UserUpdate,
)
from turbocat.services import organizations, users

router = APIRouter(prefix="/users", tags=["users"], responses=PROBLEM_RESPONSES)


@router.get("/me", name="users-me", response_model=UserMeRead, summary="The signed-in user")
async def me(identity: IdentityDep, session: SessionDep) -> UserMeRead:
    """The caller's profile and the organizations they belong to, with their role in each."""
    orgs = await organizations.list_for_user(session, identity.user.id)
    return UserMeRead(
        **UserRead.model_validate(identity.user).model_dump(),
        organizations=[MyOrganizationRead(**_org_fields(org), role=role) for org, role in orgs],
    )


def _org_fields(org: object) -> dict[str, object]:
    return {name: getattr(org, name) for name in MyOrganizationRead.model_fields if name != "role"}


@router.patch("/me", name="users-update-me", response_model=UserRead, summary="Update my profile")
async def update_me(
    body: UserUpdate, identity: IdentityDep, session: SessionDep, now: NowDep
) -> UserRead:
    user = await users.update_profile(
        session, identity.user, changes=body.model_dump(exclude_unset=True), now=now
    )
    return UserRead.model_validate(user)


@router.post(
    "/me/password",
    name="users-change-password",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Change my password (ends my other sessions)",
)
async def change_password(
    body: PasswordChange, ctx: ContextDep, identity: IdentityDep, session: SessionDep, now: NowDep
) -> Response:
    await users.change_password(
        session,
        identity.user,
        hasher=ctx.hasher,
        settings=ctx.settings.auth,
        current_password=body.current_password,
        new_password=body.new_password,
        keep_session_id=identity.session_id,
        now=now,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete(
    "/me",
    name="users-delete-me",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete my account (soft delete; an operator can restore it)",
)
async def delete_me(
    identity: IdentityDep, session: SessionDep, now: NowDep, meta: MetaDep
) -> Response:
    """Refused while you are the last owner of an organization that has other members."""
    await users.delete_self(session, identity.user, now=now, meta=meta)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
