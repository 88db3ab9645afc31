"""Concurrency limits: extra executions of a workflow wait as pending and start in order."""

from __future__ import annotations

import datetime as dt
import uuid

import httpx

from tests.integration.conftest import assert_problem, signup
from tests.integration.test_engine import data_step
from tests.integration.test_engine_waits import wait_for
from turbocat.bootstrap import AppContext
from turbocat.config import Settings
from turbocat.db.engine import Database, TenantContext
from turbocat.db.models import TaskQueueRow
from turbocat.engine import claims, queues

GATED = {
    "signals": [{"name": "go"}],
    "steps": [
        {"key": "gate", "type": "wait", "signal": {"name": "go"}},
        data_step("done", deps=("gate",), mapping={"n": "{{ input.n }}"}),
    ],
    "outputs": {"n": "{{ steps.done.output.n }}"},
}


async def test_executions_beyond_the_limit_wait_and_start_in_order(
    client: httpx.AsyncClient,
) -> None:
    owner = await signup(client, "limits@example.com")
    wf = (
        await client.post(
            "/api/v1/workflows",
            headers=owner.headers,
            json={"name": "gated", "definition": GATED, "max_concurrent_executions": 2},
        )
    ).json()
    ids = []
    for n in range(5):
        r = await client.post(
            f"/api/v1/workflows/{wf['id']}/executions",
            headers=owner.headers,
            json={"input": {"n": n}},
        )
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])

    async def status(i: int) -> str:
        body = (await client.get(f"/api/v1/executions/{ids[i]}", headers=owner.headers)).json()
        return str(body["status"])

    for i in (0, 1):
        await wait_for(client, owner, ids[i], lambda b: b["status"] == "waiting")
    assert [await status(i) for i in (2, 3, 4)] == ["pending"] * 3
    queued = (await client.get(f"/api/v1/executions/{ids[2]}", headers=owner.headers)).json()
    assert queued["steps"] == [] and queued["started_at"] is None
    # a pending execution cannot be signalled, but it can be cancelled
    assert_problem(
        await client.post(
            f"/api/v1/executions/{ids[3]}/signals/go", headers=owner.headers, json={}
        ),
        409,
    )
    r = await client.post(f"/api/v1/executions/{ids[3]}/cancel", headers=owner.headers)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    # one finishes: the oldest pending one (2) starts, not 4
    r = await client.post(f"/api/v1/executions/{ids[0]}/signals/go", headers=owner.headers, json={})
    assert r.status_code == 200, r.text
    done = await wait_for(client, owner, ids[0], lambda b: b["status"] == "completed")
    assert done["output_data"] == {"n": 0}
    await wait_for(client, owner, ids[2], lambda b: b["status"] == "waiting")
    assert await status(4) == "pending"
    # cancelling a running one admits the next
    await client.post(f"/api/v1/executions/{ids[1]}/cancel", headers=owner.headers)
    await wait_for(client, owner, ids[4], lambda b: b["status"] == "waiting")
    for i in (2, 4):
        await client.post(f"/api/v1/executions/{ids[i]}/signals/go", headers=owner.headers, json={})
        body = await wait_for(client, owner, ids[i], lambda b: b["status"] == "completed")
        assert body["output_data"] == {"n": i}
    counters = (await client.get(f"/api/v1/workflows/{wf['id']}", headers=owner.headers)).json()
    assert counters["total_executions"] == 5
    assert counters["successful_executions"] == 3


async def test_no_limit_runs_everything_at_once(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "nolimit@example.com")
    wf = (
        await client.post(
            "/api/v1/workflows",
            headers=owner.headers,
            json={"name": "open", "definition": GATED, "max_concurrent_executions": 3},
        )
    ).json()
    r = await client.patch(
        f"/api/v1/workflows/{wf['id']}",
        headers=owner.headers,
        json={"max_concurrent_executions": 50},
    )
    assert r.status_code == 200, r.text
    wf = r.json()
    ids = [
        (
            await client.post(
                f"/api/v1/workflows/{wf['id']}/executions",
                headers=owner.headers,
                json={"input": {"n": 1}},
            )
        ).json()["id"]
        for _ in range(6)
    ]
    for execution_id in ids:
        await wait_for(client, owner, execution_id, lambda b: b["status"] == "waiting")


