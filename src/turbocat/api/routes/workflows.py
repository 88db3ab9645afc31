"""Workflows: definitions (JSON, YAML or canvas), versions, lifecycle, steps, import/export."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response, status

from turbocat.api.bodies import YAML_MEDIA, document_response
from turbocat.api.deps import ContextDep, MetaDep, NowDep, PrincipalDep, SessionDep
from turbocat.api.paging import PageDep, make_page
from turbocat.api.schemas.common import PROBLEM_RESPONSES, Page
from turbocat.api.schemas.workflows import (
    WorkflowCreate,
    WorkflowRead,
    WorkflowStepRead,
    WorkflowSummary,
    WorkflowUpdate,
)
from turbocat.domain import definitions
from turbocat.domain.enums import WorkflowCategory, WorkflowStatus
from turbocat.services import workflows

router = APIRouter(prefix="/workflows", tags=["workflows"], responses=PROBLEM_RESPONSES)

YAML_BODY = {
    "requestBody": {
        "content": {YAML_MEDIA: {"schema": {"type": "object"}}},
        "description": "JSON, or the same document as YAML (Content-Type: application/yaml)",
    }
}
YAML_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {"content": {YAML_MEDIA: {}}, "description": "JSON, or YAML with Accept: application/yaml"}
}


@router.get("/schema", name="workflows-definition-schema", summary="JSON Schema of definitions")
async def definition_schema() -> dict[str, Any]:
    """The JSON Schema of the canonical workflow definition document (also in the repository at
    ``schemas/workflow-definition.schema.json``)."""
    return definitions.definition_json_schema()


@router.post(
    "",
    name="workflows-create",
    status_code=status.HTTP_201_CREATED,
    response_model=WorkflowRead,
    openapi_extra=YAML_BODY,
)
async def create_workflow(
    body: WorkflowCreate, ctx: ContextDep, principal: PrincipalDep, session: SessionDep,
    now: NowDep, meta: MetaDep,
) -> WorkflowRead:  # fmt: skip
    """Create version 1. The definition is validated (cycles, references, expressions, agents,
    limits) and every problem is reported with its path. Plan limits apply."""
    row = await workflows.create(
        session, principal, values=body.model_dump(exclude_unset=True), settings=ctx.settings,
        now=now, meta=meta,
    )  # fmt: skip
    return WorkflowRead.model_validate(row)


@router.get("", name="workflows-list", response_model=Page[WorkflowSummary])
async def list_workflows(
    principal: PrincipalDep,
    session: SessionDep,
    page: PageDep,
    status_: Annotated[WorkflowStatus | None, Query(alias="status")] = None,
    category: WorkflowCategory | None = None,
    tags: Annotated[list[str] | None, Query(description="any of these tags")] = None,
    created_by: uuid.UUID | None = None,
    project_id: uuid.UUID | None = None,
    public: Annotated[bool, Query(description="public workflows of all organizations")] = False,
    q: Annotated[str | None, Query(max_length=200, description="text search")] = None,
    all_versions: bool = False,
) -> Page[WorkflowSummary]:
    """The latest version of each workflow (``all_versions`` for every version)."""
    filters = workflows.WorkflowFilter(
        status=status_, category=category, tags=tags or [], created_by=created_by,
        project_id=project_id, public=public, q=q, all_versions=all_versions,
    )  # fmt: skip
    rows = await workflows.list_workflows(session, principal, filters, page)
    return make_page(rows, page, WorkflowSummary)


@router.post(
    "/import",
    name="workflows-import",
    status_code=status.HTTP_201_CREATED,
    response_model=WorkflowRead,
    openapi_extra=YAML_BODY,
)
async def import_workflow(
    document: dict[str, Any], ctx: ContextDep, principal: PrincipalDep, session: SessionDep,
    now: NowDep, meta: MetaDep,
    update: Annotated[bool, Query(description="update the workflow with this kebab_name")] = False,
) -> WorkflowRead:  # fmt: skip
    """Create a workflow from an exported file (or, with ``update``, a new version of the
    existing one with the same kebab_name)."""
    values = workflows.import_values(document)
    if update and values.get("kebab_name"):
        existing = await workflows.get_by_kebab(session, principal, values["kebab_name"])
        row = await workflows.update(
            session,
            principal,
            existing.id,
            values=values,
            settings=ctx.settings,
            now=now,
            meta=meta,
        )
    else:
        row = await workflows.create(
            session, principal, values=values, settings=ctx.settings, now=now, meta=meta
        )
    return WorkflowRead.model_validate(row)


@router.get("/by-name/{kebab_name}", name="workflows-get-by-name", response_model=WorkflowRead)
async def get_by_name(
    kebab_name: str, principal: PrincipalDep, session: SessionDep
) -> WorkflowRead:
    """The latest version of the workflow with this kebab_name."""
    return WorkflowRead.model_validate(await workflows.get_by_kebab(session, principal, kebab_name))


@router.get(
    "/{workflow_id}", name="workflows-get", response_model=WorkflowRead, responses=YAML_ANSWER
)
async def get_workflow(
    workflow_id: uuid.UUID, request: Request, principal: PrincipalDep, session: SessionDep
) -> Response:
    row = await workflows.get(session, principal, workflow_id)
    return document_response(request, WorkflowRead.model_validate(row).model_dump(mode="json"))


@router.get("/{workflow_id}/definition", name="workflows-definition", responses=YAML_ANSWER)
async def get_definition(
    workflow_id: uuid.UUID,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    view: Annotated[Literal["canonical", "canvas"], Query()] = "canonical",
) -> Response:
    """The definition as the canonical document, or as the nodes/edges canvas view."""
    row = await workflows.get(session, principal, workflow_id)
    document: Any = row.definition
    if view == "canvas":
        document = definitions.to_canvas(
            definitions.validate_definition(row.definition, limits=_lenient())
        )
    return document_response(request, document)


def _lenient() -> definitions.DefinitionLimits:
    # A stored definition was validated on save; reading it back never trips size limits.
    return definitions.DefinitionLimits(
        max_steps=1_000_000, max_nesting=1_000, max_bytes=1 << 40, max_expression_length=1 << 20
    )


@router.patch(
    "/{workflow_id}", name="workflows-update", response_model=WorkflowRead, openapi_extra=YAML_BODY
)
async def update_workflow(
    workflow_id: uuid.UUID, body: WorkflowUpdate, ctx: ContextDep, principal: PrincipalDep,
    session: SessionDep, now: NowDep, meta: MetaDep,
) -> WorkflowRead:  # fmt: skip
    """Edit the latest version. If it has run and what runs changes (definition, triggers,
    queue, limits), the next version is created and returned; the version that ran is kept as
    it was. Status changes follow the lifecycle (409 otherwise)."""
    row = await workflows.update(
        session, principal, workflow_id, values=body.model_dump(exclude_unset=True),
        settings=ctx.settings, now=now, meta=meta,
    )  # fmt: skip
    return WorkflowRead.model_validate(row)


@router.get(
    "/{workflow_id}/versions", name="workflows-versions", response_model=list[WorkflowSummary]
)
async def workflow_versions(
    workflow_id: uuid.UUID, principal: PrincipalDep, session: SessionDep
) -> list[WorkflowSummary]:
    """Every version, newest first."""
    return [
        WorkflowSummary.model_validate(r)
        for r in await workflows.history(session, principal, workflow_id)
    ]


@router.get("/{workflow_id}/steps", name="workflows-steps", response_model=list[WorkflowStepRead])
async def workflow_steps(
    workflow_id: uuid.UUID, principal: PrincipalDep, session: SessionDep
) -> list[WorkflowStepRead]:
    """The version's steps as materialized rows, in execution order."""
    return [
        WorkflowStepRead.model_validate(r)
        for r in await workflows.steps(session, principal, workflow_id)
    ]


