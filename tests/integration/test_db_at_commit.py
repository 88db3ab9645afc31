"""``db.engine.at_commit``: work that runs as a transaction commits, in key order, and never
for what a rollback (of the transaction or of a savepoint) undid; ``after_commit``: callbacks
once it has committed, with the same exceptions."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from turbocat.db.engine import Database, after_commit, at_commit


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


async def test_after_commit_runs_once_committed_and_never_for_what_rolled_back(
    operator_db: Database,
) -> None:
    calls: list[str] = []

    async def undone(session: AsyncSession) -> None:
        async with session.begin_nested():
            after_commit(session, lambda: calls.append("undone"))
            raise RuntimeError("the savepoint rolls back")

    async def failing() -> None:
        async with operator_db.transaction() as session:
            after_commit(session, lambda: calls.append("failed"))
            raise RuntimeError("the transaction rolls back")

    async with operator_db.transaction() as session:
        after_commit(session, lambda: calls.append("a"))
        with pytest.raises(RuntimeError):
            await undone(session)
        async with session.begin_nested():
            after_commit(session, lambda: calls.append("kept"))
        await session.execute(text("SELECT 1"))
        assert calls == []
    assert calls == ["a", "kept"]

    calls.clear()
    with pytest.raises(RuntimeError):
        await failing()
    async with operator_db.transaction() as session:  # nothing left over for the next one
        pass
    assert calls == []
