"""Annotated dependency aliases: the transaction, the caller, the clock, the request's origin.

Every dependency is ``async def``: FastAPI runs plain ``def`` dependencies in its thread
pool, a thread hop per dependency per request.

One request, one transaction: ``SessionDep`` opens it and commits right after the endpoint
returns (``scope="function"``), before the response is sent, so a failed commit is an error
response rather than a lost write.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Path, Request
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.bootstrap import AppContext
from turbocat.db import tenancy
from turbocat.db.engine import TenantContext
from turbocat.domain.access import Principal
from turbocat.domain.errors import AuthenticationFailed, FeatureDisabled, NotFound, RateLimited
from turbocat.security.crypto import Keyring, KeyringError
from turbocat.services import audit, auth


async def get_context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


ContextDep = Annotated[AppContext, Depends(get_context)]


async def _session(ctx: ContextDep) -> AsyncIterator[AsyncSession]:
    async with ctx.db.transaction() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(_session, scope="function")]


async def _now(ctx: ContextDep) -> dt.datetime:
    return ctx.clock()


NowDep = Annotated[dt.datetime, Depends(_now)]


async def _meta(request: Request) -> audit.RequestMeta:
    return audit.RequestMeta(
        ip_address=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
        request_id=getattr(request.state, "request_id", None),
    )


MetaDep = Annotated[audit.RequestMeta, Depends(_meta)]


def _keyring(ctx: AppContext) -> Keyring:
    try:
        return ctx.keyring.get()
    except KeyringError as exc:
        logging.getLogger("turbocat.api").error("credential encryption keys: %s", exc)
        raise FeatureDisabled(
            "credential encryption keys are not configured on this server; "
            "an operator must run `turbocat secrets init` (see the server log)"
        ) from exc


async def _keyring_dependency(ctx: ContextDep) -> Keyring:
    return _keyring(ctx)  # an async dependency runs on the loop, not in the thread pool


KeyringDep = Annotated[Keyring, Depends(_keyring_dependency)]
"""The credential encryption keys (reloaded when the key file changes)."""


def require_keyring(ctx: AppContext) -> Keyring:
    """The keys, or a 403 that explains they are not configured (for use outside Depends)."""
    return _keyring(ctx)


def keyring_when(ctx: AppContext, needed: bool) -> Keyring | None:
    """The keys only when this request needs them."""
    return _keyring(ctx) if needed else None


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise AuthenticationFailed("send 'Authorization: Bearer <token or API key>'")
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise AuthenticationFailed("the Authorization header must be 'Bearer <token or API key>'")
    return secret.strip()


async def _identity(
    session: SessionDep,
    now: NowDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> auth.Identity:
    return await auth.authenticate(session, _bearer(authorization), now)


IdentityDep = Annotated[auth.Identity, Depends(_identity)]


async def _principal_in(
    ctx: AppContext,
    session: AsyncSession,
    identity: auth.Identity,
    organization_id: uuid.UUID | None,
    now: dt.datetime,
) -> Principal:
    key = identity.api_key
    if key is not None:
        if organization_id is not None and organization_id != key.organization_id:
            raise NotFound("organization", organization_id)
        organization_id = key.organization_id
        retry_after = ctx.rate_limiter.check(key.id, key.rate_limit_per_minute)
        if retry_after is not None:
            raise RateLimited(
                f"this API key is limited to {key.rate_limit_per_minute} requests per minute",
                retry_after,
            )
        ctx.key_usage.record(key.id, key.organization_id, now)
    membership = await auth.membership_for(session, identity.user.id, organization_id)
    ctx.api_calls.record(membership.organization_id, now)  # usage api_calls_made, written behind
    await tenancy.enter(
        session, TenantContext(organization_id=membership.organization_id, user_id=identity.user.id)
    )
    return Principal(
        user_id=identity.user.id,
        organization_id=membership.organization_id,
        role=membership.role,
        system_role=identity.user.role,
        api_key_id=key.id if key else None,
        scopes=frozenset(key.scopes) if key else None,
        session_id=identity.session_id,
    )


async def _principal(
    ctx: ContextDep,
    session: SessionDep,
    identity: IdentityDep,
    now: NowDep,
    x_organization_id: Annotated[
        uuid.UUID | None,
        Header(
            description="Organization to act in (default: the caller's oldest membership; "
            "API keys always act in their own organization)."
        ),
    ] = None,
) -> Principal:
    return await _principal_in(ctx, session, identity, x_organization_id, now)


PrincipalDep = Annotated[Principal, Depends(_principal)]
"""The caller in the current organization (``X-Organization-Id`` or their default)."""


async def _org_principal(
    ctx: ContextDep,
    session: SessionDep,
    identity: IdentityDep,
    now: NowDep,
    org_id: Annotated[uuid.UUID, Path(description="Organization id")],
) -> Principal:
    return await _principal_in(ctx, session, identity, org_id, now)


OrgPrincipalDep = Annotated[Principal, Depends(_org_principal)]
"""The caller in the organization named by the ``{org_id}`` path parameter."""
