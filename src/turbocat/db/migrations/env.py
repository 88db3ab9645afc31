"""Alembic environment: runs migrations over turbocat's async engine (never the app role).

Configured by ``turbocat.db.migrate``, which puts the ``Settings`` into
``config.attributes["settings"]``; there is no alembic.ini.
"""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

import turbocat.db.models  # noqa: F401  (registers every table on Base.metadata)
from turbocat.config import Settings
from turbocat.db.base import Base
from turbocat.db.engine import create_engine
from turbocat.db.migrate import include_object_for

config = context.config
target_metadata = Base.metadata


def _settings() -> Settings:
    settings = config.attributes.get("settings")
    if not isinstance(settings, Settings):
        raise RuntimeError("run migrations through turbocat.db.migrate (no settings were given)")
    return settings


def _configure(connection: Connection) -> None:
    opts: dict[str, Any] = {}
    if connection.dialect.name == "sqlite":
        # turbocat's SQLite connections emit BEGIN themselves (dialects.sqlite), so DDL is
        # transactional there too: a failed upgrade leaves nothing half-done.
        opts.update(render_as_batch=True, transactional_ddl=True)
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        compare_server_default=False,
        include_object=include_object_for(connection.dialect.name),
        **opts,
    )


def _raw_sqlite(connection: Connection, statement: str) -> list[Any]:
    # Outside SQLAlchemy's transaction on purpose: PRAGMA foreign_keys is ignored inside one.
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(statement)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _run(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch migrations copy and drop tables; with foreign keys on, dropping a parent
        # table would cascade its deletes into the children.
        _raw_sqlite(connection, "PRAGMA foreign_keys=OFF")
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()
    if connection.in_transaction():
        connection.commit()
    if sqlite:
        problems = _raw_sqlite(connection, "PRAGMA foreign_key_check")
        _raw_sqlite(connection, "PRAGMA foreign_keys=ON")
        if problems:
            raise RuntimeError(f"foreign key violations after migrating: {problems[:5]}")


async def _run_async() -> None:
    engine = create_engine(_settings(), app_role=False)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline (--sql) migrations are not supported; run against a database")

asyncio.run(_run_async())
