"""Agent counters and activity statistics agree with step_runs after a mixed run: successes,
failures, retries, a loop over a saved agent and a child workflow, drained by two workers at
once (on PostgreSQL their updates race)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.integration.conftest import signup
from tests.local_http import LocalServer, local_server
from turbocat.bootstrap import AppContext
from turbocat.config import Settings
from turbocat.db.engine import Database, TenantContext
from turbocat.db.models import (
    ActivityStatisticsRow,
    AgentRow,
    ComponentRow,
    ExecutionRow,
    StepRunRow,
)
from turbocat.domain.enums import StepStatus, StepType
from turbocat.engine.worker import WorkerConfig
from turbocat.services.catalog import seed_catalog

SYSTEM = TenantContext(system=True)
AVG_SLACK_MS = 2
"""The averages are running means rounded at each update; they may drift that far."""


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path / "home",
        database_url=database_url,
        runtimes={"http": {"allow": ["127.0.0.1/32"]}},
    )


@pytest.fixture
def app_context(settings: Settings) -> AppContext:
    settings.engine.embedded_worker = False
    ctx = AppContext.build(settings)
    ctx.clock = lambda: dt.datetime.now(dt.UTC)  # real durations
    return ctx


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with local_server() as s:
        yield s


def inline(key: str, kind: str, config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"key": key, "type": "agent", "component": {"kind": kind, "config": config}, **extra}


async def test_counters_and_statistics_match_step_runs(
    client: httpx.AsyncClient, app_context: AppContext, server: LocalServer, operator_db: Database
) -> None:
    await seed_catalog(operator_db)  # the built-in components (turbocat serve seeds them)
    owner = await signup(client, "stats@example.com")
    h = owner.headers
    r = await client.post(
        "/api/v1/agents",
        headers=h,
        json={"name": "counter", "type": "data", "config": {"query": "length(@)"}},
    )
    assert r.status_code == 201, r.text
    agent_id = r.json()["id"]
    child = {"steps": [inline("inner", "data", {"mapping": {"ok": True}})]}
    r = await client.post("/api/v1/workflows", headers=h, json={"name": "Kid", "definition": child})
    assert r.status_code == 201, r.text
    definition = {
        "steps": [
            inline("fetch", "api", {"url": server.url("/echo")}),
            inline(
                "flaky",
                "api",
                {"url": server.url("/status/503")},
                retry={"count": 2, "delay_ms": 0, "jitter": False},
                on_error="continue",
            ),
            {
                "key": "each",
                "type": "loop",
                "over": "{{ input.items }}",
                "max_concurrency": 2,
                "body": {
                    "key": "measure",
                    "type": "agent",
                    "agent": "counter",
                    "inputs": {"data": "{{ item }}"},
                    "on_error": "continue",
                },
                "on_error": "continue",
            },
            inline("kid", "workflow", {"workflow": "kid"}, depends_on=["fetch"]),
            {
                "key": "route",
                "type": "condition",
                "depends_on": ["kid"],
                "branches": [{"label": "yes", "when": "{{ true }}"}],
            },
        ]
    }
    r = await client.post(
        "/api/v1/workflows", headers=h, json={"name": "M", "definition": definition}
    )
    assert r.status_code == 201, r.text
    workflow_id = r.json()["id"]
    for _ in range(3):
        r = await client.post(
            f"/api/v1/workflows/{workflow_id}/executions",
            headers=h,
            json={"input": {"items": [[1, 2], 5, [3], "abc", 7]}},
        )
        assert r.status_code == 202, r.text
    workers = [app_context.worker(WorkerConfig(worker_id=f"w{i}", concurrency=4)) for i in range(2)]
    await asyncio.gather(*(w.drain(60) for w in workers))

    async with app_context.db.transaction(SYSTEM, readonly=True) as session:
        executions = (await session.execute(select(ExecutionRow))).scalars().all()
        assert {e.status.value for e in executions} == {"completed"}, [
            (e.status, e.error_message) for e in executions
        ]
        runs = (await session.execute(select(StepRunRow))).scalars().all()
        stats = (await session.execute(select(ActivityStatisticsRow))).scalars().all()
        names = dict((await session.execute(select(ComponentRow.id, ComponentRow.name))).all())
        agent = await session.get(AgentRow, uuid.UUID(agent_id))
        assert agent is not None

    # the final outcome of each step run: its last attempt, when it completed or failed
    last: dict[tuple[uuid.UUID, str, str], StepRunRow] = {}
    for run in sorted(runs, key=lambda r: r.attempt):
        last[(run.execution_id, run.scope, run.step_key)] = run
    workflow_of = {e.id: e.workflow_id for e in executions}
    component_of = {"fetch": "api", "flaky": "api", "measure": "data", "kid": "workflow"}
    component_of["inner"] = "data"
    expected: dict[tuple[str, uuid.UUID], list[StepRunRow]] = defaultdict(list)
    for run in last.values():
        if run.step_type == StepType.AGENT and run.status in (
            StepStatus.COMPLETED,
            StepStatus.FAILED,
        ):
            expected[(component_of[run.step_key], workflow_of[run.execution_id])].append(run)
    assert sum(r.attempt for r in last.values() if r.step_key == "flaky") == 9  # retried

    assert any(s.max_duration_ms for s in stats)  # real durations, not all zero
    got = {(names[s.component_id], s.workflow_id): s for s in stats}
    assert set(got) == set(expected)
    for key, finals in expected.items():
        row, durations = got[key], [r.duration_ms or 0 for r in finals]
        ok = sum(r.status == StepStatus.COMPLETED for r in finals)
        assert (row.execution_count, row.success_count, row.failure_count) == (
            len(finals), ok, len(finals) - ok,
        ), key  # fmt: skip
        assert row.success_count + row.failure_count == row.execution_count
        assert (row.min_duration_ms, row.max_duration_ms) == (min(durations), max(durations))
        assert abs(row.avg_duration_ms - sum(durations) / len(durations)) <= AVG_SLACK_MS, key

    measured = [r for r in last.values() if r.step_key == "measure"]
    assert len(measured) == 15 and agent.total_executions == 15
    assert agent.successful_executions == sum(r.status == StepStatus.COMPLETED for r in measured)
    assert agent.failed_executions == 15 - agent.successful_executions == 6  # 5 and 7, 3 times
    mean = sum(r.duration_ms or 0 for r in measured) / 15
    assert abs(agent.avg_execution_time_ms - mean) <= AVG_SLACK_MS

    # through the API: per workflow version, and summed per component
    listed = (await client.get("/api/v1/activity-statistics", headers=h)).json()
    assert len(listed) == len(expected)
    overall = (
        await client.get("/api/v1/activity-statistics", headers=h, params={"overall": True})
    ).json()
    by_name = {row["component_name"]: row for row in overall}
    assert by_name["api"]["execution_count"] == 6 and by_name["api"]["failure_count"] == 3
    assert (
        by_name["data"]["execution_count"] == 15 + 3 and by_name["workflow"]["success_count"] == 3
    )
    only = (
        await client.get(
            "/api/v1/activity-statistics", headers=h, params={"workflow_id": workflow_id}
        )
    ).json()
    assert {row["component_name"] for row in only} == {"api", "data", "workflow"}
    api_id = by_name["api"]["component_id"]
    filtered = (
        await client.get("/api/v1/activity-statistics", headers=h, params={"component_id": api_id})
    ).json()
    assert [(row["component_name"], row["execution_count"]) for row in filtered] == [("api", 6)]
    stranger = await signup(client, "stranger@example.com")
    assert (await client.get("/api/v1/activity-statistics", headers=stranger.headers)).json() == []
    fetched = (await client.get(f"/api/v1/agents/{agent_id}", headers=h)).json()
    assert fetched["total_executions"] == 15 and fetched["failed_executions"] == 6


async def test_a_named_agent_counts_on_the_version_that_ran(
    client: httpx.AsyncClient, app_context: AppContext
) -> None:
    owner = await signup(client, "versions@example.com")
    h = owner.headers
    r = await client.post(
        "/api/v1/agents",
        headers=h,
        json={"name": "sizer", "type": "data", "config": {"query": "length(@)"}},
    )
    v1 = r.json()["id"]
    step = {"key": "size", "type": "agent", "agent": "sizer", "inputs": {"data": [1, 2]}}
    r = await client.post(
        "/api/v1/workflows", headers=h, json={"name": "S", "definition": {"steps": [step]}}
    )
    workflow_id = r.json()["id"]
    worker = app_context.worker(WorkerConfig(worker_id="w-versions"))
    for _ in range(2):
        await client.post(f"/api/v1/workflows/{workflow_id}/executions", headers=h, json={})
    await worker.drain()
    r = await client.patch(  # it has run: the edit makes version 2
        f"/api/v1/agents/{v1}", headers=h, json={"config": {"query": "[0]"}}
    )
    v2 = r.json()["id"]
    assert r.status_code == 200 and v2 != v1, r.text
    await client.post(f"/api/v1/workflows/{workflow_id}/executions", headers=h, json={})
    await worker.drain()
    counts = {}
    for agent in (v1, v2):
        body = (await client.get(f"/api/v1/agents/{agent}", headers=h)).json()
        counts[agent] = (body["total_executions"], body["successful_executions"])
    assert counts == {v1: (2, 2), v2: (1, 1)}
