"""Operator verbs for running an installation: ``turbocat doctor``, ``turbocat export`` and
``turbocat import``. They work without the server, as the database URL's own role."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from turbocat.bootstrap import AppContext
from turbocat.cli.common import console, fail, run, settings_or_exit
from turbocat.services import doctor as checks
from turbocat.services import org_archive

_MARK = {"ok": "[green]ok[/green]  ", "warn": "[yellow]warn[/yellow]", "fail": "[red]fail[/red]"}


def doctor(
    as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON"),
) -> None:
    """Check the installation: database connectivity, migrations, table sizes, slow queries
    (pg_stat_statements), stuck steps, overdue executions, workers and the scheduler. Exits 1
    when any check fails (warnings do not)."""
    settings = settings_or_exit()

    async def go() -> list[checks.Check]:
        ctx = AppContext.build(settings, app_role=False)
        try:
            return await checks.run_checks(ctx.db, settings, ctx.clock())
        finally:
            await ctx.db.dispose()

    results = run(go)
    if as_json:
        ok = all(c.status != "fail" for c in results)
        typer.echo(json.dumps({"ok": ok, "checks": [c.as_json() for c in results]}, default=str))
    else:
        for check in results:
            console.print(f"{_MARK[check.status]} {check.name:<20} {escape(check.detail)}")
    if any(c.status == "fail" for c in results):
        raise typer.Exit(1)


def export(
    org: str = typer.Option(..., "--org", help="Organization slug or name"),
    out: Path = typer.Option(..., "--out", help="Archive file to write (JSON)"),
) -> None:
    """Write an organization's projects, prompts, agents, integrations (without credentials),
    workflows (latest versions), templates and schedules to one archive."""
    settings = settings_or_exit()

    async def go() -> dict[str, Any]:
        ctx = AppContext.build(settings, app_role=False)
        try:
            async with ctx.db.transaction() as session:
                return await org_archive.export_organization(session, org, ctx.clock())
        finally:
            await ctx.db.dispose()

    archive = run(go)
    out.write_text(json.dumps(archive, indent=2, sort_keys=True, default=str) + "\n")
    counts = ", ".join(f"{len(archive[k])} {k}" for k in org_archive.SECTIONS)
    console.print(f"exported {counts} to {out}")


def import_(
    archive_file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Archive file"),
    org: str = typer.Option(..., "--org", help="Target organization slug or name"),
    as_user: str = typer.Option(
        None, "--as", help="Member the imported items are created by [default: an owner]"
    ),
) -> None:
    """Create an archive's items in an organization. Items whose name already exists there
    are kept, not duplicated; integrations arrive disabled and need their credentials."""
    settings = settings_or_exit()
    try:
        archive = json.loads(archive_file.read_text())
    except (OSError, ValueError) as exc:
        raise fail(f"cannot read {archive_file}: {exc}") from exc

    async def go() -> org_archive.ImportReport:
        ctx = AppContext.build(settings, app_role=False)
        try:
            async with ctx.db.transaction() as session:
                return await org_archive.import_organization(
                    session, archive, org, as_user=as_user, settings=settings,
                    plans=ctx.plans, now=ctx.clock(),
                )  # fmt: skip
        finally:
            await ctx.db.dispose()

    report = run(go)
    for section in org_archive.SECTIONS:
        created, kept = report.created.get(section, 0), report.kept.get(section, 0)
        console.print(f"{section:<14} {created} created, {kept} already there")
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")