async def add_queue(db: Database, org_id: str | None, name: str, **limits: int) -> None:
    async with db.transaction() as session:
        session.add(
            TaskQueueRow(
                organization_id=uuid.UUID(org_id) if org_id else None,
                name=name,
                is_system_queue=org_id is None,
                **limits,
            )
        )
    queues.forget_names()  # this process looks queue names up again at once


async def test_a_task_queue_bounds_executions_across_workflows(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    owner = await signup(client, "queuelimit@example.com")
    await add_queue(operator_db, owner.org_id, "slow-lane", max_concurrent_workflows=2)
    ids = []
    for name in ("a", "b", "c"):
        wf = (
            await client.post(
                "/api/v1/workflows",
                headers=owner.headers,
                json={"name": name, "definition": GATED, "task_queue": "slow-lane"},
            )
        ).json()
        for n in range(2):
            r = await client.post(
                f"/api/v1/workflows/{wf['id']}/executions",
                headers=owner.headers,
                json={"input": {"n": n}},
            )
            ids.append(r.json()["id"])
    for i in (0, 1):
        await wait_for(client, owner, ids[i], lambda b: b["status"] == "waiting")
    statuses = [
        (await client.get(f"/api/v1/executions/{i}", headers=owner.headers)).json()["status"]
        for i in ids[2:]
    ]
    assert statuses == ["pending"] * 4
    await client.post(f"/api/v1/executions/{ids[1]}/cancel", headers=owner.headers)
    await wait_for(client, owner, ids[2], lambda b: b["status"] == "waiting")  # next in line
    assert (await client.get(f"/api/v1/executions/{ids[3]}", headers=owner.headers)).json()[
        "status"
    ] == "pending"
    # another organization's executions on a queue of the same name are not limited by it
    other = await signup(client, "queuelimit2@example.com", "Other")
    wf = (
        await client.post(
            "/api/v1/workflows",
            headers=other.headers,
            json={"name": "x", "definition": GATED, "task_queue": "slow-lane"},
        )
    ).json()
    for _ in range(3):
        r = await client.post(
            f"/api/v1/workflows/{wf['id']}/executions", headers=other.headers, json={"input": {}}
        )
        await wait_for(client, other, r.json()["id"], lambda b: b["status"] == "waiting")


async def test_a_task_queue_bounds_running_steps(
    settings: Settings, client: httpx.AsyncClient, operator_db: Database, app_context: AppContext
) -> None:
    owner = await signup(client, "activities@example.com")
    await add_queue(operator_db, None, "narrow", max_concurrent_activities=1)
    steps = [{**data_step(f"s{i}", mapping={"i": i}), "task_queue": "narrow"} for i in range(4)]
    wf = (
        await client.post(
            "/api/v1/workflows",
            headers=owner.headers,
            json={"name": "narrow", "definition": {"steps": steps}},
        )
    ).json()
    r = await client.post(
        f"/api/v1/workflows/{wf['id']}/executions", headers=owner.headers, json={}
    )
    assert r.status_code == 202
    lease = dt.timedelta(seconds=30)
    async with app_context.db.transaction(TenantContext(system=True)) as session:
        first = await claims.claim(
            session, worker_id="probe", queues=["narrow"], limit=10, now=app_context.clock(),
            lease=lease,
        )  # fmt: skip
    async with app_context.db.transaction(TenantContext(system=True)) as session:
        second = await claims.claim(
            session, worker_id="probe2", queues=["narrow"], limit=10, now=app_context.clock(),
            lease=lease,
        )  # fmt: skip
    assert len(first) == 1 and second == []
