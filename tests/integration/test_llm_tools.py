"""Workflows as llm tools (durable child executions) and the llm tool loop's checkpoint, on both
databases, against the fake provider at the wire and a worker the tests drive themselves.

A "crash" here stops the worker's step task mid-request (no outcome is recorded, its lease is
left to expire) and a second worker rescues the step once the clock passes the lease; the
real-process variant (SIGKILL) is in tests/e2e/test_llm_crash.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.fakes.llm_server import FakeLLM, Script, running
from tests.integration.conftest import Account, Clock, signup
from tests.integration.test_engine_children import (
    DOUBLER,
    HOLD,
    children_of,
    create,
    get,
    start,
)
from tests.local_http import LocalServer, local_server
from turbocat.bootstrap import AppContext
from turbocat.config import (
    EngineSettings,
    HttpRuntimeSettings,
    LlmRuntimeSettings,
    RuntimeSettings,
    Settings,
)
from turbocat.db.engine import Database
from turbocat.db.models import StepRunRow, UsageRecordRow
from turbocat.domain.enums import UsageMetric
from turbocat.engine.worker import Worker, WorkerConfig

TOKEN_ROWS = select(UsageRecordRow).where(UsageRecordRow.metric == UsageMetric.AI_TOKENS_USED)

pytestmark = pytest.mark.usefixtures("key_file")


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path / "home", database_url=database_url,
        runtimes=RuntimeSettings(llm=LlmRuntimeSettings(allow=["127.0.0.1/32"]),
                                 http=HttpRuntimeSettings(allow=["127.0.0.1/32"])),
        engine=EngineSettings(poll_seconds=0.05, embedded_worker=False),
    )  # fmt: skip


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    with running() as server:
        yield server


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with local_server() as s:
        yield s


def new_worker(app_context: AppContext, name: str) -> Worker:
    return app_context.worker(WorkerConfig(worker_id=name, concurrency=4, lease_seconds=30))


async def agent(client: httpx.AsyncClient, who: Account, body: dict[str, Any]) -> str:
    r = await client.post("/api/v1/agents", headers=who.headers, json={"status": "active"} | body)
    assert r.status_code == 201, r.text
    return str(r.json()["name"])


async def llm_agent(
    client: httpx.AsyncClient,
    who: Account,
    fake: FakeLLM,
    tools: list[dict[str, Any]],
    **extra: Any,
) -> str:
    return await agent(client, who, {
        "name": f"planner-{uuid.uuid4().hex[:6]}", "type": "llm",
        "config": {"provider": "openai", "model": "m-1", "base_url": fake.openai_url,
                   "system_prompt": "You plan.", "tools": tools} | extra,
    })  # fmt: skip


async def llm_workflow(client: httpx.AsyncClient, who: Account, name: str, agent_name: str) -> str:
    wf = await create(client, who, name, {
        "steps": [{"key": "ask", "type": "agent", "agent": agent_name,
                   "inputs": {"task": "{{ input.task }}"}}],
        "outputs": {"answer": "{{ steps.ask.output.content }}"},
    })  # fmt: skip
    return str(wf["id"])


def step_of(execution: dict[str, Any], key: str = "ask") -> dict[str, Any]:
    return next(s for s in execution["steps"] if s["step_key"] == key)


async def tokens_metered(db: Database) -> int:
    async with db.transaction() as session:
        return sum(int(r.quantity) for r in (await session.execute(TOKEN_ROWS)).scalars())


async def test_a_workflow_tool_runs_as_a_child_while_the_step_waits(
    client: httpx.AsyncClient, app_context: AppContext, fake: FakeLLM, operator_db: Database
) -> None:
    owner = await signup(client, "wf-tool@example.com")
    await create(client, owner, "Hold", HOLD)
    planner = await llm_agent(client, owner, fake, [{"type": "workflow", "ref": "hold"}])
    parent = await llm_workflow(client, owner, "plans", planner)
    fake.tool("hold", {"why": "approval"}, call_id="call_w", usage=(100, 20))
    fake.add(Script(text="Approved by the hold.", usage=(150, 30)))
    worker = new_worker(app_context, "w-tools")

    execution_id = await start(client, owner, parent, {"task": "ship it"})
    await worker.drain()
    (child,) = await children_of(client, owner, execution_id)
    assert child["parent_execution_id"] == execution_id and child["parent_step_key"] == "ask"
    assert child["status"] == "waiting" and child["input_data"] == {"why": "approval"}
    waiting = await get(client, owner, execution_id)
    ask = step_of(waiting)
    assert ask["status"] == "waiting", ask  # no worker slot is held while the child runs
    assert ask["output"]["execution_id"] == child["id"]
    assert ask["output"]["llm_checkpoint"]["pending"][0]["id"] == "call_w"
    assert len(fake.requests) == 1
    assert fake.bodies[0]["tools"][0]["function"]["name"] == "hold"
    assert await tokens_metered(operator_db) == 120  # the first call's tokens, with the wait

    r = await client.post(
        f"/api/v1/executions/{child['id']}/signals/go",
        headers=owner.headers,
        json={"payload": {"ok": 1}},
    )
    assert r.status_code == 200, r.text
    await worker.drain()
    done = await get(client, owner, execution_id)
    assert done["status"] == "completed", done
    assert done["output_data"] == {"answer": "Approved by the hold."}
    output = step_of(done)["output"]
    assert output["tool_calls"] == [{
        "id": "call_w", "name": "hold", "arguments": {"why": "approval"},
        "execution_id": child["id"], "output": {"got": {"ok": 1}},
    }]  # fmt: skip
    assert output["usage"] == {"prompt": 250, "completion": 50, "total": 300, "calls": 2}
    assert output["iterations"] == 2
    second = fake.bodies[1]["messages"]
    assert second[:3] == fake.bodies[0]["messages"] + second[2:3]  # the same conversation
    assert second[-1] == {"role": "tool", "tool_call_id": "call_w",
                          "content": '{"got": {"ok": 1}}'}  # fmt: skip
    assert await tokens_metered(operator_db) == 300
    assert (await get(client, owner, child["id"]))["status"] == "completed"


async def test_a_failing_or_vanished_workflow_tool_is_an_error_the_model_reads(
    client: httpx.AsyncClient, app_context: AppContext, fake: FakeLLM
) -> None:
    owner = await signup(client, "wf-tool-fail@example.com")
    await create(client, owner, "Breaks", {"steps": [{
        "key": "boom", "type": "agent", "inputs": {"data": 5},
        "component": {"kind": "data", "config": {"query": "length(@)"}},
    }]})  # fmt: skip
    gone = await create(client, owner, "Gone", DOUBLER)
    planner = await llm_agent(client, owner, fake, [
        {"type": "workflow", "ref": "breaks"}, {"type": "workflow", "ref": "gone"},
    ])  # fmt: skip
    parent = await llm_workflow(client, owner, "tries", planner)
    # the first reply is held until the test has deleted workflow gone
    fake.add(Script(tool_calls=[("c1", "gone", {"n": 2}), ("c2", "breaks", {})], delay=30))
    fake.text("Both tools failed; giving up politely.")
    worker = new_worker(app_context, "w-fail")

    execution_id = await start(client, owner, parent, {"task": "x"})
    draining = asyncio.create_task(worker.drain())
    async with asyncio.timeout(10):
        while not fake.requests:
            await asyncio.sleep(0.02)
    r = await client.delete(f"/api/v1/workflows/{gone['id']}", headers=owner.headers)
    assert r.status_code == 204, r.text
    fake.release.set()
    await draining
    done = await get(client, owner, execution_id)
    assert done["status"] == "completed", step_of(done)["error"]
    runs = step_of(done)["output"]["tool_calls"]
    (child,) = await children_of(client, owner, execution_id)
    assert child["status"] == "failed"
    assert runs[0]["error"].startswith("child_not_started: workflow 'gone'")  # never started
    assert "execution_id" not in runs[0]
    assert runs[1]["execution_id"] == child["id"]
    assert runs[1]["error"].startswith(f"child_failed: child execution {child['id']} failed")
    tool_messages = [m for m in fake.bodies[1]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == ["c1", "c2"]
    assert all('"error"' in m["content"] for m in tool_messages)


async def test_cancelling_the_parent_terminates_the_workflow_tool(
    client: httpx.AsyncClient, app_context: AppContext, fake: FakeLLM
) -> None:
    owner = await signup(client, "wf-tool-cancel@example.com")
    await create(client, owner, "Hold", HOLD)
    planner = await llm_agent(client, owner, fake, [{"type": "workflow", "ref": "hold"}])
    parent = await llm_workflow(client, owner, "cancelled", planner)
    fake.tool("hold", {})
    execution_id = await start(client, owner, parent, {"task": "x"})
    await new_worker(app_context, "w-cancel").drain()
    (child,) = await children_of(client, owner, execution_id)
    assert child["status"] == "waiting"
    r = await client.post(f"/api/v1/executions/{execution_id}/cancel", headers=owner.headers)
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    child = await get(client, owner, child["id"])
    assert child["status"] == "cancelled" and "terminate" in child["error_message"]
    assert step_of(await get(client, owner, execution_id))["status"] == "cancelled"
    assert len(fake.requests) == 1


async def crash_mid_loop(
    client: httpx.AsyncClient,
    app_context: AppContext,
    clock: Clock,
    fake: FakeLLM,
    server: LocalServer,
    email: str,
    then: Script,
    **config: Any,
) -> tuple[Account, dict[str, Any]]:
    """An llm step calls an api tool (a POST to ``server``), then its worker dies while the
    provider holds the next reply; another worker rescues the step after its lease."""
    owner = await signup(client, email)
    notify = await agent(client, owner, {
        "name": "notify", "type": "api", "description": "Tells the team",
        "config": {"method": "POST", "url": server.url("/echo"), "body": "{{ inputs }}"},
    })  # fmt: skip
    planner = await llm_agent(client, owner, fake, [{"type": "agent", "ref": notify}], **config)
    parent = await llm_workflow(client, owner, "crashy", planner)
    fake.tool("notify", {"msg": "hi"}, call_id="call_n", usage=(100, 20))
    fake.add(Script(text="never delivered", delay=60))  # held while the worker dies
    fake.add(then)  # the rescuer's reply
    first = new_worker(app_context, "w-doomed")
    execution_id = await start(client, owner, parent, {"task": "tell them"})
    draining = asyncio.create_task(first.drain())
    async with asyncio.timeout(10):
        while len(fake.requests) < 2:
            await asyncio.sleep(0.02)
            if draining.done():
                raise AssertionError(step_of(await get(client, owner, execution_id)))
    assert len(server.requests) == 1
    running_step = step_of(await get(client, owner, execution_id))
    assert running_step["status"] == "running"
    saved = running_step["output"]["llm_checkpoint"]
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant", "tool"]
    assert saved["pending"] == [] and saved["iterations"] == 1
    # the crash: the step's task stops mid-request, nothing is recorded, the lease stays
    draining.cancel()
    for task in list(first._tasks):
        task.cancel()
    await asyncio.gather(draining, *first._tasks, return_exceptions=True)
    clock.advance(seconds=31)
    await new_worker(app_context, "w-rescuer").drain()
    return owner, await get(client, owner, execution_id)


async def test_a_rescued_step_resumes_from_its_checkpoint(
    client: httpx.AsyncClient,
    app_context: AppContext,
    clock: Clock,
    fake: FakeLLM,
    server: LocalServer,
    operator_db: Database,
) -> None:
    owner, done = await crash_mid_loop(
        client, app_context, clock, fake, server, "crash-llm@example.com",
        Script(text="Told them.", usage=(150, 30)),
    )  # fmt: skip
    assert done["status"] == "completed", done
    assert done["output_data"] == {"answer": "Told them."}
    ask = step_of(done)
    assert ask["attempt"] == 1
    # three requests: the first turn, the held one, and the resumed one: the first turn was
    # not asked again, and the resumed request carries the checkpointed conversation
    assert len(fake.requests) == 3
    assert fake.bodies[2]["messages"] == fake.bodies[1]["messages"]
    assert [m["role"] for m in fake.bodies[2]["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
    ]
    assert len(server.requests) == 1  # the checkpointed tool did not run again
    assert ask["output"]["tool_calls"][0]["output"]["body"]["method"] == "POST"
    key = server.requests[0].headers["Idempotency-Key"]  # the step's key + the tool call's
    assert key.startswith(f"{ask['idempotency_key']}:tool:"), key
    assert ask["output"]["usage"] == {"prompt": 250, "completion": 50, "total": 300, "calls": 2}
    assert await tokens_metered(operator_db) == 300
    async with operator_db.transaction() as session:
        run = (
            await session.execute(select(StepRunRow).where(StepRunRow.id == uuid.UUID(ask["id"])))
        ).scalar_one()
    assert run.lease_epoch == 2 and run.lease_owner is None
    logs = (await client.get(f"/api/v1/executions/{done['id']}/logs", headers=owner.headers)).json()
    messages = [x["message"] for x in logs]
    assert sum(m.startswith("llm call 1 ") for m in messages) == 1  # written with its checkpoint
    assert any(m.startswith("conversation resumed from its checkpoint") for m in messages)


async def test_max_iterations_bounds_the_loop_across_a_resume(
    client: httpx.AsyncClient,
    app_context: AppContext,
    clock: Clock,
    fake: FakeLLM,
    server: LocalServer,
) -> None:
    again = Script(tool_calls=[("call_m", "notify", {"msg": "again"})])  # asks for tools again
    _, done = await crash_mid_loop(
        client, app_context, clock, fake, server, "crash-bound@example.com", again,
        max_iterations=2,
    )  # fmt: skip
    ask = step_of(done)
    assert done["status"] == "failed", done
    assert ask["error"]["type"] == "max_iterations_exceeded", ask
    assert len(fake.requests) == 3 and len(server.requests) == 1


async def test_a_stale_worker_cannot_write_a_checkpoint(
    client: httpx.AsyncClient, app_context: AppContext, clock: Clock, fake: FakeLLM
) -> None:
    """The first worker's lease is taken over while its model call is in flight: when the
    reply comes, its checkpoint is refused (lease_lost) and its outcome is discarded; the
    second worker's run is the one recorded."""
    owner = await signup(client, "stale@example.com")
    doubler = await create(client, owner, "Doubler", DOUBLER)
    planner = await llm_agent(client, owner, fake, [{"type": "workflow", "ref": doubler["id"]}])
    parent = await llm_workflow(client, owner, "stale", planner)
    fake.tool("doubler", {"n": 4}, call_id="stale_call", delay=60)  # the stale worker's
    fake.tool("doubler", {"n": 5}, call_id="live_call")  # the rescuer's
    fake.text("It is 10.")
    stale = new_worker(app_context, "w-stale")
    execution_id = await start(client, owner, parent, {"task": "x"})
    draining = asyncio.create_task(stale.drain(limit_seconds=60))
    async with asyncio.timeout(10):
        while not fake.requests:
            await asyncio.sleep(0.02)
    clock.advance(seconds=31)
    rescuer = new_worker(app_context, "w-live")
    await rescuer.drain()
    fake.release.set()  # the stale worker gets its reply only now
    await draining
    done = await get(client, owner, execution_id)
    assert done["status"] == "completed", done
    (child,) = await children_of(client, owner, execution_id)  # only the live call's child
    assert child["input_data"] == {"n": 5}
    assert [r["id"] for r in step_of(done)["output"]["tool_calls"]] == ["live_call"]
    assert stale.steps_run.get("succeeded", 0) == 0


