"""Projects: optional grouping of workflows inside an organization (seed 003)."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db.listing import PageRequest, apply_page
from turbocat.db.models import ProjectRow
from turbocat.domain.access import Principal
from turbocat.domain.enums import MemberRole
from turbocat.domain.errors import Conflict, NotFound, ValidationFailed
from turbocat.services import audit

_FIELDS = ("name", "description", "task_queue", "is_active")


async def _name_taken(
    session: AsyncSession, principal: Principal, name: str, exclude: uuid.UUID | None
) -> bool:
    stmt = select(func.count()).where(
        ProjectRow.organization_id == principal.organization_id, ProjectRow.name == name
    )
    if exclude is not None:
        stmt = stmt.where(ProjectRow.id != exclude)
    return bool((await session.execute(stmt)).scalar_one())


async def create(
    session: AsyncSession,
    principal: Principal,
    *,
    name: str,
    description: str | None,
    task_queue: str | None,
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> ProjectRow:
    principal.require_access("projects", write=True)
    name = name.strip()
    if not name:
        raise ValidationFailed.field(("body", "name"), "must not be blank")
    if await _name_taken(session, principal, name, None):
        raise Conflict(f"a project named {name!r} already exists in this organization")
    row = ProjectRow(
        organization_id=principal.organization_id,
        created_by_id=principal.user_id,
        name=name,
        description=description,
        task_queue=task_queue,
        created_at=now,
        updated_at=now,
    )
    try:
        async with session.begin_nested():
            session.add(row)
            await session.flush()
    except IntegrityError as exc:
        raise Conflict(f"a project named {name!r} already exists in this organization") from exc
    audit.record(
        session, organization_id=principal.organization_id, actor=audit.Actor.of(principal),
        action="project.create", resource_type="project", resource_id=row.id, now=now, meta=meta,
        after=audit.snapshot(row, _FIELDS),
    )  # fmt: skip
    return row


async def get(session: AsyncSession, principal: Principal, project_id: uuid.UUID) -> ProjectRow:
    principal.require_access("projects")
    row = await session.get(ProjectRow, project_id)
    if row is None or row.organization_id != principal.organization_id:
        raise NotFound("project", project_id)
    return row


async def list_projects(
    session: AsyncSession, principal: Principal, page: PageRequest
) -> list[ProjectRow]:
    principal.require_access("projects")
    stmt = select(ProjectRow).where(ProjectRow.organization_id == principal.organization_id)
    stmt = apply_page(
        stmt,
        page,
        id_col=ProjectRow.id,
        created_col=ProjectRow.created_at,
        name_col=ProjectRow.name,
    )
    return list((await session.execute(stmt)).scalars())


async def update(
    session: AsyncSession,
    principal: Principal,
    project_id: uuid.UUID,
    *,
    changes: dict[str, object],
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> ProjectRow:
    principal.require_access("projects", write=True)
    row = await get(session, principal, project_id)
    before = audit.snapshot(row, _FIELDS)
    if "name" in changes:
        name = str(changes["name"]).strip()
        if not name:
            raise ValidationFailed.field(("body", "name"), "must not be blank")
        if await _name_taken(session, principal, name, row.id):
            raise Conflict(f"a project named {name!r} already exists in this organization")
        row.name = name
    for field in ("description", "task_queue", "is_active"):
        if field in changes:
            setattr(row, field, changes[field])
    row.updated_at = now
    audit.record(
        session, organization_id=principal.organization_id, actor=audit.Actor.of(principal),
        action="project.update", resource_type="project", resource_id=row.id, now=now, meta=meta,
        before=before, after=audit.snapshot(row, _FIELDS),
    )  # fmt: skip
    return row


async def delete(
    session: AsyncSession,
    principal: Principal,
    project_id: uuid.UUID,
    *,
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> None:
    """Delete a project; its workflows stay, ungrouped."""
    principal.require("projects:write", MemberRole.ADMIN)
    row = await get(session, principal, project_id)
    before = audit.snapshot(row, _FIELDS)
    await session.delete(row)
    audit.record(
        session, organization_id=principal.organization_id, actor=audit.Actor.of(principal),
        action="project.delete", resource_type="project", resource_id=project_id, now=now,
        meta=meta, before=before,
    )  # fmt: skip
