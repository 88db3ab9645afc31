"""``turbocat serve``: the API server (and, as the engine grows, the embedded worker)."""

from __future__ import annotations

import asyncio

import typer
import uvicorn
from sqlalchemy.engine import make_url

from turbocat.cli.common import console, fail, settings_or_exit
from turbocat.config import Settings
from turbocat.db import migrate


def _prepare_database(settings: Settings, auto_migrate: bool) -> None:
    url = make_url(settings.resolved_database_url)
    embedded = url.get_backend_name() == "sqlite"
    current = migrate.current(settings)
    heads = migrate.heads()
    if current in heads:
        return
    if embedded or auto_migrate:
        console.print(
            f"[dim]migrating the database ({current or 'empty'} -> {', '.join(heads)})...[/dim]"
        )
        migrate.upgrade(settings, "head")
        return
    raise fail(
        f"the database is at {current or 'an empty schema'}, not {', '.join(heads)}: "
        "run 'turbocat db upgrade' first (or 'turbocat serve --migrate')"
    )


def _seed_embedded_catalog(settings: Settings) -> None:
    """On embedded SQLite, load official templates and built-ins on every start (idempotent);
    on PostgreSQL an operator runs ``turbocat templates load``."""
    if make_url(settings.resolved_database_url).get_backend_name() != "sqlite":
        return
    from turbocat.db.engine import Database
    from turbocat.services.catalog import seed_catalog

    async def go() -> None:
        db = Database.from_settings(settings, app_role=False)
        try:
            await seed_catalog(db)
        finally:
            await db.dispose()

    asyncio.run(go())


def serve(
    host: str = typer.Option(None, help="Interface to listen on [default: 127.0.0.1]"),
    port: int = typer.Option(None, help="Port to listen on [default: 8420]"),
    migrate_db: bool = typer.Option(
        False, "--migrate", help="Apply pending migrations on PostgreSQL (SQLite always does)"
    ),
) -> None:
    """Run the turbocat server. Without TURBOCAT_DATABASE_URL it uses an embedded SQLite
    database in TURBOCAT_HOME (default ~/.turbocat), created on first start."""
    settings = settings_or_exit()
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    if overrides:
        settings = settings.model_copy(update={"api": settings.api.model_copy(update=overrides)})
    settings.home.mkdir(parents=True, exist_ok=True)
    try:
        _prepare_database(settings, migrate_db)
        _seed_embedded_catalog(settings)
    except typer.Exit:
        raise
    except Exception as exc:
        raise fail(f"cannot open the database: {exc}") from exc

    from turbocat.api.app import create_app
    from turbocat.logging import configure

    configure(settings.log_level, settings.log_json)
    base = settings.api.public_url or f"http://{settings.api.host}:{settings.api.port}"
    db_label = make_url(settings.resolved_database_url).render_as_string(hide_password=True)
    console.print(f"[bold green]turbocat[/bold green] serving at [bold]{base}[/bold]")
    console.print(f"  database   {db_label}")
    console.print(f"  API docs   {base}/docs")
    console.print("  next steps:")
    console.print(
        f"    curl -s -X POST {base}/api/v1/auth/signup -H 'content-type: application/json' \\\n"
        '      -d \'{"email": "you@example.com", "password": "a long password", '
        '"organization_name": "Acme"}\''
    )
    console.print(
        "    then create an API key: POST /api/v1/api-keys with the access_token as Bearer"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.api.host,
        port=settings.api.port,
        log_level=settings.log_level,
        proxy_headers=False,
        server_header=False,
    )
