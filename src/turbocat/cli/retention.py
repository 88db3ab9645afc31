"""``turbocat retention``: run the retention policies now, and set an organization's periods.

Operator verbs: they work without the server, as the database URL's own role.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import typer
from rich.markup import escape
from rich.table import Table

from turbocat.bootstrap import AppContext
from turbocat.cli.common import console, fail, run, settings_or_exit
from turbocat.db import jobs
from turbocat.domain.errors import ValidationFailed
from turbocat.domain.retention import Kind, parse_days
from turbocat.services import retention

app = typer.Typer(
    help="Retention: remove old logs, executions, audit logs, usage records and soft-deleted "
    "rows (docs/retention.md).",
    no_args_is_help=True,
)

JOB = "retention"


@app.command("run")
def run_(
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would go; delete nothing"),
    org: str = typer.Option(None, "--org", help="Only this organization (slug or name)"),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON"),
    batch_size: int = typer.Option(
        None, "--batch-size", min=1, help="Rows per transaction [default: retention.batch_size]"
    ),
) -> None:
    """Apply the retention policies now: per organization (with its overrides) and per table,
    in short batches, reporting what was (or would be) removed. Only one run at a time per
    PostgreSQL database (the scheduler's daily run included)."""
    settings = settings_or_exit()
    batch = batch_size or settings.retention.batch_size

    async def go() -> retention.Report | None:
        ctx = AppContext.build(settings, app_role=False)
        try:
            async with jobs.exclusive(ctx.db, JOB) as held:
                if not held and not dry_run:
                    return None
                return await retention.run(
                    ctx.db, settings.retention.policy(), ctx.clock(), dry_run=dry_run,
                    batch_size=batch, organization=org,
                )  # fmt: skip
        finally:
            await ctx.db.dispose()

    report = run(go)
    if report is None:
        raise fail("another retention run is in progress (the scheduler's?): try again later")
    if as_json:
        typer.echo(json.dumps(report.as_json()))
        return
    _print(report)


def _print(report: retention.Report) -> None:
    verb = "would remove" if report.dry_run else "removed"
    rows = [(s.organization, t, n) for s in report.scopes for t, n in sorted(s.removed.items())]
    rows = [r for r in rows if r[2]]
    for slug, reason in report.skipped.items():
        console.print(f"[yellow]skipped[/yellow] {escape(slug)}: {escape(reason)}")
    if report.partitions_dropped:
        dropped = "would drop" if report.dry_run else "dropped"
        console.print(f"partitions {dropped}: {', '.join(report.partitions_dropped)}")
    if not rows:
        console.print(f"nothing to remove ({len(report.scopes)} scopes checked)")
        return
    table = Table("organization", "table", verb)
    for slug, name, count in rows:
        table.add_row(escape(slug), name, str(count))
    console.print(table)
    total = ", ".join(f"{n} {t}" for t, n in sorted(report.totals().items()) if n)
    console.print(f"{verb}: {total}")


@app.command("show")
def show(
    org: str = typer.Option(None, "--org", help="An organization (slug or name)"),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON"),
) -> None:
    """The retention periods in force: the global defaults, or an organization's (its
    overrides applied). Days; "forever" keeps the rows."""
    settings = settings_or_exit()
    defaults = settings.retention.policy()

    async def go() -> dict[str, Any]:
        if org is None:
            return {"organization": None, "policy": defaults.as_json(), "overrides": {}}
        ctx = AppContext.build(settings, app_role=False)
        try:
            async with ctx.db.transaction(retention.SYSTEM, readonly=True) as session:
                row = await retention.organization(session, org)
                overrides = retention.overrides_of(row)
        finally:
            await ctx.db.dispose()
        return {
            "organization": row.slug,
            "policy": defaults.with_overrides(overrides).as_json(),
            "overrides": {k.value: v for k, v in overrides.items()},
        }

    shown = run(go)
    if as_json:
        typer.echo(json.dumps(shown))
        return
    for kind, days in shown["policy"].items():
        mark = " (override)" if kind in shown["overrides"] else ""
        console.print(f"{kind:<22} {'forever' if days is None else f'{days} days'}{mark}")


@app.command("set")
def set_(
    changes: list[str] = typer.Argument(
        ..., help="KIND=DAYS, KIND=forever or KIND=default; kinds: " + ", ".join(Kind)
    ),
    org: str = typer.Option(..., "--org", help="Organization slug or name"),
) -> None:
    """Override retention periods for one organization (stored in its settings); ``default``
    goes back to the global period."""
    settings = settings_or_exit()
    parsed: dict[Kind, int | Literal["default"] | None] = {}
    for change in changes:
        name, sep, value = change.partition("=")
        try:
            kind = Kind(name.strip())
        except ValueError:
            raise fail(f"{name!r} is not a retention kind (one of {', '.join(Kind)})") from None
        if not sep:
            raise fail(f"{change!r}: give KIND=DAYS, KIND=forever or KIND=default")
        try:
            parsed[kind] = "default" if value.strip() == "default" else parse_days(value)
        except ValidationFailed as exc:
            raise fail(f"{kind.value}: {exc.detail}") from None

    async def go() -> None:
        ctx = AppContext.build(settings, app_role=False)
        try:
            async with ctx.db.transaction(retention.SYSTEM) as session:
                await retention.set_overrides(session, org, parsed, now=ctx.clock())
        finally:
            await ctx.db.dispose()

    run(go)
    console.print(f"retention of {org} updated: " + ", ".join(changes))
