"""Projects of the current organization."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from turbocat.api.deps import MetaDep, NowDep, PrincipalDep, SessionDep
from turbocat.api.paging import PageDep, make_page
from turbocat.api.schemas.catalog import ProjectCreate, ProjectRead, ProjectUpdate
from turbocat.api.schemas.common import PROBLEM_RESPONSES, Page
from turbocat.services import projects

router = APIRouter(prefix="/projects", tags=["projects"], responses=PROBLEM_RESPONSES)


@router.post(
    "", name="projects-create", status_code=status.HTTP_201_CREATED, response_model=ProjectRead
)
async def create_project(
    body: ProjectCreate, principal: PrincipalDep, session: SessionDep, now: NowDep, meta: MetaDep
) -> ProjectRead:
    """Create a project; names are unique within the organization."""
    row = await projects.create(
        session, principal, name=body.name, description=body.description,
        task_queue=body.task_queue, now=now, meta=meta,
    )  # fmt: skip
    return ProjectRead.model_validate(row)


@router.get("", name="projects-list", response_model=Page[ProjectRead])
async def list_projects(
    principal: PrincipalDep, session: SessionDep, page: PageDep
) -> Page[ProjectRead]:
    return make_page(await projects.list_projects(session, principal, page), page, ProjectRead)


@router.get("/{project_id}", name="projects-get", response_model=ProjectRead)
async def get_project(
    project_id: uuid.UUID, principal: PrincipalDep, session: SessionDep
) -> ProjectRead:
    return ProjectRead.model_validate(await projects.get(session, principal, project_id))


@router.patch("/{project_id}", name="projects-update", response_model=ProjectRead)
async def update_project(
    project_id: uuid.UUID, body: ProjectUpdate, principal: PrincipalDep, session: SessionDep,
    now: NowDep, meta: MetaDep,
) -> ProjectRead:  # fmt: skip
    row = await projects.update(
        session,
        principal,
        project_id,
        changes=body.model_dump(exclude_unset=True),
        now=now,
        meta=meta,
    )
    return ProjectRead.model_validate(row)


@router.delete("/{project_id}", name="projects-delete", status_code=status.HTTP_204_NO_CONTENT)
async def delete_project(
    project_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, now: NowDep, meta: MetaDep
) -> Response:
    """Delete a project (admins); its workflows remain, without a project."""
    await projects.delete(session, principal, project_id, now=now, meta=meta)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
