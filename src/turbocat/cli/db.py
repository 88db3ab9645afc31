"""``turbocat db``: migrations."""

from __future__ import annotations

import typer

from turbocat.cli.common import console, fail, settings_or_exit
from turbocat.db import migrate

app = typer.Typer(
    help="Database migrations (the same on SQLite and PostgreSQL).", no_args_is_help=True
)


@app.command()
def upgrade(revision: str = typer.Argument("head", help="Target revision")) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    settings = settings_or_exit()
    try:
        migrate.upgrade(settings, revision)
    except Exception as exc:
        raise fail(f"upgrade failed: {exc}") from exc
    console.print(f"database at [bold]{migrate.current(settings)}[/bold]")


@app.command()
def downgrade(revision: str = typer.Argument(..., help="Target revision, e.g. -1 or base")) -> None:
    """Revert migrations down to REVISION."""
    settings = settings_or_exit()
    try:
        migrate.downgrade(settings, revision)
    except Exception as exc:
        raise fail(f"downgrade failed: {exc}") from exc
    console.print(f"database at [bold]{migrate.current(settings) or 'base (empty)'}[/bold]")


@app.command()
def current() -> None:
    """Print the database's revision and whether it is up to date."""
    settings = settings_or_exit()
    try:
        revision = migrate.current(settings)
    except Exception as exc:
        raise fail(f"cannot read the database: {exc}") from exc
    heads = migrate.heads()
    state = "up to date" if revision in heads else f"behind (newest is {', '.join(heads)})"
    console.print(f"{revision or 'base (empty)'}  {state}")
