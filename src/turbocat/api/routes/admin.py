"""System administration of accounts (users whose system role is ``admin``)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select

from turbocat.api.deps import IdentityDep, MetaDep, NowDep, SessionDep
from turbocat.api.schemas.common import PROBLEM_RESPONSES, Page
from turbocat.api.schemas.identity import AdminUserRead, WorkerRead
from turbocat.db import tenancy
from turbocat.db.engine import TenantContext
from turbocat.db.models import WorkerRow
from turbocat.domain.enums import SystemRole
from turbocat.domain.errors import PermissionDenied
from turbocat.domain.pagination import DEFAULT_LIMIT, MAX_LIMIT, Cursor
from turbocat.services import audit, auth, users


async def _system_admin(identity: IdentityDep, session: SessionDep) -> auth.Identity:
    if identity.user.role != SystemRole.ADMIN:
        raise PermissionDenied("this route is for system administrators")
    if identity.api_key is not None and "*" not in identity.api_key.scopes:
        raise PermissionDenied("system administration through an API key needs the '*' scope")
    # Accounts span organizations: this transaction acts platform-wide (audited per org).
    await tenancy.enter(session, TenantContext(user_id=identity.user.id, system=True))
    return identity


AdminDep = Annotated[auth.Identity, Depends(_system_admin)]

router = APIRouter(prefix="/admin", tags=["admin"], responses=PROBLEM_RESPONSES)


@router.get("/users", name="admin-users-list", response_model=Page[AdminUserRead])
async def list_users(
    admin: AdminDep,
    session: SessionDep,
    include_deleted: bool = False,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> Page[AdminUserRead]:
    """Every account, oldest first; soft-deleted ones only with ``include_deleted``."""
    rows = await users.list_all(
        session,
        include_deleted=include_deleted,
        limit=limit + 1,
        cursor=Cursor.decode(cursor) if cursor else None,
    )
    page = rows[:limit]
    more = len(rows) > limit
    return Page[AdminUserRead](
        items=[AdminUserRead.model_validate(u) for u in page],
        next_cursor=Cursor.after(page[-1].created_at, page[-1].id).encode() if more else None,
    )


@router.delete("/users/{user_id}", name="admin-users-delete", response_model=AdminUserRead)
async def delete_user(
    user_id: uuid.UUID, admin: AdminDep, session: SessionDep, now: NowDep, meta: MetaDep
) -> AdminUserRead:
    """Soft-delete an account and end its sessions; restorable until retention purges it."""
    if user_id == admin.user.id:
        raise PermissionDenied("use DELETE /api/v1/users/me to delete your own account")
    user = await users.soft_delete(
        session, user_id, actor=audit.Actor(admin.user.id), now=now, meta=meta
    )
    return AdminUserRead.model_validate(user)


@router.post("/users/{user_id}/restore", name="admin-users-restore", response_model=AdminUserRead)
async def restore_user(
    user_id: uuid.UUID, admin: AdminDep, session: SessionDep, now: NowDep, meta: MetaDep
) -> AdminUserRead:
    user = await users.restore(
        session, user_id, actor=audit.Actor(admin.user.id), now=now, meta=meta
    )
    return AdminUserRead.model_validate(user)


@router.post(
    "/users/{user_id}/deactivate", name="admin-users-deactivate", response_model=AdminUserRead
)
async def deactivate_user(
    user_id: uuid.UUID, admin: AdminDep, session: SessionDep, now: NowDep, meta: MetaDep
) -> AdminUserRead:
    user = await users.set_active(
        session, user_id, False, actor=audit.Actor(admin.user.id), now=now, meta=meta
    )
    return AdminUserRead.model_validate(user)


@router.post("/users/{user_id}/activate", name="admin-users-activate", response_model=AdminUserRead)
async def activate_user(
    user_id: uuid.UUID, admin: AdminDep, session: SessionDep, now: NowDep, meta: MetaDep
) -> AdminUserRead:
    user = await users.set_active(
        session, user_id, True, actor=audit.Actor(admin.user.id), now=now, meta=meta
    )
    return AdminUserRead.model_validate(user)


@router.get("/workers", name="admin-workers-list", response_model=list[WorkerRead])
async def list_workers(admin: AdminDep, session: SessionDep) -> list[WorkerRead]:
    """Worker processes with their queues and last heartbeat, running ones first."""
    stmt = (
        select(WorkerRow).order_by(WorkerRow.status, WorkerRow.last_heartbeat_at.desc()).limit(500)
    )
    return [WorkerRead.model_validate(w) for w in (await session.execute(stmt)).scalars()]
