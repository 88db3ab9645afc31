"""``turbocat doctor``, ``turbocat export`` and ``turbocat import`` against real databases."""

from __future__ import annotations

import datetime as dt
import gc
import json
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest
from sqlalchemy import func, select, text, update
from typer.testing import CliRunner

from tests.integration.conftest import Account, bearer, signup
from tests.integration.test_engine import data_step
from turbocat.api.app import create_app
from turbocat.bootstrap import AppContext
from turbocat.cli.main import app as cli_app
from turbocat.config import Settings
from turbocat.db.engine import Database
from turbocat.db.models import (
    AgentRow,
    IntegrationRow,
    ScheduleRow,
    StepRunRow,
    WorkerRow,
    WorkflowRow,
)
from turbocat.domain.enums import StepStatus, WorkerStatus
from turbocat.security import crypto

Cli = Callable[..., tuple[int, str]]


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path / "home",
        database_url=database_url,
        engine={"embedded_worker": False},
        scheduler={"embedded": False},
    )


def cli_for(settings: Settings) -> Cli:
    """``turbocat ARGS`` in-process against ``settings``' database: (exit code, output)."""
    runner = CliRunner()
    env = {
        "TURBOCAT_DATABASE_URL": settings.resolved_database_url,
        "TURBOCAT_HOME": str(settings.home),
    }

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(cli_app, list(args), env=env)
        return result.exit_code, result.output

    return run


async def in_thread(cli: Cli, *args: str) -> tuple[int, str]:
    """The CLI runs its own event loop: keep it off the test's."""
    return await anyio.to_thread.run_sync(lambda: cli(*args))


async def doctor(settings: Settings) -> tuple[int, dict[str, Any]]:
    code, out = await in_thread(cli_for(settings), "doctor", "--json")
    report = json.loads(out)
    assert report["ok"] == (code == 0), out
    return code, {c["name"]: c for c in report["checks"]}


