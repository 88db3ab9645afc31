"""The component registry (seed 003): built-in kinds and user-registered custom components.

Built-ins come from ``domain.components`` and are stored as rows without an organization by
``sync_builtin_components`` (run at start-up and by ``turbocat templates load``). An
organization registers its own ``custom`` components; visibility decides who sees one:
``private`` (its creator), ``organization`` (its members) or ``public`` (every tenant). Only the
owning organization changes or deletes a component; built-ins are read-only.

Workers register the custom components their Python environment provides
(``register_served``): those rows are system-level (no organization, public, like built-ins),
because the operator who installs a package on the workers serves it to every tenant; they are
read-only through the API too. ``resolve_custom`` finds the version a workflow step runs.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db.listing import PageRequest, apply_page, tags_any, text_search
from turbocat.db.models import ComponentRow
from turbocat.domain import components as rules
from turbocat.domain import semver
from turbocat.domain.access import Principal
from turbocat.domain.enums import ComponentKind, Visibility
from turbocat.domain.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from turbocat.domain.jsonschemas import check_json_schema
from turbocat.services import audit

_FIELDS = (
    "name", "display_name", "description", "kind", "version", "visibility", "config_schema",
    "input_schema", "output_schema", "tags", "capabilities", "implementation_path", "package",
    "task_queue", "deprecated",
)  # fmt: skip
EDITABLE = frozenset({"display_name", "description", "deprecated", "visibility", "tags"})


@dataclass(frozen=True)
class ComponentFilter:
    kind: ComponentKind | None = None
    visibility: Visibility | None = None
    tags: list[str] = field(default_factory=list)
    q: str | None = None
    builtin: bool | None = None
    """True: built-ins only; False: registered ones only; None: both."""
    include_deprecated: bool = True


def visible_to(model: Any, principal: Principal) -> ColumnElement[bool]:
    """Rows ``principal`` may read: built-ins, public rows, and their organization's rows
    (``private`` ones only for their creator). Shared with agent prompts."""
    return or_(
        model.organization_id.is_(None),
        model.visibility == Visibility.PUBLIC,
        and_(
            model.organization_id == principal.organization_id,
            or_(model.visibility != Visibility.PRIVATE, model.created_by_id == principal.user_id),
        ),
    )


def can_see(row: Any, principal: Principal) -> bool:
    if row.organization_id is None or row.visibility == Visibility.PUBLIC:
        return True
    if row.organization_id != principal.organization_id:
        return False
    return bool(row.visibility != Visibility.PRIVATE or row.created_by_id == principal.user_id)


async def fetch_shared(
    session: AsyncSession,
    principal: Principal,
    model: Any,
    ident: uuid.UUID,
    *,
    kind: str,
    for_write: bool,
    builtin_message: str,
) -> Any:
    """A row visible to ``principal`` (see ``can_see``); for writes, only their organization's
    rows (404 for others') and never a built-in one (403)."""
    row = await session.get(model, ident)
    if row is None or not can_see(row, principal):
        raise NotFound(kind, ident)
    if for_write:
        if row.organization_id is None:
            raise PermissionDenied(builtin_message)
        if row.organization_id != principal.organization_id:
            raise NotFound(kind, ident)
    return row


def clean_tags(tags: list[str]) -> list[str]:
    return sorted({t.strip().lower() for t in tags if t.strip()})


async def sync_builtin_components(session: AsyncSession) -> int:
    """Insert or refresh the built-in rows (by name and version); returns how many changed.

    Idempotent. On PostgreSQL the caller's transaction must be in the system context (rows
    without an organization are not writable by a tenant).
    """
    existing = {
        (r.name, r.version): r
        for r in (
            await session.execute(
                select(ComponentRow).where(ComponentRow.organization_id.is_(None))
            )
        ).scalars()
    }
    changed = 0
    for spec in rules.BUILTINS:
        values: dict[str, Any] = {
            "display_name": spec.display_name,
            "description": spec.description,
            "kind": spec.kind,
            "visibility": Visibility.PUBLIC,
            "config_schema": dict(spec.config_schema),
            "input_schema": dict(spec.input_schema),
            "output_schema": dict(spec.output_schema),
            "tags": list(spec.tags),
            "capabilities": list(spec.capabilities),
            "deprecated": False,
        }
        row = existing.get((spec.name, spec.version))
        if row is None:
            session.add(ComponentRow(name=spec.name, version=spec.version, **values))
            changed += 1
        elif any(getattr(row, k) != v for k, v in values.items()):
            for k, v in values.items():
                setattr(row, k, v)
            changed += 1
    await session.flush()
    return changed


def _audit(
    session: AsyncSession, principal: Principal, action: str, row: ComponentRow,
    now: dt.datetime, meta: audit.RequestMeta, before: dict[str, Any] | None = None,
    *, final: bool = False,
) -> None:  # fmt: skip
    audit.record(
        session, organization_id=principal.organization_id, actor=audit.Actor.of(principal),
        action=action, resource_type="component", resource_id=row.id, now=now, meta=meta,
        before=before, after=None if final else audit.snapshot(row, _FIELDS),
    )  # fmt: skip


def _check(values: dict[str, Any]) -> dict[str, Any]:
    if "name" in values:
        name = str(values["name"]).strip()
        if not rules.NAME_PATTERN.match(name):
            raise ValidationFailed.field(
                ("body", "name"),
                "a letter, then letters, digits, '_', '.' or '-' (at most 100 characters)",
            )
        if name in rules.BUILTIN_NAMES:
            raise ValidationFailed.field(
                ("body", "name"), f"{name!r} is the name of a built-in component", "reserved"
            )
        values["name"] = name
    if "version" in values:
        semver.check(values["version"], ("body", "version"))
    for key in ("config_schema", "input_schema", "output_schema"):
        if values.get(key) is not None:
            check_json_schema(values[key], ("body", key))
    path = values.get("implementation_path")
    if path is not None and not rules.IMPLEMENTATION_PATH.match(path):
        raise ValidationFailed.field(
            ("body", "implementation_path"),
            "must look like package.module:function (it is not imported here)",
        )
    for key in ("tags", "capabilities"):
        if key in values:
            values[key] = clean_tags(values[key] or [])
    return values


async def create(
    session: AsyncSession,
    principal: Principal,
    *,
    values: dict[str, Any],
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> ComponentRow:
    """Register a custom component of this organization; (name, version) is unique in it."""
    principal.require_access("components", write=True)
    values = _check({"version": "1.0.0", **values})
    taken = await session.execute(
        select(ComponentRow.id).where(
            ComponentRow.organization_id == principal.organization_id,
            ComponentRow.name == values["name"],
            ComponentRow.version == values["version"],
        )
    )
    if taken.first() is not None:
        raise Conflict(
            f"component {values['name']!r} version {values['version']} already exists "
            "in this organization; register a higher version"
        )
    row = ComponentRow(
        organization_id=principal.organization_id,
        created_by_id=principal.user_id,
        kind=ComponentKind.CUSTOM,
        created_at=now,
        updated_at=now,
        **{k: v for k, v in values.items() if v is not None},
    )
    session.add(row)
    await session.flush()
    _audit(session, principal, "component.create", row, now, meta)
    return row


async def get(
    session: AsyncSession, principal: Principal, component_id: uuid.UUID, *, for_write: bool = False
) -> ComponentRow:
    principal.require_access("components", write=for_write)
    row: ComponentRow = await fetch_shared(
        session, principal, ComponentRow, component_id, kind="component", for_write=for_write,
        builtin_message="built-in and worker-registered components cannot be changed here",
    )  # fmt: skip
    return row


async def list_components(
    session: AsyncSession, principal: Principal, filters: ComponentFilter, page: PageRequest
) -> list[ComponentRow]:
    """Built-ins, this organization's components and public ones of other organizations."""
    principal.require_access("components")
    dialect = session.get_bind().dialect.name
    stmt = select(ComponentRow).where(visible_to(ComponentRow, principal))
    if filters.kind:
        stmt = stmt.where(ComponentRow.kind == filters.kind)
    if filters.visibility:
        stmt = stmt.where(ComponentRow.visibility == filters.visibility)
    if filters.builtin is not None:
        is_builtin = and_(
            ComponentRow.organization_id.is_(None), ComponentRow.kind != ComponentKind.CUSTOM
        )
        stmt = stmt.where(is_builtin if filters.builtin else ~is_builtin)
    if not filters.include_deprecated:
        stmt = stmt.where(ComponentRow.deprecated.is_(False))
    if filters.tags:
        stmt = stmt.where(tags_any(dialect, ComponentRow.tags, clean_tags(filters.tags)))
    if filters.q:
        cols = [ComponentRow.name, ComponentRow.display_name, ComponentRow.description]
        stmt = stmt.where(text_search(dialect, cols, filters.q))
    stmt = apply_page(
        stmt, page, id_col=ComponentRow.id, created_col=ComponentRow.created_at,
        name_col=ComponentRow.name,
    )  # fmt: skip
    return list((await session.execute(stmt)).scalars())


async def update(
    session: AsyncSession,
    principal: Principal,
    component_id: uuid.UUID,
    *,
    changes: dict[str, Any],
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> ComponentRow:
    """Change metadata only; what runs (schemas, implementation) changes with a new version."""
    row = await get(session, principal, component_id, for_write=True)
    unknown = set(changes) - EDITABLE
    if unknown:
        raise ValidationFailed.field(("body", sorted(unknown)[0]), "this field cannot be changed")
    changes = _check(dict(changes))
    before = audit.snapshot(row, _FIELDS)
    for name, value in changes.items():
        if value is None and name in ("deprecated", "visibility", "tags"):
            continue
        setattr(row, name, value)
    row.updated_at = now
    _audit(session, principal, "component.update", row, now, meta, before)
    return row


async def delete(
    session: AsyncSession, principal: Principal, component_id: uuid.UUID, *,
    now: dt.datetime, meta: audit.RequestMeta,
) -> None:  # fmt: skip
    row = await get(session, principal, component_id, for_write=True)
    before = audit.snapshot(row, _FIELDS)
    _audit(session, principal, "component.delete", row, now, meta, before, final=True)
    await session.delete(row)
    await session.flush()


async def register_served(
    session: AsyncSession, specs: list[rules.CustomComponent], now: dt.datetime
) -> list[ComponentRow]:
    """Insert or refresh the system-level rows of the custom components a worker loaded (by
    name and version; a version's schemas follow the code that serves it). Idempotent. On
    PostgreSQL the transaction must be in the system context."""
    rows = []
    for spec in specs:
        values: dict[str, Any] = {
            "display_name": spec.display_name,
            "description": spec.description,
            "kind": ComponentKind.CUSTOM,
            "visibility": Visibility.PUBLIC,
            "input_schema": dict(spec.input_schema),
            "output_schema": dict(spec.output_schema),
            "tags": clean_tags(list(spec.tags)),
            "implementation_path": spec.implementation_path,
            "package": spec.package,
            "task_queue": spec.task_queue,
        }
        _check({"name": spec.name, "version": spec.version})
        row = (
            await session.execute(
                select(ComponentRow).where(
                    ComponentRow.organization_id.is_(None),
                    ComponentRow.name == spec.name,
                    ComponentRow.version == spec.version,
                )
            )
        ).scalar_one_or_none()
        if row is None:
            row = ComponentRow(
                name=spec.name, version=spec.version, created_at=now, updated_at=now, **values
            )
            session.add(row)
        elif any(getattr(row, k) != v for k, v in values.items()):
            for k, v in values.items():
                setattr(row, k, v)
            row.updated_at = now
        rows.append(row)
    await session.flush()
    return rows


async def resolve_custom(
    session: AsyncSession, principal: Principal, name: str, requirement: str | None
) -> ComponentRow | None:
    """The highest version of custom component ``name`` that meets ``requirement`` (see
    ``semver.satisfies``), not deprecated, among the worker-registered ones and those of the
    principal's organization; None if there is none. Other tenants' public components are not
    candidates: they must not decide where this organization's steps run."""
    rows = (
        await session.execute(
            select(ComponentRow).where(
                visible_to(ComponentRow, principal),
                or_(
                    ComponentRow.organization_id.is_(None),
                    ComponentRow.organization_id == principal.organization_id,
                ),
                ComponentRow.kind == ComponentKind.CUSTOM,
                ComponentRow.name == name,
                ComponentRow.deprecated.is_(False),
            )
        )
    ).scalars()
    fit = [r for r in rows if semver.satisfies(r.version, requirement)]
    return max(fit, key=lambda r: semver.sort_key(r.version), default=None)
