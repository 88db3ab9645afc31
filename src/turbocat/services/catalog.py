"""Seeding the shared catalog: built-in components, built-in prompts, official templates."""

from __future__ import annotations

from dataclasses import dataclass

from turbocat.db.engine import Database, TenantContext
from turbocat.services import components, prompts, templates


@dataclass(frozen=True)
class SeedReport:
    components: int
    prompts: int
    templates: int
    """Rows inserted or refreshed (0 everywhere when the catalog was already current)."""


async def seed_catalog(db: Database) -> SeedReport:
    """Insert or refresh every shared catalog row, in one transaction in the system context.

    Idempotent: safe on every start. ``db`` should be an operator connection
    (``Database.from_settings(settings, app_role=False)``).
    """
    async with db.transaction(TenantContext(system=True)) as session:
        return SeedReport(
            components=await components.sync_builtin_components(session),
            prompts=await prompts.sync_builtin_prompts(session),
            templates=await templates.load_official_templates(session),
        )
