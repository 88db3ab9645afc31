"""The template library (seeds 000/001/004): browse, publish, rate and instantiate templates.

Official templates ship as YAML files in ``turbocat/official_templates`` and are stored without
an organization by ``load_official_templates``. An organization publishes its own templates
(``is_public``) or keeps them private. Instantiating creates a real workflow (through
``services.workflows.create``: definition checks and plan limits apply) or agent in the caller's
organization; overrides are described in ``domain.templates``.

Rows of other tenants (official ones included) are read through the public-read policy and
written only for the counters, in the system RLS context, entered just for those statements:
``usage_count`` is bumped with one atomic UPDATE; ratings are upserted and the average and count
recomputed from ``template_ratings`` (exact, integer sum over count) while the template row is
locked (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite transactions are serialized by
``BEGIN IMMEDIATE``), so concurrent raters never lose an update.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from importlib import resources
from typing import Any, Literal

import yaml
from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy import update as sql_update
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.config import Settings
from turbocat.db import tenancy
from turbocat.db.engine import TenantContext
from turbocat.db.listing import tags_any, text_search
from turbocat.db.models import (
    AgentRow,
    IntegrationRow,
    TemplateRatingRow,
    TemplateRow,
    WorkflowRow,
)
from turbocat.domain import definitions
from turbocat.domain import templates as rules
from turbocat.domain.access import Principal
from turbocat.domain.enums import (
    IntegrationStatus,
    TemplateDifficulty,
    TemplateType,
    WorkflowCategory,
)
from turbocat.domain.errors import NotFound, PermissionDenied, ValidationFailed
from turbocat.domain.pagination import Cursor
from turbocat.domain.slugs import slugify
from turbocat.services import agents, audit, workflows

OFFICIAL_DIR = "official_templates"
TemplateSort = Literal[
    "popularity", "rating", "-usage_count", "usage_count", "-rating_average", "rating_average",
    "-created_at", "created_at", "name", "-name",
]  # fmt: skip
_ALIASES = {"popularity": "-usage_count", "rating": "-rating_average"}
_AUDIT_FIELDS = (
    "name", "description", "type", "category", "tags", "is_public", "difficulty",
    "estimated_time_savings", "required_integrations", "optional_integrations",
    "configuration_schema",
)  # fmt: skip
EDITABLE = frozenset(
    {"name", "description", "category", "template_data", "tags", "is_public", "difficulty",
     "estimated_time_savings", "required_integrations", "optional_integrations",
     "configuration_schema"}
)  # fmt: skip


@dataclass(frozen=True)
class TemplateFilter:
    type: TemplateType | None = None
    category: WorkflowCategory | None = None
    tags: list[str] = field(default_factory=list)
    difficulty: TemplateDifficulty | None = None
    official: bool | None = None
    mine: bool = False
    """Only this organization's own templates."""
    q: str | None = None


@dataclass(frozen=True)
class TemplatePage:
    limit: int
    cursor: Cursor | None = None
    sort: TemplateSort = "popularity"

    @property
    def column(self) -> str:
        return _ALIASES.get(self.sort, self.sort).lstrip("-")

    @property
    def descending(self) -> bool:
        return _ALIASES.get(self.sort, self.sort).startswith("-")


@dataclass(frozen=True)
class Instantiated:
    template: TemplateRow
    workflow: WorkflowRow | None
    agent: AgentRow | None
    missing_integrations: list[str]
    configuration: dict[str, Any]


# ---- reading --------------------------------------------------------------------------------


def _visible(principal: Principal) -> ColumnElement[bool]:
    return or_(
        TemplateRow.organization_id.is_(None),
        TemplateRow.is_public.is_(True),
        TemplateRow.organization_id == principal.organization_id,
    )


async def get(
    session: AsyncSession, principal: Principal, template_id: uuid.UUID, *, for_write: bool = False
) -> TemplateRow:
    """A template this caller may see; only the owning organization writes one."""
    principal.require_access("templates", write=for_write)
    row = await session.get(TemplateRow, template_id)
    if row is None or row.deleted_at is not None:
        raise NotFound("template", template_id)
    mine = row.organization_id == principal.organization_id
    if not (mine or row.organization_id is None or row.is_public):
        raise NotFound("template", template_id)
    if for_write and not mine:
        if row.organization_id is None:
            raise PermissionDenied("official templates cannot be changed")
        raise NotFound("template", template_id)
    return row


