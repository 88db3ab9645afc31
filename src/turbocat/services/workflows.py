"""Workflows: validated definitions, immutable versions once run, lifecycle, sharing, steps.

A workflow is a lineage of version rows (SPEC section 9). Editing the latest version changes
it in place until it has run; after that, a change to what runs (definition, triggers, queue,
limits) creates the next version and the version that ran stays exactly as it was.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, delete, exists, func, not_, select
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.config import Settings
from turbocat.db.listing import PageRequest, apply_page, tags_any, text_search
from turbocat.db.models import (
    AgentRow,
    ComponentRow,
    ExecutionRow,
    OrganizationRow,
    ProjectRow,
    WorkflowRow,
    WorkflowStepRow,
)
from turbocat.domain import definitions, lifecycle, plans
from turbocat.domain import deployments as deployment_rules
from turbocat.domain.access import Principal
from turbocat.domain.definitions.graph import walk_graphs
from turbocat.domain.enums import StepType, WorkflowCategory, WorkflowStatus
from turbocat.domain.errors import Conflict, NotFound, ValidationFailed
from turbocat.domain.slugs import slugify
from turbocat.domain.triggers import validate_trigger_config
from turbocat.services import agents, audit, components, trigger_schedules, versions

KEBAB = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
RESERVED_TAG_PREFIX = "turbocat:"
"""Tags the platform sets itself; a person cannot."""
MANAGED_TAG = deployment_rules.MANAGED_WORKFLOW_TAG
"""Marks the hidden single-step workflow an agent deployment runs (``services.deployments``):
left out of listings, plan limits and exports, and read-only through the workflows API. It
starts with ``RESERVED_TAG_PREFIX``, so nobody else can set it."""
VERSIONED_FIELDS = frozenset(
    {"definition", "trigger_config", "task_queue", "max_concurrent_executions",
     "execution_timeout_seconds"}
)  # fmt: skip
"""What an execution pins: changing it on a version that has run makes a new version."""
DEFAULTS: dict[str, Any] = {"max_concurrent_executions": 10, "execution_timeout_seconds": 3600}
"""Seed 003's limits for a new workflow that does not state them (null states "no limit")."""
IN_PLACE_FIELDS = frozenset({"name", "description", "category", "tags", "is_public", "project_id"})
_AUDIT_FIELDS = (
    "name", "kebab_name", "description", "category", "status", "version", "trigger_config",
    "task_queue", "max_concurrent_executions", "execution_timeout_seconds", "tags", "is_public",
    "project_id",
)  # fmt: skip


@dataclass(frozen=True)
class WorkflowFilter:
    status: WorkflowStatus | None = None
    category: WorkflowCategory | None = None
    tags: list[str] = field(default_factory=list)
    created_by: uuid.UUID | None = None
    project_id: uuid.UUID | None = None
    public: bool = False
    q: str | None = None
    all_versions: bool = False


def _limits(settings: Settings) -> definitions.DefinitionLimits:
    return definitions.DefinitionLimits(**settings.definitions.model_dump())


