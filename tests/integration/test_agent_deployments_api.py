"""Agent deployments: an agent version behind an endpoint, run through a hidden one-step
workflow that names the version by id."""

from __future__ import annotations

import time
import uuid
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import select, update

from tests.integration.conftest import Account, assert_problem, bearer, count_rows, signup
from turbocat.db.engine import Database
from turbocat.db.models import DeploymentRow, ExecutionRow, WorkflowRow
from turbocat.services import metering

SUMMER = {
    # a query over the step's inputs (the invoke input), each item with a deployment variable
    "query": "values",
    "operations": [{"op": "map", "by": "{n: item, region: vars.region}"}],
}
PARAMETERS = {
    "type": "object",
    "properties": {"values": {"type": "array", "items": {"type": "integer"}}},
    "required": ["values"],
}


pytestmark = pytest.mark.usefixtures("key_file")


async def make_agent(client: httpx.AsyncClient, who: Account) -> dict[str, Any]:
    r = await client.post(
        "/api/v1/agents", headers=who.headers,
        json={"name": "summer", "type": "data", "config": SUMMER, "parameters": PARAMETERS},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    return dict(r.json())


async def deploy_agent(
    client: httpx.AsyncClient, who: Account, agent_id: str, *, start: bool = True
) -> dict[str, Any]:
    r = await client.post(
        "/api/v1/deployments", headers=who.headers,
        json={"name": "Summer", "agent_id": agent_id, "environment": "production",
              "environment_vars": {"region": "eu-west"}},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    body = dict(r.json())
    if start:
        started = await client.post(f"/api/v1/deployments/{body['id']}/start", headers=who.headers)
        assert started.status_code == 200, started.text
        assert started.json()["status"] == "running"
    return body


async def wait_ended(client: httpx.AsyncClient, who: Account, execution_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = await client.get(f"/api/v1/executions/{execution_id}", headers=who.headers)
        if got.json()["status"] in ("completed", "failed", "timeout", "cancelled"):
            return dict(got.json())
        await anyio.sleep(0.02)
    raise AssertionError("the execution did not end")


async def test_agent_deployment_runs_its_agent_version_with_vars_and_counts(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    owner = await signup(client, "agent-dep@example.com")
    agent = await make_agent(client, owner)
    dep = await deploy_agent(client, owner, agent["id"])
    key = bearer(dep["api_key"])

    r = await client.post(
        f"/api/v1/deployments/{dep['id']}/invoke", headers=key, json={"input": {"values": [1, 2]}}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    # the agent's own output, its inputs being the invoke input, vars from the deployment
    assert body["status"] == "completed", body
    assert body["output"] == [{"n": 1, "region": "eu-west"}, {"n": 2, "region": "eu-west"}]

    # without waiting: 202 at once, then the execution shows the deployment
    r = await client.post(
        f"/api/v1/d/{dep['slug']}/invoke", headers=key,
        json={"input": {"values": [5]}, "wait": False},
    )  # fmt: skip
    assert r.status_code == 202, r.text
    done = await wait_ended(client, owner, r.json()["execution_id"])
    assert done["status"] == "completed"
    assert done["output_data"] == {"output": [{"n": 5, "region": "eu-west"}]}
    assert done["deployment_id"] == dep["id"] and done["parent_execution_id"] is None

    # bad input is refused by the agent's parameters schema before anything runs
    bad = await client.post(
        f"/api/v1/deployments/{dep['id']}/invoke", headers=key, json={"input": {"values": "x"}}
    )
    assert assert_problem(bad, 422)["errors"][0]["field"] == "body.input.values"
    assert await count_rows(operator_db, ExecutionRow) == 2

    got = (await client.get(f"/api/v1/deployments/{dep['id']}", headers=owner.headers)).json()
    assert got["total_requests"] == 2 and got["total_errors"] == 0

    # the hidden workflow: not listed, not counted, not editable, but its executions are
    listed = (await client.get("/api/v1/workflows", headers=owner.headers)).json()
    assert listed["items"] == []
    async with operator_db.transaction() as session:
        hidden = (await session.execute(select(WorkflowRow))).scalars().one()
        runs = (await session.execute(select(ExecutionRow))).scalars().all()
    assert hidden.kebab_name == f"deployment-{dep['slug']}"
    assert {e.workflow_id for e in runs} == {hidden.id}
    assert {e.deployment_id for e in runs} == {uuid.UUID(dep["id"])}
    patched = await client.patch(
        f"/api/v1/workflows/{hidden.id}", headers=owner.headers, json={"name": "mine now"}
    )
    assert_problem(patched, 409)
    tagged = await client.post(
        "/api/v1/workflows", headers=owner.headers,
        json={"name": "sneaky", "tags": ["turbocat:deployment"],
              "definition": {"steps": [{"key": "a", "type": "agent", "agent": "summer"}]}},
    )  # fmt: skip
    assert assert_problem(tagged, 422)["errors"][0]["field"] == "body.tags"
    # the starter plan's 5 workflows are all the owner's to make; the usage gauge agrees
    definition = {"steps": [{"key": "a", "type": "agent", "agent": "summer"}]}
    for i in range(5):
        r = await client.post(
            "/api/v1/workflows",
            headers=owner.headers,
            json={"name": f"w{i}", "definition": definition},
        )
        assert r.status_code == 201, r.text
    r = await client.post(
        "/api/v1/workflows", headers=owner.headers, json={"name": "w5", "definition": definition}
    )
    assert_problem(r, 403, "quota_exceeded")
    async with operator_db.transaction() as session:
        assert await metering.active_workflows(session, uuid.UUID(owner.org_id)) == 0  # drafts
        await session.execute(update(WorkflowRow).values(status="active"))
        assert await metering.active_workflows(session, uuid.UUID(owner.org_id)) == 5


async def test_an_older_agent_version_keeps_running_after_the_agent_is_edited(
    client: httpx.AsyncClient,
) -> None:
    owner = await signup(client, "agent-pin@example.com")
    agent = await make_agent(client, owner)
    dep = await deploy_agent(client, owner, agent["id"])
    key = bearer(dep["api_key"])
    url = f"/api/v1/deployments/{dep['id']}/invoke"
    first = await client.post(url, headers=key, json={"input": {"values": [2, 3]}})
    assert first.json()["output"] == [{"n": 2, "region": "eu-west"}, {"n": 3, "region": "eu-west"}]

    edited = await client.patch(
        f"/api/v1/agents/{agent['id']}", headers=owner.headers,
        json={"config": {"query": "values", "operations": [{"op": "map", "by": "item * 100"}]}},
    )  # fmt: skip
    assert edited.status_code == 200, edited.text
    assert edited.json()["id"] != agent["id"] and edited.json()["version"] == 2

    again = await client.post(url, headers=key, json={"input": {"values": [2, 3]}})
    assert again.json()["output"] == first.json()["output"], again.text

    # a deployment of the new version runs the new config
    newer = await deploy_agent(client, owner, edited.json()["id"])
    r = await client.post(
        f"/api/v1/deployments/{newer['id']}/invoke", headers=bearer(newer["api_key"]),
        json={"input": {"values": [2, 3]}},
    )  # fmt: skip
    assert r.json()["output"] == [200, 300], r.text


async def test_stopped_maintenance_and_failed_agent_runs(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    owner = await signup(client, "agent-life@example.com")
    agent = await make_agent(client, owner)
    dep = await deploy_agent(client, owner, agent["id"], start=False)
    key = bearer(dep["api_key"])
    url = f"/api/v1/deployments/{dep['id']}"
    body = {"input": {"values": [1]}}
    assert_problem(await client.post(f"{url}/invoke", headers=key, json=body), 409)
    assert await count_rows(operator_db, WorkflowRow) == 0  # made when it starts

    assert (await client.post(f"{url}/start", headers=owner.headers)).status_code == 200
    assert (await client.post(f"{url}/maintenance", headers=owner.headers)).status_code == 200
    r = await client.post(f"{url}/invoke", headers=key, json=body)
    assert assert_problem(r, 503)["code"] == "unavailable" and r.headers["Retry-After"] == "60"
    assert (await client.post(f"{url}/resume", headers=owner.headers)).status_code == 200

    r = await client.post(f"{url}/invoke", headers=key, json={"input": {"values": [1, 2]}})
    assert r.json()["status"] == "completed", r.text
    async with operator_db.transaction() as session:
        row = await session.get(DeploymentRow, uuid.UUID(dep["id"]))
        assert row is not None and row.total_requests == 1 and row.total_errors == 0

    assert (await client.post(f"{url}/stop", headers=owner.headers)).status_code == 200
    assert_problem(await client.post(f"{url}/invoke", headers=key, json=body), 409)
    assert await count_rows(operator_db, ExecutionRow) == 1
    # deleting the deployment deletes its hidden workflow (restarting is no longer possible)
    assert (await client.delete(url, headers=owner.headers)).status_code == 204
    async with operator_db.transaction() as session:
        hidden = (
            (await session.execute(select(WorkflowRow).execution_options(include_deleted=True)))
            .scalars()
            .one()
        )
    assert hidden.deleted_at is not None


async def test_an_agent_deployment_whose_run_fails_counts_an_error(
    client: httpx.AsyncClient,
) -> None:
    owner = await signup(client, "agent-err@example.com")
    r = await client.post(
        "/api/v1/agents", headers=owner.headers,
        json={"name": "counter", "type": "data", "config": {"operations": [{"op": "aggregate"}]}},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    dep = await deploy_agent(client, owner, r.json()["id"])
    r = await client.post(
        f"/api/v1/deployments/{dep['id']}/invoke", headers=bearer(dep["api_key"]),
        json={"input": {"data": "not a list"}},
    )  # fmt: skip
    assert r.status_code == 200 and r.json()["status"] == "failed", r.text
    assert r.json()["error"] and r.json()["output"] is None
    got = (await client.get(f"/api/v1/deployments/{dep['id']}", headers=owner.headers)).json()
    assert got["total_requests"] == 1 and got["total_errors"] == 1


async def test_a_deleted_agent_version_cannot_be_invoked_or_started(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    owner = await signup(client, "agent-gone@example.com")
    agent = await make_agent(client, owner)
    running = await deploy_agent(client, owner, agent["id"])
    stopped = await deploy_agent(client, owner, agent["id"], start=False)
    deleted = await client.delete(f"/api/v1/agents/{agent['id']}", headers=owner.headers)
    assert deleted.status_code == 204, deleted.text

    r = await client.post(
        f"/api/v1/deployments/{running['id']}/invoke", headers=bearer(running["api_key"]),
        json={"input": {"values": [1]}},
    )  # fmt: skip
    assert "deleted" in assert_problem(r, 409)["detail"]
    url = f"/api/v1/deployments/{stopped['id']}"
    assert (
        "agent version was deleted"
        in assert_problem(await client.post(f"{url}/start", headers=owner.headers), 409)["detail"]
    )
    assert (await client.get(url, headers=owner.headers)).json()["status"] == "failed"
    assert await count_rows(operator_db, ExecutionRow) == 0
