"""``turbocat templates``: operator verbs for the shared catalog (official templates, built-ins)."""

from __future__ import annotations

import typer
from rich.table import Table

from turbocat.cli.common import console, run, settings_or_exit
from turbocat.db.engine import Database
from turbocat.services import catalog, templates

app = typer.Typer(help="The template library and the built-in catalog.", no_args_is_help=True)


@app.command("load")
def load() -> None:
    """Insert or refresh the official templates, built-in components and built-in prompts
    (idempotent; connects as the database URL's own role)."""

    async def go() -> catalog.SeedReport:
        db = Database.from_settings(settings_or_exit(), app_role=False)
        try:
            return await catalog.seed_catalog(db)
        finally:
            await db.dispose()

    report = run(go)
    console.print(
        f"official templates: {report.templates} changed; built-in components: "
        f"{report.components} changed; built-in prompts: {report.prompts} changed"
    )


@app.command("official")
def official() -> None:
    """List the official templates shipped with this version (no database needed)."""
    table = Table("name", "type", "category", "difficulty", "requires")
    for spec in templates.read_official_templates():
        table.add_row(
            spec.name,
            spec.type.value,
            spec.category.value,
            spec.difficulty.value,
            ", ".join(p.value for p in spec.required_integrations),
        )
    console.print(table)
