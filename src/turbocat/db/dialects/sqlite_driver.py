"""SQLite through aiosqlite, with far fewer thread hops.

aiosqlite runs every sqlite3 call on a thread of its own and hands each result back to the
event loop; SQLAlchemy's adapter makes four such calls per statement (open a cursor, execute,
fetch, close), and each hop costs about 90 microseconds of two threads waking each other, far
more than SQLite takes to run an indexed statement (a few microseconds). This adapter runs a
statement whole (cursor, execute, fetch, close) in one call and keeps the rows, description,
rowcount and last row id in memory; where that call runs:

- Statements of a write transaction run inline, on the event loop's thread: SQLite has one
  writer at a time and the writers of this process already queue for it on an asyncio lock
  (``Database.transaction``), so a writer holding the loop for the microseconds of its
  statements delays nobody who could have written meanwhile. The one point of a write
  transaction that may wait, ``BEGIN IMMEDIATE`` (on a writer of another process), is first
  tried inline without waiting (busy timeout 0): when no other process writes, which is
  nearly always, it takes the lock at once; otherwise it waits on the thread.
- ``COMMIT`` and ``ROLLBACK`` run inline, and so does a read transaction's ``BEGIN``
  (deferred: it takes no lock). With synchronous=NORMAL, a commit in WAL mode appends to the
  log without syncing it; its slow part is the checkpoint that SQLite runs inside a commit
  once the log has grown. That is off here: every ``CHECKPOINT_CHANGES`` changed rows, one
  commit goes to the thread and checkpoints there.
- Read-only transactions (``turbocat_readonly``) and statements marked ``turbocat_offload``
  (bulk jobs whose statements are long: retention) run on the thread, one hop each, so that
  the loop keeps serving while SQLite works.

Server-side (streamed) cursors keep the stock behaviour.

The dialect is registered as ``sqlite+turbocat_aiosqlite``; ``db.engine.async_url`` maps
``sqlite://`` URLs onto it.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
    SQLiteDialect_aiosqlite,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

DRIVER = "turbocat_aiosqlite"
BUSY_TIMEOUT_MS = 30_000
"""How long a writer waits for another process's write lock (``PRAGMA busy_timeout``)."""

_Done = tuple[Any, int, int | None, list[Any]]
"""description, rowcount, lastrowid, rows."""