@router.get("/{workflow_id}/export", name="workflows-export", responses=YAML_ANSWER)
async def export_workflow(
    workflow_id: uuid.UUID, request: Request, principal: PrincipalDep, session: SessionDep
) -> Response:
    """A portable file of this version (YAML with Accept: application/yaml)."""
    row = await workflows.get(session, principal, workflow_id)
    ext = "yaml" if "yaml" in request.headers.get("accept", "") else "json"
    return document_response(
        request, workflows.export_document(row), filename=f"{row.kebab_name}.{ext}"
    )


@router.delete("/{workflow_id}", name="workflows-delete", status_code=status.HTTP_204_NO_CONTENT)
async def delete_workflow(
    workflow_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, now: NowDep, meta: MetaDep
) -> Response:
    """Soft-delete the workflow with every version (restorable)."""
    await workflows.delete_lineage(session, principal, workflow_id, now=now, meta=meta)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{workflow_id}/restore", name="workflows-restore", response_model=WorkflowRead)
async def restore_workflow(
    workflow_id: uuid.UUID, ctx: ContextDep, principal: PrincipalDep, session: SessionDep,
    now: NowDep, meta: MetaDep,
) -> WorkflowRead:  # fmt: skip
    row = await workflows.restore(
        session, principal, workflow_id, settings=ctx.settings, now=now, meta=meta
    )
    return WorkflowRead.model_validate(row)
