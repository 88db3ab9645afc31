"""The template library: browse, publish, rate, and instantiate into real workflows/agents."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from turbocat.api.deps import ContextDep, MetaDep, NowDep, PrincipalDep, SessionDep
from turbocat.api.schemas.common import PROBLEM_RESPONSES, Page
from turbocat.api.schemas.templates import (
    InstantiateRequest,
    InstantiateResult,
    RatingCreate,
    TemplateCreate,
    TemplateRead,
    TemplateSummary,
    TemplateUpdate,
)
from turbocat.domain.enums import TemplateDifficulty, TemplateType, WorkflowCategory
from turbocat.domain.pagination import DEFAULT_LIMIT, MAX_LIMIT, Cursor
from turbocat.domain.templates import Overrides
from turbocat.services import templates

router = APIRouter(prefix="/templates", tags=["templates"], responses=PROBLEM_RESPONSES)


@router.get("", name="templates-list", response_model=Page[TemplateSummary])
async def list_templates(
    principal: PrincipalDep,
    session: SessionDep,
    type: TemplateType | None = None,
    category: WorkflowCategory | None = None,
    tags: Annotated[list[str] | None, Query(description="any of these tags")] = None,
    difficulty: TemplateDifficulty | None = None,
    official: bool | None = None,
    mine: Annotated[bool, Query(description="only this organization's templates")] = False,
    q: Annotated[str | None, Query(max_length=200, description="text search")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="page size")] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    sort: Annotated[
        templates.TemplateSort,
        Query(
            description="popularity (= -usage_count), rating (= -rating_average), created_at, "
            "name, or a column with '-' for descending"
        ),
    ] = "popularity",
) -> Page[TemplateSummary]:
    """Official templates, public templates of every organization and this organization's own."""
    filters = templates.TemplateFilter(
        type=type, category=category, tags=tags or [], difficulty=difficulty, official=official,
        mine=mine, q=q,
    )  # fmt: skip
    page = templates.TemplatePage(
        limit=limit, cursor=Cursor.decode(cursor) if cursor else None, sort=sort
    )
    rows = await templates.list_templates(session, principal, filters, page)
    return Page[TemplateSummary](
        items=[TemplateSummary.model_validate(r) for r in rows[:limit]],
        next_cursor=templates.next_cursor(rows, page),
    )


@router.post(
    "", name="templates-create", status_code=status.HTTP_201_CREATED, response_model=TemplateRead
)
async def create_template(
    body: TemplateCreate, ctx: ContextDep, principal: PrincipalDep, session: SessionDep,
    now: NowDep, meta: MetaDep,
) -> TemplateRead:  # fmt: skip
    """Publish a template of this organization (``is_public`` to share it with everyone). Its
    ``template_data`` is validated for its type, like the workflow or agent it will create."""
    row = await templates.create(
        session, principal, values=body.model_dump(exclude_none=True), settings=ctx.settings,
        now=now, meta=meta,
    )  # fmt: skip
    return TemplateRead.model_validate(row)


@router.get("/{template_id}", name="templates-get", response_model=TemplateRead)
async def get_template(
    template_id: uuid.UUID, principal: PrincipalDep, session: SessionDep
) -> TemplateRead:
    return TemplateRead.model_validate(await templates.get(session, principal, template_id))


@router.patch("/{template_id}", name="templates-update", response_model=TemplateRead)
async def update_template(
    template_id: uuid.UUID, body: TemplateUpdate, ctx: ContextDep, principal: PrincipalDep,
    session: SessionDep, now: NowDep, meta: MetaDep,
) -> TemplateRead:  # fmt: skip
    """Edit an own template (official templates are read-only)."""
    row = await templates.update(
        session, principal, template_id, changes=body.model_dump(exclude_unset=True),
        settings=ctx.settings, now=now, meta=meta,
    )  # fmt: skip
    return TemplateRead.model_validate(row)


@router.delete("/{template_id}", name="templates-delete", status_code=status.HTTP_204_NO_CONTENT)
async def delete_template(
    template_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, now: NowDep,
    meta: MetaDep,
) -> Response:  # fmt: skip
    await templates.delete(session, principal, template_id, now=now, meta=meta)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{template_id}/ratings", name="templates-rate", response_model=TemplateSummary)
async def rate_template(
    template_id: uuid.UUID, body: RatingCreate, principal: PrincipalDep, session: SessionDep,
    now: NowDep, meta: MetaDep,
) -> TemplateSummary:  # fmt: skip
    """Rate 1..5 (with an optional review). One rating per user: rating again replaces it.
    Returns the template with its updated average and count."""
    row = await templates.rate(
        session, principal, template_id, rating=body.rating, review=body.review, now=now,
        meta=meta,
    )  # fmt: skip
    return TemplateSummary.model_validate(row)


@router.post(
    "/{template_id}/instantiate",
    name="templates-instantiate",
    status_code=status.HTTP_201_CREATED,
    response_model=InstantiateResult,
)
async def instantiate_template(
    template_id: uuid.UUID, body: InstantiateRequest, ctx: ContextDep, principal: PrincipalDep,
    session: SessionDep, now: NowDep, meta: MetaDep,
) -> InstantiateResult:  # fmt: skip
    """Create a real workflow (workflow and step templates) or agent (agent templates) in this
    organization. Plan limits apply. Required integrations the organization lacks are listed in
    ``missing_integrations``/``warnings``; they do not stop instantiation."""
    result = await templates.instantiate(
        session, principal, template_id, overrides=Overrides.model_validate(body.model_dump()),
        settings=ctx.settings, now=now, meta=meta,
    )  # fmt: skip
    return InstantiateResult.model_validate(result)
