"""Agent prompts (seed 003), which also represent seed 002's agent templates.

Seed 002's ``agent_templates`` (name, role, model, system_prompt, parameters, is_system) are
``agent_prompts`` rows: ``role``, ``model_provider``/``model_name``, ``prompt_content`` (the system
prompt) and ``parameters``; ``is_system`` templates are the built-in rows without an organization
(``domain.prompts.BUILTIN_PROMPTS``, stored by ``sync_builtin_prompts``).

A prompt is a lineage of versions sharing a ``name`` in one organization, each with a semantic
``version``; a new version must be higher than every existing one. Content never changes in place
(make a new version); metadata (description, tags, visibility, deprecation) does. Prompt text is
rendered with the workflow expression language, root ``vars`` only (see ``domain.prompts``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db.listing import PageRequest, apply_page, tags_any, text_search
from turbocat.db.models import AgentPromptRow
from turbocat.domain import prompts as rules
from turbocat.domain import semver
from turbocat.domain.access import Principal
from turbocat.domain.components import NAME_PATTERN
from turbocat.domain.enums import Visibility
from turbocat.domain.errors import Conflict, ValidationFailed
from turbocat.services import audit
from turbocat.services.components import can_see, clean_tags, fetch_shared, visible_to

_FIELDS = (
    "name", "display_name", "description", "version", "role", "prompt_content",
    "prompt_variables", "model_provider", "model_name", "parameters", "recommended_models",
    "capabilities", "tags", "visibility", "deprecated",
)  # fmt: skip
CONTENT = frozenset(
    {"prompt_content", "prompt_variables", "role", "model_provider", "model_name", "parameters",
     "recommended_models", "display_name", "description", "tags", "capabilities", "visibility"}
)  # fmt: skip
"""Fields a new version may change (everything but the name)."""
EDITABLE = frozenset({"display_name", "description", "tags", "capabilities", "visibility",
                      "deprecated", "recommended_models"})  # fmt: skip
"""Metadata changed in place."""


@dataclass(frozen=True)
class PromptFilter:
    name: str | None = None
    role: str | None = None
    visibility: Visibility | None = None
    tags: list[str] = field(default_factory=list)
    q: str | None = None
    builtin: bool | None = None
    include_deprecated: bool = True


def _check(values: dict[str, Any]) -> dict[str, Any]:
    if "name" in values:
        name = str(values["name"]).strip()
        if not NAME_PATTERN.match(name):
            raise ValidationFailed.field(
                ("body", "name"),
                "a letter, then letters, digits, '_', '.' or '-' (at most 100 characters)",
            )
        values["name"] = name
    if "version" in values:
        semver.check(values["version"], ("body", "version"))
    if "prompt_variables" in values:
        values["prompt_variables"] = rules.check_variables(
            values["prompt_variables"] or {}, ("body", "prompt_variables")
        )
    for key in ("tags", "capabilities"):
        if key in values:
            values[key] = clean_tags(values[key] or [])
    return values


def _audit(
    session: AsyncSession, principal: Principal, action: str, row: AgentPromptRow,
    now: dt.datetime, meta: audit.RequestMeta, before: dict[str, Any] | None = None,
    *, final: bool = False,
) -> None:  # fmt: skip
    audit.record(
        session, organization_id=principal.organization_id, actor=audit.Actor.of(principal),
        action=action, resource_type="agent_prompt", resource_id=row.id, now=now, meta=meta,
        before=before, after=None if final else audit.snapshot(row, _FIELDS),
    )  # fmt: skip


async def _versions_of(
    session: AsyncSession, organization_id: uuid.UUID | None, name: str
) -> list[AgentPromptRow]:
    owner = (
        AgentPromptRow.organization_id.is_(None)
        if organization_id is None
        else AgentPromptRow.organization_id == organization_id
    )
    stmt = select(AgentPromptRow).where(owner, AgentPromptRow.name == name)
    rows = list((await session.execute(stmt)).scalars())
    return sorted(rows, key=lambda r: semver.sort_key(r.version), reverse=True)


async def _insert(
    session: AsyncSession, principal: Principal, values: dict[str, Any], now: dt.datetime
) -> AgentPromptRow:
    rules.check_prompt(values["prompt_content"], values.get("prompt_variables") or {})
    existing = await _versions_of(session, principal.organization_id, values["name"])
    if any(r.version == values["version"] for r in existing):
        raise Conflict(
            f"prompt {values['name']!r} version {values['version']} already exists "
            "in this organization"
        )
    if existing and semver.sort_key(values["version"]) <= semver.sort_key(existing[0].version):
        raise ValidationFailed.field(
            ("body", "version"),
            f"a new version must be higher than the latest ({existing[0].version})",
            "not_higher",
        )
    row = AgentPromptRow(
        organization_id=principal.organization_id,
        created_by_id=principal.user_id,
        created_at=now,
        updated_at=now,
        **{k: v for k, v in values.items() if v is not None},
    )
    session.add(row)
    await session.flush()
    return row


async def create(
    session: AsyncSession,
    principal: Principal,
    *,
    values: dict[str, Any],
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> AgentPromptRow:
    principal.require_access("prompts", write=True)
    row = await _insert(session, principal, _check({"version": "1.0.0", **values}), now)
    _audit(session, principal, "agent_prompt.create", row, now, meta)
    return row


async def get(
    session: AsyncSession, principal: Principal, prompt_id: uuid.UUID, *, for_write: bool = False
) -> AgentPromptRow:
    principal.require_access("prompts", write=for_write)
    row: AgentPromptRow = await fetch_shared(
        session, principal, AgentPromptRow, prompt_id, kind="prompt", for_write=for_write,
        builtin_message="built-in prompts cannot be changed; make your own version",
    )  # fmt: skip
    return row


async def list_prompts(
    session: AsyncSession, principal: Principal, filters: PromptFilter, page: PageRequest
) -> list[AgentPromptRow]:
    """Built-in prompts, this organization's prompts and public prompts of others."""
    principal.require_access("prompts")
    dialect = session.get_bind().dialect.name
    stmt = select(AgentPromptRow).where(visible_to(AgentPromptRow, principal))
    if filters.name:
        stmt = stmt.where(AgentPromptRow.name == filters.name)
    if filters.role:
        stmt = stmt.where(AgentPromptRow.role == filters.role)
    if filters.visibility:
        stmt = stmt.where(AgentPromptRow.visibility == filters.visibility)
    if filters.builtin is not None:
        col = AgentPromptRow.organization_id
        stmt = stmt.where(col.is_(None) if filters.builtin else col.is_not(None))
    if not filters.include_deprecated:
        stmt = stmt.where(AgentPromptRow.deprecated.is_(False))
    if filters.tags:
        stmt = stmt.where(tags_any(dialect, AgentPromptRow.tags, clean_tags(filters.tags)))
    if filters.q:
        cols = [AgentPromptRow.name, AgentPromptRow.display_name, AgentPromptRow.description]
        stmt = stmt.where(text_search(dialect, cols, filters.q))
    stmt = apply_page(
        stmt, page, id_col=AgentPromptRow.id, created_col=AgentPromptRow.created_at,
        name_col=AgentPromptRow.name,
    )  # fmt: skip
    return list((await session.execute(stmt)).scalars())


