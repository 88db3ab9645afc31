"""Moving an organization's authored items between installations: ``turbocat export`` writes
one JSON archive (format ``turbocat/export@1``), ``turbocat import`` creates its items in an
organization of another (or the same) installation.

What travels: projects, agent prompts (every version), agents (latest versions), integrations
(name, provider, settings: never credentials), workflows (latest versions: definition,
trigger_config, limits, project), the organization's own templates, and schedules. What does
not: executions and logs, members and API keys, webhooks (their tokens are secrets),
deployments (keys and encrypted variables), usage and audit rows.

References are remapped, not trusted: items keep their source ids in the archive and the
importer rewrites every string equal to a source id of an imported item (an agent step's
``agent``, an llm agent's ``prompt_id``/``integration_id``/tool ``ref``, ``agent_prompt_id``)
to the new id. Workflow ids are exported as kebab names, which every workflow reference also
accepts. A reference to an older agent version points to the latest one exported.

Importing twice duplicates nothing: an item whose name (a workflow's kebab name, a prompt's
name and version, an agent's name and type, ...) exists in the target is kept as it is and
references point to it. Integrations are created ``disabled`` without credentials: an admin
adds them (``PATCH /api/v1/integrations/{id}``) before use.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

import turbocat
from turbocat.config import Settings
from turbocat.db import tenancy
from turbocat.db.engine import TenantContext
from turbocat.db.models import (
    AgentPromptRow,
    AgentRow,
    IntegrationRow,
    MembershipRow,
    OrganizationRow,
    ProjectRow,
    ScheduleRow,
    TemplateRow,
    UserRow,
    WorkflowRow,
)
from turbocat.domain import semver
from turbocat.domain.access import Principal
from turbocat.domain.enums import (
    AgentStatus,
    AgentType,
    IntegrationProvider,
    IntegrationStatus,
    MemberRole,
    MisfirePolicy,
    TemplateDifficulty,
    TemplateType,
    WorkflowCategory,
    WorkflowStatus,
)
from turbocat.domain.errors import NotFound, ValidationFailed
from turbocat.engine.plan import PlanCache
from turbocat.services import agents, audit, projects, prompts, schedules, templates, versions
from turbocat.services import workflows as workflow_service

FORMAT = "turbocat/export@1"
SECTIONS = (
    "projects", "agent_prompts", "integrations", "agents", "workflows", "templates", "schedules",
)  # fmt: skip
META = audit.RequestMeta(user_agent="turbocat-cli import")

PROMPT_FIELDS = (
    "name", "version", "display_name", "description", "prompt_variables", "role",
    "model_provider", "model_name", "parameters", "recommended_models", "tags", "capabilities",
    "visibility", "prompt_content",
)  # fmt: skip
AGENT_FIELDS = (
    "name", "type", "status", "description", "config", "parameters", "capabilities",
    "agent_prompt_id", "max_execution_time", "max_memory_mb", "max_concurrent_executions",
    "tags", "is_public", "is_template",
)  # fmt: skip
WORKFLOW_FIELDS = (
    "name", "kebab_name", "status", "description", "category", "trigger_config", "tags",
    "is_public", "task_queue", "max_concurrent_executions", "execution_timeout_seconds",
    "definition",
)  # fmt: skip
TEMPLATE_FIELDS = (
    "name", "type", "description", "category", "template_data", "tags", "is_public",
    "difficulty", "estimated_time_savings", "required_integrations", "optional_integrations",
    "configuration_schema",
)  # fmt: skip
SCHEDULE_FIELDS = (
    "name", "cron_expression", "timezone", "input", "enabled", "start_immediately", "max_runs",
    "misfire_policy",
)  # fmt: skip


def _plain(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    return value.value if hasattr(value, "value") else value


def _fields(row: Any, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: _plain(getattr(row, name)) for name in names}


def rewrite(value: Any, mapping: Mapping[str, str]) -> Any:
    """``value`` with every string equal to a key of ``mapping`` replaced (deeply)."""
    if isinstance(value, str):
        return mapping.get(value, value)
    if isinstance(value, list):
        return [rewrite(item, mapping) for item in value]
    if isinstance(value, dict):
        return {key: rewrite(item, mapping) for key, item in value.items()}
    return value


async def _organization(session: AsyncSession, ref: str) -> OrganizationRow:
    stmt = select(OrganizationRow).where(
        (OrganizationRow.slug == ref) | (OrganizationRow.name == ref)
    )
    org = (await session.execute(stmt)).scalars().first()
    if org is None:
        raise NotFound("organization", ref)
    await tenancy.enter(session, TenantContext(organization_id=org.id))
    return org


async def _rows(session: AsyncSession, stmt: Any) -> list[Any]:
    return list((await session.execute(stmt)).scalars())


async def export_organization(
    session: AsyncSession, org_ref: str, now: dt.datetime
) -> dict[str, Any]:
    """The archive of one organization (see the module's docstring)."""
    org = await _organization(session, org_ref)
    oid = org.id
    project_rows = await _rows(
        session,
        select(ProjectRow).where(ProjectRow.organization_id == oid).order_by(ProjectRow.name),
    )
    project_names = {row.id: row.name for row in project_rows}
    prompt_rows = await _rows(
        session, select(AgentPromptRow).where(AgentPromptRow.organization_id == oid)
    )
    prompt_rows.sort(key=lambda r: (r.name, semver.sort_key(r.version)))
    integration_rows = await _rows(
        session,
        select(IntegrationRow)
        .where(IntegrationRow.organization_id == oid)
        .order_by(IntegrationRow.name),
    )
    all_agents = await _rows(session, select(AgentRow).where(AgentRow.organization_id == oid))
    latest_agents = await _rows(
        session,
        select(AgentRow)
        .where(AgentRow.organization_id == oid, versions.is_latest(AgentRow))
        .order_by(AgentRow.name),
    )
    latest_of = {versions.lineage_id(row): str(row.id) for row in latest_agents}
    # Older versions' ids point to the latest exported; workflow ids become kebab names.
    aliases = {
        str(row.id): latest_of[versions.lineage_id(row)]
        for row in all_agents
        if versions.lineage_id(row) in latest_of
    }
    all_workflows = await _rows(
        session,
        select(WorkflowRow)
        .where(WorkflowRow.organization_id == oid)
        .execution_options(include_deleted=True),
    )
    aliases |= {str(row.id): row.kebab_name for row in all_workflows}
    workflow_rows = await _rows(
        session,
        select(WorkflowRow)
        .where(
            WorkflowRow.organization_id == oid,
            versions.is_latest(WorkflowRow),
            # agent deployments' hidden workflows: deployments are not exported
            workflow_service.visible(session.get_bind().dialect.name),
        )
        .order_by(WorkflowRow.kebab_name),
    )
    kebab_of = {row.id: row.kebab_name for row in all_workflows}
    template_rows = await _rows(
        session,
        select(TemplateRow).where(TemplateRow.organization_id == oid).order_by(TemplateRow.name),
    )
    schedule_rows = await _rows(
        session, select(ScheduleRow).where(ScheduleRow.organization_id == oid)
    )
    return {
        "format": FORMAT,
        "exported_at": now.isoformat(),
        "turbocat_version": turbocat.__version__,
        "organization": {"name": org.name, "slug": org.slug},
        "projects": [
            {"name": r.name, "description": r.description, "task_queue": r.task_queue}
            for r in project_rows
        ],
        "agent_prompts": [{"id": str(r.id), **_fields(r, PROMPT_FIELDS)} for r in prompt_rows],
        "integrations": [
            {"id": str(r.id), "name": r.name, "provider": r.provider.value, "settings": r.settings}
            for r in integration_rows
        ],
        "agents": [
            {"id": str(r.id), **rewrite(_fields(r, AGENT_FIELDS), aliases)} for r in latest_agents
        ],
        "workflows": [
            {
                **rewrite(_fields(r, WORKFLOW_FIELDS), aliases),
                "project": project_names.get(r.project_id) if r.project_id else None,
            }
            for r in workflow_rows
        ],
        "templates": [rewrite(_fields(r, TEMPLATE_FIELDS), aliases) for r in template_rows],
        "schedules": [
            {"workflow": kebab_of.get(r.workflow_id), **_fields(r, SCHEDULE_FIELDS)}
            for r in schedule_rows
            if r.workflow_id in kebab_of
        ],
    }


@dataclass
class ImportReport:
    created: dict[str, int] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)
    """Items already in the organization under the same name: not created again."""
    notes: list[str] = field(default_factory=list)

    def count(self, section: str, created: bool) -> None:
        target = self.created if created else self.kept
        target[section] = target.get(section, 0) + 1


