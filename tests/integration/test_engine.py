"""The engine, end to end through the API with the embedded worker, and its store directly."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Account, assert_problem, signup


def data_step(key: str, *, deps: tuple[str, ...] = (), **config: Any) -> dict[str, Any]:
    step: dict[str, Any] = {
        "key": key,
        "type": "agent",
        "component": {"kind": "data", "config": config},
    }
    if deps:
        step["depends_on"] = list(deps)
    return step


async def run_workflow(
    client: httpx.AsyncClient,
    who: Account,
    definition: dict,
    payload: dict | None = None,
    *,
    seconds: float = 20,
) -> dict:
    r = await client.post(
        "/api/v1/workflows",
        headers=who.headers,
        json={"name": f"wf {uuid.uuid4().hex[:6]}", "definition": definition},
    )
    assert r.status_code == 201, r.text
    r = await client.post(
        f"/api/v1/workflows/{r.json()['id']}/executions",
        headers=who.headers,
        json={"input": payload or {}},
    )
    assert r.status_code == 202, r.text
    # big executions are polled less often: each read returns every step run
    return await wait_done(client, who, r.json()["id"], seconds, 0.02 if seconds <= 20 else 0.5)


async def wait_done(
    client: httpx.AsyncClient,
    who: Account,
    execution_id: str,
    seconds: float = 20,
    interval: float = 0.02,
) -> dict:
    async with asyncio.timeout(seconds):
        while True:
            body = (
                await client.get(f"/api/v1/executions/{execution_id}", headers=who.headers)
            ).json()
            if body["status"] not in ("pending", "running", "waiting"):
                return body
            await asyncio.sleep(interval)


async def test_sequential_data_steps_complete_with_outputs(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "run@example.com")
    definition = {
        "inputs": {
            "type": "object",
            "properties": {"orders": {"type": "array"}},
            "required": ["orders"],
        },
        "steps": [
            data_step("big", operations=[{"op": "filter", "where": "item.total > 100"}]),
            data_step("names", deps=("big",), query="[].customer"),
            data_step(
                "summary",
                deps=("names",),
                mapping={
                    "count": "{{ len(steps.names.output) }}",
                    "who": "{{ join(steps.names.output, ', ') }}",
                },
            ),
        ],
        "outputs": {
            "summary": "{{ steps.summary.output }}",
            "first": "{{ steps.names.output[0] }}",
        },
    }
    definition["steps"][0]["inputs"] = {"data": "{{ input.orders }}"}
    definition["steps"][1]["inputs"] = {"data": "{{ steps.big.output }}"}
    orders = [
        {"customer": "ada", "total": 250},
        {"customer": "bob", "total": 20},
        {"customer": "cy", "total": 101},
    ]
    done = await run_workflow(client, owner, definition, {"orders": orders})
    assert done["status"] == "completed" and done["result"] == "success", done
    assert done["output_data"] == {"summary": {"count": 2, "who": "ada, cy"}, "first": "ada"}
    assert done["steps_completed"] == 3 and done["steps_failed"] == 0
    steps = {s["step_key"]: s for s in done["steps"]}
    assert steps["names"]["idempotency_key"] == f"{done['id']}:names:0"
    assert steps["names"]["input"] == {
        "data": [{"customer": "ada", "total": 250}, {"customer": "cy", "total": 101}]
    }
    logs = (await client.get(f"/api/v1/executions/{done['id']}/logs", headers=owner.headers)).json()
    assert (
        logs[0]["message"].startswith("execution started")
        and logs[-1]["message"] == "execution completed (success)"
    )
    wf = (
        await client.get(f"/api/v1/workflows/{done['workflow_id']}", headers=owner.headers)
    ).json()
    assert (
        wf["total_executions"] == 1 and wf["successful_executions"] == 1 and wf["last_execution_at"]
    )
    assert wf["updated_at"] <= done["created_at"]  # counting a run is not an edit of the workflow


async def test_condition_branches_skip_and_join_any(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "cond@example.com")
    definition = {
        "steps": [
            {
                "key": "route",
                "type": "condition",
                "branches": [{"label": "big", "when": "{{ input.n > 10 }}"}],
                "default": "small",
            },
            {**data_step("on_big", deps=("route",), mapping={"size": "big"}), "when": "big"},
            {**data_step("on_small", deps=("route",), mapping={"size": "small"}), "when": "small"},
            {
                **data_step(
                    "after",
                    deps=("on_big", "on_small"),
                    mapping={"from": "{{ coalesce(steps.on_big.output, steps.on_small.output) }}"},
                ),
                "join": "any",
            },
        ],
        "outputs": {"result": "{{ steps.after.output.from.size }}"},
    }
    big = await run_workflow(client, owner, definition, {"n": 50})
    assert big["output_data"] == {"result": "big"}
    statuses = {s["step_key"]: s["status"] for s in big["steps"]}
    assert statuses == {
        "route": "completed",
        "on_big": "completed",
        "on_small": "skipped",
        "after": "completed",
    }
    small = await run_workflow(client, owner, definition, {"n": 1})
    assert small["output_data"] == {"result": "small"} and small["result"] == "success"


@pytest.mark.parametrize("join", ["all", "any"])
async def test_a_fan_in_waits_for_every_dependency(client: httpx.AsyncClient, join: str) -> None:
    # b and c usually complete while another dependency is still open (the join then
    # decides nothing and reads no frame); a is skipped when the condition says no
    owner = await signup(client, f"fan-in-{join}@example.com")
    definition = {
        "steps": [
            {
                "key": "route",
                "type": "condition",
                "branches": [{"label": "yes", "when": "{{ input.go }}"}],
                "default": "no",
            },
            {**data_step("a", deps=("route",), mapping={"v": 1}), "when": "yes"},
            data_step("b", mapping={"v": 2}),
            data_step("c", mapping={"v": 3}),
            {
                **data_step(
                    "join",
                    deps=("a", "b", "c"),
                    mapping={"seen": "{{ [steps.a.output, steps.b.output.v, steps.c.output.v] }}"},
                ),
                "join": join,
            },
        ],
    }
    went = await run_workflow(client, owner, definition, {"go": True})
    steps = {s["step_key"]: s for s in went["steps"]}
    assert steps["join"]["status"] == "completed"
    assert steps["join"]["output"] == {"seen": [{"v": 1}, 2, 3]}
    stopped = await run_workflow(client, owner, definition, {"go": False})
    statuses = {s["step_key"]: s["status"] for s in stopped["steps"]}
    assert statuses["a"] == "skipped" and statuses["b"] == statuses["c"] == "completed"
    assert statuses["join"] == ("skipped" if join == "all" else "completed")
    assert stopped["status"] == "completed"


async def test_failure_fails_the_execution_and_skips_the_rest(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "fail@example.com")
    definition = {
        "steps": [
            {**data_step("sum", operations=[{"op": "aggregate"}]), "inputs": {"data": ["a", "b"]}},
            data_step("later", deps=("sum",), mapping={"x": 1}),
        ]
    }
    done = await run_workflow(client, owner, definition)
    assert done["status"] == "failed" and done["result"] == "failure"
    assert "step sum failed: aggregate needs numbers" in done["error_message"]
    assert {s["step_key"]: s["status"] for s in done["steps"]} == {
        "sum": "failed",
        "later": "skipped",
    }
    assert next(s for s in done["steps"] if s["step_key"] == "sum")["error"]["type"] == "data_error"


async def test_on_error_continue_gives_a_partial_result(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "cont@example.com")
    definition = {
        "steps": [
            {
                **data_step("bad", operations=[{"op": "aggregate"}]),
                "inputs": {"data": ["x"]},
                "on_error": "continue",
            },
            data_step("good", deps=("bad",), mapping={"saw": "{{ steps.bad.error.type }}"}),
        ],
        "outputs": {"saw": "{{ steps.good.output.saw }}"},
    }
    done = await run_workflow(client, owner, definition)
    assert done["status"] == "completed" and done["result"] == "partial"
    assert done["output_data"] == {"saw": "data_error"}


async def test_bad_runs_are_refused_before_anything_is_written(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "refuse@example.com")
    other = await signup(client, "refuse2@example.com", "Other")
    definition = {
        "inputs": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
        "steps": [data_step("a", mapping={"x": 1})],
    }
    wf = (
        await client.post(
            "/api/v1/workflows",
            headers=owner.headers,
            json={"name": "typed", "definition": definition},
        )
    ).json()
    url = f"/api/v1/workflows/{wf['id']}/executions"
    body = assert_problem(
        await client.post(url, headers=owner.headers, json={"input": {"n": "seven"}}), 422
    )
    assert body["errors"][0]["field"] == "body.input.n"
    assert_problem(await client.post(url, headers=owner.headers, json={"input": {}}), 422)
    assert_problem(await client.post(url, headers=other.headers, json={"input": {"n": 1}}), 404)
    await client.patch(
        f"/api/v1/workflows/{wf['id']}", headers=owner.headers, json={"status": "archived"}
    )
    assert_problem(await client.post(url, headers=owner.headers, json={"input": {"n": 1}}), 409)
    assert (await client.get("/api/v1/executions", headers=owner.headers)).json()["items"] == []


async def test_executions_are_listed_and_private_to_their_tenant(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "list@example.com")
    other = await signup(client, "list2@example.com", "Other")
    done = await run_workflow(client, owner, {"steps": [data_step("a", mapping={"x": 1})]})
    page = (
        await client.get(
            "/api/v1/executions", headers=owner.headers, params={"status": "completed"}
        )
    ).json()
    assert [e["id"] for e in page["items"]] == [done["id"]]
    by_wf = (
        await client.get(
            "/api/v1/executions", headers=owner.headers, params={"workflow_id": done["workflow_id"]}
        )
    ).json()
    assert len(by_wf["items"]) == 1
    assert_problem(await client.get(f"/api/v1/executions/{done['id']}", headers=other.headers), 404)
    assert (await client.get("/api/v1/executions", headers=other.headers)).json()["items"] == []


async def test_rerun_starts_from_the_failed_step_reusing_completed_outputs(
    client: httpx.AsyncClient,
) -> None:
    owner = await signup(client, "rerun@example.com")
    r = await client.post(
        "/api/v1/agents", headers=owner.headers,
        json={"name": "counter", "type": "data", "config": {"operations": [{"op": "aggregate"}]}},
    )  # fmt: skip
    agent_id = r.json()["id"]
    definition = {
        "steps": [
            data_step("prepare", mapping={"values": "{{ input.values }}"}),
            {
                "key": "count",
                "type": "agent",
                "agent": "counter",
                "depends_on": ["prepare"],
                "inputs": {"data": "{{ steps.prepare.output.values }}"},
            },
            data_step("report", deps=("count",), mapping={"n": "{{ steps.count.output }}"}),
        ],
        "outputs": {"n": "{{ steps.report.output.n }}"},
    }
    failed = await run_workflow(client, owner, definition, {"values": ["a", "b"]})
    assert failed["status"] == "failed"
    assert {s["step_key"]: s["status"] for s in failed["steps"]} == {
        "prepare": "completed",
        "count": "failed",
        "report": "skipped",
    }
    assert_problem(
        await client.post(f"/api/v1/executions/{failed['id']}/cancel", headers=owner.headers), 409
    )

    # fix the agent, then re-run from the failed step
    fixed = await client.patch(
        f"/api/v1/agents/{agent_id}", headers=owner.headers, json={"config": {"query": "length(@)"}}
    )
    assert fixed.status_code == 200, fixed.text
    r = await client.post(f"/api/v1/executions/{failed['id']}/rerun", headers=owner.headers)
    assert r.status_code == 202 and r.json()["rerun_of_execution_id"] == failed["id"]
    done = await wait_done(client, owner, r.json()["id"])
    assert done["status"] == "completed" and done["output_data"] == {"n": 2}, [
        (s["step_key"], s["status"], s["error"]) for s in done["steps"]
    ]
    prepare = next(s for s in done["steps"] if s["step_key"] == "prepare")
    assert prepare["status"] == "completed" and prepare["started_at"] is None  # reused, not run
    assert (
        prepare["output"]
        == next(s for s in failed["steps"] if s["step_key"] == "prepare")["output"]
    )
    logs = (await client.get(f"/api/v1/executions/{done['id']}/logs", headers=owner.headers)).json()
    assert any("reused" in line["message"] for line in logs)
    assert_problem(
        await client.post(f"/api/v1/executions/{done['id']}/rerun", headers=owner.headers), 409
    )
