"""SQLite specifics: file location, pragmas, and write transactions that do not deadlock."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, literal, or_, select
from sqlalchemy.engine import URL

from turbocat.db.dialects import sqlite_driver


def prepare_path(url: URL) -> None:
    """Create the folder of the database file (the embedded setup's data folder)."""
    database = url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def on_connect(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy emit BEGIN itself (see on_begin) instead of pysqlite's implicit one.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={sqlite_driver.BUSY_TIMEOUT_MS}")
    # Checkpoints run on aiosqlite's thread, not inside a COMMIT on the loop's (see
    # sqlite_driver.CHECKPOINT_CHANGES).
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.close()


def on_begin(conn: Any) -> None:
    # BEGIN IMMEDIATE takes the write lock up front: two writers queue on busy_timeout
    # instead of one failing with "database is locked" when it upgrades a read lock. Read-only
    # transactions begin deferred: in WAL mode readers and the writer do not wait on each other.
    readonly = conn.get_execution_options().get("turbocat_readonly", False)
    conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def json_array_overlaps(column: Any, values: Sequence[str]) -> ColumnElement[bool]:
    """Tags stored as a JSON array share a value with ``values``."""
    each = func.json_each(column).table_valued("value").alias("tag")
    return exists(select(literal(1)).select_from(each).where(each.c.value.in_(list(values))))


_SUFFIXES = ("ies", "ing", "es", "ed", "s")


def stem(word: str) -> str:
    """A crude English stem, so that 'invoices' finds 'invoice' as PostgreSQL's stemmer does."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def words_match(columns: Sequence[Any], query: str) -> ColumnElement[bool]:
    """Every word of ``query`` (stemmed) occurs, case-insensitively, in one of the columns."""
    words = [stem(w.strip('"')) for w in query.lower().split() if w.strip('"')][:16]
    clauses = [
        or_(*[func.lower(func.coalesce(c, "")).contains(w, autoescape=True) for c in columns])
        for w in words
    ]
    return and_(*clauses) if clauses else literal(True).is_(literal(True))
