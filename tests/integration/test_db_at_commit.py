"""``db.engine.at_commit``: work that runs as a transaction commits, in key order, and never
for what a rollback (of the transaction or of a savepoint) undid."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from turbocat.db.engine import Database, at_commit


async def test_runs_last_in_key_order_and_skips_rolled_back_savepoints(
    operator_db: Database,
) -> None:
    calls: list[str] = []

    def note(name: str) -> object:
        def work(sync: Session) -> None:
            sync.connection().execute(text("SELECT 1"))  # the transaction is still open
            calls.append(name)

        return work

    async def undone(session: AsyncSession) -> None:
        async with session.begin_nested():
            at_commit(session, "0-undone", note("undone"))
            raise RuntimeError("the savepoint rolls back")

    async def failing() -> None:
        async with operator_db.transaction() as session:
            at_commit(session, "x", note("x"))
            raise RuntimeError("the transaction rolls back")

    async with operator_db.transaction() as session:
        at_commit(session, "2-b", note("b"))
        at_commit(session, "1-a", note("a"))
        with pytest.raises(RuntimeError):
            await undone(session)
        async with session.begin_nested():
            at_commit(session, "3-kept", note("kept"))
        await session.execute(text("SELECT 1"))
        assert calls == []  # nothing before the commit (a savepoint's release is not one)
    assert calls == ["a", "b", "kept"]

    calls.clear()
    with pytest.raises(RuntimeError):
        await failing()
    assert calls == []
    async with operator_db.transaction() as session:  # nothing left over for the next one
        pass
    assert calls == []