async def test_doctor_passes_a_healthy_installation(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    await signup(client, "doc@example.com")
    code, checks = await doctor(settings)
    assert code == 0, checks
    assert list(checks) == [
        "connectivity", "migrations", "table_sizes", "partitions", "slow_queries",
        "stuck_steps", "overdue_executions", "workers", "scheduler",
    ]  # fmt: skip
    assert all(c["status"] == "ok" for c in checks.values()), checks
    if settings.resolved_database_url.startswith("postgresql"):
        months = checks["partitions"]["data"]["months"]
        assert len(months) >= 4 and checks["partitions"]["data"]["default_rows"] == {
            "executions_default": 0, "execution_logs_default": 0,
        }  # fmt: skip
    else:
        assert "plain tables" in checks["partitions"]["detail"]
    sizes = checks["table_sizes"]["data"]
    assert sizes["total_bytes"] > 0 and "users" in sizes["tables"]
    assert "skipped" in checks["slow_queries"]["detail"]
    code, out = await in_thread(cli_for(settings), "doctor")
    assert code == 0 and "connectivity" in out and "fail" not in out


async def test_doctor_fails_on_a_stuck_step_and_names_it(
    settings: Settings, client: httpx.AsyncClient, operator_db: Database
) -> None:
    owner = await signup(client, "stuck@example.com")
    r = await client.post(
        "/api/v1/workflows", headers=owner.headers,
        json={"name": "stuck", "definition": {"steps": [data_step("only", mapping={"x": "1"})]}},
    )  # fmt: skip
    r = await client.post(
        f"/api/v1/workflows/{r.json()['id']}/executions", headers=owner.headers, json={}
    )
    execution_id = r.json()["id"]
    now = dt.datetime.now(dt.UTC)
    async with operator_db.transaction() as session:
        # A worker claimed the step, then died: its lease ran out ten minutes ago.
        await session.execute(
            update(StepRunRow).values(
                status=StepStatus.RUNNING, lease_owner="dead-host:1:abc", lease_epoch=1,
                lease_expires_at=now - dt.timedelta(minutes=10), started_at=now,
            )
        )  # fmt: skip
        session.add(
            WorkerRow(
                worker_id="dead-host:1:abc", hostname="dead-host", pid=1, queues=["default"],
                concurrency=4, status=WorkerStatus.RUNNING, started_at=now,
                last_heartbeat_at=now - dt.timedelta(minutes=11), created_at=now, updated_at=now,
            )
        )  # fmt: skip
    code, checks = await doctor(settings)
    assert code == 1
    stuck = checks["stuck_steps"]
    assert stuck["status"] == "fail" and execution_id in stuck["detail"], stuck
    assert stuck["data"]["steps"][0]["lease_owner"] == "dead-host:1:abc"
    workers = checks["workers"]
    assert workers["status"] == "warn" and "dead-host:1:abc" in workers["detail"], workers
    assert checks["connectivity"]["status"] == "ok"
    code, out = await in_thread(cli_for(settings), "doctor")
    assert code == 1 and "stuck_steps" in out


async def test_doctor_fails_when_migrations_are_missing(tmp_path: Path) -> None:
    empty = Settings(home=tmp_path / "h", database_url=f"sqlite:///{tmp_path / 'empty.db'}")
    code, checks = await doctor(empty)
    assert code == 1
    assert checks["connectivity"]["status"] == "ok"
    assert (
        checks["migrations"]["status"] == "fail" and "db upgrade" in checks["migrations"]["detail"]
    )


async def test_doctor_fails_when_the_database_is_unreachable(tmp_path: Path) -> None:
    gone = Settings(home=tmp_path, database_url="postgresql://nobody@127.0.0.1:1/none")
    code, checks = await doctor(gone)
    assert code == 1 and checks["connectivity"]["status"] == "fail"


@pytest.mark.pg
async def test_doctor_reads_pg_stat_statements_when_installed(pg_url: str, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url=pg_url)
    db = Database.from_settings(settings, app_role=False)
    try:
        async with db.engine.begin() as conn:
            available = await conn.execute(
                text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_stat_statements'")
            )
            if available.first() is None:
                pytest.skip("pg_stat_statements is not available on this server")
            await conn.execute(text("CREATE EXTENSION pg_stat_statements"))
    finally:
        await db.dispose()
    _code, checks = await doctor(settings)
    slow = checks["slow_queries"]
    assert "skipped" not in slow["detail"]
    # Readable only when the server preloads it; otherwise doctor says so as a warning.
    assert slow["status"] == "warn" or "statements" in slow["data"], slow


# ---- export / import ------------------------------------------------------------------------


def write_keys(settings: Settings) -> None:
    crypto.write_key_file(crypto.key_file_path(settings), crypto.Keyring.generate())


@pytest.fixture
async def app_client() -> AsyncIterator[Callable[[Settings], Any]]:
    """Clients of apps over any settings (a source and a target installation)."""
    opened: list[tuple[Any, Any, httpx.AsyncClient]] = []

    async def open_(settings: Settings) -> httpx.AsyncClient:
        app = create_app(settings, AppContext.build(settings))
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
        opened.append((app, lifespan, client))
        return client

    yield open_
    for _app, lifespan, client in reversed(opened):
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


async def post(client: httpx.AsyncClient, who: Account, path: str, body: dict) -> dict:
    r = await client.post(f"/api/v1/{path}", headers=who.headers, json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def populate(client: httpx.AsyncClient, who: Account) -> dict[str, Any]:
    """One of each item, referring to each other by id."""
    project = await post(client, who, "projects", {"name": "Support"})
    prompt = await post(client, who, "prompts", {
        "name": "triager", "version": "1.0.0", "model_provider": "openai",
        "model_name": "gpt-4o-mini", "prompt_content": "You triage {{ vars.kind }} tickets.",
        "prompt_variables": {"kind": {"type": "string"}},
    })  # fmt: skip
    integration = await post(client, who, "integrations", {
        "name": "openai-main", "provider": "openai", "credentials": {"api_key": "sk-secret-1"},
    })  # fmt: skip
    llm = await post(client, who, "agents", {
        "name": "triage", "type": "llm",
        "config": {"provider": "openai", "prompt_id": prompt["id"],
                   "integration_id": integration["id"]},
    })  # fmt: skip
    shaper = await post(
        client, who, "agents", {"name": "shaper", "type": "data", "config": {"query": "a"}}
    )
    definition = {"steps": [
        {"key": "shape", "type": "agent", "agent": shaper["id"]},
        data_step("after", deps=("shape",), mapping={"x": "1"}),
    ]}  # fmt: skip
    workflow = await post(client, who, "workflows", {
        "name": "Ticket flow", "definition": definition, "project_id": project["id"],
        "trigger_config": {"events": [{"pattern": "invoice.*"}]}, "tags": ["support"],
    })  # fmt: skip
    template = await post(client, who, "templates", {
        "name": "Our flow", "type": "workflow", "category": "operations",
        "template_data": {"name": "Flow", "definition": {
            "steps": [data_step("only", mapping={"y": "2"})]}},
    })  # fmt: skip
    schedule = await post(client, who, "schedules", {
        "workflow_id": workflow["id"], "cron_expression": "0 3 * * *", "name": "nightly",
        "timezone": "Europe/Paris",
    })  # fmt: skip
    return {"llm": llm, "shaper": shaper, "workflow": workflow, "template": template,
            "schedule": schedule, "integration": integration, "prompt": prompt}  # fmt: skip


async def count(settings: Settings, model: type, org_id: str) -> int:
    db = Database.from_settings(settings, app_role=False)
    try:
        async with db.transaction() as session:
            stmt = (
                select(func.count())
                .select_from(model)
                .where(
                    model.organization_id == uuid.UUID(org_id)  # type: ignore[attr-defined]
                )
            )
            return int((await session.execute(stmt)).scalar_one())
    finally:
        await db.dispose()


async def check_imported(client: httpx.AsyncClient, who: Account, source: dict) -> None:
    headers = who.headers
    listed = (await client.get("/api/v1/workflows?limit=50", headers=headers)).json()["items"]
    summary = next(w for w in listed if w["kebab_name"] == source["workflow"]["kebab_name"])
    workflow = (await client.get(f"/api/v1/workflows/{summary['id']}", headers=headers)).json()
    assert workflow["id"] != source["workflow"]["id"]
    assert workflow["tags"] == ["support"]
    assert workflow["trigger_config"] == source["workflow"]["trigger_config"]
    assert workflow["trigger_config"]["events"][0]["pattern"] == "invoice.*"
    project = await client.get(f"/api/v1/projects/{workflow['project_id']}", headers=headers)
    assert project.json()["name"] == "Support"
    agents = (await client.get("/api/v1/agents?limit=50", headers=headers)).json()["items"]
    by_name = {a["name"]: a for a in agents}
    step = workflow["definition"]["steps"][0]
    assert step["agent"] == by_name["shaper"]["id"] != source["shaper"]["id"]
    prompts = (await client.get("/api/v1/prompts?limit=50", headers=headers)).json()["items"]
    prompt = next(p for p in prompts if p["name"] == "triager")
    integrations = (await client.get("/api/v1/integrations", headers=headers)).json()["items"]
    (integration,) = integrations
    assert integration["name"] == "openai-main" and integration["status"] == "disabled"
    config = by_name["triage"]["config"]
    assert config["prompt_id"] == prompt["id"] != source["prompt"]["id"]
    assert config["integration_id"] == integration["id"]
    schedules = (await client.get("/api/v1/schedules", headers=headers)).json()["items"]
    (schedule,) = schedules
    assert schedule["workflow_id"] == workflow["id"] and schedule["timezone"] == "Europe/Paris"
    assert schedule["cron_expression"] == "0 3 * * *"
    templates = (await client.get("/api/v1/templates?limit=100", headers=headers)).json()["items"]
    assert [t["name"] for t in templates if not t["is_official"]] == ["Our flow"]


@pytest.mark.pg
async def test_export_from_sqlite_and_import_into_postgresql_twice(
    tmp_path: Path, sqlite_template: Path, pg_url: str, app_client: Callable[[Settings], Any]
) -> None:
    source_db = tmp_path / "source.db"
    shutil.copyfile(sqlite_template, source_db)
    source = Settings(home=tmp_path / "a", database_url=f"sqlite:///{source_db}",
                      engine={"embedded_worker": False}, scheduler={"embedded": False})  # fmt: skip
    target = Settings(home=tmp_path / "b", database_url=pg_url,
                      engine={"embedded_worker": False}, scheduler={"embedded": False})  # fmt: skip
    write_keys(source)
    write_keys(target)
    a = await app_client(source)
    alice = await signup(a, "alice@example.com", "Acme")
    made = await populate(a, alice)
    archive_file = tmp_path / "acme.json"
    code, out = await in_thread(
        cli_for(source), "export", "--org", "Acme", "--out", str(archive_file)
    )
    assert code == 0, out
    text_ = archive_file.read_text()
    assert "sk-secret-1" not in text_ and "credentials" not in text_
    archive = json.loads(text_)
    assert archive["format"] == "turbocat/export@1"

    b = await app_client(target)
    bob = await signup(b, "bob@example.com", "Target")
    code, out = await in_thread(cli_for(target), "import", str(archive_file), "--org", "Target")
    assert code == 0, out
    assert "workflows      1 created" in out and "credentials" in out
    await check_imported(b, bob, made)
    # The imported workflow runs on the target (the agent reference resolves).
    workflow = (await b.get("/api/v1/workflows", headers=bob.headers)).json()["items"][0]
    r = await b.post(f"/api/v1/workflows/{workflow['id']}/executions", headers=bob.headers,
                     json={"input": {}})  # fmt: skip
    assert r.status_code == 202, r.text

    before = {m: await count(target, m, bob.org_id)
              for m in (WorkflowRow, AgentRow, IntegrationRow, ScheduleRow)}  # fmt: skip
    code, out = await in_thread(cli_for(target), "import", str(archive_file), "--org", "Target")
    assert code == 0, out
    assert "workflows      0 created, 1 already there" in out
    after = {m: await count(target, m, bob.org_id) for m in before}
    assert after == before


async def test_export_import_between_organizations(
    settings: Settings, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    write_keys(settings)
    alice = await signup(client, "alice@example.com", "Acme")
    made = await populate(client, alice)
    bob = await signup(client, "bob@example.com", "Other")
    cli = cli_for(settings)
    out_file = tmp_path / "a.json"
    assert (await in_thread(cli, "export", "--org", "acme", "--out", str(out_file)))[0] == 0
    code, out = await in_thread(cli, "import", str(out_file), "--org", "other")
    assert code == 0, out
    await check_imported(client, bob, made)
    # Alice's organization is untouched, and a second import into it duplicates nothing.
    code, out = await in_thread(cli, "import", str(out_file), "--org", "acme")
    assert code == 0 and " 0 created" in out and "1 created" not in out, out
    assert await count(settings, WorkflowRow, alice.org_id) == 1


async def test_import_refuses_another_format(settings: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something/else@9"}))
    code, out = await in_thread(cli_for(settings), "import", str(bad), "--org", "x")
    assert code == 1 and "turbocat/export@1" in out, out
    assert bearer("x")  # keeps the helper import honest


async def test_a_started_app_hides_its_startup_objects_from_the_collector(
    client: httpx.AsyncClient,
) -> None:
    # modules, mappers, schemas: scanning them made every full collection a ~150 ms stall
    assert gc.get_freeze_count() > 50_000