def _cursor_value(page: TemplatePage) -> Any:
    assert page.cursor is not None
    raw = page.cursor.sort_value
    try:
        match page.column:
            case "usage_count":
                return int(raw)
            case "rating_average":
                return Decimal(raw)
            case "created_at":
                return page.cursor.created_at()
            case _:
                return raw
    except (ValueError, ArithmeticError) as exc:
        raise ValidationFailed.field(("query", "cursor"), "cursor is not valid") from exc


async def list_templates(
    session: AsyncSession, principal: Principal, filters: TemplateFilter, page: TemplatePage
) -> list[TemplateRow]:
    """Official templates, public ones of every organization and this organization's own;
    ``page.limit + 1`` rows in keyset order over (sort column, id)."""
    principal.require_access("templates")
    dialect = session.get_bind().dialect.name
    stmt = select(TemplateRow).where(_visible(principal))
    if filters.mine:
        stmt = stmt.where(TemplateRow.organization_id == principal.organization_id)
    if filters.type:
        stmt = stmt.where(TemplateRow.type == filters.type)
    if filters.category:
        stmt = stmt.where(TemplateRow.category == filters.category.value)
    if filters.difficulty:
        stmt = stmt.where(TemplateRow.difficulty == filters.difficulty)
    if filters.official is not None:
        stmt = stmt.where(TemplateRow.is_official.is_(filters.official))
    if filters.tags:
        tags = sorted({t.strip().lower() for t in filters.tags if t.strip()})
        stmt = stmt.where(tags_any(dialect, TemplateRow.tags, tags))
    if filters.q:
        stmt = stmt.where(
            text_search(dialect, [TemplateRow.name, TemplateRow.description], filters.q)
        )
    column: Any = getattr(TemplateRow, page.column)
    if page.cursor is not None:
        value = _cursor_value(page)
        after = column < value if page.descending else column > value
        tie = (
            TemplateRow.id < page.cursor.id if page.descending else TemplateRow.id > page.cursor.id
        )
        stmt = stmt.where(or_(after, and_(column == value, tie)))
    order = (
        (column.desc(), TemplateRow.id.desc())
        if page.descending
        else (column.asc(), TemplateRow.id.asc())
    )
    stmt = stmt.order_by(*order).limit(page.limit + 1)
    return list((await session.execute(stmt)).scalars())


def next_cursor(rows: list[TemplateRow], page: TemplatePage) -> str | None:
    if len(rows) <= page.limit:
        return None
    last = rows[page.limit - 1]
    value = getattr(last, page.column)
    shown = value.isoformat() if isinstance(value, dt.datetime) else str(value)
    return Cursor(shown, last.id).encode()


# ---- writing --------------------------------------------------------------------------------


def _audit(
    session: AsyncSession, principal: Principal, action: str, row: TemplateRow,
    now: dt.datetime, meta: audit.RequestMeta, before: dict[str, Any] | None = None,
    *, final: bool = False, extra: dict[str, Any] | None = None,
) -> None:  # fmt: skip
    audit.record(
        session, organization_id=principal.organization_id, actor=audit.Actor.of(principal),
        action=action, resource_type="template", resource_id=row.id, now=now, meta=meta,
        before=before, after=None if final else audit.snapshot(row, _AUDIT_FIELDS), extra=extra,
    )  # fmt: skip


def _limits(settings: Settings) -> definitions.DefinitionLimits:
    return definitions.DefinitionLimits(**settings.definitions.model_dump())