async def versions(
    session: AsyncSession, principal: Principal, prompt_id: uuid.UUID
) -> list[AgentPromptRow]:
    """Every visible version of the prompt's lineage, highest version first."""
    row = await get(session, principal, prompt_id)
    rows = await _versions_of(session, row.organization_id, row.name)
    return [r for r in rows if can_see(r, principal)]


async def new_version(
    session: AsyncSession,
    principal: Principal,
    prompt_id: uuid.UUID,
    *,
    values: dict[str, Any],
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> AgentPromptRow:
    """A new version of an own prompt: unchanged fields are copied from ``prompt_id``."""
    source = await get(session, principal, prompt_id, for_write=True)
    unknown = set(values) - CONTENT - {"version"}
    if unknown:
        raise ValidationFailed.field(("body", sorted(unknown)[0]), "this field cannot be changed")
    merged = {name: getattr(source, name) for name in CONTENT} | {"name": source.name}
    merged |= {k: v for k, v in values.items() if v is not None}
    row = await _insert(session, principal, _check(merged), now)
    _audit(
        session, principal, "agent_prompt.new_version", row, now, meta,
        audit.snapshot(source, _FIELDS),
    )  # fmt: skip
    return row


async def update(
    session: AsyncSession,
    principal: Principal,
    prompt_id: uuid.UUID,
    *,
    changes: dict[str, Any],
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> AgentPromptRow:
    """Change metadata of one version in place (content changes need a new version)."""
    row = await get(session, principal, prompt_id, for_write=True)
    unknown = set(changes) - EDITABLE
    if unknown:
        raise ValidationFailed.field(
            ("body", sorted(unknown)[0]),
            "this field cannot be changed in place; create a new version",
        )
    changes = _check(dict(changes))
    before = audit.snapshot(row, _FIELDS)
    for name, value in changes.items():
        if value is not None:
            setattr(row, name, value)
    row.updated_at = now
    _audit(session, principal, "agent_prompt.update", row, now, meta, before)
    return row


async def delete(
    session: AsyncSession, principal: Principal, prompt_id: uuid.UUID, *,
    now: dt.datetime, meta: audit.RequestMeta,
) -> None:  # fmt: skip
    """Delete one version of an own prompt (agents that referenced it keep running inline)."""
    row = await get(session, principal, prompt_id, for_write=True)
    _audit(
        session, principal, "agent_prompt.delete", row, now, meta,
        audit.snapshot(row, _FIELDS), final=True,
    )  # fmt: skip
    await session.delete(row)
    await session.flush()


async def render(
    session: AsyncSession, principal: Principal, prompt_id: uuid.UUID, variables: dict[str, Any]
) -> str:
    """The prompt text with ``variables`` substituted (``{{ vars.name }}``), sandboxed."""
    row = await get(session, principal, prompt_id)
    return rules.render(row.prompt_content, row.prompt_variables or {}, variables)


async def sync_builtin_prompts(session: AsyncSession) -> int:
    """Insert or refresh the built-in prompts (by name and version); idempotent.

    On PostgreSQL the caller's transaction must be in the system context.
    """
    existing = {
        (r.name, r.version): r
        for r in (
            await session.execute(
                select(AgentPromptRow).where(AgentPromptRow.organization_id.is_(None))
            )
        ).scalars()
    }
    changed = 0
    for spec in rules.BUILTIN_PROMPTS:
        values: dict[str, Any] = {
            "display_name": spec.display_name,
            "description": spec.description,
            "role": spec.role,
            "prompt_content": spec.prompt_content,
            "prompt_variables": dict(spec.prompt_variables),
            "model_provider": spec.model_provider,
            "model_name": spec.model_name,
            "parameters": dict(spec.parameters),
            "recommended_models": list(spec.recommended_models),
            "tags": sorted(spec.tags),
            "capabilities": sorted(spec.capabilities),
            "visibility": Visibility.PUBLIC,
        }
        row = existing.get((spec.name, spec.version))
        if row is None:
            session.add(AgentPromptRow(name=spec.name, version=spec.version, **values))
            changed += 1
        elif any(getattr(row, k) != v for k, v in values.items()):
            for k, v in values.items():
                setattr(row, k, v)
            changed += 1
    await session.flush()
    return changed
