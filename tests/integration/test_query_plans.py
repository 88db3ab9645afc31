"""The engine's always-running queries are served by indexes, not by reading whole tables.

Each query is captured as the engine sends it (SQL and parameters, through a cursor event) and
explained by the same database. On PostgreSQL sequential scans are switched off for the
transaction, so the plan names an index whenever one can serve the query, whatever the table's
size; SQLite's planner picks a usable index for an unanalyzed table. Without migration 0007's
indexes these queries read every step run (each worker tick) and every execution a workflow
ever had (each start of a limited workflow), and the tests fail.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.bootstrap import AppContext
from turbocat.config import Settings
from turbocat.db.engine import Database, TenantContext
from turbocat.engine import admission, claims, frames, waits
from turbocat.engine.worker import WorkerConfig

SYSTEM = TenantContext(system=True)
NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


async def plans_of(
    db: Database, marker: str, query: Callable[[AsyncSession], Awaitable[Any]] | None = None,
    *, run: Callable[[], Awaitable[Any]] | None = None,
) -> str:  # fmt: skip
    """The plan of the statement containing ``marker`` that ``query`` sends in a transaction
    of its own (or that ``run`` sends, in the transactions it makes)."""
    sent: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if marker in statement:
            sent.append((statement, parameters))

    event.listen(db.engine.sync_engine, "before_cursor_execute", capture)
    try:
        if run is not None:
            await run()
        else:
            assert query is not None
            async with db.transaction(SYSTEM) as session:
                await query(session)
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", capture)
    assert len(sent) == 1, sent
    statement, parameters = sent[0]
    async with db.transaction(SYSTEM) as session:
        conn = await session.connection()
        if db.dialect == "postgresql":
            await session.execute(text("SET LOCAL enable_seqscan = off"))
            rows = await conn.exec_driver_sql(f"EXPLAIN {statement}", parameters)
        else:
            rows = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        return "\n".join(" ".join(map(str, row)) for row in rows.all())


@pytest.fixture
async def db(database_url: str) -> Any:
    database = Database.from_settings(Settings(database_url=database_url))
    yield database
    await database.dispose()


async def test_next_due_reads_the_waiting_and_ready_indexes(db: Database) -> None:
    plan = await plans_of(
        db, "min(step_runs.scheduled_for)", lambda s: claims.next_due(s, ["default"], NOW)
    )
    assert "ix_step_runs_waiting" in plan and "ix_step_runs_claim" in plan, plan
    assert "Seq Scan" not in plan and "SCAN step_runs" not in plan.replace("USING", ""), plan


async def test_due_signal_waits_read_the_waiting_index(db: Database) -> None:
    plan = await plans_of(db, "FROM step_runs", lambda s: waits.due_signal_waits(s, NOW))
    assert "ix_step_runs_waiting" in plan, plan


async def test_running_executions_of_a_workflow_are_counted_by_index(db: Database) -> None:
    async def live(session: AsyncSession) -> bool:
        return await admission._workflow_is_full(session, uuid.uuid4(), 10, before=None)

    plan = await plans_of(db, "count(*)", live)
    # on PostgreSQL, each partition's copy is named after the partition; both the count and
    # the look for pending executions ahead use it
    assert plan.count("workflow_id_status") >= 2, plan
    assert "Seq Scan" not in plan and "SCAN executions\n" not in plan + "\n", plan


async def test_the_lease_rescue_reads_the_lease_index(app_context: AppContext) -> None:
    worker = app_context.worker(WorkerConfig(worker_id="plans"))
    try:
        rescue = lambda: worker.maintain(NOW)  # noqa: E731
        plan = await plans_of(app_context.db, "lease_expires_at <", run=rescue)
    finally:
        await app_context.close()
    assert "ix_step_runs_lease_expiry" in plan, plan


async def test_a_fan_in_probe_and_a_sequence_claim_read_the_frame_index(db: Database) -> None:
    # every completion into a fan-in probes its join's other dependencies; every step of a
    # sequence takes its successor by (execution, scope, step key): both are index lookups
    execution = uuid.uuid4()
    probe = await plans_of(
        db, "EXISTS", lambda s: frames.any_open(s, execution, "", ["a", "b", "c"])
    )

    async def take_successor(session: AsyncSession) -> Any:
        return await claims.claim_pending(
            session, execution_id=execution, organization_id=uuid.uuid4(), scope="",
            step_key="b", agent_id=None, queue="default", worker_id="plans", now=NOW,
            lease=dt.timedelta(seconds=30),
        )  # fmt: skip

    take = await plans_of(db, "UPDATE step_runs", take_successor)
    for plan in (probe, take):
        assert "uq_step_runs_execution_scope_step_attempt" in plan, plan
        assert "Seq Scan" not in plan, plan