async def create(
    session: AsyncSession,
    principal: Principal,
    *,
    values: dict[str, Any],
    settings: Settings,
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> TemplateRow:
    """Publish a template of this organization (private unless ``is_public``)."""
    principal.require_access("templates", write=True)
    is_public = bool(values.pop("is_public", False))
    spec = rules.check_spec(rules.TemplateSpec.model_validate(values), limits=_limits(settings))
    row = TemplateRow(
        organization_id=principal.organization_id,
        created_by_id=principal.user_id,
        is_official=False,
        is_public=is_public,
        created_at=now,
        updated_at=now,
        **_row_values(spec),
    )
    session.add(row)
    await session.flush()
    _audit(session, principal, "template.create", row, now, meta)
    return row


def _row_values(spec: rules.TemplateSpec) -> dict[str, Any]:
    return {
        "name": spec.name.strip(),
        "description": spec.description,
        "type": spec.type,
        "category": spec.category.value,
        "template_data": spec.template_data,
        "tags": spec.tags,
        "difficulty": spec.difficulty,
        "estimated_time_savings": spec.estimated_time_savings,
        "required_integrations": [p.value for p in spec.required_integrations],
        "optional_integrations": [p.value for p in spec.optional_integrations],
        "configuration_schema": spec.configuration_schema,
    }


async def update(
    session: AsyncSession,
    principal: Principal,
    template_id: uuid.UUID,
    *,
    changes: dict[str, Any],
    settings: Settings,
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> TemplateRow:
    """Edit an own template; the whole template is checked again."""
    row = await get(session, principal, template_id, for_write=True)
    unknown = set(changes) - EDITABLE
    if unknown:
        raise ValidationFailed.field(("body", sorted(unknown)[0]), "this field cannot be changed")
    before = audit.snapshot(row, _AUDIT_FIELDS)
    current = {
        "name": row.name, "description": row.description, "type": row.type,
        "category": row.category, "template_data": row.template_data, "tags": row.tags,
        "difficulty": row.difficulty, "estimated_time_savings": row.estimated_time_savings,
        "required_integrations": row.required_integrations,
        "optional_integrations": row.optional_integrations,
        "configuration_schema": row.configuration_schema,
    }  # fmt: skip
    is_public = changes.pop("is_public", None)
    merged = current | {k: v for k, v in changes.items() if v is not None or k in _NULLABLE}
    spec = rules.check_spec(rules.TemplateSpec.model_validate(merged), limits=_limits(settings))
    for name, value in _row_values(spec).items():
        setattr(row, name, value)
    if is_public is not None:
        row.is_public = bool(is_public)
    row.updated_at = now
    _audit(session, principal, "template.update", row, now, meta, before)
    return row


_NULLABLE = frozenset({"description", "estimated_time_savings", "configuration_schema"})


async def delete(
    session: AsyncSession, principal: Principal, template_id: uuid.UUID, *,
    now: dt.datetime, meta: audit.RequestMeta,
) -> None:  # fmt: skip
    """Soft-delete an own template (hidden from everyone)."""
    row = await get(session, principal, template_id, for_write=True)
    row.deleted_at = now
    before = audit.snapshot(row, _AUDIT_FIELDS)
    _audit(session, principal, "template.delete", row, now, meta, before, final=True)


# ---- counters (other tenants' rows, narrowly in the system context) --------------------------


async def _as_system(session: AsyncSession, principal: Principal) -> None:
    await tenancy.enter(
        session,
        TenantContext(
            organization_id=principal.organization_id, user_id=principal.user_id, system=True
        ),
    )


async def _as_principal(session: AsyncSession, principal: Principal) -> None:
    await tenancy.enter(
        session, TenantContext(organization_id=principal.organization_id, user_id=principal.user_id)
    )


def _average(total: int, count: int) -> Decimal:
    if count == 0:
        return Decimal("0.00")
    return (Decimal(total) / Decimal(count)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


async def rate(
    session: AsyncSession,
    principal: Principal,
    template_id: uuid.UUID,
    *,
    rating: int,
    review: str | None,
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> TemplateRow:
    """Rate a visible template 1..5; one rating per user (rating again replaces it)."""
    principal.require_access("templates", write=True)
    if not 1 <= rating <= 5:
        raise ValidationFailed.field(("body", "rating"), "a rating is 1 to 5")
    await get(session, principal, template_id)
    await _as_system(session, principal)
    try:
        # The lock serializes raters of this template, so the upsert and the recount below
        # see every committed rating and no update is lost.
        row = (
            await session.execute(
                select(TemplateRow)
                .where(TemplateRow.id == template_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        ).scalar_one()
        mine = (
            await session.execute(
                select(TemplateRatingRow).where(
                    TemplateRatingRow.template_id == template_id,
                    TemplateRatingRow.user_id == principal.user_id,
                )
            )
        ).scalar_one_or_none()
        before = {"rating": mine.rating, "review": mine.review} if mine else None
        if mine is None:
            session.add(
                TemplateRatingRow(
                    organization_id=principal.organization_id, template_id=template_id,
                    user_id=principal.user_id, rating=rating, review=review, created_at=now,
                    updated_at=now,
                )
            )  # fmt: skip
        else:
            mine.rating, mine.review, mine.updated_at = rating, review, now
        await session.flush()
        count, total = (
            await session.execute(
                select(func.count(), func.coalesce(func.sum(TemplateRatingRow.rating), 0)).where(
                    TemplateRatingRow.template_id == template_id
                )
            )
        ).one()
        row.rating_count = int(count)
        row.rating_average = _average(int(total), int(count))
        await session.flush()
    finally:
        await _as_principal(session, principal)
    audit.record(
        session, organization_id=principal.organization_id, actor=audit.Actor.of(principal),
        action="template.rate", resource_type="template", resource_id=template_id, now=now,
        meta=meta, before=before, after={"rating": rating, "review": review},
    )  # fmt: skip
    return row


async def _bump_usage(session: AsyncSession, principal: Principal, template_id: uuid.UUID) -> None:
    await _as_system(session, principal)
    try:
        await session.execute(
            sql_update(TemplateRow)
            .where(TemplateRow.id == template_id)
            .values(usage_count=TemplateRow.usage_count + 1)
            .execution_options(synchronize_session=False)
        )
    finally:
        await _as_principal(session, principal)


# ---- instantiation --------------------------------------------------------------------------


async def _free_kebab(session: AsyncSession, principal: Principal, name: str) -> str:
    base = slugify(name, max_length=90)
    stmt = (
        select(WorkflowRow.kebab_name)
        .where(
            WorkflowRow.organization_id == principal.organization_id,
            WorkflowRow.kebab_name.startswith(base, autoescape=True),
        )
        .execution_options(include_deleted=True)
    )
    taken = set((await session.execute(stmt)).scalars())
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


async def _missing_integrations(
    session: AsyncSession, principal: Principal, required: list[str]
) -> list[str]:
    if not required:
        return []
    stmt = select(IntegrationRow.provider).where(
        IntegrationRow.organization_id == principal.organization_id,
        IntegrationRow.provider.in_(required),
        IntegrationRow.status == IntegrationStatus.ACTIVE,
    )
    have = {str(p) for p in (await session.execute(stmt)).scalars()}
    return [p for p in required if p not in have]


async def instantiate(
    session: AsyncSession,
    principal: Principal,
    template_id: uuid.UUID,
    *,
    overrides: rules.Overrides,
    settings: Settings,
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> Instantiated:
    """Create a workflow (workflow and step templates) or an agent (agent templates) in the
    caller's organization; a missing required integration is reported, not refused."""
    template = await get(session, principal, template_id)
    plan = rules.instantiate(
        template.type,
        template.template_data,
        template_name=template.name,
        template_description=template.description,
        template_category=template.category,
        template_tags=list(template.tags),
        configuration_schema=template.configuration_schema,
        overrides=overrides,
    )
    workflow: WorkflowRow | None = None
    agent: AgentRow | None = None
    if plan.agent_type is not None:
        agent = await agents.create(
            session, principal, agent_type=plan.agent_type, values=plan.values, now=now, meta=meta
        )
        created_id = agent.id
    else:
        values = {
            **plan.values,
            "kebab_name": await _free_kebab(session, principal, plan.values["name"]),
        }
        workflow = await workflows.create(
            session, principal, values=values, settings=settings, now=now, meta=meta
        )
        created_id = workflow.id
    await _bump_usage(session, principal, template.id)
    missing = await _missing_integrations(session, principal, list(template.required_integrations))
    audit.record(
        session, organization_id=principal.organization_id, actor=audit.Actor.of(principal),
        action="template.instantiate", resource_type="template", resource_id=template.id,
        now=now, meta=meta,
        extra={"created": "agent" if agent else "workflow", "created_id": str(created_id),
               "configuration": plan.configuration, "missing_integrations": missing},
    )  # fmt: skip
    await session.refresh(template)
    return Instantiated(template, workflow, agent, missing, plan.configuration)


# ---- official templates ---------------------------------------------------------------------


def read_official_templates() -> list[rules.TemplateSpec]:
    """The templates shipped in the package, checked (a broken file is a bug: it raises)."""
    folder = resources.files("turbocat").joinpath(OFFICIAL_DIR)
    specs = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith((".yaml", ".yml")):
            raw = yaml.safe_load(entry.read_text(encoding="utf-8"))
            path: tuple[str | int, ...] = (entry.name,)
            specs.append(rules.check_spec(rules.TemplateSpec.model_validate(raw), path=path))
    return specs


async def load_official_templates(session: AsyncSession) -> int:
    """Insert or refresh the official templates by name (organization NULL, official, public);
    idempotent, counters untouched. Enters the system RLS context: operator use only."""
    await tenancy.enter(session, TenantContext(system=True))
    existing = {
        r.name: r
        for r in (
            await session.execute(
                select(TemplateRow).where(
                    TemplateRow.organization_id.is_(None), TemplateRow.is_official.is_(True)
                )
            )
        ).scalars()
    }
    changed = 0
    for spec in read_official_templates():
        values = _row_values(spec)
        row = existing.get(spec.name)
        if row is None:
            session.add(TemplateRow(is_official=True, is_public=True, **values))
            changed += 1
        elif any(getattr(row, k) != v for k, v in values.items()):
            for k, v in values.items():
                setattr(row, k, v)
            changed += 1
    await session.flush()
    return changed
