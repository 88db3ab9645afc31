"""What differs between PostgreSQL and SQLite lives here and nowhere else."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, func
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from turbocat.db.dialects import postgres, postgres_driver, sqlite, sqlite_driver

__all__ = ["greatest", "least", "postgres", "postgres_driver", "sqlite", "sqlite_driver", "upsert"]


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
