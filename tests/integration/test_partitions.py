"""Monthly partitions of executions and execution_logs on PostgreSQL (migration 0006,
``db.partitions``): the migration over a populated database and back, months created ahead by
the scheduler, the idempotency key's uniqueness, and the plans of the hot read queries (EXPLAIN:
partition pruning and index use)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, insert, text
from sqlalchemy.exc import IntegrityError

from turbocat.config import Settings
from turbocat.db import migrate, partitions
from turbocat.db.engine import Database, TenantContext
from turbocat.db.listing import PageRequest
from turbocat.db.models import (
    ExecutionLogRow,
    ExecutionRow,
    OrganizationRow,
    StepRunRow,
    UserRow,
    WorkflowRow,
)
from turbocat.domain.access import Principal
from turbocat.domain.enums import ExecutionStatus, MemberRole
from turbocat.domain.ids import id_floor, id_time, new_id, new_id_at
from turbocat.domain.pagination import Cursor
from turbocat.engine.scheduler import Scheduler, SchedulerConfig
from turbocat.services import executions

pytestmark = [pytest.mark.anyio, pytest.mark.pg]
SYSTEM = TenantContext(system=True)
MONTHS = [dt.datetime(2026, m, 1, tzinfo=dt.UTC) for m in range(1, 7)]


def test_ids_carry_their_time_and_month_bounds_order_them() -> None:
    at = dt.datetime(2026, 3, 31, 23, 59, 59, 999_000, tzinfo=dt.UTC)
    made = new_id_at(at)
    assert made.version == 7 and id_time(made) == at
    assert id_floor(at) <= made < id_floor(dt.datetime(2026, 4, 1, tzinfo=dt.UTC))
    assert id_floor(dt.datetime(2026, 3, 1, tzinfo=dt.UTC)) <= made
    assert abs(id_time(new_id()) - dt.datetime.now(dt.UTC)) < dt.timedelta(seconds=5)
    # Made one after the other for one instant (a frozen clock), they keep their order.
    same = [new_id_at(at) for _ in range(1000)]
    assert same == sorted(same) and len(set(same)) == 1000
    # SQLite stores UUIDs as 32 hex digits: the text order is the byte order too.
    assert sorted([made.hex, id_floor(at).hex]) == [id_floor(at).hex, made.hex]


# ---- the migration over existing rows ----------------------------------------------------------


async def _admin(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(url)


def _step(
    org: uuid.UUID, execution: uuid.UUID, ident: uuid.UUID, at: dt.datetime
) -> dict[str, Any]:
    return {
        "id": ident, "organization_id": org, "execution_id": execution, "step_key": "s",
        "step_type": "agent", "status": "completed", "idempotency_key": "k",
        "created_at": at, "updated_at": at,
    }  # fmt: skip


def _log(org: uuid.UUID, execution: uuid.UUID, step: uuid.UUID, at: dt.datetime) -> dict[str, Any]:
    return {
        "id": new_id(), "organization_id": org, "execution_id": execution,
        "step_run_id": step, "message": "m", "created_at": at,
    }  # fmt: skip


async def test_migration_partitions_a_populated_database_and_back(empty_pg_url: str) -> None:
    settings = Settings(database_url=empty_pg_url)
    await asyncio.to_thread(migrate.upgrade, settings, "0005")
    # Written through the models at 0005 (their columns are the same; the migration changes
    # none), as the owner, with three months of UUIDv7 ids, one foreign (v4) id, one key.
    times = [dt.datetime(2025, 12, 5, tzinfo=dt.UTC), dt.datetime(2026, 1, 20, tzinfo=dt.UTC),
             dt.datetime(2026, 2, 3, tzinfo=dt.UTC)]  # fmt: skip
    ids = [new_id_at(t) for t in times] + [uuid.uuid4()]
    owner = Database.from_settings(settings, app_role=False)
    try:
        org, workflow = await _org_and_workflow(owner)
        async with owner.transaction(SYSTEM) as session:
            for i, ident in enumerate(ids):
                row = _execution(org, workflow, ident) | {"created_at": times[min(i, 2)]}
                row["idempotency_key"] = "key-1" if i == 0 else None
                await session.execute(insert(ExecutionRow), [row])
                step = new_id()
                # the execution's time, not id_time(ident): the v4 id carries none (its top
                # bits read as a date past year 9999 about one time in ten)
                at = times[min(i, 2)]
                await session.execute(insert(StepRunRow), [_step(org, ident, step, at)])
                await session.execute(insert(ExecutionLogRow), [_log(org, ident, step, at)])
    finally:
        await owner.dispose()

    await asyncio.to_thread(migrate.upgrade, settings, "head")
    conn = await _admin(empty_pg_url)
    try:
        where = {
            r["id"]: r["part"]
            for r in await conn.fetch("SELECT id, tableoid::regclass::text AS part FROM executions")
        }
        assert where == {
            ids[0]: "executions_p2025_12", ids[1]: "executions_p2026_01",
            ids[2]: "executions_p2026_02", ids[3]: "executions_default",
        }  # fmt: skip
        logs = await conn.fetch("SELECT tableoid::regclass::text AS part FROM execution_logs")
        assert sorted(r["part"] for r in logs) == [
            "execution_logs_default", "execution_logs_p2025_12", "execution_logs_p2026_01",
            "execution_logs_p2026_02",
        ]  # fmt: skip
        assert await conn.fetchval("SELECT count(*) FROM step_runs") == 4
        # The months up to three ahead of today exist too.
        ahead = partitions.next_month(partitions.month_start(dt.datetime.now(dt.UTC)))
        assert await conn.fetchval(
            "SELECT to_regclass($1) IS NOT NULL", f"executions_p{ahead:%Y_%m}"
        )
        assert await conn.fetchval("SELECT count(*) FROM execution_idempotency_keys") == 1
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                "INSERT INTO executions (id, organization_id, workflow_id, status, result,"
                " trigger_type, trigger_data, input_data, output_data, steps_total,"
                " steps_completed, steps_failed, idempotency_key, task_queue, created_at,"
                " updated_at) VALUES ($1, $2, $3, 'pending', 'pending', 'manual', '{}', '{}',"
                " '{}', 0, 0, 0, 'key-1', 'default', now(), now())",
                new_id(), org, workflow,
            )  # fmt: skip
        # Foreign keys to the partitioned table still hold.
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await conn.execute(
                "UPDATE step_runs SET execution_id = $1 WHERE execution_id = $2", new_id(), ids[0]
            )
    finally:
        await conn.close()

    await asyncio.to_thread(migrate.downgrade, settings, "0005")
    conn = await _admin(empty_pg_url)
    try:
        kind = await conn.fetchval(
            "SELECT relkind::text FROM pg_class WHERE relname = 'executions'"
        )
        assert kind == "r"
        assert set(await conn.fetch("SELECT id FROM executions")) == {(i,) for i in ids}
        assert await conn.fetchval("SELECT count(*) FROM execution_logs") == 4
        assert await conn.fetchval(
            "SELECT indisunique FROM pg_index WHERE indexrelid = "
            "to_regclass('uq_executions_idempotency_key')"
        )
        assert await conn.fetchval("SELECT to_regclass('execution_idempotency_keys')") is None
    finally:
        await conn.close()
    await asyncio.to_thread(migrate.upgrade, settings, "head")


# ---- months ahead --------------------------------------------------------------------------


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[Database]:
    database = Database.from_settings(Settings(database_url=pg_url))
    try:
        yield database
    finally:
        await database.dispose()


async def test_schedulers_create_the_months_ahead_once_together(db: Database) -> None:
    now = dt.datetime(2031, 5, 17, tzinfo=dt.UTC)
    schedulers = [Scheduler(db, SchedulerConfig(), clock=lambda: now) for _ in range(3)]
    made = await asyncio.gather(*[s.create_partitions(now) for s in schedulers])
    created = sorted(name for names in made for name in names)
    expected = sorted(
        f"{parent}_p{month}"
        for parent in ("executions", "execution_logs")
        for month in ("2031_05", "2031_06", "2031_07", "2031_08")
    )
    assert created == expected, "each month once, whichever scheduler made it"
    assert await schedulers[0].create_partitions(now) == []
    result = await schedulers[0].tick()
    assert result.partitions_created == []
    # A row made now goes to its month, not to the DEFAULT partition.
    async with db.transaction(SYSTEM, readonly=True) as session:
        assert await partitions.default_rows(session) == {
            "executions_default": 0, "execution_logs_default": 0,
        }  # fmt: skip


async def test_a_month_whose_rows_sit_in_default_is_not_created(db: Database) -> None:
    org, workflow = await _org_and_workflow(db)
    stray = new_id_at(dt.datetime(2033, 2, 2, tzinfo=dt.UTC))
    async with db.transaction(SYSTEM) as session:
        await session.execute(insert(ExecutionRow), [_execution(org, workflow, stray)])
    async with db.transaction(SYSTEM) as session:
        made = await partitions.create_ahead(session, dt.datetime(2033, 1, 5, tzinfo=dt.UTC))
        assert "executions_p2033_01" in made and "executions_p2033_02" not in made
        assert await partitions.default_rows(session) == {
            "executions_default": 1, "execution_logs_default": 0,
        }  # fmt: skip


# ---- query plans ---------------------------------------------------------------------------


async def _org_and_workflow(db: Database) -> tuple[uuid.UUID, uuid.UUID]:
    org, workflow = uuid.uuid4(), uuid.uuid4()
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    async with db.transaction(SYSTEM) as session:
        await session.execute(
            insert(OrganizationRow),
            [{"id": org, "name": f"o{org.hex[:6]}", "slug": f"o{org.hex[:6]}", "settings": {},
              "created_at": at, "updated_at": at}],
        )  # fmt: skip
        await session.execute(
            insert(WorkflowRow),
            [{"id": workflow, "organization_id": org, "name": "w", "kebab_name": "w",
              "created_at": at, "updated_at": at}],
        )  # fmt: skip
    return org, workflow


def _execution(
    org: uuid.UUID, workflow: uuid.UUID, ident: uuid.UUID, status: str = "completed"
) -> dict[str, Any]:
    # A foreign (v4) id carries no time: its random top bits may even lie past the year 9999.
    at = id_time(ident) if ident.version == 7 else dt.datetime(2026, 2, 3, tzinfo=dt.UTC)
    return {
        "id": ident, "organization_id": org, "workflow_id": workflow, "status": status,
        "trigger_type": "manual", "created_at": at, "updated_at": at, "completed_at": at,
    }  # fmt: skip


@pytest.fixture
async def history(db: Database, pg_url: str) -> dict[str, Any]:
    """Six months of executions (2026-01 to 2026-06) of three organizations and two workflows
    each, with step runs and logs, analyzed."""
    async with db.transaction(SYSTEM) as session:
        await partitions.create_months(session, MONTHS[0], MONTHS[-1])
    orgs = [await _org_and_workflow(db) for _ in range(3)]
    second = {}
    for org, _ in orgs:
        extra = uuid.uuid4()
        async with db.transaction(SYSTEM) as session:
            await session.execute(
                insert(WorkflowRow),
                [{"id": extra, "organization_id": org, "name": "v", "kebab_name": "v",
                  "created_at": MONTHS[0], "updated_at": MONTHS[0]}],
            )  # fmt: skip
        second[org] = extra
    statuses = ["completed", "completed", "completed", "failed"]
    per_month = 3000
    for month in MONTHS:
        runs, steps, logs = [], [], []
        span = (partitions.next_month(month) - month).total_seconds()
        for i in range(per_month):
            org, workflow = orgs[i % 3]
            if i % 2:
                workflow = second[org]
            ident = new_id_at(month + dt.timedelta(seconds=span * i / per_month))
            runs.append(_execution(org, workflow, ident, statuses[i % 4]))
            if i % 10 == 0:
                at = id_time(ident)
                step = new_id_at(at)
                steps.append(_step(org, ident, step, at))
                logs += [_log(org, ident, step, at) for _ in range(5)]
        async with db.transaction(SYSTEM) as session:
            await session.execute(insert(ExecutionRow), runs)
            await session.execute(insert(StepRunRow), steps)
            await session.execute(insert(ExecutionLogRow), logs)
    owner = Database.from_settings(Settings(database_url=pg_url), app_role=False)
    try:
        async with owner.engine.connect() as conn:
            await conn.execute(text("ANALYZE"))
            await conn.commit()
    finally:
        await owner.dispose()
    org, workflow = orgs[0]
    async with db.transaction(SYSTEM) as session:
        user = UserRow(email="viewer@example.com", full_name="V", created_at=MONTHS[0],
                       updated_at=MONTHS[0])  # fmt: skip
        session.add(user)
        await session.flush()
        user_id = user.id
    sample = runs[30]  # June, organization 0, with a step run and logs
    return {
        "principal": Principal(user_id, org, MemberRole.OWNER),
        "workflow": workflow, "execution": sample["id"],
    }  # fmt: skip


async def explain(
    db: Database, principal: Principal, call: Callable[[Any], Awaitable[Any]]
) -> list[dict[str, Any]]:
    """Run ``call`` (a service read) as the principal's tenant, capture the SQL it sent and
    EXPLAIN each statement with the same parameters; the plans, in order."""
    sent: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "set_config" not in statement:
            sent.append((statement, params))

    context = TenantContext(organization_id=principal.organization_id, user_id=principal.user_id)
    event.listen(db.engine.sync_engine, "before_cursor_execute", capture)
    try:
        async with db.transaction(context, readonly=True) as session:
            await call(session)
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", capture)
    plans = []
    async with db.transaction(context, readonly=True) as session:
        conn = await session.connection()
        for statement, params in sent:
            found = await conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, params)
            raw = found.scalar_one()
            plans.append((json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"])
    return plans


def scanned(plan: dict[str, Any]) -> tuple[set[str], set[str]]:
    """The relations a plan reads, and the indexes it reads them through."""
    relations, indexes = set(), set()
    stack = [plan]
    while stack:
        node = stack.pop()
        if "Relation Name" in node:
            relations.add(node["Relation Name"])
        if "Index Name" in node:
            indexes.add(node["Index Name"])
        stack += node.get("Plans", [])
    return relations, indexes


async def test_plans_prune_months_and_use_indexes(db: Database, history: dict[str, Any]) -> None:
    principal, workflow, execution = (
        history["principal"],
        history["workflow"],
        history["execution"],
    )
    march, april = MONTHS[2], MONTHS[3]
    window = executions.ExecutionFilter(since=march, until=april)

    # The list of an organization over a time range: March only, by (organization, created_at).
    page = PageRequest(limit=50)
    plans = await explain(
        db, principal, lambda s: executions.list_executions(s, principal, window, page)
    )
    relations, indexes = scanned(plans[-1])
    assert relations == {"executions_p2026_03"}, plans[-1]
    assert indexes & {"executions_p2026_03_organization_id_created_at_idx"}, plans[-1]

    # A cursor page (no time filter): only the months at or before the cursor's.
    cursor = Cursor(dt.datetime(2026, 2, 10, tzinfo=dt.UTC).isoformat(), new_id())
    plans = await explain(
        db, principal,
        lambda s: executions.list_executions(
            s, principal, executions.ExecutionFilter(), PageRequest(limit=50, cursor=cursor)
        ),
    )  # fmt: skip
    relations, indexes = scanned(plans[-1])
    # No lower bound: the DEFAULT partition may hold ids below every month, so it stays in
    # (empty here, as it should be).
    assert relations == {"executions_p2026_01", "executions_p2026_02", "executions_default"}
    assert all("organization_id_created_at" in i for i in indexes) and indexes, plans[-1]

    # Filtered by workflow (its lineage) and status over the range.
    filtered = executions.ExecutionFilter(
        workflow_id=workflow, status=ExecutionStatus.FAILED, since=march, until=april
    )
    plans = await explain(
        db, principal, lambda s: executions.list_executions(s, principal, filtered, page)
    )
    relations, indexes = scanned(plans[-1])
    assert relations == {"executions_p2026_03"}, plans[-1]
    assert indexes, plans[-1]

    # An execution by id: one partition, its primary key.
    plans = await explain(db, principal, lambda s: executions.get(s, principal, execution))
    relations, indexes = scanned(plans[-1])
    assert relations == {"executions_p2026_06"}, plans[-1]
    assert indexes == {"executions_p2026_06_pkey"}, plans[-1]

    # Its step runs (a plain table): the unique index led by execution_id.
    async def detail(session: Any) -> None:
        row = await executions.get(session, principal, execution)
        await executions.step_runs(session, row)

    plans = await explain(db, principal, detail)
    relations, indexes = scanned(plans[-1])
    assert relations == {"step_runs"} and indexes == {
        "uq_step_runs_execution_scope_step_attempt"
    }, plans[-1]

    # Its logs: the one logs partition of its month, by (execution_id, created_at).
    plans = await explain(
        db, principal,
        lambda s: executions.logs(
            s, principal, execution, min_level=None, after_id=None, limit=100
        ),
    )  # fmt: skip
    relations, indexes = scanned(plans[-1])
    assert relations == {"execution_logs_p2026_06"}, plans[-1]
    assert indexes == {"execution_logs_p2026_06_execution_id_created_at_idx"}, plans[-1]


async def test_a_concurrent_duplicate_key_fails_on_the_keys_table(db: Database) -> None:
    """Two transactions inserting one key: the second waits for the first and fails with a
    unique violation (what ``services.executions.launch`` catches), leaving one row."""
    org, workflow = await _org_and_workflow(db)
    first_in = asyncio.Event()
    release = asyncio.Event()

    async def first() -> None:
        async with db.transaction(SYSTEM) as session:
            row = _execution(org, workflow, new_id(), "pending") | {"idempotency_key": "k"}
            await session.execute(insert(ExecutionRow), [row])
            first_in.set()
            await release.wait()

    async def second() -> None:
        await first_in.wait()
        async with db.transaction(SYSTEM) as session:
            row = _execution(org, workflow, new_id(), "pending") | {"idempotency_key": "k"}
            await session.execute(insert(ExecutionRow), [row])

    one = asyncio.create_task(first())
    two = asyncio.create_task(second())
    await first_in.wait()
    await asyncio.sleep(0.3)
    assert not two.done(), "the second insert waits for the first transaction"
    release.set()
    await one
    with pytest.raises(IntegrityError):
        await two
    async with db.transaction(SYSTEM, readonly=True) as session:
        found = await session.execute(
            text("SELECT count(*) FROM executions WHERE idempotency_key = 'k'")
        )
        assert found.scalar_one() == 1
