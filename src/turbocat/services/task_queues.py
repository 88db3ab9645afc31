"""Task queues (seed 003): named queues with concurrency limits that the engine enforces.

An organization reads its own queues and the system queues (no organization, shared by all);
its owners and admins write its own. System queues are read-only except for system
administrators (through the API, acting in any of their organizations, or the operator CLI).
An organization may define a queue with the same name as a system queue: its own row then
applies to its executions and steps (``domain.queues.effective_queue``).

On PostgreSQL a system queue row is writable only in the system RLS context, so changes to one
enter it just for the write and return to the caller's organization afterwards.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db import tenancy
from turbocat.db.engine import TenantContext, after_commit
from turbocat.db.listing import PageRequest, apply_page
from turbocat.db.models import TaskQueueRow
from turbocat.domain import queues as rules
from turbocat.domain.access import Principal
from turbocat.domain.enums import MemberRole, SystemRole
from turbocat.domain.errors import Conflict, NotFound, PermissionDenied
from turbocat.engine import queues as engine_queues
from turbocat.services import audit

_FIELDS = (
    "name", "display_name", "description", "max_concurrent_workflows",
    "max_concurrent_activities", "is_system_queue",
)  # fmt: skip
EDITABLE = ("display_name", "description", *rules.LIMIT_FIELDS)
"""Fields an update may change; the name is fixed (steps and workflows refer to it)."""


@dataclass(frozen=True)
class QueueValues:
    """A new queue."""

    name: str
    display_name: str | None = None
    description: str | None = None
    max_concurrent_workflows: int = rules.DEFAULT_MAX_CONCURRENT_WORKFLOWS
    max_concurrent_activities: int = rules.DEFAULT_MAX_CONCURRENT_ACTIVITIES


@dataclass(frozen=True)
class QueueFilter:
    q: str | None = None
    """Case-insensitive substring of the name or display name."""
    system: bool | None = None
    """True: system queues only; False: the organization's own only; None: both."""
    effective: bool = False
    """Leave out system queues that the organization overrides with its own of the same name."""


# ---- permissions and RLS context ------------------------------------------------------------


def _require_writer(principal: Principal, *, system: bool) -> None:
    if not system:
        principal.require("task_queues:write", MemberRole.ADMIN)
        return
    if principal.system_role != SystemRole.ADMIN:
        raise PermissionDenied(
            "system task queues are read-only; only system administrators change them"
        )
    if principal.scopes is not None and "*" not in principal.scopes:
        raise PermissionDenied(
            "changing a system task queue through an API key needs the '*' scope"
        )


async def _as_system(session: AsyncSession, principal: Principal | None) -> None:
    context = (
        TenantContext(system=True)
        if principal is None
        else TenantContext(
            organization_id=principal.organization_id, user_id=principal.user_id, system=True
        )
    )
    await tenancy.enter(session, context)


async def _as_principal(session: AsyncSession, principal: Principal) -> None:
    await tenancy.enter(
        session, TenantContext(organization_id=principal.organization_id, user_id=principal.user_id)
    )


def _duplicate(name: str, system: bool) -> Conflict:
    where = "among the system queues" if system else "in this organization"
    return Conflict(f"body.name: a task queue named {name!r} already exists {where}")


def _audit(
    session: AsyncSession, principal: Principal, action: str, row: TaskQueueRow,
    now: dt.datetime, meta: audit.RequestMeta, before: dict[str, object] | None = None,
    *, final: bool = False,
) -> None:  # fmt: skip
    audit.record(
        session, organization_id=principal.organization_id, actor=audit.Actor.of(principal),
        action=f"task_queue.{action}", resource_type="task_queue", resource_id=row.id, now=now,
        meta=meta, before=before, after=None if final else audit.snapshot(row, _FIELDS),
    )  # fmt: skip


# ---- shared by the API and the operator verbs -----------------------------------------------


async def _name_taken(session: AsyncSession, organization_id: uuid.UUID | None, name: str) -> bool:
    owner = (
        TaskQueueRow.organization_id.is_(None)
        if organization_id is None
        else TaskQueueRow.organization_id == organization_id
    )
    stmt = select(TaskQueueRow.id).where(owner, TaskQueueRow.name == name).limit(1)
    return (await session.execute(stmt)).first() is not None


async def _insert(
    session: AsyncSession,
    values: QueueValues,
    *,
    organization_id: uuid.UUID | None,
    created_by_id: uuid.UUID | None,
    now: dt.datetime,
) -> TaskQueueRow:
    name = rules.check_name(values.name)
    system = organization_id is None
    for field in rules.LIMIT_FIELDS:
        rules.check_limit(field, getattr(values, field))
    if await _name_taken(session, organization_id, name):
        raise _duplicate(name, system)
    row = TaskQueueRow(
        organization_id=organization_id,
        created_by_id=created_by_id,
        name=name,
        display_name=values.display_name,
        description=values.description,
        max_concurrent_workflows=values.max_concurrent_workflows,
        max_concurrent_activities=values.max_concurrent_activities,
        is_system_queue=system,
        created_at=now,
        updated_at=now,
    )
    try:
        async with session.begin_nested():
            session.add(row)
            await session.flush()
    except IntegrityError as exc:  # a concurrent create won the race
        raise _duplicate(name, system) from exc
    _names_changed(session)
    return row


def _names_changed(session: AsyncSession) -> None:
    # This process's workers look the limited queue names up again at once; others within
    # engine_queues.NAMES_TTL_SECONDS.
    after_commit(session, engine_queues.forget_names)


