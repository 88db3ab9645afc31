"""Agent prompts: versioned prompt text with variables (also seed 002's agent templates)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from turbocat.api.deps import MetaDep, NowDep, PrincipalDep, SessionDep
from turbocat.api.paging import PageDep, make_page
from turbocat.api.schemas.common import PROBLEM_RESPONSES, Page
from turbocat.api.schemas.prompts import (
    PromptCreate,
    PromptRead,
    PromptRender,
    PromptRendered,
    PromptUpdate,
    PromptVersionCreate,
)
from turbocat.domain.enums import Visibility
from turbocat.services import prompts

router = APIRouter(prefix="/prompts", tags=["prompts"], responses=PROBLEM_RESPONSES)


@router.post(
    "", name="prompts-create", status_code=status.HTTP_201_CREATED, response_model=PromptRead
)
async def create_prompt(
    body: PromptCreate, principal: PrincipalDep, session: SessionDep, now: NowDep, meta: MetaDep
) -> PromptRead:
    """Create a prompt (default version 1.0.0). The text may read declared variables as
    ``{{ vars.name }}``; other roots and undeclared variables are refused."""
    row = await prompts.create(
        session, principal, values=body.model_dump(exclude_unset=True), now=now, meta=meta
    )
    return PromptRead.model_validate(row)


@router.get("", name="prompts-list", response_model=Page[PromptRead])
async def list_prompts(
    principal: PrincipalDep,
    session: SessionDep,
    page: PageDep,
    name: str | None = None,
    role: str | None = None,
    visibility: Visibility | None = None,
    tags: Annotated[list[str] | None, Query(description="any of these tags")] = None,
    q: Annotated[str | None, Query(max_length=200, description="text search")] = None,
    builtin: Annotated[bool | None, Query(description="only built-ins / only own")] = None,
    include_deprecated: bool = True,
) -> Page[PromptRead]:
    """Built-in prompts, this organization's prompts and public prompts of others (every
    version; filter by ``name`` for one lineage)."""
    filters = prompts.PromptFilter(
        name=name, role=role, visibility=visibility, tags=tags or [], q=q, builtin=builtin,
        include_deprecated=include_deprecated,
    )  # fmt: skip
    return make_page(
        await prompts.list_prompts(session, principal, filters, page), page, PromptRead
    )


@router.get("/{prompt_id}", name="prompts-get", response_model=PromptRead)
async def get_prompt(
    prompt_id: uuid.UUID, principal: PrincipalDep, session: SessionDep
) -> PromptRead:
    return PromptRead.model_validate(await prompts.get(session, principal, prompt_id))


@router.get("/{prompt_id}/versions", name="prompts-versions", response_model=list[PromptRead])
async def prompt_versions(
    prompt_id: uuid.UUID, principal: PrincipalDep, session: SessionDep
) -> list[PromptRead]:
    """Every version of this prompt, highest first."""
    rows = await prompts.versions(session, principal, prompt_id)
    return [PromptRead.model_validate(r) for r in rows]


@router.post(
    "/{prompt_id}/versions",
    name="prompts-new-version",
    status_code=status.HTTP_201_CREATED,
    response_model=PromptRead,
)
async def new_prompt_version(
    prompt_id: uuid.UUID, body: PromptVersionCreate, principal: PrincipalDep,
    session: SessionDep, now: NowDep, meta: MetaDep,
) -> PromptRead:  # fmt: skip
    """A new version (higher than every existing one); omitted fields are copied."""
    row = await prompts.new_version(
        session, principal, prompt_id, values=body.model_dump(exclude_unset=True), now=now,
        meta=meta,
    )  # fmt: skip
    return PromptRead.model_validate(row)


@router.patch("/{prompt_id}", name="prompts-update", response_model=PromptRead)
async def update_prompt(
    prompt_id: uuid.UUID, body: PromptUpdate, principal: PrincipalDep, session: SessionDep,
    now: NowDep, meta: MetaDep,
) -> PromptRead:  # fmt: skip
    """Change metadata of this version (content changes need a new version)."""
    row = await prompts.update(
        session, principal, prompt_id, changes=body.model_dump(exclude_unset=True), now=now,
        meta=meta,
    )  # fmt: skip
    return PromptRead.model_validate(row)


@router.post("/{prompt_id}/deprecate", name="prompts-deprecate", response_model=PromptRead)
async def deprecate_prompt(
    prompt_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, now: NowDep, meta: MetaDep
) -> PromptRead:
    """Mark this version deprecated (it stays usable; lists can hide it)."""
    row = await prompts.update(
        session, principal, prompt_id, changes={"deprecated": True}, now=now, meta=meta
    )
    return PromptRead.model_validate(row)


@router.delete("/{prompt_id}", name="prompts-delete", status_code=status.HTTP_204_NO_CONTENT)
async def delete_prompt(
    prompt_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, now: NowDep, meta: MetaDep
) -> Response:
    """Delete this version of an own prompt."""
    await prompts.delete(session, principal, prompt_id, now=now, meta=meta)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{prompt_id}/render", name="prompts-render", response_model=PromptRendered)
async def render_prompt(
    prompt_id: uuid.UUID, body: PromptRender, principal: PrincipalDep, session: SessionDep
) -> PromptRendered:
    """Render the prompt with ``variables``: unknown or missing required variables and values of
    the wrong type are 422, naming each variable. Evaluation is sandboxed and bounded."""
    row = await prompts.get(session, principal, prompt_id)
    text = await prompts.render(session, principal, prompt_id, body.variables)
    return PromptRendered(prompt_id=row.id, version=row.version, text=text)
