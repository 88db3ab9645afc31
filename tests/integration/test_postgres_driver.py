"""``db.dialects.postgres_driver``: a transaction's tenant settings go out with its BEGIN (no
round trip of their own), hold for the whole transaction, and never outlive it, not even on
a pooled connection whose transaction ended without a statement."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from turbocat.config import DatabaseSettings, Settings
from turbocat.db.dialects.postgres_driver import literal
from turbocat.db.engine import Database, TenantContext

pytestmark = pytest.mark.pg

SETTINGS = (
    "SELECT current_setting('turbocat.organization_id', true),"
    " current_setting('turbocat.system', true)"
)


@pytest.fixture
async def db(pg_url: str, tmp_path: Path) -> AsyncIterator[Database]:
    # one pooled connection: every transaction reuses the one before it
    settings = Settings(
        home=tmp_path / "home",
        database_url=pg_url,
        database=DatabaseSettings(pool_size=1, max_overflow=0),
    )
    database = Database.from_settings(settings)
    try:
        yield database
    finally:
        await database.dispose()


def statements(db: Database) -> list[str]:
    seen: list[str] = []

    @event.listens_for(db.engine.sync_engine, "before_cursor_execute")
    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    return seen


async def test_settings_go_with_begin_and_end_with_the_transaction(db: Database) -> None:
    org = uuid.uuid4()
    async with db.transaction() as session:  # the connection's first use sets its role
        await session.execute(text("SELECT 1"))
    seen = statements(db)
    async with db.transaction(TenantContext(organization_id=org)) as session:
        first = (await session.execute(text(SETTINGS))).one()
        again = (await session.execute(text(SETTINGS))).one()
    assert tuple(first) == tuple(again) == (str(org), "")
    assert seen == [SETTINGS, SETTINGS]  # no statement of their own
    async with db.transaction(TenantContext(system=True)) as session:
        assert tuple((await session.execute(text(SETTINGS))).one()) == ("", "on")
    async with db.transaction() as session:  # no context: nothing left from before
        assert tuple((await session.execute(text(SETTINGS))).one()) in {("", ""), (None, None)}


async def test_a_transaction_without_statements_leaves_nothing_behind(db: Database) -> None:
    async with db.transaction(TenantContext(system=True)):
        pass  # BEGIN never went out, nor did the settings meant for it
    async with db.transaction() as session:
        assert tuple((await session.execute(text(SETTINGS))).one()) in {("", ""), (None, None)}

    async def failing() -> None:
        async with db.transaction(TenantContext(system=True)):
            raise RuntimeError("before any statement")

    with pytest.raises(RuntimeError):
        await failing()
    async with db.transaction() as session:
        assert tuple((await session.execute(text(SETTINGS))).one()) in {("", ""), (None, None)}


async def test_a_context_set_inside_a_begun_transaction_is_a_statement(db: Database) -> None:
    from turbocat.db.dialects.postgres import set_tenant

    org = uuid.uuid4()
    async with db.transaction(TenantContext(system=True)) as session:
        await session.execute(text("SELECT 1"))
        await set_tenant(session, TenantContext(organization_id=org))
        assert tuple((await session.execute(text(SETTINGS))).one()) == (str(org), "")


def test_literals_are_quoted() -> None:
    # an escape string: read the same whatever standard_conforming_strings says
    assert literal("it's") == "E'it''s'"
    assert literal("a\\b") == "E'a\\\\b'"
    with pytest.raises(ValueError, match="NUL"):
        literal("a\x00b")


TRICKY = ["it's", "back\\slash\\'", "$1 $2::JSONB", "line\nbreak\ttab", "ünï € 🐈", "E'x'", ""]


async def test_statements_sent_with_the_commit_write_their_values_exactly(
    pg_url: str, tmp_path: Path
) -> None:
    from sqlalchemy import Boolean, Column, Float, Integer, MetaData, Table, Text, insert, select

    from turbocat.db import dialects
    from turbocat.db.types import GUID, JSONDoc, UTCDateTime

    settings = Settings(home=tmp_path / "home", database_url=pg_url)
    database = Database.from_settings(settings, app_role=False)
    name = f"t_{uuid.uuid4().hex[:8]}"
    table = Table(
        name, MetaData(), Column("id", GUID), Column("s", Text), Column("j", JSONDoc),
        Column("at", UTCDateTime), Column("n", Integer), Column("b", Boolean),
        Column("f", Float),
    )  # fmt: skip
    at = dt.datetime(2026, 12, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
    rows = [
        {"id": uuid.uuid4(), "s": text_, "j": {"k": text_, "list": [1, 2.5, None, True]},
         "at": at, "n": i, "b": i % 2 == 0, "f": i / 4}
        for i, text_ in enumerate(TRICKY)
    ] + [{"id": uuid.uuid4(), "s": None, "j": None, "at": None, "n": None, "b": None, "f": None}]  # fmt: skip
    try:
        async with database.engine.begin() as conn:
            await conn.run_sync(table.create)
        seen = statements(database)
        async with database.transaction(TenantContext(system=True)) as session:
            await session.execute(text("SELECT 1"))  # begun, with its settings
            connection = await session.connection()
            await connection.run_sync(lambda c: dialects.execute_at_commit(c, insert(table), rows))
        assert seen == ["SELECT 1"]  # the inserts went out with the COMMIT
        async with database.transaction() as session:
            got = (await session.execute(select(table).order_by(table.c.n.nulls_last()))).all()
        assert [row._asdict() for row in got] == rows
    finally:
        async with database.engine.begin() as conn:
            await conn.run_sync(table.drop)
        await database.dispose()
    with pytest.raises(ValueError, match="NUL"):
        literal("a\x00b")


async def test_notifications_go_with_the_commit_and_never_from_a_rollback(
    db: Database, pg_url: str
) -> None:
    import asyncio

    import asyncpg

    from turbocat.db import signals

    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(pg_url)
    await listener.add_listener("tc_driver_test", lambda *args: heard.put_nowait(args[-1]))
    system = TenantContext(system=True)
    try:
        async with db.transaction() as session:  # warm: the connection's role is set
            await session.execute(text("SELECT 1"))
        seen = statements(db)
        async with db.transaction(system) as session:
            await session.execute(text("SELECT 1"))
            await signals.announce(session, "tc_driver_test", "it's committed")
            await signals.announce(session, "tc_driver_test", "it's committed")  # once
        assert seen == ["SELECT 1"]  # the NOTIFY went out with the COMMIT
        assert await asyncio.wait_for(heard.get(), timeout=5) == "it's committed"

        async def rolled_back() -> None:
            async with db.transaction(system) as session:
                await session.execute(text("SELECT 1"))
                await signals.announce(session, "tc_driver_test", "rolled back")
                raise RuntimeError("undo")

        with pytest.raises(RuntimeError):
            await rolled_back()
        async with db.transaction(system) as session:  # inside a savepoint: a statement
            await session.execute(text("SELECT 1"))
            async with session.begin_nested():
                await signals.announce(session, "tc_driver_test", "from a savepoint")
        assert await asyncio.wait_for(heard.get(), timeout=5) == "from a savepoint"
        await asyncio.sleep(0.2)
        assert heard.empty()  # nothing from the rolled-back one
    finally:
        await listener.close()


async def test_a_rolled_back_first_use_keeps_the_application_role(db: Database) -> None:
    async def first_use_fails() -> None:
        async with db.transaction() as session:  # the pool opens its connection here
            await session.execute(text("SELECT 1"))
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        await first_use_fails()
    async with db.transaction() as session:
        assert (await session.execute(text("SELECT current_user"))).scalar_one() == (
            Settings().database.app_role
        )


async def test_a_notification_that_fails_at_commit_leaves_the_connection_usable(
    db: Database,
) -> None:
    from sqlalchemy.exc import DBAPIError

    from turbocat.db import signals

    system = TenantContext(system=True)

    async def too_long() -> None:
        async with db.transaction(system) as session:
            await session.execute(text("CREATE TEMP TABLE IF NOT EXISTS probe (v int)"))
            await session.execute(text("INSERT INTO probe VALUES (1)"))
            await signals.announce(session, "tc_driver_test", "x" * 9000)  # over the 8000 cap

    with pytest.raises(DBAPIError, match="payload string too long"):
        await too_long()
    async with db.transaction(system) as session:  # the same (only) pooled connection
        assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
        # nothing of the failed transaction was kept, not even its table
        assert (await session.execute(text("SELECT to_regclass('probe')"))).scalar_one() is None
