"""The workflow kind: child executions through the API, driven by a worker we drain."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.integration.conftest import Account, Clock, signup
from tests.local_http import LocalServer, local_server
from turbocat.bootstrap import AppContext
from turbocat.config import Settings
from turbocat.db.engine import TenantContext
from turbocat.db.models import ExecutionRow
from turbocat.domain.enums import ParentClosePolicy
from turbocat.engine import claims, store
from turbocat.engine.agents.workflow import ChildRequest
from turbocat.engine.runner import StepOutcome
from turbocat.engine.worker import Worker, WorkerConfig

SYSTEM = TenantContext(system=True)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path / "home",
        database_url=database_url,
        runtimes={"http": {"allow": ["127.0.0.1/32"]}, "workflow": {"max_depth": 3}},
    )


@pytest.fixture
def app_context(settings: Settings, clock: Clock) -> AppContext:
    settings.engine.embedded_worker = False  # the tests drain a worker themselves
    ctx = AppContext.build(settings)
    ctx.clock = clock
    return ctx


@pytest.fixture
def worker(app_context: AppContext) -> Worker:
    return app_context.worker(WorkerConfig(worker_id="w-children", concurrency=4))


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with local_server() as s:
        yield s


def child_step(key: str, **config: Any) -> dict[str, Any]:
    return {"key": key, "type": "agent", "component": {"kind": "workflow", "config": config}}


async def create(client: httpx.AsyncClient, who: Account, name: str, definition: dict) -> dict:
    r = await client.post(
        "/api/v1/workflows", headers=who.headers, json={"name": name, "definition": definition}
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def start(client: httpx.AsyncClient, who: Account, workflow_id: str, payload: Any = None):
    r = await client.post(
        f"/api/v1/workflows/{workflow_id}/executions",
        headers=who.headers,
        json={"input": payload or {}},
    )
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


async def get(client: httpx.AsyncClient, who: Account, execution_id: str) -> dict:
    r = await client.get(f"/api/v1/executions/{execution_id}", headers=who.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def children_of(client: httpx.AsyncClient, who: Account, parent: str) -> list[dict]:
    r = await client.get(
        "/api/v1/executions", headers=who.headers, params={"parent_execution_id": parent}
    )
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


DOUBLER = {
    "inputs": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
    "steps": [
        {
            "key": "double",
            "type": "agent",
            "component": {"kind": "data", "config": {"mapping": {"n": "{{ input.n * 2 }}"}}},
        }
    ],
    "outputs": {"doubled": "{{ steps.double.output.n }}"},
}

HOLD = {  # a child that runs until it gets signal go
    "signals": [{"name": "go"}],
    "steps": [{"key": "hold", "type": "wait", "signal": {"name": "go"}}],
    "outputs": {"got": "{{ steps.hold.output }}"},
}


async def test_a_child_by_kebab_name_returns_its_output(
    client: httpx.AsyncClient, worker: Worker
) -> None:
    owner = await signup(client, "kids@example.com")
    await create(client, owner, "Doubler", DOUBLER)
    parent = await create(
        client,
        owner,
        "parent",
        {
            "steps": [
                {**child_step("call", workflow="doubler"), "inputs": {"n": "{{ input.x }}"}},
                {
                    "key": "after",
                    "type": "agent",
                    "depends_on": ["call"],
                    "component": {
                        "kind": "data",
                        "config": {"mapping": {"plus": "{{ steps.call.output.doubled + 1 }}"}},
                    },
                },
            ],
            "outputs": {"result": "{{ steps.after.output.plus }}"},
        },
    )
    execution_id = await start(client, owner, parent["id"], {"x": 21})
    await worker.drain()
    done = await get(client, owner, execution_id)
    assert done["status"] == "completed", done
    assert done["output_data"] == {"result": 43}
    call = next(s for s in done["steps"] if s["step_key"] == "call")
    assert call["output"] == {"doubled": 42} and call["input"] == {"n": 21}
    (child,) = await children_of(client, owner, execution_id)
    assert child["parent_execution_id"] == execution_id and child["parent_step_key"] == "call"
    assert child["status"] == "completed" and child["input_data"] == {"n": 21}
    assert child["trigger_type"] == done["trigger_type"]
    logs = await client.get(f"/api/v1/executions/{execution_id}/logs", headers=owner.headers)
    assert any(f"waits for child execution {child['id']}" in x["message"] for x in logs.json())


async def test_a_saved_workflow_agent_by_id_runs_a_pinned_or_the_newest_version(
    client: httpx.AsyncClient, worker: Worker
) -> None:
    owner = await signup(client, "versions@example.com")
    v1 = await create(client, owner, "Versioned", DOUBLER)
    await start(client, owner, v1["id"], {"n": 1})  # it has run: an edit makes version 2
    await worker.drain()
    tripler = {
        **DOUBLER,
        "steps": [
            {
                **DOUBLER["steps"][0],
                "component": {"kind": "data", "config": {"mapping": {"n": "{{ input.n * 3 }}"}}},
            }
        ],
    }
    r = await client.patch(
        f"/api/v1/workflows/{v1['id']}", headers=owner.headers, json={"definition": tripler}
    )
    assert r.status_code == 200 and r.json()["version"] == 2, r.text
    agents = {}
    for name, config in (
        ("pinned", {"workflow": v1["id"], "version": 1}),
        ("newest", {"workflow": v1["id"]}),
    ):
        r = await client.post(
            "/api/v1/agents",
            headers=owner.headers,
            json={"name": name, "type": "workflow", "config": config},
        )
        assert r.status_code == 201, r.text
        agents[name] = r.json()
    parent = await create(
        client,
        owner,
        "caller",
        {
            "steps": [
                {"key": "one", "type": "agent", "agent": "pinned", "inputs": {"n": 5}},
                {"key": "two", "type": "agent", "agent": "newest", "inputs": {"n": 5}},
            ],
            "outputs": {"one": "{{ steps.one.output }}", "two": "{{ steps.two.output }}"},
        },
    )
    execution_id = await start(client, owner, parent["id"])
    await worker.drain()
    done = await get(client, owner, execution_id)
    assert done["output_data"] == {"one": {"doubled": 10}, "two": {"doubled": 15}}, done
    kids = {c["parent_step_key"]: c for c in await children_of(client, owner, execution_id)}
    assert kids["one"]["workflow_id"] == v1["id"] and kids["two"]["workflow_id"] != v1["id"]
    pinned = await client.get(f"/api/v1/agents/{agents['pinned']['id']}", headers=owner.headers)
    assert pinned.json()["total_executions"] == 1 and pinned.json()["successful_executions"] == 1


async def test_a_failing_child_fails_the_step_and_continue_shows_the_error(
    client: httpx.AsyncClient, worker: Worker
) -> None:
    owner = await signup(client, "failing@example.com")
    await create(client, owner, "Doubler", DOUBLER)
    parent = await create(
        client,
        owner,
        "tolerant",
        {
            "steps": [
                # input.n missing: the child's own input schema refuses to start
                {**child_step("bad_input", workflow="doubler"), "on_error": "continue"},
                # n is a string: the child starts and fails in its step
                {
                    **child_step("fails", workflow="doubler"),
                    "inputs": {"n": 1},
                    "on_error": "continue",
                },
                {**child_step("missing", workflow="no-such-flow"), "on_error": "continue"},
            ],
            "outputs": {
                "errors": "{{ [steps.bad_input.error.type, steps.missing.error.type] }}",
            },
        },
    )
    # make the second child fail: a pinned version that does not exist is refused too
    execution_id = await start(client, owner, parent["id"])
    await worker.drain()
    done = await get(client, owner, execution_id)
    assert done["status"] == "completed" and done["result"] == "partial", done
    steps = {s["step_key"]: s for s in done["steps"]}
    assert steps["bad_input"]["status"] == "failed"
    assert steps["bad_input"]["error"]["type"] == "child_not_started"
    assert "inputs" in steps["bad_input"]["error"]["message"]
    assert steps["missing"]["error"]["type"] == "child_not_started"
    assert "no-such-flow" in steps["missing"]["error"]["message"]
    assert steps["fails"]["status"] == "completed"  # the doubler doubled 1
    assert done["output_data"] == {"errors": ["child_not_started", "child_not_started"]}


async def test_a_child_that_fails_while_running_fails_the_waiting_step(
    client: httpx.AsyncClient, worker: Worker
) -> None:
    owner = await signup(client, "childfail@example.com")
    await create(
        client,
        owner,
        "Breaks",
        {
            "steps": [
                {
                    "key": "boom",
                    "type": "agent",
                    "component": {"kind": "data", "config": {"query": "length(@)"}},
                    "inputs": {"data": 5},
                }
            ]
        },
    )
    parent = await create(
        client,
        owner,
        "p",
        {
            "steps": [
                {**child_step("call", workflow="breaks"), "on_error": "continue"},
                {
                    "key": "report",
                    "type": "agent",
                    "depends_on": ["call"],
                    "component": {
                        "kind": "data",
                        "config": {"mapping": {"why": "{{ steps.call.error.type }}"}},
                    },
                },
            ],
            "outputs": {"why": "{{ steps.report.output.why }}"},
        },
    )
    execution_id = await start(client, owner, parent["id"])
    await worker.drain()
    done = await get(client, owner, execution_id)
    (child,) = await children_of(client, owner, execution_id)
    assert child["status"] == "failed", child
    call = next(s for s in done["steps"] if s["step_key"] == "call")
    assert call["status"] == "failed" and call["error"]["type"] == "child_failed"
    assert call["error"]["details"]["execution_id"] == child["id"]
    assert done["output_data"] == {"why": "child_failed"}


async def test_fire_and_forget_completes_at_once_with_the_child_id(
    client: httpx.AsyncClient, worker: Worker
) -> None:
    owner = await signup(client, "forget@example.com")
    await create(client, owner, "Hold", HOLD)
    parent = await create(
        client,
        owner,
        "launcher",
        {
            "steps": [child_step("go", workflow="hold", wait=False)],
            "outputs": {"child": "{{ steps.go.output.execution_id }}"},
        },
    )
    execution_id = await start(client, owner, parent["id"])
    await worker.drain()
    done = await get(client, owner, execution_id)
    assert done["status"] == "completed", done
    child_id = done["output_data"]["child"]
    child = await get(client, owner, child_id)
    # a completed parent leaves its fire and forget child running
    assert child["status"] == "waiting" and child["parent_execution_id"] == execution_id


@pytest.mark.parametrize("policy", list(ParentClosePolicy))
async def test_cancelling_the_parent_follows_the_close_policy(
    client: httpx.AsyncClient, worker: Worker, policy: ParentClosePolicy
) -> None:
    owner = await signup(client, f"close-{policy.value}@example.com")
    await create(client, owner, "Hold", HOLD)
    parent = await create(
        client,
        owner,
        "waiter",
        {"steps": [child_step("call", workflow="hold", parent_close_policy=policy.value)]},
    )
    execution_id = await start(client, owner, parent["id"])
    await worker.drain()
    (child,) = await children_of(client, owner, execution_id)
    assert child["status"] == "waiting"
    r = await client.post(f"/api/v1/executions/{execution_id}/cancel", headers=owner.headers)
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    child = await get(client, owner, child["id"])
    if policy == ParentClosePolicy.ABANDON:
        assert child["status"] == "waiting"
        r = await client.post(
            f"/api/v1/executions/{child['id']}/signals/go", headers=owner.headers, json={}
        )
        assert r.status_code == 200, r.text
        await worker.drain()
        assert (await get(client, owner, child["id"]))["status"] == "completed"
    else:  # nothing runs in the child: a cancel request ends it at once too
        assert child["status"] == "cancelled", child
        assert execution_id in child["error_message"] and policy.value in child["error_message"]


async def test_request_cancel_lets_the_running_step_finish(
    client: httpx.AsyncClient, app_context: AppContext, worker: Worker, server: LocalServer
) -> None:
    owner = await signup(client, "graceful@example.com")
    await create(
        client,
        owner,
        "Slow",
        {
            "steps": [
                {
                    "key": "call",
                    "type": "agent",
                    "component": {"kind": "api", "config": {"url": server.url("/slow")}},
                },
                {
                    "key": "next",
                    "type": "agent",
                    "depends_on": ["call"],
                    "component": {"kind": "data", "config": {"mapping": {"x": 1}}},
                },
            ]
        },
    )
    parent = await create(
        client,
        owner,
        "graceful",
        {"steps": [child_step("call", workflow="slow", parent_close_policy="request_cancel")]},
    )
    execution_id = await start(client, owner, parent["id"])
    draining = asyncio.create_task(worker.drain())
    async with asyncio.timeout(10):
        while not server.requests:
            await asyncio.sleep(0.02)
    r = await client.post(f"/api/v1/executions/{execution_id}/cancel", headers=owner.headers)
    assert r.status_code == 200, r.text
    (child,) = await children_of(client, owner, execution_id)
    assert child["status"] == "running"  # its step still runs
    server.release.set()
    await draining
    child = await get(client, owner, child["id"])
    steps = {s["step_key"]: s["status"] for s in child["steps"]}
    assert child["status"] == "cancelled" and steps == {"call": "completed", "next": "cancelled"}


async def test_a_parent_timeout_terminates_its_child(
    client: httpx.AsyncClient, worker: Worker, clock: Clock
) -> None:
    owner = await signup(client, "ptimeout@example.com")
    await create(client, owner, "Hold", HOLD)
    parent = await create(
        client,
        owner,
        "timed",
        {"timeout_seconds": 5, "steps": [child_step("call", workflow="hold")]},
    )
    execution_id = await start(client, owner, parent["id"])
    await worker.drain()
    clock.advance(seconds=6)
    await worker.maintain(clock.now)
    done = await get(client, owner, execution_id)
    assert done["status"] == "timeout", done
    (child,) = await children_of(client, owner, execution_id)
    assert child["status"] == "cancelled" and "terminate" in child["error_message"]


async def test_a_step_timeout_gives_up_on_the_child(
    client: httpx.AsyncClient, worker: Worker, clock: Clock
) -> None:
    owner = await signup(client, "steptimeout@example.com")
    await create(client, owner, "Hold", HOLD)
    parent = await create(
        client,
        owner,
        "impatient",
        {"steps": [{**child_step("call", workflow="hold"), "timeout_ms": 2000}]},
    )
    execution_id = await start(client, owner, parent["id"])
    await worker.drain()
    clock.advance(seconds=3)
    await worker.expire_signal_waits(clock.now)
    done = await get(client, owner, execution_id)
    assert done["status"] == "failed" and "did not end within 2000 ms" in done["error_message"]
    (child,) = await children_of(client, owner, execution_id)
    assert child["status"] == "cancelled"


async def test_recording_the_same_attempt_twice_starts_one_child(
    client: httpx.AsyncClient, app_context: AppContext, clock: Clock
) -> None:
    owner = await signup(client, "twice@example.com")
    await create(client, owner, "Hold", HOLD)
    parent = await create(client, owner, "once", {"steps": [child_step("call", workflow="hold")]})
    execution_id = await start(client, owner, parent["id"])
    request = ChildRequest("hold", None, True, ParentClosePolicy.TERMINATE, {}, 16)
    plan = None
    for _ in range(2):  # the second time as if the step ran again after a lost commit
        async with app_context.db.transaction(SYSTEM) as session:
            if plan is None:
                (run,) = await claims.claim(
                    session, worker_id="w", queues=["default"], limit=1, now=clock.now,
                    lease=dt.timedelta(seconds=30), execution_id=uuid.UUID(execution_id),
                )  # fmt: skip
            else:
                run = (await session.execute(select(store.StepRunRow).where(
                    store.StepRunRow.execution_id == uuid.UUID(execution_id)))).scalar_one()  # fmt: skip
                run.status = store.S.RUNNING  # rescued and run again with the same key
            execution = await session.get(ExecutionRow, run.execution_id)
            assert execution is not None
            plan = await app_context.plans.load(
                session, await session.get(store.WorkflowRow, execution.workflow_id)
            )
            epoch = run.lease_epoch
        async with app_context.db.transaction(SYSTEM) as session:
            recorded = await store.record_outcome(
                session, run_id=run.id, epoch=epoch, outcome=StepOutcome(child=request),
                plan=plan, now=clock.now, rand=0.5,
            )  # fmt: skip
            assert not recorded.lost_lease
    kids = await children_of(client, owner, execution_id)
    assert len(kids) == 1
    done = await get(client, owner, execution_id)
    assert done["steps"][0]["status"] == "waiting"
    assert done["steps"][0]["output"] == {"execution_id": kids[0]["id"]}


async def test_a_workflow_that_starts_itself_stops_at_the_depth_limit(
    client: httpx.AsyncClient, worker: Worker
) -> None:
    owner = await signup(client, "depth@example.com")
    looping = await create(
        client, owner, "Ouroboros", {"steps": [child_step("again", workflow="ouroboros")]}
    )
    execution_id = await start(client, owner, looping["id"])
    await worker.drain()
    done = await get(client, owner, execution_id)
    assert done["status"] == "failed", done
    async with asyncio.timeout(5):
        chain, current = [], done
        while True:
            kids = await children_of(client, owner, current["id"])
            if not kids:
                break
            current = await get(client, owner, kids[0]["id"])
            chain.append(current)
    assert len(chain) == 3  # max_depth 3: the third child's step is refused
    deepest = chain[-1]["steps"][0]
    assert deepest["error"]["type"] == "child_depth_exceeded"
    assert "3 levels" in deepest["error"]["message"]


async def test_a_step_may_name_a_declared_child_with_its_close_policy(
    client: httpx.AsyncClient, worker: Worker
) -> None:
    owner = await signup(client, "declared@example.com")
    await create(client, owner, "Hold", HOLD)
    parent = await create(
        client,
        owner,
        "declares",
        {
            "child_workflows": [
                {"name": "holder", "workflow": "hold", "parent_close_policy": "abandon"}
            ],
            "steps": [child_step("call", workflow="holder")],
        },
    )
    execution_id = await start(client, owner, parent["id"])
    await worker.drain()
    (child,) = await children_of(client, owner, execution_id)
    await client.post(f"/api/v1/executions/{execution_id}/cancel", headers=owner.headers)
    assert (await get(client, owner, child["id"]))["status"] == "waiting"  # abandoned


async def test_a_failing_parent_terminates_its_fire_and_forget_child(
    client: httpx.AsyncClient, worker: Worker
) -> None:
    owner = await signup(client, "pfail@example.com")
    await create(client, owner, "Hold", HOLD)
    parent = await create(
        client,
        owner,
        "fails",
        {
            "steps": [
                child_step("go", workflow="hold", wait=False),
                {
                    "key": "boom",
                    "type": "agent",
                    "depends_on": ["go"],
                    "component": {"kind": "data", "config": {"query": "length(@)"}},
                    "inputs": {"data": 5},
                },
            ]
        },
    )
    execution_id = await start(client, owner, parent["id"])
    await worker.drain()
    assert (await get(client, owner, execution_id))["status"] == "failed"
    (child,) = await children_of(client, owner, execution_id)
    assert child["status"] == "cancelled" and "terminate" in child["error_message"]
