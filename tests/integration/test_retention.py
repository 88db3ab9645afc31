"""Retention (``services.retention``, ``turbocat retention``) over months of generated data.

Every row is written with explicit timestamps around a fixed ``NOW``; each test asserts the
exact ids left in every table, not only counts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from turbocat.cli.main import app as cli_app
from turbocat.config import Settings
from turbocat.db import jobs, partitions
from turbocat.db.base import Base
from turbocat.db.engine import Database, TenantContext
from turbocat.db.models import (
    AgentRow,
    ApiKeyRow,
    AuditLogRow,
    DeploymentRow,
    ExecutionLogRow,
    ExecutionRow,
    OrganizationRow,
    StepRunRow,
    TemplateRow,
    UsageRecordRow,
    UserRow,
    WorkflowRow,
    WorkItemRow,
)
from turbocat.domain.enums import (
    AgentType,
    ExecutionStatus,
    StepStatus,
    StepType,
    TemplateType,
    TriggerType,
    UsageMetric,
    WorkItemStatus,
)
from turbocat.domain.ids import new_id_at
from turbocat.domain.retention import Policy
from turbocat.engine.scheduler import RetentionJob, Scheduler, SchedulerConfig
from turbocat.services import retention

NOW = dt.datetime(2026, 7, 1, 12, 0, tzinfo=dt.UTC)
SYSTEM = TenantContext(system=True)
TABLES: tuple[Any, ...] = (
    OrganizationRow,
    ExecutionRow,
    StepRunRow,
    ExecutionLogRow,
    WorkItemRow,
    AuditLogRow,
    UsageRecordRow,
    WorkflowRow,
    AgentRow,
    DeploymentRow,
    ApiKeyRow,
    TemplateRow,
    UserRow,
)


def ago(days: float) -> dt.datetime:
    return NOW - dt.timedelta(days=days)


@dataclass
class World:
    """Generated rows: ``rows[table]`` every id written, ``gone[table]`` those the default
    policy (with org ``b``'s overrides) must remove."""

    now: dt.datetime
    rows: dict[str, set[uuid.UUID]] = field(default_factory=dict)
    gone: dict[str, set[uuid.UUID]] = field(default_factory=dict)
    pending: list[Any] = field(default_factory=list)
    orgs: dict[str, uuid.UUID] = field(default_factory=dict)
    refs: list[tuple[Any, uuid.UUID, str, uuid.UUID | None]] = field(default_factory=list)
    """(model, row id, column, value after the run): references to purged rows become NULL,
    references to kept ones stay."""
    old_user: uuid.UUID | None = None

    def ago(self, days: float) -> dt.datetime:
        return self.now - dt.timedelta(days=days)

    def add(self, row: Any, *, removed: bool = False) -> Any:
        if getattr(row, "id", None) is None:
            # An execution's id carries its creation time, as the service makes it (on
            # PostgreSQL the id picks the month partition).
            row.id = new_id_at(row.created_at) if isinstance(row, ExecutionRow) else uuid.uuid4()
        table = row.__tablename__
        self.rows.setdefault(table, set()).add(row.id)
        if removed:
            self.gone.setdefault(table, set()).add(row.id)
        self.pending.append(row)
        return row

    def expected(self, only: set[uuid.UUID] | None = None) -> dict[str, set[uuid.UUID]]:
        """What remains after a run (limited to ``only``'s organizations' removals if given)."""
        return {
            t: ids - {i for i in self.gone.get(t, set()) if only is None or i in only}
            for t, ids in self.rows.items()
        }


def build_world(now: dt.datetime) -> World:
    """Two organizations over about two years of history: ``a`` on the defaults, ``b`` with
    logs 7 days, successful executions kept forever and audit logs 30 days."""
    w = World(now)
    user = w.add(UserRow(email="live@example.com", created_at=w.ago(800), updated_at=w.ago(800)))
    w.old_user = w.add(
        UserRow(
            email="old@example.com", created_at=w.ago(800), updated_at=w.ago(800),
            deleted_at=w.ago(91),
        ),
        removed=True,
    ).id  # fmt: skip
    w.add(
        UserRow(
            email="recent@example.com", created_at=w.ago(800), updated_at=w.ago(800),
            deleted_at=w.ago(89),
        )
    )  # fmt: skip
    w.add(TemplateRow(name="builtin gone", deleted_at=w.ago(100), **_template()), removed=True)
    w.add(TemplateRow(name="builtin", **_template()))
    overrides = {"logs": 7, "successful_executions": None, "audit_logs": 30}
    for slug, settings in (("a", {}), ("b", {"retention": overrides})):
        org = w.add(
            OrganizationRow(
                name=slug.upper(), slug=slug, settings=settings, created_at=w.ago(800),
                updated_at=w.ago(800),
            )
        )  # fmt: skip
        w.orgs[slug] = org.id
        _organization(w, org.id, user.id, overrides if slug == "b" else {})
    return w


def _template() -> dict[str, Any]:
    return {"type": TemplateType.WORKFLOW, "category": "ops", "template_data": {}}


def _organization(w: World, org: uuid.UUID, user: uuid.UUID, overrides: dict[str, Any]) -> None:
    logs_days = overrides.get("logs", 30)
    keep_successful = "successful_executions" in overrides
    audit_days = overrides.get("audit_logs", 365)
    live = _lineage(w, org, "live", versions=2)
    # Executions of every status, each with two step runs (one a loop body), logs and a work item.
    cases: list[tuple[ExecutionStatus, float | None, float, bool]] = [
        # status, completed days ago (None: never), created days ago, removed
        (ExecutionStatus.COMPLETED, 91, 91.1, not keep_successful),
        (ExecutionStatus.COMPLETED, 89, 89.1, False),
        (ExecutionStatus.COMPLETED, 400, 400.1, not keep_successful),
        (ExecutionStatus.FAILED, 181, 181.1, True),
        (ExecutionStatus.FAILED, 120, 120.1, False),
        (ExecutionStatus.TIMEOUT, 200, 200.1, True),
        (ExecutionStatus.CANCELLED, None, 190, True),
        (ExecutionStatus.CANCELLED, 100, 100.1, False),
        (ExecutionStatus.RUNNING, None, 300, False),
        (ExecutionStatus.PENDING, None, 300, False),
        (ExecutionStatus.WAITING, None, 250, False),
    ]
    made = [_execution(w, org, live[0], *case, logs_days) for case in cases]
    parent = made[0]
    # A recent child of the first (expired) execution survives it, unlinked.
    _execution(w, org, live[1], ExecutionStatus.COMPLETED, 10, 10.1, False, logs_days,
               parent=parent.id)  # fmt: skip
    for days in (audit_days + 1, audit_days - 1, 30.5 if audit_days > 31 else 1):
        w.add(
            AuditLogRow(
                organization_id=org, action="workflow.update", resource_type="workflow",
                created_at=w.ago(days),
            ),
            removed=days > audit_days,
        )  # fmt: skip
    for end_days in (731, 729, 1):
        w.add(
            UsageRecordRow(
                organization_id=org, metric=UsageMetric.WORKFLOW_EXECUTIONS,
                quantity=Decimal(3), period_start=w.ago(end_days + 1), period_end=w.ago(end_days),
                created_at=w.ago(end_days), updated_at=w.ago(end_days),
            ),
            removed=end_days > 730,
        )  # fmt: skip
    _soft_deleted(w, org, user, logs_days)


def _execution(
    w: World,
    org: uuid.UUID,
    workflow: uuid.UUID,
    status: ExecutionStatus,
    completed: float | None,
    created: float,
    removed: bool,
    logs_days: float,
    parent: uuid.UUID | None = None,
) -> ExecutionRow:
    execution = w.add(
        ExecutionRow(
            organization_id=org, workflow_id=workflow, status=status,
            trigger_type=TriggerType.MANUAL, created_at=w.ago(created),
            updated_at=w.ago(created), parent_execution_id=parent,
            completed_at=None if completed is None else w.ago(completed),
        ),
        removed=removed,
    )  # fmt: skip
    loop = w.add(_step(org, execution.id, "loop", StepType.LOOP, w.ago(created)), removed=removed)
    body = w.add(_step(org, execution.id, "body", StepType.AGENT, w.ago(created)), removed=removed)
    body.parent_id = loop.id
    body.scope = "/loop[0]"
    for days in (created, 3):  # one line as old as the execution, one recent
        w.add(
            ExecutionLogRow(
                organization_id=org, execution_id=execution.id, step_run_id=body.id,
                message="line", created_at=w.ago(days),
            ),
            removed=removed or days > logs_days,
        )  # fmt: skip
    w.add(
        WorkItemRow(
            organization_id=org, execution_id=execution.id, queue_name="q", seq=1, item={},
            status=WorkItemStatus.TAKEN, taken_by=body.id, taken_at=w.ago(created),
            created_at=w.ago(created),
        ),
        removed=removed,
    )  # fmt: skip
    return execution  # type: ignore[no-any-return]


def _step(
    org: uuid.UUID, execution: uuid.UUID, key: str, kind: StepType, at: dt.datetime
) -> StepRunRow:
    return StepRunRow(
        id=uuid.uuid4(), organization_id=org, execution_id=execution, step_key=key,
        step_type=kind, status=StepStatus.COMPLETED, idempotency_key=f"{execution}:{key}:0",
        created_at=at, updated_at=at,
    )  # fmt: skip


def _lineage(
    w: World,
    org: uuid.UUID,
    name: str,
    *,
    versions: int = 1,
    deleted: float | None = None,
    removed: bool = False,
    model: Any = WorkflowRow,
) -> list[uuid.UUID]:
    """A workflow (or agent) with ``versions`` versions, soft-deleted ``deleted`` days ago."""
    ids: list[uuid.UUID] = []
    for version in range(1, versions + 1):
        fields: dict[str, Any] = {"kebab_name": name} if model is WorkflowRow else {}
        if model is AgentRow:
            fields["type"] = AgentType.DATA
        row = w.add(
            model(
                organization_id=org, name=name, version=version,
                parent_id=ids[0] if ids else None, created_at=w.ago(500),
                updated_at=w.ago(500), deleted_at=None if deleted is None else w.ago(deleted),
                **fields,
            ),
            removed=removed,
        )  # fmt: skip
        ids.append(row.id)
    return ids


def _soft_deleted(w: World, org: uuid.UUID, user: uuid.UUID, logs_days: float) -> None:
    _lineage(w, org, "gone", versions=3, deleted=100, removed=True)
    _lineage(w, org, "recently-gone", versions=2, deleted=10)
    # Deleted long ago but an execution inside its retention still needs it: kept.
    held = _lineage(w, org, "held", versions=2, deleted=100)
    _execution(w, org, held[1], ExecutionStatus.COMPLETED, 30, 30.1, False, logs_days)
    # Its only execution expires in this run: both go.
    freed = _lineage(w, org, "freed", versions=2, deleted=100, removed=True)
    _execution(w, org, freed[0], ExecutionStatus.FAILED, 190, 190.1, True, logs_days)
    # A version deleted long ago in a lineage with a newer version deleted recently: kept.
    mixed = _lineage(w, org, "mixed", versions=2, deleted=100)
    w.pending[-1].deleted_at = w.ago(5)
    del mixed
    gone_agent = _lineage(
        w, org, "agent-gone", versions=2, deleted=95, removed=True, model=AgentRow
    )
    used = _lineage(w, org, "agent-used", deleted=95, model=AgentRow)
    w.add(_deployment(w, org, agent=used[0]))
    freed_agent = _lineage(w, org, "agent-freed", deleted=95, removed=True, model=AgentRow)
    w.add(_deployment(w, org, agent=freed_agent[0], deleted=120), removed=True)
    live = _lineage(w, org, "deployed")
    purged = w.add(_deployment(w, org, workflow=live[0], deleted=91), removed=True).id
    kept = w.add(_deployment(w, org, workflow=live[0], deleted=30)).id
    keys = []
    for days, removed in ((91, True), (89, False), (None, False)):
        keys.append(w.add(
            ApiKeyRow(
                organization_id=org, user_id=user, name="k", key_hash=uuid.uuid4().hex,
                key_prefix="tc_", created_at=w.ago(300), updated_at=w.ago(300),
                deleted_at=None if days is None else w.ago(days),
            ),
            removed=removed,
        ).id)  # fmt: skip
    # Kept rows pointing at purged ones lose the reference, never the row.
    for deployment, key, actor, agent in (
        (purged, keys[0], w.old_user, gone_agent[1]),
        (kept, keys[1], user, used[0]),
    ):
        run = _execution(w, org, live[0], ExecutionStatus.RUNNING, None, 1, False, logs_days)
        run.deployment_id, run.api_key_id, run.user_id = deployment, key, actor
        w.pending[-4].agent_id = agent  # its "body" step run
        entry = w.add(
            AuditLogRow(
                organization_id=org, action="x", resource_type="y", created_at=w.ago(1),
                user_id=actor, api_key_id=key,
            )
        )  # fmt: skip
        purging = deployment == purged
        w.refs += [
            (ExecutionRow, run.id, "deployment_id", None if purging else deployment),
            (ExecutionRow, run.id, "api_key_id", None if purging else key),
            (ExecutionRow, run.id, "user_id", None if purging else actor),
            (StepRunRow, w.pending[-5].id, "agent_id", None if purging else agent),
            (AuditLogRow, entry.id, "user_id", None if purging else actor),
            (AuditLogRow, entry.id, "api_key_id", None if purging else key),
        ]
    w.add(TemplateRow(organization_id=org, name="t", deleted_at=w.ago(95), **_template()),
          removed=True)  # fmt: skip
    w.add(TemplateRow(organization_id=org, name="t2", deleted_at=w.ago(85), **_template()))


def _deployment(
    w: World,
    org: uuid.UUID,
    *,
    workflow: uuid.UUID | None = None,
    agent: uuid.UUID | None = None,
    deleted: float | None = None,
) -> DeploymentRow:
    return DeploymentRow(
        id=uuid.uuid4(), organization_id=org, name="d", slug=f"d-{uuid.uuid4().hex[:8]}",
        workflow_id=workflow, agent_id=agent, created_at=w.ago(200), updated_at=w.ago(200),
        deleted_at=None if deleted is None else w.ago(deleted),
    )  # fmt: skip


async def write(db: Database, w: World) -> None:
    """Insert table by table in foreign-key order (the rows have no relationships to sort by);
    within a table in the order written, so a version's root comes before it."""
    order = {t.name: i for i, t in enumerate(Base.metadata.sorted_tables)}
    async with db.transaction(SYSTEM) as session:
        for name in sorted({r.__tablename__ for r in w.pending}, key=order.__getitem__):
            session.add_all([r for r in w.pending if r.__tablename__ == name])
            await session.flush()
    w.pending.clear()


async def remaining(db: Database) -> dict[str, set[uuid.UUID]]:
    out: dict[str, set[uuid.UUID]] = {}
    async with db.transaction(SYSTEM, readonly=True) as session:
        for model in TABLES:
            stmt = select(model.id).execution_options(include_deleted=True)
            out[model.__tablename__] = set((await session.execute(stmt)).scalars())
    return out


async def assert_references(db: Database, w: World) -> None:
    async with db.transaction(SYSTEM, readonly=True) as session:
        for model, ident, column, value in w.refs:
            stmt = select(getattr(model, column)).where(model.id == ident)
            assert (await session.execute(stmt)).scalar_one() == value, (model, column)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database.from_settings(Settings(database_url=database_url))
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def world(db: Database) -> World:
    async with db.transaction(SYSTEM) as session:  # the months of the history (PostgreSQL)
        await partitions.create_months(session, NOW - dt.timedelta(days=800), NOW)
    w = build_world(NOW)
    await write(db, w)
    return w


def _removed(report: retention.Report) -> dict[str, dict[str, int]]:
    return {s.organization: {k: v for k, v in s.removed.items() if v} for s in report.scopes}


async def test_retention_removes_exactly_what_the_policies_say(db: Database, world: World) -> None:
    before = await remaining(db)
    assert before == world.rows
    dry = await retention.run(db, Policy(), NOW, dry_run=True, batch_size=4)
    assert await remaining(db) == before, "a dry run deletes nothing"
    report = await retention.run(db, Policy(), NOW, batch_size=4)
    assert _removed(report) == _removed(dry), "the dry run reports what the run removes"
    assert await remaining(db) == world.expected()
    totals = report.totals()
    for table, ids in world.gone.items():
        assert totals[table] == len(ids), table
    if db.dialect == "postgresql":
        # December 2025 holds only failed, timed-out and cancelled executions past 180 days:
        # dropped whole, with its logs; months with a kept row stay (swept in batches).
        assert {"executions_p2025_12", "execution_logs_p2025_12"} <= set(report.partitions_dropped)
        assert report.partitions_dropped == dry.partitions_dropped
        assert "executions_p2026_04" not in report.partitions_dropped
        async with db.transaction(SYSTEM, readonly=True) as session:
            left = {p.name for p in await partitions.monthly(session)}
        assert "executions_p2025_12" not in left and "executions_p2026_04" in left
    else:
        assert report.partitions_dropped == []
    a, b = (_removed(report)[slug] for slug in ("a", "b"))
    assert a["executions"] == 6 and b["executions"] == 4  # b keeps successful ones forever
    assert b["audit_logs"] == 1 and a["audit_logs"] == 1
    assert _removed(report)[retention.PLATFORM] == {"users": 1, "templates": 1}
    # The child of a removed execution stays, unlinked (in b its parent is kept, linked).
    async with db.transaction(SYSTEM, readonly=True) as session:
        linked = (
            await session.execute(
                select(ExecutionRow.organization_id).where(
                    ExecutionRow.parent_execution_id.is_not(None)
                )
            )
        ).scalars().all()  # fmt: skip
    assert linked == [world.orgs["b"]]
    await assert_references(db, world)
    again = await retention.run(db, Policy(), NOW)
    assert sum(again.totals().values()) == 0, "a second run finds nothing"


async def test_batches_of_one_remove_everything_too(db: Database, world: World) -> None:
    report = await retention.run(db, Policy(), NOW, batch_size=1)
    assert await remaining(db) == world.expected()
    assert sum(report.totals().values()) == sum(len(ids) for ids in world.gone.values())


async def test_one_organization_and_its_overrides(db: Database, world: World) -> None:
    b_rows: set[uuid.UUID] = set()
    async with db.transaction(SYSTEM, readonly=True) as session:
        for model in TABLES:
            if hasattr(model, "organization_id"):
                stmt = (
                    select(model.id)
                    .where(model.organization_id == world.orgs["b"])
                    .execution_options(include_deleted=True)
                )
                b_rows |= set((await session.execute(stmt)).scalars())
    report = await retention.run(db, Policy(), NOW, organization="b")
    assert [s.organization for s in report.scopes] == ["b"]
    assert report.scopes[0].policy["successful_executions"] is None
    assert report.scopes[0].policy["logs"] == 7
    assert await remaining(db) == world.expected(only=b_rows)


async def test_global_keep_forever_and_invalid_overrides(db: Database, world: World) -> None:
    forever = Policy(dict.fromkeys(Policy().days))
    async with db.transaction(SYSTEM) as session:
        await session.execute(
            update(OrganizationRow)
            .where(OrganizationRow.slug == "a")
            .values(settings={"retention": {"logs": "soon"}})
        )
        await session.execute(
            update(OrganizationRow).where(OrganizationRow.slug == "b").values(settings={})
        )
    report = await retention.run(db, forever, NOW)
    assert sum(report.totals().values()) == 0
    assert await remaining(db) == world.rows
    assert "logs" in report.skipped["a"] or "days" in report.skipped["a"]


@pytest.mark.pg
async def test_one_run_at_a_time_on_postgresql(pg_url: str) -> None:
    db = Database.from_settings(Settings(database_url=pg_url))
    try:
        async with jobs.exclusive(db, "retention") as first:
            assert first
            async with jobs.exclusive(db, "retention") as second:
                assert not second
            async with jobs.exclusive(db, "other") as other:
                assert other
        async with jobs.exclusive(db, "retention") as again:
            assert again
    finally:
        await db.dispose()


async def test_cli_retention_run_on_a_sqlite_file(tmp_path: Path, sqlite_template: Path) -> None:
    import shutil

    path = tmp_path / "turbocat.db"
    shutil.copyfile(sqlite_template, path)
    url = f"sqlite:///{path}"
    db = Database.from_settings(Settings(database_url=url))
    now = dt.datetime.now(dt.UTC)
    w = build_world(now)
    try:
        await write(db, w)
    finally:
        await db.dispose()
    runner = CliRunner()
    env = {"TURBOCAT_DATABASE_URL": url, "TURBOCAT_HOME": str(tmp_path / "home")}

    def cli(*args: str) -> tuple[int, str]:
        result = runner.invoke(cli_app, list(args), env=env)
        return result.exit_code, result.output

    code, out = await anyio.to_thread.run_sync(
        lambda: cli("retention", "run", "--dry-run", "--json")
    )
    assert code == 0, out
    dry = json.loads(out)
    assert dry["dry_run"] is True
    assert dry["totals"]["executions"] == 10
    code, out = await anyio.to_thread.run_sync(lambda: cli("retention", "run", "--json"))
    assert code == 0, out
    done = json.loads(out)
    assert done["totals"] == dry["totals"]
    db = Database.from_settings(Settings(database_url=url))
    try:
        assert await remaining(db) == w.expected()
    finally:
        await db.dispose()
    code, out = await anyio.to_thread.run_sync(lambda: cli("retention", "run"))
    assert code == 0 and "nothing to remove" in out, out
    # Per-organization overrides through the CLI, shown by `retention show`.
    code, out = await anyio.to_thread.run_sync(
        lambda: cli("retention", "set", "--org", "a", "logs=60", "audit_logs=forever")
    )
    assert code == 0, out
    code, out = await anyio.to_thread.run_sync(
        lambda: cli("retention", "show", "--org", "a", "--json")
    )
    assert code == 0, out
    shown = json.loads(out)
    assert shown["policy"]["logs"] == 60 and shown["policy"]["audit_logs"] is None
    assert shown["overrides"] == {"logs": 60, "audit_logs": None}
    code, out = await anyio.to_thread.run_sync(
        lambda: cli("retention", "set", "--org", "a", "logs=default", "audit_logs=0")
    )
    assert code != 0 and "audit_logs" in out, out
    code, out = await anyio.to_thread.run_sync(
        lambda: cli("retention", "set", "--org", "a", "logs=default")
    )
    assert code == 0, out
    code, out = await anyio.to_thread.run_sync(
        lambda: cli("retention", "show", "--org", "a", "--json")
    )
    assert json.loads(out)["overrides"] == {"audit_logs": None}


async def test_the_scheduler_runs_retention_beside_its_ticks(db: Database, world: World) -> None:
    job = RetentionJob(Policy(), batch_size=7, start_delay=dt.timedelta(0))
    scheduler = Scheduler(db, SchedulerConfig(retention=job), clock=lambda: NOW)
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run(stop))
    gone = {i for ids in world.gone.values() for i in ids}
    try:
        with anyio.fail_after(30):
            while True:
                left = await remaining(db)
                if not any(ids & gone for ids in left.values()):
                    break
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
    for table, ids in world.expected().items():
        # Ticks measure today's usage gauges too: new rows beside the expected ones.
        assert ids <= left[table], table


@pytest.mark.pg
async def test_a_scheduler_skips_retention_while_another_process_runs_it(
    pg_url: str,
) -> None:
    db = Database.from_settings(Settings(database_url=pg_url))
    try:
        w = build_world(NOW)
        await write(db, w)
        scheduler = Scheduler(db, SchedulerConfig(), clock=lambda: NOW)
        job = RetentionJob(Policy())
        async with jobs.exclusive(db, "retention") as held:
            assert held
            assert await scheduler.run_retention(job) is None
            assert await remaining(db) == w.rows
        report = await scheduler.run_retention(job)
        assert report is not None
        assert await remaining(db) == w.expected()
    finally:
        await db.dispose()


def test_settings_spell_keep_forever(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURBOCAT_RETENTION__AUDIT_LOGS_DAYS", "forever")
    monkeypatch.setenv("TURBOCAT_RETENTION__LOGS_DAYS", "14")
    policy = Settings().retention.policy().as_json()
    assert policy["audit_logs"] is None and policy["logs"] == 14
    assert policy["failed_executions"] == 180
    monkeypatch.setenv("TURBOCAT_RETENTION__LOGS_DAYS", "0")
    with pytest.raises(ValueError, match="logs_days"):
        Settings()
