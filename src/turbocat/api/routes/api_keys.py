"""API keys of the current organization."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from turbocat.api.deps import ContextDep, MetaDep, NowDep, PrincipalDep, SessionDep
from turbocat.api.schemas.common import PROBLEM_RESPONSES, Page
from turbocat.api.schemas.identity import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from turbocat.domain.pagination import DEFAULT_LIMIT, MAX_LIMIT, Cursor
from turbocat.services import api_keys

router = APIRouter(prefix="/api-keys", tags=["api-keys"], responses=PROBLEM_RESPONSES)


@router.post(
    "",
    name="api-keys-create",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyCreated,
    summary="Create an API key (the secret is shown once)",
)
async def create_api_key(
    body: ApiKeyCreate,
    ctx: ContextDep,
    principal: PrincipalDep,
    session: SessionDep,
    now: NowDep,
    meta: MetaDep,
) -> ApiKeyCreated:
    """The key acts as you in the current organization, limited to its scopes and never beyond
    your role. Use it as ``Authorization: Bearer <secret>``."""
    row, secret = await api_keys.create(
        session,
        principal,
        name=body.name,
        scopes=body.scopes,
        expires_at=body.expires_at,
        rate_limit_per_minute=body.rate_limit_per_minute,
        default_rate_limit=ctx.settings.auth.api_key_default_rate_limit,
        now=now,
        meta=meta,
    )
    return ApiKeyCreated(**ApiKeyRead.model_validate(row).model_dump(), secret=secret)


@router.get("", name="api-keys-list", response_model=Page[ApiKeyRead], summary="List API keys")
async def list_api_keys(
    principal: PrincipalDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> Page[ApiKeyRead]:
    """Your keys; admins and owners see every key of the organization. Newest first."""
    rows = await api_keys.list_keys(
        session, principal, limit=limit + 1, cursor=Cursor.decode(cursor) if cursor else None
    )
    page = rows[:limit]
    next_cursor = (
        Cursor.after(page[-1].created_at, page[-1].id).encode() if len(rows) > limit else None
    )
    return Page[ApiKeyRead](
        items=[ApiKeyRead.model_validate(r) for r in page], next_cursor=next_cursor
    )


@router.get("/{key_id}", name="api-keys-get", response_model=ApiKeyRead, summary="One API key")
async def get_api_key(
    key_id: uuid.UUID, principal: PrincipalDep, session: SessionDep
) -> ApiKeyRead:
    return ApiKeyRead.model_validate(await api_keys.get(session, principal, key_id))


@router.delete(
    "/{key_id}",
    name="api-keys-revoke",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke an API key (immediate and final)",
)
async def revoke_api_key(
    key_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, now: NowDep, meta: MetaDep
) -> Response:
    await api_keys.revoke(session, principal, key_id, now=now, meta=meta)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
