"""Sign-up, login and logout."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from turbocat.api.deps import ContextDep, IdentityDep, MetaDep, NowDep, SessionDep
from turbocat.api.schemas.common import PROBLEM_RESPONSES
from turbocat.api.schemas.identity import (
    LoginRequest,
    OrganizationRead,
    SignupRead,
    SignupRequest,
    TokenRead,
    UserRead,
)
from turbocat.domain.errors import AuthenticationFailed
from turbocat.services import auth

router = APIRouter(prefix="/auth", tags=["auth"], responses=PROBLEM_RESPONSES)


@router.post(
    "/signup",
    name="auth-signup",
    status_code=status.HTTP_201_CREATED,
    response_model=SignupRead,
    summary="Create an account and its organization, and log in",
)
async def signup(
    body: SignupRequest, ctx: ContextDep, session: SessionDep, now: NowDep, meta: MetaDep
) -> SignupRead:
    """Creates a user, an organization on the starter plan with the user as owner, and a login
    token. Refused with 403 when sign-up is disabled by the operator."""
    result = await auth.signup(
        session,
        hasher=ctx.hasher,
        settings=ctx.settings.auth,
        email=str(body.email),
        password=body.password,
        organization_name=body.organization_name,
        full_name=body.full_name,
        now=now,
        meta=meta,
    )
    return SignupRead(
        access_token=result.token.token,
        expires_at=result.token.expires_at,
        user=UserRead.model_validate(result.user),
        organization=OrganizationRead.model_validate(result.organization),
    )


@router.post("/login", name="auth-login", response_model=TokenRead, summary="Log in")
async def login(body: LoginRequest, ctx: ContextDep, now: NowDep, meta: MetaDep) -> TokenRead:
    """Returns a bearer token that expires after the configured session lifetime. Repeated
    failures for one account are throttled with 429 and Retry-After."""
    # Not SessionDep: a failed attempt is committed (for throttling) before the 401 is raised.
    async with ctx.db.transaction() as session:
        outcome = await auth.login(
            session,
            hasher=ctx.hasher,
            settings=ctx.settings.auth,
            email=str(body.email),
            password=body.password,
            now=now,
            meta=meta,
        )
    if outcome.token is None or outcome.user is None:
        raise AuthenticationFailed(outcome.refusal or "login refused")
    return TokenRead(
        access_token=outcome.token.token,
        expires_at=outcome.token.expires_at,
        user=UserRead.model_validate(outcome.user),
    )


@router.post(
    "/logout",
    name="auth-logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke the token used for this request",
)
async def logout(identity: IdentityDep, session: SessionDep, now: NowDep) -> Response:
    if identity.session_id is None:
        raise AuthenticationFailed(
            "logout takes a login token; revoke API keys with DELETE /api/v1/api-keys/{id}"
        )
    await auth.logout(session, identity.session_id, now)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