async def _principal(session: AsyncSession, org: OrganizationRow, email: str | None) -> Principal:
    stmt = (
        select(MembershipRow, UserRow)
        .join(UserRow, UserRow.id == MembershipRow.user_id)
        .where(MembershipRow.organization_id == org.id)
    )
    if email is not None:
        stmt = stmt.where(UserRow.email == email.strip().lower())
    else:
        stmt = stmt.where(MembershipRow.role == MemberRole.OWNER)
    found = (await session.execute(stmt.order_by(MembershipRow.created_at).limit(1))).first()
    if found is None:
        raise NotFound(f"member {email} of" if email else "an owner of", org.slug)
    membership, _user = found
    return Principal(user_id=membership.user_id, organization_id=org.id, role=membership.role)


def _check_format(archive: Mapping[str, Any]) -> None:
    if archive.get("format") != FORMAT:
        raise ValidationFailed.field(
            ("archive", "format"), f"expected format {FORMAT!r}, got {archive.get('format')!r}"
        )
    for section in SECTIONS:
        if not isinstance(archive.get(section, []), list):
            raise ValidationFailed.field(("archive", section), "must be a list")


async def import_organization(
    session: AsyncSession,
    archive: Mapping[str, Any],
    org_ref: str,
    *,
    as_user: str | None,
    settings: Settings,
    plans: PlanCache,
    now: dt.datetime,
) -> ImportReport:
    """Create the archive's items in ``org_ref`` (one transaction: all or nothing)."""
    _check_format(archive)
    org = await _organization(session, org_ref)
    principal = await _principal(session, org, as_user)
    report = ImportReport()
    ids: dict[str, str] = {}
    project_ids = await _import_projects(session, principal, archive, report, now)
    await _import_prompts(session, principal, archive, report, ids, now)
    await _import_integrations(session, principal, archive, report, ids, now)
    await _import_agents(session, principal, archive, report, ids, now)
    workflow_ids = await _import_workflows(
        session, principal, archive, report, ids, project_ids, settings, now
    )
    await _import_templates(session, principal, archive, report, ids, settings, now)
    await _import_schedules(session, principal, archive, report, workflow_ids, plans, now)
    return report


