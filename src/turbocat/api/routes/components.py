"""The component registry: built-in kinds, this organization's components, public ones."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from turbocat.api.deps import MetaDep, NowDep, PrincipalDep, SessionDep
from turbocat.api.paging import PageDep, make_page
from turbocat.api.schemas.common import PROBLEM_RESPONSES, Page
from turbocat.api.schemas.components import ComponentCreate, ComponentRead, ComponentUpdate
from turbocat.domain.enums import ComponentKind, Visibility
from turbocat.services import components

router = APIRouter(prefix="/components", tags=["components"], responses=PROBLEM_RESPONSES)


@router.get("", name="components-list", response_model=Page[ComponentRead])
async def list_components(
    principal: PrincipalDep,
    session: SessionDep,
    page: PageDep,
    kind: ComponentKind | None = None,
    visibility: Visibility | None = None,
    tags: Annotated[list[str] | None, Query(description="any of these tags")] = None,
    q: Annotated[str | None, Query(max_length=200, description="text search")] = None,
    builtin: Annotated[bool | None, Query(description="only built-ins / only registered")] = None,
    include_deprecated: bool = True,
) -> Page[ComponentRead]:
    """Built-in components (one per step and agent kind), this organization's components and
    public components of other organizations."""
    filters = components.ComponentFilter(
        kind=kind, visibility=visibility, tags=tags or [], q=q, builtin=builtin,
        include_deprecated=include_deprecated,
    )  # fmt: skip
    rows = await components.list_components(session, principal, filters, page)
    return make_page(rows, page, ComponentRead)


@router.post(
    "", name="components-create", status_code=status.HTTP_201_CREATED, response_model=ComponentRead
)
async def create_component(
    body: ComponentCreate, principal: PrincipalDep, session: SessionDep, now: NowDep, meta: MetaDep
) -> ComponentRead:
    """Register a custom component. Its JSON Schemas are checked and ``implementation_path`` must
    look like ``package.module:function``; the code is never imported or run by the API.
    (name, version) is unique in the organization (409)."""
    row = await components.create(
        session, principal, values=body.model_dump(exclude_unset=True), now=now, meta=meta
    )
    return ComponentRead.model_validate(row)


@router.get("/{component_id}", name="components-get", response_model=ComponentRead)
async def get_component(
    component_id: uuid.UUID, principal: PrincipalDep, session: SessionDep
) -> ComponentRead:
    return ComponentRead.model_validate(await components.get(session, principal, component_id))


@router.patch("/{component_id}", name="components-update", response_model=ComponentRead)
async def update_component(
    component_id: uuid.UUID, body: ComponentUpdate, principal: PrincipalDep, session: SessionDep,
    now: NowDep, meta: MetaDep,
) -> ComponentRead:  # fmt: skip
    """Change description, display name, deprecation, visibility or tags of an own component."""
    row = await components.update(
        session, principal, component_id, changes=body.model_dump(exclude_unset=True), now=now,
        meta=meta,
    )  # fmt: skip
    return ComponentRead.model_validate(row)


@router.delete("/{component_id}", name="components-delete", status_code=status.HTTP_204_NO_CONTENT)
async def delete_component(
    component_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, now: NowDep,
    meta: MetaDep,
) -> Response:  # fmt: skip
    """Delete an own component (built-ins and other organizations' cannot be deleted)."""
    await components.delete(session, principal, component_id, now=now, meta=meta)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