def _run(conn: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> _Done:
    """On aiosqlite's thread: the whole statement, cursor closed before returning."""
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


async def _inline(conn: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> _Done:
    """The statement on the loop's thread (a coroutine: SQLAlchemy's async connection insists
    that every statement awaits something)."""
    return _run(conn, operation, parameters, many)


_BEGIN_WRITE = "BEGIN IMMEDIATE"
_BEGUN: _Done = (None, -1, None, [])


async def _begin_at_once(conn: sqlite3.Connection, busy_ms: int) -> bool:
    """``BEGIN IMMEDIATE`` on the loop's thread if the write lock is free now; False when
    another connection holds it (the caller then waits for it on the thread)."""
    conn.execute("PRAGMA busy_timeout=0")
    try:
        conn.execute(_BEGIN_WRITE)
    except sqlite3.OperationalError as error:
        if error.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            raise
        return False
    finally:
        conn.execute(f"PRAGMA busy_timeout={busy_ms}")
    return True


async def _call(method: Any) -> None:
    method()


def _runs_inline(statement: str, context: Any) -> bool:
    if context is None or statement.startswith(("BEGIN", "COMMIT", "ROLLBACK")):
        return False
    options = context.execution_options
    return not (options.get("turbocat_readonly") or options.get("turbocat_offload"))


class _Cursor(AsyncAdapt_aiosqlite_cursor):
    """A buffered cursor whose statement runs in one call on the connection's thread."""

    __slots__ = ("_arraysize", "_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: Any) -> None:  # no cursor is opened up front
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    async def _async_soft_close(self) -> None:
        return  # nothing is open between statements

    def close(self) -> None:
        self._rows.clear()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        self._done(operation, parameters, False, False)

    def executemany(self, operation: Any, seq_of_parameters: Sequence[Any]) -> Any:
        self._done(operation, seq_of_parameters, True, False)

    def _done(self, operation: Any, parameters: Any, many: bool, inline: bool) -> None:
        try:
            conn = self._connection._conn
            if inline:
                done = await_(_inline(conn, operation, parameters, many))
            elif operation == _BEGIN_WRITE and await_(_begin_at_once(conn, BUSY_TIMEOUT_MS)):
                done = _BEGUN
            elif operation == "BEGIN":  # deferred: takes no lock, cannot wait
                done = await_(_inline(conn, operation, parameters, many))
            else:
                done = await_(self._submit(operation, parameters, many))
        except Exception as error:
            self._adapt_connection._handle_exception(error)
        if operation.startswith("BEGIN"):
            adapted: _Connection = self._adapt_connection  # type: ignore[assignment]
            adapted._changes_at_begin = conn.total_changes
        self._description, self._rowcount, self._lastrowid, rows = done
        self._rows = collections.deque(rows)

    async def _submit(self, operation: Any, parameters: Any, many: bool) -> _Done:
        connection = self._connection
        async with self._adapt_connection._execute_mutex:
            return await connection._execute(  # type: ignore[no-any-return]
                _run, connection._conn, operation, parameters, many
            )

    def nextset(self) -> None:
        return None  # sqlite3 has no further result sets

    def setinputsizes(self, *inputsizes: Any) -> None:
        return None


class _Connection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ("_changes_at_begin",)
    _cursor_cls = _Cursor
    _changes_at_begin: int
    """``total_changes`` when the open transaction began (or the last one ended)."""

    def commit(self) -> None:
        conn = self._connection._conn
        if conn is None:
            super().commit()
            return
        changed = conn.total_changes - self._changes_at_begin
        if _due_checkpoint(changed):
            try:  # the thread: a checkpoint writes the logged pages into the database file
                await_(self._connection._execute(_commit_and_checkpoint, conn))
            except Exception as error:
                self._handle_exception(error)
        else:
            self._inline(conn.commit)
        self._changes_at_begin = conn.total_changes

    def rollback(self) -> None:
        conn = self._connection._conn
        if conn is None:
            super().rollback()
            return
        self._inline(conn.rollback)  # nothing to write: instant
        self._changes_at_begin = conn.total_changes  # the pool's reset is instant too

    def _inline(self, method: Any) -> None:
        try:
            await_(_call(method))
        except Exception as error:
            self._handle_exception(error)


CHECKPOINT_CHANGES = 500
"""Rows this process's transactions change between two checkpoints of the write-ahead log.
SQLite's own (automatic) checkpoint is off on these connections (``dialects.sqlite``): it runs
inside a COMMIT, which here runs on the loop's thread; the commit that reaches this count runs
on aiosqlite's thread instead and checkpoints (PASSIVE: it never waits for readers)."""
_unchecked = 0


def _due_checkpoint(changed: int) -> bool:
    global _unchecked
    _unchecked += changed
    if _unchecked < CHECKPOINT_CHANGES:
        return False
    _unchecked = 0
    return True


def _commit_and_checkpoint(conn: sqlite3.Connection) -> None:
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


class _DBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> _Connection:
        stock = super().connect(*arg, **kw)
        connection = _Connection(self, stock._connection)
        connection._changes_at_begin = -1  # no transaction yet: ends go to the thread
        return connection


class Dialect(SQLiteDialect_aiosqlite):
    driver = DRIVER
    supports_statement_cache = True

    def do_execute(self, cursor: Any, statement: str, parameters: Any, context: Any = None) -> None:
        if isinstance(cursor, _Cursor):
            cursor._done(statement, parameters, False, _runs_inline(statement, context))
        else:
            cursor.execute(statement, parameters)

    def do_execute_no_params(self, cursor: Any, statement: str, context: Any = None) -> None:
        if isinstance(cursor, _Cursor):
            cursor._done(statement, None, False, _runs_inline(statement, context))
        else:
            cursor.execute(statement)

    def do_executemany(
        self, cursor: Any, statement: str, parameters: Any, context: Any = None
    ) -> None:
        if isinstance(cursor, _Cursor):
            cursor._done(statement, parameters, True, _runs_inline(statement, context))
        else:
            cursor.executemany(statement, parameters)

    @classmethod
    def import_dbapi(cls) -> _DBAPI:
        return _DBAPI(__import__("aiosqlite"), __import__("sqlite3"))


registry.register(f"sqlite.{DRIVER}", __name__, "Dialect")
