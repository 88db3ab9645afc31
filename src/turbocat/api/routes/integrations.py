"""Integrations of the current organization: connections to external services.

Credentials are write-only: responses say ``credentials_set`` and the auth kind, nothing more.
Owners and admins create, change and delete integrations; every member can list them.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from turbocat.api.deps import ContextDep, KeyringDep, MetaDep, NowDep, PrincipalDep, SessionDep
from turbocat.api.schemas.common import PROBLEM_RESPONSES, Page
from turbocat.api.schemas.integrations import (
    IntegrationCreate,
    IntegrationRead,
    IntegrationUpdate,
    ProviderRead,
)
from turbocat.db.models import IntegrationRow
from turbocat.domain import integrations as domain
from turbocat.domain.enums import IntegrationProvider, IntegrationStatus
from turbocat.domain.pagination import DEFAULT_LIMIT, MAX_LIMIT, Cursor
from turbocat.services import integrations

router = APIRouter(prefix="/integrations", tags=["integrations"], responses=PROBLEM_RESPONSES)


def _read(row: IntegrationRow) -> IntegrationRead:
    return IntegrationRead(
        id=row.id,
        organization_id=row.organization_id,
        name=row.name,
        provider=row.provider,
        auth_kind=integrations.auth_kind_of(row),
        settings=integrations.public_settings(row),
        status=row.status,
        credentials_set=row.credentials_encrypted is not None,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        last_error=row.last_error,
        created_by_id=row.created_by_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


@router.get(
    "/providers",
    name="integrations-providers",
    response_model=list[ProviderRead],
    summary="Providers, their auth kinds and form schemas",
)
async def list_providers(principal: PrincipalDep) -> list[ProviderRead]:
    """Every provider with the auth kinds it accepts and JSON Schemas of the credentials and
    settings forms (secret fields are marked ``writeOnly``)."""
    principal.require("integrations:read", integrations.READ_ROLE)
    return [ProviderRead.of(spec) for spec in domain.PROVIDERS.values()]


@router.post(
    "",
    name="integrations-create",
    status_code=status.HTTP_201_CREATED,
    response_model=IntegrationRead,
    summary="Connect an external service",
)
async def create_integration(
    body: IntegrationCreate,
    ctx: ContextDep,
    principal: PrincipalDep,
    session: SessionDep,
    now: NowDep,
    meta: MetaDep,
    keyring: KeyringDep,
) -> IntegrationRead:
    """Owners and admins; counts against the plan's integration limit. The credentials are
    encrypted at rest and never returned."""
    row = await integrations.create(
        session,
        principal,
        name=body.name,
        provider=body.provider,
        auth_kind=body.auth_kind,
        credentials=body.credentials,
        settings=body.settings,
        keyring=keyring,
        plan_limits=ctx.settings.plan_limits,
        now=now,
        meta=meta,
    )
    return _read(row)


@router.get(
    "", name="integrations-list", response_model=Page[IntegrationRead], summary="List integrations"
)
async def list_integrations(
    principal: PrincipalDep,
    session: SessionDep,
    now: NowDep,
    provider: IntegrationProvider | None = None,
    status_: Annotated[IntegrationStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> Page[IntegrationRead]:
    """Newest first; filter by provider and status."""
    rows = await integrations.list_integrations(
        session,
        principal,
        filters=integrations.IntegrationFilter(provider=provider, status=status_),
        limit=limit + 1,
        cursor=Cursor.decode(cursor) if cursor else None,
        now=now,
    )
    page = rows[:limit]
    next_cursor = (
        Cursor.after(page[-1].created_at, page[-1].id).encode() if len(rows) > limit else None
    )
    return Page[IntegrationRead](items=[_read(r) for r in page], next_cursor=next_cursor)


@router.get(
    "/{integration_id}",
    name="integrations-get",
    response_model=IntegrationRead,
    summary="One integration",
)
async def get_integration(
    integration_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, now: NowDep
) -> IntegrationRead:
    return _read(await integrations.get(session, principal, integration_id, now=now))


@router.patch(
    "/{integration_id}",
    name="integrations-update",
    response_model=IntegrationRead,
    summary="Rename, reconfigure, replace credentials, enable or disable",
)
async def update_integration(
    integration_id: uuid.UUID,
    body: IntegrationUpdate,
    principal: PrincipalDep,
    session: SessionDep,
    now: NowDep,
    meta: MetaDep,
    keyring: KeyringDep,
) -> IntegrationRead:
    """Owners and admins. ``settings`` and ``credentials`` replace the stored ones whole."""
    patch = integrations.IntegrationPatch(
        name=body.name,
        settings=body.settings,
        auth_kind=body.auth_kind,
        credentials=body.credentials,
        status=body.status,
    )
    row = await integrations.update(
        session, principal, integration_id, patch, keyring=keyring, now=now, meta=meta
    )
    return _read(row)


@router.delete(
    "/{integration_id}",
    name="integrations-delete",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an integration and its credentials",
)
async def delete_integration(
    integration_id: uuid.UUID,
    principal: PrincipalDep,
    session: SessionDep,
    now: NowDep,
    meta: MetaDep,
) -> Response:
    """Owners and admins; final (there is no soft delete for credentials)."""
    await integrations.delete(session, principal, integration_id, now=now, meta=meta)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
