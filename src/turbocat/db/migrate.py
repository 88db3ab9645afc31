"""Schema migrations (Alembic), configured in code: no alembic.ini for users to manage.

The functions are synchronous (the CLI and test fixtures call them); Alembic's environment runs
on turbocat's async engine under the URL's own role, never the application role. Called from a
thread that already runs an event loop, they do their work on a helper thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import ForeignKeyConstraint, Index
from sqlalchemy.engine import Connection

from turbocat.config import Settings
from turbocat.db.engine import create_engine
from turbocat.db.partitions import is_partition_machinery

SCRIPT_LOCATION = Path(__file__).resolve().parent / "migrations"

T = TypeVar("T")


def alembic_config(settings: Settings | None = None) -> Config:
    """An Alembic config pointing at turbocat's migration tree, carrying ``settings``."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.set_main_option("path_separator", "os")
    if settings is not None:
        config.attributes["settings"] = settings
        config.attributes["app_role"] = settings.database.app_role
    return config


IncludeObject = Callable[[object, "str | None", str, bool, object], bool]


def include_object_for(dialect_name: str) -> IncludeObject:
    """Autogenerate filter for one database: skip indexes meant for another (``Index.ddl_if``),
    such as the PostgreSQL-only GIN indexes, which SQLite never gets; and the monthly
    partitions of PostgreSQL (migration 0006), which the models do not describe."""

    def include_object(
        obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
    ) -> bool:
        if type_ == "table" and name is not None and is_partition_machinery(name):
            return False
        if (
            type_ == "foreign_key_constraint"
            and isinstance(obj, ForeignKeyConstraint)
            and is_partition_machinery(obj.referred_table.name)
        ):
            # PostgreSQL clones a foreign key to a partitioned table once per partition.
            return False
        if type_ == "index" and name is not None and name.endswith("_fts"):
            # Expression indexes do not round-trip through reflection; a test checks them.
            return False
        if type_ == "index" and isinstance(obj, Index):
            ddl_if = obj._ddl_if
            if ddl_if is not None and ddl_if.dialect not in (None, dialect_name):
                return False
        return True

    return include_object


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Migrate the database of ``settings`` up to ``revision``."""
    _off_loop(lambda: command.upgrade(alembic_config(settings), revision))


def downgrade(settings: Settings, revision: str) -> None:
    """Migrate the database of ``settings`` down to ``revision`` (``"base"`` empties it)."""
    _off_loop(lambda: command.downgrade(alembic_config(settings), revision))


def current(settings: Settings) -> str | None:
    """The revision the database is at, or None when it has never been migrated."""
    return _off_loop(lambda: asyncio.run(_current(settings)))


def heads() -> list[str]:
    """The head revision(s) of the migration tree."""
    return list(ScriptDirectory.from_config(alembic_config()).get_heads())


async def _current(settings: Settings) -> str | None:
    engine = create_engine(settings, app_role=False)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(current_on_connection)
    finally:
        await engine.dispose()


def current_on_connection(connection: Connection) -> str | None:
    """The revision of the database behind an open (sync) connection, for ``run_sync``.

    Works under the application role too: it may read ``alembic_version``."""
    return MigrationContext.configure(connection).get_current_revision()


def _off_loop(work: Callable[[], T]) -> T:
    # env.py and _current use asyncio.run, which refuses to nest in a running loop.
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return work()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(work).result()


__all__ = [
    "SCRIPT_LOCATION",
    "alembic_config",
    "current",
    "current_on_connection",
    "downgrade",
    "heads",
    "include_object_for",
    "upgrade",
]