async def _apply(
    session: AsyncSession, row: TaskQueueRow, changes: dict[str, object], now: dt.datetime
) -> None:
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise ValueError(f"not editable: {sorted(unknown)}")
    for field in rules.LIMIT_FIELDS:
        if field in changes:
            setattr(row, field, rules.check_limit(field, changes[field]))
    for field in ("display_name", "description"):
        if field in changes:
            value = changes[field]
            setattr(row, field, None if value is None else str(value))
    row.updated_at = now
    await session.flush()


# ---- API use cases --------------------------------------------------------------------------


def _visible(principal: Principal) -> ColumnElement[bool]:
    return or_(
        TaskQueueRow.organization_id == principal.organization_id,
        TaskQueueRow.organization_id.is_(None),
    )


async def list_queues(
    session: AsyncSession, principal: Principal, filters: QueueFilter, page: PageRequest
) -> list[TaskQueueRow]:
    """The organization's queues and the system queues."""
    principal.require_access("task_queues")
    stmt = select(TaskQueueRow).where(_visible(principal))
    if filters.system is True:
        stmt = stmt.where(TaskQueueRow.organization_id.is_(None))
    elif filters.system is False:
        stmt = stmt.where(TaskQueueRow.organization_id == principal.organization_id)
    if filters.effective:
        own_names = select(TaskQueueRow.name).where(
            TaskQueueRow.organization_id == principal.organization_id
        )
        stmt = stmt.where(
            (TaskQueueRow.organization_id == principal.organization_id)
            | TaskQueueRow.name.not_in(own_names)
        )
    if filters.q:
        needle = filters.q.lower()
        stmt = stmt.where(
            func.lower(TaskQueueRow.name).contains(needle, autoescape=True)
            | func.lower(func.coalesce(TaskQueueRow.display_name, "")).contains(
                needle, autoescape=True
            )
        )
    stmt = apply_page(
        stmt, page, id_col=TaskQueueRow.id, created_col=TaskQueueRow.created_at,
        name_col=TaskQueueRow.name,
    )  # fmt: skip
    return list((await session.execute(stmt)).scalars())


async def get(session: AsyncSession, principal: Principal, queue_id: uuid.UUID) -> TaskQueueRow:
    """One of the organization's queues, or a system queue."""
    principal.require_access("task_queues")
    row = await session.get(TaskQueueRow, queue_id)
    if row is None or row.organization_id not in (None, principal.organization_id):
        raise NotFound("task queue", queue_id)
    return row


async def create(
    session: AsyncSession,
    principal: Principal,
    values: QueueValues,
    *,
    system: bool = False,
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> TaskQueueRow:
    """A queue of the organization, or (system administrators) a system queue."""
    _require_writer(principal, system=system)
    if system:
        await _as_system(session, principal)
    row = await _insert(
        session, values, organization_id=None if system else principal.organization_id,
        created_by_id=principal.user_id, now=now,
    )  # fmt: skip
    if system:
        await _as_principal(session, principal)
    _audit(session, principal, "create", row, now, meta)
    return row


async def update(
    session: AsyncSession,
    principal: Principal,
    queue_id: uuid.UUID,
    *,
    changes: dict[str, object],
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> TaskQueueRow:
    row = await get(session, principal, queue_id)
    _require_writer(principal, system=row.is_system_queue)
    before = audit.snapshot(row, _FIELDS)
    if row.is_system_queue:
        await _as_system(session, principal)
    await _apply(session, row, changes, now)
    if row.is_system_queue:
        await _as_principal(session, principal)
    _audit(session, principal, "update", row, now, meta, before)
    return row


async def delete(
    session: AsyncSession,
    principal: Principal,
    queue_id: uuid.UUID,
    *,
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> None:
    """Delete a queue; work on it carries on, no longer limited by it (or limited by the
    system queue of the same name, if there is one)."""
    row = await get(session, principal, queue_id)
    system = row.is_system_queue
    _require_writer(principal, system=system)
    before = audit.snapshot(row, _FIELDS)
    if system:
        await _as_system(session, principal)
    await session.delete(row)
    await session.flush()
    _names_changed(session)
    if system:
        await _as_principal(session, principal)
    _audit(session, principal, "delete", row, now, meta, before, final=True)


# ---- operator verbs (CLI): system queues, in the system context, by name --------------------


async def list_system(session: AsyncSession) -> list[TaskQueueRow]:
    await _as_system(session, None)
    stmt = (
        select(TaskQueueRow)
        .where(TaskQueueRow.organization_id.is_(None))
        .order_by(TaskQueueRow.name)
    )
    return list((await session.execute(stmt)).scalars())


async def _system_row(session: AsyncSession, name: str) -> TaskQueueRow:
    await _as_system(session, None)
    stmt = select(TaskQueueRow).where(
        TaskQueueRow.organization_id.is_(None), TaskQueueRow.name == name
    )
    row = (await session.execute(stmt)).scalar_one_or_none()
    if row is None:
        raise NotFound("system task queue", name)
    return row


async def create_system(
    session: AsyncSession, values: QueueValues, *, now: dt.datetime
) -> TaskQueueRow:
    await _as_system(session, None)
    return await _insert(session, values, organization_id=None, created_by_id=None, now=now)


async def update_system(
    session: AsyncSession, name: str, *, changes: dict[str, object], now: dt.datetime
) -> TaskQueueRow:
    row = await _system_row(session, name)
    await _apply(session, row, changes, now)
    return row


async def delete_system(session: AsyncSession, name: str) -> None:
    await session.delete(await _system_row(session, name))
    await session.flush()
    _names_changed(session)
