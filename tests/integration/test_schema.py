"""The schema: migrations match the models on both databases; constraints, the application role
and row-level security hold on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, MetaData, String, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from turbocat.config import Settings
from turbocat.db import migrate
from turbocat.db.base import Base
from turbocat.db.engine import Database, TenantContext, create_engine
from turbocat.db.models import (
    AgentRow,
    ApiKeyRow,
    DeploymentRow,
    ExecutionRow,
    MembershipRow,
    OrganizationRow,
    UsageRecordRow,
    UserRow,
    WorkflowRow,
    WorkflowStepRow,
)
from turbocat.domain.enums import AgentType, StepType, TriggerType, UsageMetric

# Marked here, at collection time: anyio's plugin rebuilds coroutine tests that are marked
# later (conftest's pytest_collection_modifyitems) and loses their other fixture parameters.
pytestmark = pytest.mark.anyio

NOW = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC)


# --- helpers ---------------------------------------------------------------------------------


@asynccontextmanager
async def open_database(url: str, *, app_role: bool = True) -> AsyncIterator[Database]:
    db = Database(create_engine(Settings(database_url=url), app_role=app_role))
    try:
        yield db
    finally:
        await db.dispose()


def _diff(connection: Connection, metadata: MetaData) -> list[Any]:
    context = MigrationContext.configure(
        connection,
        opts={
            "compare_type": True,
            "target_metadata": metadata,
            "include_object": migrate.include_object_for(connection.dialect.name),
        },
    )
    with warnings.catch_warnings():
        # Expression indexes (lower(email)) cannot be reflected on SQLite; alembic says so.
        warnings.filterwarnings("ignore", message=".*expression-based index.*")
        return list(compare_metadata(context, metadata))


async def schema_diff(url: str, metadata: MetaData = Base.metadata) -> list[Any]:
    async with open_database(url, app_role=False) as db, db.engine.connect() as conn:
        return await conn.run_sync(_diff, metadata)


async def table_names(url: str) -> set[str]:
    async with open_database(url, app_role=False) as db, db.engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def scalar(url: str, sql: str, **params: Any) -> Any:
    async with open_database(url, app_role=False) as db, db.engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar()


def _org(name: str) -> OrganizationRow:
    return OrganizationRow(id=uuid.uuid4(), name=name, slug=f"{name}-{uuid.uuid4().hex[:6]}")


def _user() -> UserRow:
    return UserRow(email=f"{uuid.uuid4().hex[:8]}@example.com")


def _workflow(org: OrganizationRow, name: str, **fields: Any) -> WorkflowRow:
    return WorkflowRow(organization_id=org.id, name=name, kebab_name=name, **fields)


async def seed_org(db: Database, name: str) -> tuple[OrganizationRow, UserRow]:
    org, user = _org(name), _user()
    async with db.transaction(TenantContext(organization_id=org.id, user_id=user.id)) as s:
        s.add_all([org, user])
        await s.flush()
        s.add(MembershipRow(organization_id=org.id, user_id=user.id))
    return org, user


def tenant(org: OrganizationRow) -> TenantContext:
    return TenantContext(organization_id=org.id)


# --- migrations versus models ------------------------------------------------------------------

APP_TABLES = {table.name for table in Base.metadata.sorted_tables}


async def _roundtrip(url: str) -> None:
    settings = Settings(database_url=url)
    migrate.upgrade(settings, "head")
    assert migrate.current(settings) == migrate.heads()[0]
    assert await table_names(url) >= APP_TABLES

    migrate.downgrade(settings, "base")
    assert migrate.current(settings) is None
    assert await table_names(url) <= {"alembic_version"}

    migrate.upgrade(settings, "head")
    assert await schema_diff(url) == []


async def test_migrations_roundtrip_and_match_models_on_sqlite(tmp_path: Path) -> None:
    await _roundtrip(f"sqlite:///{tmp_path / 'roundtrip.db'}")


@pytest.mark.pg
async def test_migrations_roundtrip_and_match_models_on_postgresql(empty_pg_url: str) -> None:
    await _roundtrip(empty_pg_url)
    # The role is cluster-wide: a downgrade never drops it.
    assert await scalar(
        empty_pg_url, "SELECT count(*) FROM pg_roles WHERE rolname = 'turbocat_app'"
    )


def test_one_head() -> None:
    assert len(migrate.heads()) == 1


async def test_drift_is_detected(database_url: str) -> None:
    drifted = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.sorted_tables:
        table.to_metadata(drifted)
    drifted.tables["workflows"].append_column(Column("extra_column", String(20)))
    drifted.tables["agents"].c.name.type = String(20)

    diff = await schema_diff(database_url, drifted)

    assert any(d[0] == "add_column" and d[3].name == "extra_column" for d in diff)
    assert any(isinstance(d, list) and d[0][0] == "modify_type" and d[0][3] == "name" for d in diff)


async def test_migrated_template_matches_models(database_url: str) -> None:
    assert await schema_diff(database_url) == []


# --- constraints (both databases) -------------------------------------------------------------


async def test_enum_check_constraints_refuse_unknown_values(database_url: str) -> None:
    async with open_database(database_url) as db:
        org, _ = await seed_org(db, "acme")
        with pytest.raises(IntegrityError):
            async with db.transaction(tenant(org)) as s:
                await s.execute(
                    text(
                        "INSERT INTO workers (id, worker_id, hostname, queues, status, concurrency,"
                        " last_heartbeat_at, started_at, created_at, updated_at) VALUES (:id,"
                        " 'w1', 'h', '[]', 'bogus', 1, :now, :now, :now, :now)"
                        if db.dialect == "sqlite"
                        else "INSERT INTO workers (id, worker_id, hostname, queues, status,"
                        " concurrency, last_heartbeat_at, started_at, created_at, updated_at)"
                        " VALUES (:id, 'w1', 'h', '{}', 'bogus', 1, :now, :now, :now, :now)"
                    ),
                    {"id": uuid.uuid4().hex, "now": NOW.replace(tzinfo=None)},
                )
        with pytest.raises(IntegrityError):
            async with db.transaction(tenant(org)) as s:
                await s.execute(
                    text("UPDATE organizations SET plan = 'platinum' WHERE id = :id"),
                    {"id": org.id if db.dialect == "postgresql" else org.id.hex},
                )


async def test_deployment_targets_exactly_one_of_workflow_and_agent(database_url: str) -> None:
    async with open_database(database_url) as db:
        org, _ = await seed_org(db, "acme")
        workflow = _workflow(org, "wf")
        agent = AgentRow(organization_id=org.id, name="a", type=AgentType.LLM)
        async with db.transaction(tenant(org)) as s:
            s.add_all([workflow, agent])

        def deployment(slug: str, **target: uuid.UUID) -> DeploymentRow:
            return DeploymentRow(organization_id=org.id, name=slug, slug=slug, **target)

        for bad in (
            deployment("both", workflow_id=workflow.id, agent_id=agent.id),
            deployment("neither"),
        ):
            with pytest.raises(IntegrityError, match="workflow_xor_agent"):
                async with db.transaction(tenant(org)) as s:
                    s.add(bad)
        async with db.transaction(tenant(org)) as s:
            s.add_all(
                [deployment("wf", workflow_id=workflow.id), deployment("ag", agent_id=agent.id)]
            )


async def test_usage_records_are_unique_per_period(database_url: str) -> None:
    async with open_database(database_url) as db:
        org, _ = await seed_org(db, "acme")

        def record(quantity: int) -> UsageRecordRow:
            return UsageRecordRow(
                organization_id=org.id,
                metric=UsageMetric.WORKFLOW_EXECUTIONS,
                quantity=Decimal(quantity),
                period_start=NOW,
                period_end=NOW + dt.timedelta(days=1),
            )

        async with db.transaction(tenant(org)) as s:
            s.add(record(1))
        with pytest.raises(IntegrityError):
            async with db.transaction(tenant(org)) as s:
                s.add(record(2))


async def test_workflow_step_keys_are_unique_per_workflow(database_url: str) -> None:
    async with open_database(database_url) as db:
        org, _ = await seed_org(db, "acme")
        workflow = _workflow(org, "wf")

        def step(key: str, workflow_id: uuid.UUID) -> WorkflowStepRow:
            return WorkflowStepRow(
                organization_id=org.id,
                workflow_id=workflow_id,
                step_key=key,
                step_name=key,
                step_type=StepType.AGENT,
                position=0,
            )

        async with db.transaction(tenant(org)) as s:
            s.add(workflow)
            await s.flush()
            s.add(step("fetch", workflow.id))
        with pytest.raises(IntegrityError):
            async with db.transaction(tenant(org)) as s:
                s.add(step("fetch", workflow.id))


async def test_workflow_versions_share_a_kebab_name(database_url: str) -> None:
    async with open_database(database_url) as db:
        org, _ = await seed_org(db, "acme")
        v1 = _workflow(org, "report")
        async with db.transaction(tenant(org)) as s:
            s.add(v1)
            await s.flush()
            s.add(_workflow(org, "report", version=2, parent_id=v1.id))
        with pytest.raises(IntegrityError):
            async with db.transaction(tenant(org)) as s:
                s.add(_workflow(org, "report", version=2))


async def test_idempotency_keys_are_unique_when_given(database_url: str) -> None:
    async with open_database(database_url) as db:
        org, _ = await seed_org(db, "acme")
        workflow = _workflow(org, "wf")

        def execution(key: str | None) -> ExecutionRow:
            return ExecutionRow(
                organization_id=org.id,
                workflow_id=workflow.id,
                trigger_type=TriggerType.API,
                idempotency_key=key,
            )

        async with db.transaction(tenant(org)) as s:
            s.add(workflow)
            await s.flush()
            s.add_all([execution(None), execution(None), execution("k1")])
        with pytest.raises(IntegrityError):
            async with db.transaction(tenant(org)) as s:
                s.add(execution("k1"))


# --- PostgreSQL: role and row-level security --------------------------------------------------


@pytest.mark.pg
async def test_every_tenant_table_forces_row_level_security(pg_url: str) -> None:
    async with open_database(pg_url, app_role=False) as db, db.engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    """
                    SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
                           (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid)
                    FROM pg_class c
                    JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
                    WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
                    AND c.relname <> 'execution_idempotency_keys'
                    AND (c.relname = 'organizations' OR EXISTS (
                        SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                        AND a.attname = 'organization_id' AND NOT a.attisdropped))
                    """
                )
            )
        ).all()
    tables = {name: (rls, force, policies) for name, rls, force, policies in rows}
    marked = {t.name for t in Base.metadata.sorted_tables if t.info.get("rls")}
    assert set(tables) == marked
    for name, (rls, force, policies) in tables.items():
        assert rls and force and policies >= 2, name


@pytest.mark.pg
async def test_app_role_cannot_reach_partitions_or_the_idempotency_keys(pg_url: str) -> None:
    """Partitions (no RLS of their own) and execution_idempotency_keys are the owner's: the
    application role reads executions and logs through the parents, whose policies apply."""
    async with open_database(pg_url, app_role=False) as db, db.engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT c.relname, has_table_privilege('turbocat_app', c.oid, 'SELECT')"
                    " FROM pg_class c WHERE c.relkind = 'r' AND (c.relispartition"
                    " OR c.relname = 'execution_idempotency_keys')"
                )
            )
        ).all()
    names = {name for name, _ in rows}
    assert {"executions_default", "execution_logs_default", "execution_idempotency_keys"} <= names
    assert any(name.startswith("executions_p") for name in names)
    assert [name for name, allowed in rows if allowed] == []


@pytest.mark.pg
async def test_app_role_cannot_bypass_row_level_security(pg_url: str) -> None:
    async with open_database(pg_url, app_role=False) as db, db.engine.connect() as conn:
        role = (
            await conn.execute(
                text("SELECT rolsuper, rolbypassrls, rolcanlogin FROM pg_roles WHERE rolname = :r"),
                {"r": "turbocat_app"},
            )
        ).one()
        owned = (
            await conn.execute(
                text("SELECT count(*) FROM pg_tables WHERE tableowner = :r"), {"r": "turbocat_app"}
            )
        ).scalar()
    assert role == (False, False, False)
    assert owned == 0


@pytest.mark.pg
async def test_app_role_sees_only_its_tenants_rows(pg_url: str) -> None:
    async with open_database(pg_url) as db:
        a, user_a = await seed_org(db, "alpha")
        b, _ = await seed_org(db, "beta")
        async with db.transaction(tenant(a)) as s:
            s.add_all([_workflow(a, "a1"), _workflow(a, "a2")])
        async with db.transaction(tenant(b)) as s:
            s.add_all([_workflow(b, "b1"), _workflow(b, "b-public", is_public=True)])

        async def names(
            context: TenantContext | None, sql: str = "SELECT * FROM workflows"
        ) -> set[str]:
            async with db.transaction(context) as s:
                return {row.name for row in (await s.execute(text(sql))).all()}

        assert await names(tenant(a)) == {"a1", "a2", "b-public"}
        assert await names(tenant(b)) == {"b1", "b-public"}
        assert await names(None) == {"b-public"}
        assert await names(None, "SELECT * FROM organizations") == set()
        assert await names(TenantContext(user_id=user_a.id), "SELECT * FROM organizations") == {
            "alpha"
        }

        # A published row is readable, never writable, by another tenant.
        async with db.transaction(tenant(a)) as s:
            result = await s.execute(
                text("UPDATE workflows SET description = 'x' WHERE name = 'b-public'")
            )
            assert result.rowcount == 0  # type: ignore[attr-defined]
        with pytest.raises(Exception, match="row-level security"):
            async with db.transaction(tenant(a)) as s:
                await s.execute(
                    text(
                        "INSERT INTO workflows (id, organization_id, name, kebab_name, category, status,"
                        " version, definition, trigger_config, task_queue, total_executions,"
                        " successful_executions, failed_executions, avg_execution_time_ms, tags,"
                        " is_public, created_at, updated_at) VALUES (gen_random_uuid(), :org, 'x',"
                        " 'x', 'custom', 'draft', 1, '{}', '{}', 'default', 0, 0, 0, 0, '{}', false,"
                        " now(), now())"
                    ),
                    {"org": b.id},
                )

        # Workers and maintenance state "system" explicitly for one transaction.
        async with db.transaction() as s:
            await s.execute(text("SELECT set_config('turbocat.system', 'on', true)"))
            count = (await s.execute(text("SELECT count(*) FROM workflows"))).scalar()
        assert count == 4


@pytest.mark.pg
async def test_a_presented_key_finds_its_row_before_the_tenant_is_known(pg_url: str) -> None:
    async with open_database(pg_url) as db:
        org, user = await seed_org(db, "acme")
        key = ApiKeyRow(
            organization_id=org.id, user_id=user.id, name="k", key_hash="h" * 64, key_prefix="tc_x"
        )
        async with db.transaction(tenant(org)) as s:
            s.add(key)

        async def visible(context: TenantContext) -> list[uuid.UUID]:
            async with db.transaction(context) as s:
                return list((await s.execute(text("SELECT id FROM api_keys"))).scalars())

        assert await visible(TenantContext(api_key_hash="h" * 64)) == [key.id]
        assert await visible(TenantContext(api_key_hash="x" * 64)) == []
