"""Deployments through the API: lifecycle, endpoint keys, invoke, vars, counters, health."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from tests.integration.conftest import Account, assert_problem, bearer, count_rows, signup
from tests.integration.test_engine import data_step
from turbocat.bootstrap import AppContext
from turbocat.db.engine import Database
from turbocat.db.models import DeploymentRow, ExecutionRow, WorkerRow
from turbocat.domain.enums import WorkerStatus

DEFINITION: dict[str, Any] = {
    "inputs": {
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
    },
    "vars": {"greeting": "hello from the definition", "tone": "plain"},
    "steps": [
        data_step(
            "echo",
            mapping={"n": "{{ input.n }}", "greeting": "{{ vars.greeting }}", "tone": "{{ vars.tone }}"},
        )
    ],
    "outputs": {"n": "{{ steps.echo.output.n }}", "greeting": "{{ steps.echo.output.greeting }}",
                "tone": "{{ steps.echo.output.tone }}"},
}  # fmt: skip
SECRET = "s3cr3t-value-never-shown"


pytestmark = pytest.mark.usefixtures("key_file")


async def deploy(
    client: httpx.AsyncClient, who: Account, *, start: bool = True, **fields: Any
) -> dict[str, Any]:
    wf = await client.post(
        "/api/v1/workflows",
        headers=who.headers,
        json={"name": f"echo {uuid.uuid4().hex[:8]}", "definition": DEFINITION},
    )
    assert wf.status_code == 201, wf.text
    r = await client.post(
        "/api/v1/deployments",
        headers=who.headers,
        json={
            "name": "Echo API", "workflow_id": wf.json()["id"], "environment": "staging",
            "environment_vars": {"greeting": "hello from staging", "token": SECRET}, **fields,
        },
    )  # fmt: skip
    assert r.status_code == 201, r.text
    body = dict(r.json())
    if start:
        started = await client.post(f"/api/v1/deployments/{body['id']}/start", headers=who.headers)
        assert started.status_code == 200, started.text
    return body


async def test_lifecycle_and_invalid_transitions(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    owner = await signup(client, "life@example.com")
    dep = await deploy(client, owner, start=False)
    assert dep["status"] == "stopped" and dep["api_key"].startswith("tcd_")
    assert dep["endpoint_url"].endswith(f"/api/v1/d/{dep['slug']}/invoke")
    assert dep["health_status"] == "unknown" and dep["total_requests"] == 0
    url = f"/api/v1/deployments/{dep['id']}"
    got = (await client.get(url, headers=owner.headers)).json()
    assert "api_key" not in got and "environment_vars" not in got
    assert got["api_key_prefix"] == dep["api_key"][:12]

    for action in ("stop", "resume", "maintenance"):
        problem = assert_problem(await client.post(f"{url}/{action}", headers=owner.headers), 409)
        assert problem["code"] == "invalid_transition"
    assert_problem(await client.post(f"{url}/explode", headers=owner.headers), 422)
    running = (await client.post(f"{url}/start", headers=owner.headers)).json()
    assert running["status"] == "running" and running["deployed_at"]
    assert_problem(await client.post(f"{url}/start", headers=owner.headers), 409)
    assert_problem(await client.delete(url, headers=owner.headers), 409)  # stop it first
    assert (await client.post(f"{url}/maintenance", headers=owner.headers)).json()[
        "status"
    ] == "maintenance"
    key = bearer(dep["api_key"])
    r = await client.post(f"{url}/invoke", headers=key, json={"input": {"n": 1}})
    assert assert_problem(r, 503)["code"] == "unavailable" and r.headers["Retry-After"] == "60"
    assert (await client.post(f"{url}/resume", headers=owner.headers)).json()["status"] == "running"
    assert (await client.post(f"{url}/stop", headers=owner.headers)).json()["status"] == "stopped"
    assert_problem(await client.post(f"{url}/invoke", headers=key, json={"input": {"n": 1}}), 409)
    assert await count_rows(operator_db, ExecutionRow) == 0
    async with operator_db.transaction() as session:
        row = await session.get(DeploymentRow, uuid.UUID(dep["id"]))
        assert row is not None and row.total_requests == 0
        assert (
            row.environment_vars_encrypted and SECRET.encode() not in row.environment_vars_encrypted
        )
    assert (await client.delete(url, headers=owner.headers)).status_code == 204
    assert_problem(await client.get(url, headers=owner.headers), 404)
    r = await client.post(f"/api/v1/d/{dep['slug']}/invoke", headers=key, json={})
    assert_problem(r, 401)  # a deleted deployment's key is gone


async def test_invoke_with_its_key_by_id_and_slug_hands_vars_to_steps(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    owner = await signup(client, "invoke@example.com")
    dep = await deploy(client, owner)
    key = bearer(dep["api_key"])
    r = await client.post(
        f"/api/v1/deployments/{dep['id']}/invoke", headers=key, json={"input": {"n": 3}}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "completed"
    assert body["output"] == {"n": 3, "greeting": "hello from staging", "tone": "plain"}
    by_slug = await client.post(
        f"/api/v1/d/{dep['slug']}/invoke", headers=key, json={"input": {"n": 4}, "wait": False}
    )
    assert by_slug.status_code in (200, 202) and by_slug.json()["execution_id"]
    # an organization credential works too (a login token here)
    r = await client.post(
        f"/api/v1/d/{dep['slug']}/invoke", headers=owner.headers, json={"input": {"n": 5}}
    )
    assert r.status_code == 200 and r.json()["output"]["n"] == 5
    async with operator_db.transaction() as session:
        runs = (await session.execute(select(ExecutionRow))).scalars().all()
        row = await session.get(DeploymentRow, uuid.UUID(dep["id"]))
    assert {str(e.deployment_id) for e in runs} == {dep["id"]} and len(runs) == 3
    assert row is not None and row.total_requests == 3 and row.total_errors == 0

    # bad input, unknown keys, another deployment's key: refused, nothing written
    bad = await client.post(
        f"/api/v1/deployments/{dep['id']}/invoke", headers=key, json={"input": {"n": "x"}}
    )
    assert assert_problem(bad, 422)["errors"][0]["field"] == "body.input.n"
    missing = await client.post(f"/api/v1/deployments/{dep['id']}/invoke", headers=key, json={})
    assert_problem(missing, 422)
    other = await deploy(client, owner)
    wrong = await client.post(
        f"/api/v1/deployments/{dep['id']}/invoke", headers=bearer(other["api_key"]), json={}
    )
    assert_problem(wrong, 401)
    forged = "tcd_" + other["api_key"][4:-1] + ("A" if other["api_key"][-1] != "A" else "B")
    assert_problem(
        await client.post(f"/api/v1/d/{dep['slug']}/invoke", headers=bearer(forged), json={}), 401
    )
    stranger = await signup(client, "stranger@example.com", organization="Elsewhere")
    r = await client.post(
        f"/api/v1/deployments/{dep['id']}/invoke", headers=stranger.headers, json={}
    )
    assert_problem(r, 404)
    assert await count_rows(operator_db, ExecutionRow) == 3
    async with operator_db.transaction() as session:
        row = await session.get(DeploymentRow, uuid.UUID(dep["id"]))
    assert row is not None and row.total_requests == 3


async def test_concurrent_invokes_keep_exact_counters(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    owner = await signup(client, "load@example.com")
    dep = await deploy(client, owner)
    key = bearer(dep["api_key"])
    url = f"/api/v1/deployments/{dep['id']}/invoke"
    calls = 24

    took: list[float] = []

    async def call(n: int) -> httpx.Response:
        start = time.monotonic()
        r = await client.post(url, headers=key, json={"input": {"n": n}, "wait": n % 2 == 0})
        took.append((time.monotonic() - start) * 1000)
        return r

    responses = await asyncio.gather(*(call(n) for n in range(calls)))
    assert all(r.status_code in (200, 202) for r in responses), [r.text for r in responses]
    got = (await client.get(f"/api/v1/deployments/{dep['id']}", headers=owner.headers)).json()
    assert got["total_requests"] == calls and got["total_errors"] == 0
    # the server's mean response time lies within what the callers saw
    assert 0 <= got["avg_response_time_ms"] <= max(took) + 1
    async with operator_db.transaction() as session:
        ids = (await session.execute(select(ExecutionRow.id))).scalars().all()
    assert len(ids) == calls


async def test_health_check_from_workers_and_recent_runs(
    client: httpx.AsyncClient, app_context: AppContext, operator_db: Database
) -> None:
    owner = await signup(client, "health@example.com")
    dep = await deploy(client, owner)
    r = await client.post(
        f"/api/v1/deployments/{dep['id']}/invoke", headers=bearer(dep["api_key"]),
        json={"input": {"n": 1}},
    )  # fmt: skip
    assert r.json()["status"] == "completed"
    scheduler = app_context.scheduler()
    now = app_context.clock()
    assert await scheduler.check_health(now) == 1
    got = (await client.get(f"/api/v1/deployments/{dep['id']}", headers=owner.headers)).json()
    assert got["health_status"] == "healthy" and got["last_health_check_at"]

    async with operator_db.transaction() as session:  # the run failed after all
        await session.execute(update(ExecutionRow).values(status="failed"))
    await scheduler.check_health(now)
    got = (await client.get(f"/api/v1/deployments/{dep['id']}", headers=owner.headers)).json()
    assert got["health_status"] == "unhealthy"

    async with operator_db.transaction() as session:  # healthy runs again, but no worker
        await session.execute(update(ExecutionRow).values(status="completed"))
        await session.execute(update(WorkerRow).values(status=WorkerStatus.STOPPED))
    await scheduler.check_health(now)
    got = (await client.get(f"/api/v1/deployments/{dep['id']}", headers=owner.headers)).json()
    assert got["health_status"] == "unhealthy"


@pytest.mark.parametrize("field", ["workflow_id", "agent_id"])
async def test_create_needs_exactly_one_target(
    client: httpx.AsyncClient, operator_db: Database, field: str
) -> None:
    owner = await signup(client, f"{field}@example.com")
    r = await client.post("/api/v1/deployments", headers=owner.headers, json={"name": "none"})
    assert assert_problem(r, 422)["errors"][0]["field"] == "body.workflow_id"
    r = await client.post(
        "/api/v1/deployments", headers=owner.headers,
        json={"name": "x", field: "01a23132-69e0-71e2-b971-269cbecf32ed"},
    )  # fmt: skip
    assert_problem(r, 404)
    assert await count_rows(operator_db, DeploymentRow) == 0