async def test_a_workflow_tool_over_the_anthropic_protocol(
    client: httpx.AsyncClient, app_context: AppContext, fake: FakeLLM
) -> None:
    """The checkpoint is protocol-neutral: the resumed conversation is sent in Anthropic's
    shape, the child's result as a tool_result block answering the tool_use."""
    owner = await signup(client, "wf-tool-anthropic@example.com")
    await create(client, owner, "Doubler", DOUBLER)
    planner = await llm_agent(
        client, owner, fake, [{"type": "workflow", "ref": "doubler", "name": "double_it"}],
        provider="anthropic", base_url=fake.anthropic_url, stream=True,
    )  # fmt: skip
    parent = await llm_workflow(client, owner, "anthropic", planner)
    fake.tool("double_it", {"n": 21}, call_id="toolu_1")
    fake.text("Doubled: 42.")
    execution_id = await start(client, owner, parent, {"task": "double 21"})
    await new_worker(app_context, "w-anthropic").drain()
    done = await get(client, owner, execution_id)
    assert done["status"] == "completed", step_of(done)["error"]
    assert done["output_data"] == {"answer": "Doubled: 42."}
    assert [r.path for r in fake.requests] == ["/v1/messages", "/v1/messages"]
    first, second = (body["messages"] for body in fake.bodies)
    assert second[: len(first)] == first
    assert second[-2]["content"][-1] == {"type": "tool_use", "id": "toolu_1",
                                         "name": "double_it", "input": {"n": 21}}  # fmt: skip
    (result,) = second[-1]["content"]
    assert result["type"] == "tool_result" and result["tool_use_id"] == "toolu_1"
    assert result["content"] == '{"doubled": 42}'