def canonical_input(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    """The canonical document, whether ``doc`` is one or the nodes/edges canvas form."""
    if "nodes" in doc or "edges" in doc:
        converted: Mapping[str, Any] = definitions.from_canvas(
            doc, path_prefix=("body", "definition")
        )
        return converted
    return doc


@dataclass(frozen=True)
class Resolved:
    """What a definition refers to, found for the caller."""

    agents: dict[str, AgentRow]
    """By reference (id or name)."""
    components: dict[str, ComponentRow] = field(default_factory=dict)
    """The custom component each custom step runs, by step key."""


async def _custom_components(
    session: AsyncSession, principal: Principal, defn: definitions.WorkflowDefinition
) -> dict[str, ComponentRow | None]:
    out: dict[str, ComponentRow | None] = {}
    cache: dict[tuple[str, str | None], ComponentRow | None] = {}
    for ref in _custom_specs(defn):
        wanted = (ref.name, ref.version)
        if wanted not in cache:
            cache[wanted] = await components.resolve_custom(session, principal, *wanted)
        out[ref.key] = cache[wanted]
    return out


async def check_definition(
    session: AsyncSession, principal: Principal, doc: Mapping[str, Any], settings: Settings
) -> tuple[definitions.WorkflowDefinition, Resolved]:
    """Validate a definition and resolve the agents and custom components it names for this
    organization (a custom step runs the highest registered version meeting its requirement,
    pinned in its ``workflow_steps`` row with the component's task queue)."""
    if not isinstance(doc, Mapping):
        raise ValidationFailed.field(("body", "definition"), "must be an object")
    doc = canonical_input(doc)
    limits = _limits(settings)
    defn = definitions.validate_definition(doc, limits=limits)
    found: dict[str, AgentRow] = {}
    for ref in sorted(definitions.agent_refs(defn)):
        row = await agents.resolve_ref(session, principal, ref)
        if row is not None:
            found[ref] = row
    custom = await _custom_components(session, principal, defn)
    if len(found) < len(definitions.agent_refs(defn)) or None in custom.values():
        # Validate again with the resolvers so that each unknown reference is named at its step.
        known = {(s.name, s.version) for s in _custom_specs(defn) if custom.get(s.key)}
        definitions.validate_definition(
            doc, limits=limits, resolve_agent=found.__contains__,
            resolve_component=lambda name, version: (name, version) in known,
        )  # fmt: skip
    return defn, Resolved(found, {k: v for k, v in custom.items() if v is not None})


@dataclass(frozen=True)
class _CustomRef:
    key: str
    name: str
    version: str | None


def _custom_specs(defn: definitions.WorkflowDefinition) -> list[_CustomRef]:
    out = []
    for graph in walk_graphs(defn):
        for step in graph.steps:
            spec = step.component if isinstance(step, definitions.AgentStep) else None
            if spec is not None and spec.kind == definitions.InlineKind.CUSTOM and spec.name:
                out.append(_CustomRef(step.key, spec.name, spec.version))
    return out


def _step_rows(
    workflow: WorkflowRow, defn: definitions.WorkflowDefinition, resolved: Resolved
) -> list[WorkflowStepRow]:
    rows = []
    found = resolved.agents
    for rec in definitions.materialize_steps(defn):
        agent = found.get(rec.agent_ref) if rec.agent_ref else None
        component = resolved.components.get(rec.key)
        rows.append(
            WorkflowStepRow(
                organization_id=workflow.organization_id,
                workflow_id=workflow.id,
                agent_id=agent.id if agent else None,
                component_id=component.id if component else None,
                step_key=rec.key,
                step_name=rec.name or rec.key,
                step_type=StepType(rec.type),
                position=rec.position,
                canvas_position=rec.canvas_position,
                config=rec.config,
                inputs=rec.inputs,
                depends_on=list(rec.depends_on),
                when_label=rec.when_label,
                join_mode=rec.join,
                retry_count=rec.retry_count,
                retry_delay_ms=rec.retry_delay_ms,
                retry_backoff=1.0 if rec.retry_backoff == "fixed" else 2.0,
                retry_max_delay_ms=rec.retry_max_delay_ms,
                retry_jitter=rec.retry_jitter,
                timeout_ms=rec.timeout_ms,
                on_error=rec.on_error,
                task_queue=rec.task_queue or (component.task_queue if component else None),
                description=rec.description,
                parent_key=rec.parent_key,
                parent_branch=rec.parent_branch,
                created_at=workflow.updated_at,
                updated_at=workflow.updated_at,
            )
        )
    return rows


async def _check_project(
    session: AsyncSession, principal: Principal, project_id: uuid.UUID | None
) -> None:
    if project_id is None:
        return
    project = await session.get(ProjectRow, project_id)
    if project is None or project.organization_id != principal.organization_id:
        raise ValidationFailed.field(
            ("body", "project_id"), "no such project in this organization", "not_found"
        )


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    if "name" in values:
        values["name"] = str(values["name"]).strip()
        if not values["name"]:
            raise ValidationFailed.field(("body", "name"), "must not be blank")
    if "tags" in values:
        values["tags"] = sorted({t.strip().lower() for t in values["tags"] or [] if t.strip()})
        if any(t.startswith(RESERVED_TAG_PREFIX) for t in values["tags"]):
            raise ValidationFailed.field(
                ("body", "tags"), f"tags starting with {RESERVED_TAG_PREFIX!r} are reserved"
            )
    if "trigger_config" in values:
        values["trigger_config"] = validate_trigger_config(values["trigger_config"] or {})
    return values


def visible(dialect: str) -> ColumnElement[bool]:
    """Workflows people made (not the hidden ones agent deployments run)."""
    return not_(tags_any(dialect, WorkflowRow.tags, [MANAGED_TAG]))


def is_managed(row: WorkflowRow) -> bool:
    return MANAGED_TAG in (row.tags or [])


def _audit(
    session: AsyncSession, principal: Principal, action: str, row: WorkflowRow, now: dt.datetime,
    meta: audit.RequestMeta, before: dict[str, Any] | None = None, *, final: bool = False,
) -> None:  # fmt: skip
    audit.record(
        session, organization_id=principal.organization_id, actor=audit.Actor.of(principal),
        action=action, resource_type="workflow", resource_id=row.id, now=now, meta=meta,
        before=before, after=None if final else audit.snapshot(row, _AUDIT_FIELDS),
    )  # fmt: skip


async def _check_plan(session: AsyncSession, principal: Principal, settings: Settings) -> None:
    org = (
        await session.execute(
            select(OrganizationRow)
            .where(OrganizationRow.id == principal.organization_id)
            .with_for_update()  # concurrent creates queue here, so the count stays exact
        )
    ).scalar_one()
    lineages = (
        await session.execute(
            select(func.count())
            .select_from(WorkflowRow)
            .where(
                WorkflowRow.organization_id == org.id,
                WorkflowRow.parent_id.is_(None),
                visible(session.get_bind().dialect.name),
            )
        )
    ).scalar_one()
    plans.check(org.plan, settings.plan_limits(org.plan), "workflows", int(lineages))


async def create(
    session: AsyncSession,
    principal: Principal,
    *,
    values: dict[str, Any],
    settings: Settings,
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> WorkflowRow:
    """Create version 1 of a workflow from a definition (canonical or canvas form)."""
    principal.require_access("workflows", write=True)
    values = _clean(dict(values))
    defn, found = await check_definition(session, principal, values.pop("definition"), settings)
    kebab = values.pop("kebab_name", None) or slugify(values["name"], max_length=100)
    if not KEBAB.match(kebab) or len(kebab) > 100:
        raise ValidationFailed.field(
            ("body", "kebab_name"), "lower-case words joined by '-', at most 100 characters"
        )
    await _check_project(session, principal, values.get("project_id"))
    status = lifecycle.workflow_transition(
        WorkflowStatus.DRAFT, values.pop("status", None) or WorkflowStatus.DRAFT
    )
    await _check_plan(session, principal, settings)
    taken = await session.execute(
        select(WorkflowRow.id)
        .where(
            WorkflowRow.organization_id == principal.organization_id,
            WorkflowRow.kebab_name == kebab,
        )
        .execution_options(include_deleted=True)
        .limit(1)
    )
    if taken.first() is not None:
        raise Conflict(
            f"a workflow named {kebab!r} already exists in this organization "
            "(perhaps deleted: restore it, or choose another kebab_name)"
        )
    row = WorkflowRow(
        organization_id=principal.organization_id,
        created_by_id=principal.user_id,
        kebab_name=kebab,
        status=status,
        version=1,
        definition=definitions.canonical_document(defn),
        created_at=now,
        updated_at=now,
        **(DEFAULTS | values),
    )
    session.add(row)
    await session.flush()
    session.add_all(_step_rows(row, defn, found))
    if row.trigger_config:
        await trigger_schedules.sync(session, row, now)
    _audit(session, principal, "workflow.create", row, now, meta)
    return row


async def create_managed(
    session: AsyncSession,
    *,
    organization_id: uuid.UUID,
    created_by_id: uuid.UUID | None,
    name: str,
    kebab_name: str,
    description: str,
    document: Mapping[str, Any],
    agents_by_ref: dict[str, AgentRow],
    now: dt.datetime,
) -> WorkflowRow:
    """An active workflow the platform owns (``MANAGED_TAG``), made from a definition it wrote
    and the agents it names: no principal, no plan limit, no audit entry (the owning change
    writes its own). The caller resolved ``agents_by_ref`` in ``organization_id``."""
    defn = definitions.validate_definition(document, resolve_agent=agents_by_ref.__contains__)
    row = WorkflowRow(
        organization_id=organization_id,
        created_by_id=created_by_id,
        name=name[:255],
        kebab_name=kebab_name,
        description=description,
        status=WorkflowStatus.ACTIVE,
        version=1,
        definition=definitions.canonical_document(defn),
        tags=[MANAGED_TAG],
        created_at=now,
        updated_at=now,
        **DEFAULTS,
    )
    session.add(row)
    await session.flush()
    session.add_all(_step_rows(row, defn, Resolved(agents_by_ref)))
    await session.flush()
    return row


async def get(
    session: AsyncSession, principal: Principal, workflow_id: uuid.UUID, *, for_write: bool = False
) -> WorkflowRow:
    """A workflow version of this organization; public ones of others are readable only."""
    principal.require_access("workflows", write=for_write)
    row = await session.get(WorkflowRow, workflow_id)
    if row is None or row.deleted_at is not None:
        raise NotFound("workflow", workflow_id)
    if row.organization_id != principal.organization_id and (for_write or not row.is_public):
        raise NotFound("workflow", workflow_id)
    if for_write and is_managed(row):
        raise Conflict(
            "this workflow runs an agent deployment and is managed by it; change the deployment "
            "or the agent instead"
        )
    return row


async def get_by_kebab(session: AsyncSession, principal: Principal, kebab: str) -> WorkflowRow:
    principal.require_access("workflows")
    stmt = select(WorkflowRow).where(
        WorkflowRow.organization_id == principal.organization_id,
        WorkflowRow.kebab_name == kebab,
        versions.is_latest(WorkflowRow),
    )
    row = (await session.execute(stmt)).scalar_one_or_none()
    if row is None:
        raise NotFound("workflow", kebab)
    return row


async def has_run(session: AsyncSession, row: WorkflowRow) -> bool:
    if row.total_executions > 0:
        return True
    return bool(
        (await session.execute(select(exists().where(ExecutionRow.workflow_id == row.id)))).scalar()
    )


async def update(
    session: AsyncSession,
    principal: Principal,
    workflow_id: uuid.UUID,
    *,
    values: dict[str, Any],
    settings: Settings,
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> WorkflowRow:
    """Edit the latest version in place, or create the next version when it has run."""
    row = await get(session, principal, workflow_id, for_write=True)
    await versions.ensure_latest(session, WorkflowRow, row, ("path", "workflow_id"))
    values = dict(values)
    if "kebab_name" in values and values.pop("kebab_name") != row.kebab_name:
        raise ValidationFailed.field(
            ("body", "kebab_name"), "kebab_name cannot change", "immutable"
        )
    status = values.pop("status", None)
    if row.status == WorkflowStatus.ARCHIVED and values:
        raise Conflict("an archived workflow is read-only; set its status to draft first")
    values = _clean(values)
    defn = found = None
    if "definition" in values:
        defn, found = await check_definition(session, principal, values["definition"], settings)
        values["definition"] = definitions.canonical_document(defn)
    if "project_id" in values:
        await _check_project(session, principal, values["project_id"])
    changed = {k for k, v in values.items() if getattr(row, k) != v}
    target = row
    before = audit.snapshot(row, _AUDIT_FIELDS)
    if changed & VERSIONED_FIELDS and await has_run(session, row):
        target = WorkflowRow(
            **{name: getattr(row, name) for name in (*VERSIONED_FIELDS, *IN_PLACE_FIELDS)},
            organization_id=row.organization_id,
            kebab_name=row.kebab_name,
            status=row.status,
            version=row.version + 1,
            parent_id=versions.lineage_id(row),
            created_by_id=principal.user_id,
            created_at=now,
            updated_at=now,
        )
        session.add(target)
        action = "workflow.new_version"
    else:
        action = "workflow.update"
    for name, value in values.items():
        setattr(target, name, value)
    if status is not None:
        target.status = lifecycle.workflow_transition(row.status, status)
    target.updated_at = now
    await session.flush()
    if defn is not None and found is not None:
        if target is row:
            await session.execute(
                delete(WorkflowStepRow).where(WorkflowStepRow.workflow_id == row.id)
            )
        session.add_all(_step_rows(target, defn, found))
    elif target is not row:
        await _copy_steps(session, row, target)
    if "trigger_config" in changed:
        await trigger_schedules.sync(session, target, now)
    _audit(session, principal, action, target, now, meta, before)
    return target


_STEP_COPY_SKIP = frozenset({"id", "workflow_id", "created_at", "updated_at"})


async def _copy_steps(session: AsyncSession, source: WorkflowRow, target: WorkflowRow) -> None:
    """A new version whose definition did not change gets copies of the same step rows."""
    rows = (
        await session.execute(
            select(WorkflowStepRow).where(WorkflowStepRow.workflow_id == source.id)
        )
    ).scalars()
    columns = [c.key for c in WorkflowStepRow.__table__.columns if c.key not in _STEP_COPY_SKIP]
    session.add_all(
        WorkflowStepRow(
            **{name: getattr(step, name) for name in columns},
            workflow_id=target.id,
            created_at=target.updated_at,
            updated_at=target.updated_at,
        )
        for step in rows
    )


async def list_workflows(
    session: AsyncSession, principal: Principal, filters: WorkflowFilter, page: PageRequest
) -> list[WorkflowRow]:
    principal.require_access("workflows")
    dialect = session.get_bind().dialect.name
    stmt = select(WorkflowRow)
    if filters.public:
        stmt = stmt.where(WorkflowRow.is_public.is_(True))
    else:
        stmt = stmt.where(WorkflowRow.organization_id == principal.organization_id)
    if not filters.all_versions:
        stmt = stmt.where(versions.is_latest(WorkflowRow))
    stmt = stmt.where(visible(dialect))
    for column, value in (
        (WorkflowRow.status, filters.status),
        (WorkflowRow.category, filters.category),
        (WorkflowRow.created_by_id, filters.created_by),
        (WorkflowRow.project_id, filters.project_id),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if filters.tags:
        stmt = stmt.where(tags_any(dialect, WorkflowRow.tags, filters.tags))
    if filters.q:
        stmt = stmt.where(
            text_search(dialect, [WorkflowRow.name, WorkflowRow.description], filters.q)
        )
    stmt = apply_page(
        stmt,
        page,
        id_col=WorkflowRow.id,
        created_col=WorkflowRow.created_at,
        name_col=WorkflowRow.name,
    )
    return list((await session.execute(stmt)).scalars())


async def history(
    session: AsyncSession, principal: Principal, workflow_id: uuid.UUID
) -> list[WorkflowRow]:
    row = await get(session, principal, workflow_id)
    return list(
        (await session.execute(versions.history(WorkflowRow, versions.lineage_id(row)))).scalars()
    )


async def steps(
    session: AsyncSession, principal: Principal, workflow_id: uuid.UUID
) -> list[WorkflowStepRow]:
    row = await get(session, principal, workflow_id)
    stmt = (
        select(WorkflowStepRow)
        .where(WorkflowStepRow.workflow_id == row.id)
        .order_by(WorkflowStepRow.position)
    )
    return list((await session.execute(stmt)).scalars())


async def delete_lineage(
    session: AsyncSession, principal: Principal, workflow_id: uuid.UUID, *, now: dt.datetime,
    meta: audit.RequestMeta,
) -> None:  # fmt: skip
    """Soft-delete the workflow with every version (restorable)."""
    row = await get(session, principal, workflow_id, for_write=True)
    await versions.soft_delete_lineage(session, WorkflowRow, row, now)
    _audit(
        session,
        principal,
        "workflow.delete",
        row,
        now,
        meta,
        audit.snapshot(row, _AUDIT_FIELDS),
        final=True,
    )


async def restore(
    session: AsyncSession, principal: Principal, workflow_id: uuid.UUID, *, settings: Settings,
    now: dt.datetime, meta: audit.RequestMeta,
) -> WorkflowRow:  # fmt: skip
    principal.require_access("workflows", write=True)
    row: WorkflowRow = await versions.find_deleted(
        session, WorkflowRow, workflow_id, principal.organization_id, "workflow"
    )
    await _check_plan(session, principal, settings)
    await versions.restore_lineage(session, WorkflowRow, row)
    _audit(session, principal, "workflow.restore", row, now, meta)
    return row


EXPORT_FORMAT = "turbocat/workflow@1"
EXPORT_FIELDS = (
    "name", "kebab_name", "description", "category", "tags", "trigger_config", "task_queue",
    "max_concurrent_executions", "execution_timeout_seconds",
)  # fmt: skip


def export_document(row: WorkflowRow) -> dict[str, Any]:
    """A portable file: everything needed to recreate the workflow elsewhere (no ids)."""
    doc: dict[str, Any] = {"format": EXPORT_FORMAT}
    for name in EXPORT_FIELDS:
        value = getattr(row, name)
        doc[name] = value.value if hasattr(value, "value") else value
    doc["definition"] = row.definition
    return doc


def import_values(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Values for ``create``/``update`` from an exported file, checked for its format."""
    if doc.get("format") != EXPORT_FORMAT:
        raise ValidationFailed.field(("file", "format"), f"expected format {EXPORT_FORMAT!r}")
    unknown = set(doc) - {"format", "definition", *EXPORT_FIELDS}
    if unknown:
        raise ValidationFailed.field(("file", sorted(unknown)[0]), "unknown field")
    if "definition" not in doc or "name" not in doc:
        raise ValidationFailed.field(("file",), "an exported workflow needs name and definition")
    return {k: v for k, v in doc.items() if k != "format" and v is not None}
