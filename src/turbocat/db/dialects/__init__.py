"""What differs between PostgreSQL and SQLite lives here and nowhere else."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, func
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from turbocat.db.dialects import postgres, postgres_driver, sqlite, sqlite_driver

__all__ = [
    "execute_at_commit",
    "greatest",
    "least",
    "postgres",
    "postgres_driver",
    "sqlite",
    "sqlite_driver",
    "upsert",
]


def execute_at_commit(connection: Connection, stmt: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """Run ``stmt`` (a write whose result nobody reads) for each of ``rows``, for a callback
    that runs as its transaction commits. On PostgreSQL the statements go out in the same
    round trip as the COMMIT, their values written as literals (``postgres_driver.render``):
    a round trip (0.3-0.6 ms under load) is worth more than rendering a row (~20 us). A
    failing statement fails the COMMIT, which rolls the whole transaction back, as it would
    have failed the transaction had it run on its own. Elsewhere, or for a value the
    renderer does not write, it runs now."""
    if connection.dialect.name == "postgresql":
        adapter = connection.connection.dbapi_connection
        if isinstance(adapter, postgres_driver.Connection):
            try:
                sql = postgres_driver.render(connection.dialect, stmt, rows)
            except postgres_driver.NotRenderable:
                pass
            else:
                if adapter.send_with_commit(sql):
                    return
    connection.execute(stmt, list(rows))


def upsert(dialect: str, table: Any) -> pg_dialect.Insert | sqlite_dialect.Insert:
    """An INSERT with ``on_conflict_do_update`` (same SQL on both databases, but SQLAlchemy
    builds it with the dialect's own construct)."""
    if dialect == "postgresql":
        return pg_dialect.insert(table)
    return sqlite_dialect.insert(table)


def least(dialect: str, *values: Any) -> ColumnElement[Any]:
    """The smallest of ``values``: ``LEAST`` on PostgreSQL, the scalar ``min()`` on SQLite
    (which returns NULL if any value is NULL, where LEAST ignores NULLs: pass none)."""
    return func.least(*values) if dialect == "postgresql" else func.min(*values)


def greatest(dialect: str, *values: Any) -> ColumnElement[Any]:
    """The largest of ``values``: ``GREATEST`` on PostgreSQL, the scalar ``max()`` on SQLite."""
    return func.greatest(*values) if dialect == "postgresql" else func.max(*values)
