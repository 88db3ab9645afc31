"""Wait steps: human approval by signal, timed waits, signal timeouts; queries on live state."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.integration.conftest import Account, Clock, assert_problem, signup
from tests.integration.test_engine import data_step, wait_done

APPROVAL: dict[str, Any] = {
    "signals": [
        {
            "name": "approval",
            "schema": {
                "type": "object",
                "properties": {"user": {"type": "string"}},
                "required": ["user"],
            },
        }
    ],
    "queries": [{"name": "draft", "expression": "{{ steps.draft.output.text }}"}],
    "steps": [
        data_step("draft", mapping={"text": "Dear customer, ..."}),
        {"key": "approve", "type": "wait", "depends_on": ["draft"], "signal": {"name": "approval"}},
        data_step(
            "send", deps=("approve",), mapping={"sent_by": "{{ steps.approve.output.user }}"}
        ),
    ],
    "outputs": {"sent_by": "{{ steps.send.output.sent_by }}"},
}


async def start(client: httpx.AsyncClient, who: Account, definition: dict) -> str:
    wf = (
        await client.post(
            "/api/v1/workflows",
            headers=who.headers,
            json={"name": "waits", "definition": definition},
        )
    ).json()
    r = await client.post(f"/api/v1/workflows/{wf['id']}/executions", headers=who.headers, json={})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


async def wait_for(
    client: httpx.AsyncClient, who: Account, execution_id: str, predicate: Any, seconds: float = 10
) -> dict:
    async with asyncio.timeout(seconds):
        while True:
            body = (
                await client.get(f"/api/v1/executions/{execution_id}", headers=who.headers)
            ).json()
            if predicate(body):
                return body
            await asyncio.sleep(0.02)


async def test_human_approval_by_signal(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "approve@example.com")
    execution_id = await start(client, owner, APPROVAL)
    await wait_for(client, owner, execution_id, lambda b: b["status"] == "waiting")
    url = f"/api/v1/executions/{execution_id}"

    state = (await client.get(f"{url}/queries/state", headers=owner.headers)).json()["result"]
    assert state["waiting_for"] == ["approval"] and state["steps"]["send"]["status"] == "pending"
    assert (await client.get(f"{url}/queries/draft", headers=owner.headers)).json()[
        "result"
    ] == "Dear customer, ..."
    assert_problem(await client.get(f"{url}/queries/nope", headers=owner.headers), 404)

    bad = await client.post(
        f"{url}/signals/approval", headers=owner.headers, json={"payload": {"user": 7}}
    )
    assert assert_problem(bad, 422)["errors"][0]["field"] == "body.payload.user"
    assert_problem(await client.post(f"{url}/signals/reject", headers=owner.headers, json={}), 404)
    ok = await client.post(
        f"{url}/signals/approval", headers=owner.headers, json={"payload": {"user": "ada"}}
    )
    assert ok.status_code == 200 and ok.json()["delivered_to"] == 1

    done = await wait_done(client, owner, execution_id)
    assert done["status"] == "completed" and done["output_data"] == {"sent_by": "ada"}
    assert_problem(
        await client.post(
            f"{url}/signals/approval", headers=owner.headers, json={"payload": {"user": "x"}}
        ),
        409,
    )


async def test_timed_wait_runs_when_due(client: httpx.AsyncClient, clock: Clock) -> None:
    owner = await signup(client, "timed@example.com")
    definition = {
        "steps": [
            {"key": "pause", "type": "wait", "duration_ms": 60_000},
            data_step("after", deps=("pause",), mapping={"x": 1}),
        ]
    }
    execution_id = await start(client, owner, definition)
    body = await wait_for(
        client,
        owner,
        execution_id,
        lambda b: any(s["step_key"] == "pause" and s["scheduled_for"] for s in b["steps"]),
    )
    await asyncio.sleep(0.3)
    assert body["status"] == "running" and {s["status"] for s in body["steps"]} == {
        "ready",
        "pending",
    }
    clock.advance(seconds=61)
    done = await wait_done(client, owner, execution_id)
    assert done["status"] == "completed"
    assert next(s for s in done["steps"] if s["step_key"] == "pause")["output"] == {
        "waited_ms": 60000
    }


async def test_signal_timeout_fails_the_wait(client: httpx.AsyncClient, clock: Clock) -> None:
    owner = await signup(client, "sigtimeout@example.com")
    definition = {
        "signals": [{"name": "approval"}],
        "steps": [
            {"key": "approve", "type": "wait", "signal": {"name": "approval", "timeout_ms": 2000}}
        ],
    }
    execution_id = await start(client, owner, definition)
    await wait_for(client, owner, execution_id, lambda b: b["status"] == "waiting")
    clock.advance(seconds=3)
    done = await wait_done(client, owner, execution_id)
    assert done["status"] == "failed" and "did not arrive in time" in done["error_message"]
    assert done["steps"][0]["error"]["type"] == "signal_timeout"


async def test_log_stream_follows_a_running_execution(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "stream@example.com")
    other = await signup(client, "stream2@example.com", "Other")
    execution_id = await start(client, owner, APPROVAL)
    await wait_for(client, owner, execution_id, lambda b: b["status"] == "waiting")
    url = f"/api/v1/executions/{execution_id}/logs/stream"
    assert (await client.get(url)).status_code == 401  # streams authenticate like every route
    assert (await client.get(url, headers=other.headers)).status_code == 404

    events: list[tuple[str, str]] = []

    async def follow() -> None:
        async with client.stream("GET", url, headers=owner.headers) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            event = ""
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    events.append((event, line.removeprefix("data: ")))
                    if event == "end":
                        return

    reader = asyncio.create_task(follow())
    await asyncio.sleep(0.5)
    assert not reader.done()  # still open while the execution waits
    await client.post(
        f"/api/v1/executions/{execution_id}/signals/approval",
        headers=owner.headers,
        json={"payload": {"user": "ada"}},
    )
    async with asyncio.timeout(10):
        await reader
    messages = [data for event, data in events if event == "log"]
    assert any("execution started" in m for m in messages)
    assert any("step send completed" in m for m in messages)
    assert events[-1] == ("end", '{"status": "completed"}')
