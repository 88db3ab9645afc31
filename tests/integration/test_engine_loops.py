"""Loop and parallel steps through the API with the embedded worker, on both databases."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.integration.conftest import Clock, signup
from tests.integration.test_engine import data_step, run_workflow


def loop(key: str, over: str, body: Any, **extra: Any) -> dict[str, Any]:
    return {"key": key, "type": "loop", "over": over, "body": body, **extra}


async def test_loop_runs_its_body_per_item_and_keeps_item_order(
    client: httpx.AsyncClient,
) -> None:
    owner = await signup(client, "loop@example.com")
    definition = {
        "steps": [
            loop(
                "each",
                "{{ input.numbers }}",
                data_step("square", mapping={"n": "{{ item * item }}", "at": "{{ index }}"}),
                max_concurrency=3,
            ),
            data_step("total", deps=("each",), mapping={"count": "{{ len(steps.each.output) }}"}),
        ],
        "outputs": {
            "squares": "{{ steps.each.output }}",
            "count": "{{ steps.total.output.count }}",
        },
    }
    done = await run_workflow(client, owner, definition, {"numbers": [3, 1, 4, 1, 5, 9, 2]})
    assert done["status"] == "completed", done
    assert done["output_data"]["squares"] == [
        {"n": n * n, "at": i} for i, n in enumerate([3, 1, 4, 1, 5, 9, 2])
    ]
    assert done["output_data"]["count"] == 7
    detail = (await client.get(f"/api/v1/executions/{done['id']}", headers=owner.headers)).json()
    body_runs = [s for s in detail["steps"] if s["step_key"] == "square"]
    assert sorted(s["iteration"] for s in body_runs) == list(range(7))
    each = next(s for s in detail["steps"] if s["step_key"] == "each")
    assert {s["parent_id"] for s in body_runs} == {each["id"]}
    assert {s["scope"] for s in body_runs} == {f"/each[{i}]" for i in range(7)}
    assert len({s["idempotency_key"] for s in body_runs}) == 7
    assert detail["steps_total"] == 2 + 7
    assert detail["steps_completed"] == 2 + 7


async def test_loop_concurrency_is_bounded(client: httpx.AsyncClient, clock: Clock) -> None:
    owner = await signup(client, "bounded@example.com")
    body = {
        "steps": [
            {"key": "pause", "type": "wait", "duration_ms": 60},
            data_step("echo", deps=("pause",), mapping={"v": "{{ item }}"}),
        ],
        "output": "{{ steps.echo.output.v }}",
    }
    definition = {"steps": [loop("each", "{{ range(8) }}", body, max_concurrency=2)]}
    r = await client.post(
        "/api/v1/workflows",
        headers=owner.headers,
        json={"name": "bounded", "definition": definition},
    )
    started = await client.post(
        f"/api/v1/workflows/{r.json()['id']}/executions", headers=owner.headers, json={}
    )
    url = f"/api/v1/executions/{started.json()['id']}"
    peak = 0
    async with asyncio.timeout(20):
        while True:
            detail = (await client.get(url, headers=owner.headers)).json()
            live_frames = {
                s["scope"]
                for s in detail["steps"]
                if s["scope"] and s["status"] in ("pending", "ready", "running")
            }
            peak = max(peak, len(live_frames))
            if detail["status"] == "completed":
                break
            assert detail["status"] == "running", detail
            clock.advance(seconds=0.05)  # the app's clock only moves when told
            await asyncio.sleep(0.01)
    assert 1 <= peak <= 2
    each = next(s for s in detail["steps"] if s["step_key"] == "each")
    assert each["output"] == list(range(8))


async def test_parallel_branches_give_an_object_of_outputs(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "par@example.com")
    definition = {
        "steps": [
            data_step("seed", mapping={"n": "{{ input.n }}"}),
            {
                "key": "fan",
                "type": "parallel",
                "depends_on": ["seed"],
                "branches": {
                    "double": data_step("twice", mapping={"v": "{{ steps.seed.output.n * 2 }}"}),
                    "chain": {
                        "steps": [
                            data_step("plus", mapping={"v": "{{ steps.seed.output.n + 1 }}"}),
                            data_step(
                                "times",
                                deps=("plus",),
                                mapping={"v": "{{ steps.plus.output.v * 10 }}"},
                            ),
                        ],
                        "output": "{{ steps.times.output.v }}",
                    },
                    "both": {
                        "steps": [
                            data_step("left", mapping={"x": 1}),
                            data_step("right", mapping={"y": 2}),
                        ]
                    },
                },
            },
        ],
        "outputs": {"fan": "{{ steps.fan.output }}"},
    }
    done = await run_workflow(client, owner, definition, {"n": 4})
    assert done["status"] == "completed", done
    assert done["output_data"]["fan"] == {
        "double": {"v": 8},
        "chain": 50,
        "both": {"left": {"x": 1}, "right": {"y": 2}},
    }


async def test_nested_loops_see_their_own_items(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "nested@example.com")
    inner = loop(
        "cols",
        "{{ steps.row.output.cells }}",
        data_step("cell", mapping={"v": "{{ item * 10 }}", "row": "{{ steps.row.output.at }}"}),
        max_concurrency=2,
    )
    outer_body = {
        "steps": [
            data_step("row", mapping={"cells": "{{ item }}", "at": "{{ index }}"}),
            {**inner, "depends_on": ["row"]},
        ],
        "output": "{{ steps.cols.output }}",
    }
    definition = {
        "steps": [loop("rows", "{{ input.grid }}", outer_body, max_concurrency=2)],
        "outputs": {"grid": "{{ steps.rows.output }}"},
    }
    done = await run_workflow(client, owner, definition, {"grid": [[1, 2], [3], [], [4, 5, 6]]})
    assert done["status"] == "completed", done
    assert done["output_data"]["grid"] == [
        [{"v": 10, "row": 0}, {"v": 20, "row": 0}],
        [{"v": 30, "row": 1}],
        [],
        [{"v": 40, "row": 3}, {"v": 50, "row": 3}, {"v": 60, "row": 3}],
    ]
    detail = (await client.get(f"/api/v1/executions/{done['id']}", headers=owner.headers)).json()
    keys = {
        s["idempotency_key"].split(":", 1)[1] for s in detail["steps"] if s["step_key"] == "cell"
    }
    assert keys == {"cell:0.0", "cell:0.1", "cell:1.0", "cell:3.0", "cell:3.1", "cell:3.2"}


async def test_a_failing_body_step_fails_the_loop_and_names_the_item(
    client: httpx.AsyncClient,
) -> None:
    owner = await signup(client, "bodyfail@example.com")
    failing = data_step("pick", mapping={"v": "{{ 6 / (item - 1) }}"})
    done = await run_workflow(
        client,
        owner,
        {"steps": [loop("each", "{{ input.items }}", failing, max_concurrency=1)]},
        {"items": [2, 1, 3]},
    )
    assert done["status"] == "failed", done
    assert done["result"] in ("failure", "partial")
    assert "each failed: item 1: step pick failed" in done["error_message"], done
    detail = (await client.get(f"/api/v1/executions/{done['id']}", headers=owner.headers)).json()
    picks = sorted(
        (s["iteration"], s["status"]) for s in detail["steps"] if s["step_key"] == "pick"
    )
    assert picks == [(0, "completed"), (1, "failed")]  # item 2 never started


async def test_on_error_continue_lets_dependents_of_a_failed_loop_run(
    client: httpx.AsyncClient,
) -> None:
    owner = await signup(client, "continue@example.com")
    definition = {
        "steps": [
            {
                **loop(
                    "each", "{{ [1, 0, 2] }}", data_step("inv", mapping={"v": "{{ 6 / item }}"})
                ),
                "on_error": "continue",
                "max_concurrency": 3,
            },
            data_step("after", deps=("each",), mapping={"why": "{{ steps.each.error.type }}"}),
        ],
        "outputs": {"why": "{{ steps.after.output.why }}"},
    }
    done = await run_workflow(client, owner, definition)
    assert done["status"] == "completed", done
    assert done["result"] == "partial"
    assert done["output_data"] == {"why": "body_failed"}


async def test_body_steps_with_on_error_continue_leave_null_outputs(
    client: httpx.AsyncClient,
) -> None:
    owner = await signup(client, "nulls@example.com")
    body = {**data_step("inv", mapping={"v": "{{ 6 / item }}"}), "on_error": "continue"}
    done = await run_workflow(
        client, owner, {"steps": [loop("each", "{{ [1, 0, 2] }}", body, max_concurrency=3)],
                        "outputs": {"all": "{{ steps.each.output }}"}},
    )  # fmt: skip
    assert done["status"] == "completed", done
    assert done["result"] == "partial"
    assert done["output_data"]["all"] == [{"v": 6}, None, {"v": 3}]


async def test_loops_that_cannot_start_fail_clearly(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "badloops@example.com")
    body = data_step("b", mapping={"x": "{{ item }}"})
    empty = await run_workflow(
        client, owner, {"steps": [loop("each", "{{ [] }}", body)],
                        "outputs": {"out": "{{ steps.each.output }}"}},
    )  # fmt: skip
    assert empty["status"] == "completed" and empty["output_data"] == {"out": []}
    not_list = await run_workflow(client, owner, {"steps": [loop("each", "{{ input }}", body)]})
    assert not_list["status"] == "failed"
    assert "over gave dict, not a list" in not_list["error_message"]
    too_many = await run_workflow(
        client, owner, {"steps": [loop("each", "{{ range(5) }}", body, max_items=3)]}
    )
    assert too_many["status"] == "failed"
    assert "over gave 5 items; this loop allows at most 3" in too_many["error_message"]


async def test_a_failing_branch_stops_the_parallel_step(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "parfail@example.com")
    definition = {
        "steps": [
            {
                "key": "fan",
                "type": "parallel",
                "branches": {
                    "slow": {
                        "steps": [
                            {"key": "nap", "type": "wait", "duration_ms": 5000},
                            data_step("late", deps=("nap",), mapping={"x": 1}),
                        ]
                    },
                    "bad": data_step("boom", mapping={"v": "{{ 1 / 0 }}"}),
                },
            }
        ]
    }
    done = await run_workflow(client, owner, definition, None)
    assert done["status"] == "failed", done
    assert "branch bad: step boom failed" in done["error_message"]
    detail = (await client.get(f"/api/v1/executions/{done['id']}", headers=owner.headers)).json()
    status = {s["step_key"]: s["status"] for s in detail["steps"]}
    assert status["nap"] in ("cancelled", "skipped")
    assert status["late"] == "skipped"