def _section(archive: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    return [dict(item) for item in archive.get(name, [])]


async def _import_projects(
    session: AsyncSession, principal: Principal, archive: Mapping[str, Any],
    report: ImportReport, now: dt.datetime,
) -> dict[str, uuid.UUID]:  # fmt: skip
    oid = principal.organization_id
    existing = {
        row.name: row.id
        for row in await _rows(session, select(ProjectRow).where(ProjectRow.organization_id == oid))
    }
    for item in _section(archive, "projects"):
        if item["name"] in existing:
            report.count("projects", False)
            continue
        row = await projects.create(
            session, principal, name=item["name"], description=item.get("description"),
            task_queue=item.get("task_queue"), now=now, meta=META,
        )  # fmt: skip
        existing[row.name] = row.id
        report.count("projects", True)
    return existing


async def _import_prompts(
    session: AsyncSession, principal: Principal, archive: Mapping[str, Any],
    report: ImportReport, ids: dict[str, str], now: dt.datetime,
) -> None:  # fmt: skip
    oid = principal.organization_id
    rows = await _rows(session, select(AgentPromptRow).where(AgentPromptRow.organization_id == oid))
    existing = {(row.name, row.version): row.id for row in rows}
    items = _section(archive, "agent_prompts")
    items.sort(key=lambda item: (item["name"], semver.sort_key(item["version"])))
    for item in items:
        source_id = item.pop("id")
        key = (item["name"], item["version"])
        if key in existing:
            ids[source_id] = str(existing[key])
            report.count("agent_prompts", False)
            continue
        row = await prompts.create(
            session, principal, values={k: v for k, v in item.items() if v is not None},
            now=now, meta=META,
        )  # fmt: skip
        existing[key] = row.id
        ids[source_id] = str(row.id)
        report.count("agent_prompts", True)


async def _import_integrations(
    session: AsyncSession, principal: Principal, archive: Mapping[str, Any],
    report: ImportReport, ids: dict[str, str], now: dt.datetime,
) -> None:  # fmt: skip
    oid = principal.organization_id
    rows = await _rows(session, select(IntegrationRow).where(IntegrationRow.organization_id == oid))
    existing = {row.name: row.id for row in rows}
    for item in _section(archive, "integrations"):
        if item["name"] in existing:
            ids[item["id"]] = str(existing[item["name"]])
            report.count("integrations", False)
            continue
        row = IntegrationRow(
            organization_id=oid, created_by_id=principal.user_id, name=item["name"],
            provider=IntegrationProvider(item["provider"]), settings=item.get("settings") or {},
            status=IntegrationStatus.DISABLED, created_at=now, updated_at=now,
        )  # fmt: skip
        session.add(row)
        await session.flush()
        audit.record(
            session, organization_id=oid, actor=audit.Actor.of(principal),
            action="integration.import", resource_type="integration", resource_id=row.id,
            now=now, meta=META, after={"name": row.name, "provider": row.provider.value},
        )  # fmt: skip
        ids[item["id"]] = str(row.id)
        report.count("integrations", True)
        report.notes.append(
            f"integration {row.name!r} was created disabled, without credentials: add them"
        )


async def _import_agents(
    session: AsyncSession, principal: Principal, archive: Mapping[str, Any],
    report: ImportReport, ids: dict[str, str], now: dt.datetime,
) -> None:  # fmt: skip
    oid = principal.organization_id
    rows = await _rows(
        session,
        select(AgentRow).where(AgentRow.organization_id == oid, versions.is_latest(AgentRow)),
    )
    existing = {(row.name, row.type.value): row.id for row in rows}
    for item in _section(archive, "agents"):
        source_id = item.pop("id")
        key = (item["name"], item["type"])
        if key in existing:
            ids[source_id] = str(existing[key])
            report.count("agents", False)
            continue
        values = rewrite({k: v for k, v in item.items() if v is not None}, ids)
        agent_type = AgentType(values.pop("type"))
        values["status"] = AgentStatus(values.get("status", AgentStatus.DRAFT))
        if values.get("agent_prompt_id"):
            values["agent_prompt_id"] = uuid.UUID(values["agent_prompt_id"])
        row = await agents.create(
            session, principal, agent_type=agent_type, values=values, now=now, meta=META
        )
        existing[key] = row.id
        ids[source_id] = str(row.id)
        report.count("agents", True)


async def _import_workflows(
    session: AsyncSession, principal: Principal, archive: Mapping[str, Any],
    report: ImportReport, ids: dict[str, str], project_ids: dict[str, uuid.UUID],
    settings: Settings, now: dt.datetime,
) -> dict[str, uuid.UUID]:  # fmt: skip
    oid = principal.organization_id
    rows = await _rows(
        session,
        select(WorkflowRow)
        .where(WorkflowRow.organization_id == oid, versions.is_latest(WorkflowRow))
        .execution_options(include_deleted=True),
    )
    existing = {row.kebab_name: row.id for row in rows}
    for item in _section(archive, "workflows"):
        if item["kebab_name"] in existing:
            report.count("workflows", False)
            continue
        project = item.pop("project", None)
        values = rewrite({k: v for k, v in item.items() if v is not None}, ids)
        values["category"] = WorkflowCategory(values.get("category", WorkflowCategory.CUSTOM))
        values["status"] = WorkflowStatus(values.get("status", WorkflowStatus.DRAFT))
        if project is not None and project in project_ids:
            values["project_id"] = project_ids[project]
        row = await workflow_service.create(
            session, principal, values=values, settings=settings, now=now, meta=META
        )
        existing[row.kebab_name] = row.id
        report.count("workflows", True)
    return existing


async def _import_templates(
    session: AsyncSession, principal: Principal, archive: Mapping[str, Any],
    report: ImportReport, ids: dict[str, str], settings: Settings, now: dt.datetime,
) -> None:  # fmt: skip
    oid = principal.organization_id
    rows = await _rows(session, select(TemplateRow).where(TemplateRow.organization_id == oid))
    existing = {(row.name, row.type.value) for row in rows}
    for item in _section(archive, "templates"):
        if (item["name"], item["type"]) in existing:
            report.count("templates", False)
            continue
        values = rewrite({k: v for k, v in item.items() if v is not None}, ids)
        values["type"] = TemplateType(values["type"])
        if "difficulty" in values:
            values["difficulty"] = TemplateDifficulty(values["difficulty"])
        await templates.create(
            session, principal, values=values, settings=settings, now=now, meta=META
        )
        existing.add((item["name"], item["type"]))
        report.count("templates", True)


async def _import_schedules(
    session: AsyncSession, principal: Principal, archive: Mapping[str, Any],
    report: ImportReport, workflow_ids: dict[str, uuid.UUID], plans: PlanCache,
    now: dt.datetime,
) -> None:  # fmt: skip
    oid = principal.organization_id
    rows = await _rows(session, select(ScheduleRow).where(ScheduleRow.organization_id == oid))
    kebabs = {v: k for k, v in workflow_ids.items()}
    existing = {(kebabs.get(r.workflow_id), r.name, r.cron_expression) for r in rows}
    for item in _section(archive, "schedules"):
        key = (item["workflow"], item.get("name"), item["cron_expression"])
        workflow_id = workflow_ids.get(item["workflow"])
        if workflow_id is None:
            report.notes.append(f"schedule {key[1]!r}: workflow {item['workflow']!r} is missing")
            continue
        # A schedule of an existing workflow is matched by workflow, name and cron expression.
        if key in existing:
            report.count("schedules", False)
            continue
        values = schedules.ScheduleValues(
            workflow_id=workflow_id, cron_expression=item["cron_expression"],
            timezone=item.get("timezone") or "UTC", name=item.get("name"),
            input=item.get("input") or {}, enabled=bool(item.get("enabled", True)),
            start_immediately=False, max_runs=item.get("max_runs"),
            misfire_policy=MisfirePolicy(item.get("misfire_policy") or MisfirePolicy.SKIP),
        )  # fmt: skip
        await schedules.create(session, principal, values, plans=plans, now=now, meta=META)
        existing.add(key)
        report.count("schedules", True)
