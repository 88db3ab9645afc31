"""``db.dialects.sqlite_driver``: statements of write transactions run on the event loop's
thread, reads and bulk jobs on aiosqlite's, and a writer of another process holding SQLite's
lock does not stall the loop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError

from turbocat.config import Settings
from turbocat.db.dialects import sqlite_driver
from turbocat.db.engine import Database


@pytest.fixture
async def db(tmp_path: Path, sqlite_template: Path) -> AsyncIterator[Database]:
    path = tmp_path / "driver.db"
    path.write_bytes(sqlite_template.read_bytes())
    database = Database.from_settings(
        Settings(home=tmp_path / "home", database_url=f"sqlite:///{path}"), app_role=False
    )

    @event.listens_for(database.engine.sync_engine, "connect")
    def thread_function(dbapi_conn: object, _record: object) -> None:
        # sqlite3 runs a user function on the thread that runs the statement
        dbapi_conn.create_function("thread_id", 0, threading.get_ident)  # type: ignore[attr-defined]

    try:
        yield database
    finally:
        await database.dispose()


async def _thread_of(db: Database, **how: bool) -> int:
    async with db.transaction(**how) as session:
        return int((await session.execute(text("SELECT thread_id()"))).scalar_one())


async def test_writes_run_on_the_loop_thread_reads_and_bulk_jobs_off_it(db: Database) -> None:
    here = threading.get_ident()
    assert db.engine.dialect.driver == "turbocat_aiosqlite"
    assert await _thread_of(db) == here
    assert await _thread_of(db, readonly=True) != here
    assert await _thread_of(db, offload=True) != here


async def test_rows_counts_many_and_errors(db: Database) -> None:
    async with db.transaction() as session:
        await session.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE)"))
        await session.execute(
            text("INSERT INTO t (name) VALUES (:name)"), [{"name": f"n{i}"} for i in range(5)]
        )
        updated = await session.execute(text("UPDATE t SET name = name || '!' WHERE id > 2"))
        assert updated.rowcount == 3  # type: ignore[attr-defined]
        rows = (await session.execute(text("SELECT id, name FROM t ORDER BY id"))).all()
        assert [tuple(r) for r in rows] == [
            (1, "n0"), (2, "n1"), (3, "n2!"), (4, "n3!"), (5, "n4!"),
        ]  # fmt: skip

    async def duplicate() -> None:
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO t (name) VALUES ('extra')"))
            await session.execute(text("INSERT INTO t (name) VALUES ('n0')"))

    with pytest.raises(IntegrityError):
        await duplicate()
    async with db.transaction(readonly=True) as session:  # the failed one left nothing
        assert (await session.execute(text("SELECT count(*) FROM t"))).scalar_one() == 5


async def test_another_processs_write_lock_does_not_stall_the_loop(
    db: Database, tmp_path: Path
) -> None:
    async with db.transaction() as session:  # the pool's connection exists, WAL is on
        await session.execute(text("SELECT 1"))
    other = sqlite3.connect(tmp_path / "driver.db", isolation_level=None, timeout=0)
    other.execute("BEGIN IMMEDIATE")  # as another process's writer would
    marker = uuid.uuid4().hex

    async def write() -> None:
        async with db.transaction() as session:
            await session.execute(
                text("INSERT INTO settings_kv_probe VALUES (:v)").bindparams(v=marker)
            )

    other.execute("CREATE TABLE settings_kv_probe (v TEXT)")
    writer = asyncio.create_task(write())
    ticks = 0
    for _ in range(20):  # the loop goes on while the writer waits for SQLite's lock
        await asyncio.sleep(0.01)
        ticks += 1
    assert not writer.done()
    other.execute("COMMIT")
    await asyncio.wait_for(writer, timeout=10)
    assert ticks == 20
    assert other.execute("SELECT v FROM settings_kv_probe").fetchall() == [(marker,)]
    other.close()


async def _write_then_fail(db: Database) -> None:
    async with db.transaction() as session:
        await session.execute(text("INSERT INTO t VALUES ('y')"))
        raise RuntimeError("rolled back")


async def test_transaction_boundaries_run_inline_and_checkpoints_on_the_thread(
    tmp_path: Path, sqlite_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BEGIN, COMMIT and ROLLBACK would each cost a hop to aiosqlite's thread; the slow part
    of a commit, the checkpoint, is off on these connections and runs on the thread after
    every ``CHECKPOINT_CHANGES`` changed rows."""
    monkeypatch.setattr(sqlite_driver, "_unchecked", 0)
    path = tmp_path / "trace.db"
    path.write_bytes(sqlite_template.read_bytes())
    db = Database.from_settings(
        Settings(home=tmp_path / "home", database_url=f"sqlite:///{path}"), app_role=False
    )
    seen: list[tuple[str, bool]] = []
    here = threading.get_ident()

    @event.listens_for(db.engine.sync_engine, "connect")
    def trace(dbapi_conn: object, _record: object) -> None:
        def traced(statement: str) -> None:
            if statement.split()[0] in ("BEGIN", "COMMIT", "ROLLBACK", "PRAGMA"):
                seen.append((statement, threading.get_ident() == here))

        raw = dbapi_conn._connection._conn  # type: ignore[attr-defined]  # sqlite3's own
        raw.set_trace_callback(traced)

    rows = [{"v": str(i)} for i in range(sqlite_driver.CHECKPOINT_CHANGES)]
    try:
        async with db.transaction() as session:
            await session.execute(text("CREATE TABLE t (v TEXT)"))
            assert (await session.execute(text("PRAGMA wal_autocheckpoint"))).scalar() == 0
        seen.clear()
        async with db.transaction(readonly=True) as session:
            await session.execute(text("SELECT count(*) FROM t"))
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO t VALUES ('x')"))
        with pytest.raises(RuntimeError):
            await _write_then_fail(db)
        async with db.transaction() as session:  # reaches CHECKPOINT_CHANGES
            await session.execute(text("INSERT INTO t VALUES (:v)"), rows)
    finally:
        await db.dispose()
    assert [entry for entry in seen if "busy_timeout" not in entry[0]] == [
        ("BEGIN", True), ("COMMIT", True),
        ("BEGIN IMMEDIATE", True), ("COMMIT", True),
        ("BEGIN IMMEDIATE", True), ("ROLLBACK", True),
        ("BEGIN IMMEDIATE", True), ("COMMIT", False),
        ("PRAGMA wal_checkpoint(PASSIVE)", False),
    ]  # fmt: skip
    assert sqlite_driver._unchecked == 0
