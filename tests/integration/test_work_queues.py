"""Work queues fed by signals (seed 003): order, dedupe, size and schema limits, waits that take
items (with timeouts, inside loops), and the queries that read queues."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.integration.conftest import Account, Clock, assert_problem, signup
from tests.integration.test_engine import data_step, wait_done
from tests.integration.test_engine_waits import start, wait_for
from turbocat.engine import frames


def queue_def(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "signal": f"add_{name}", **fields}


def take(key: str, queue: str, *, deps: tuple[str, ...] = (), **options: Any) -> dict[str, Any]:
    step: dict[str, Any] = {"key": key, "type": "wait", "queue": {"name": queue, **options}}
    if deps:
        step["depends_on"] = list(deps)
    return step


def gate(key: str = "go") -> dict[str, Any]:
    """A wait on signal ``go``: items can be queued before anything takes them."""
    return {"key": key, "type": "wait", "signal": {"name": "go"}}


def declare(*queues: dict[str, Any], gated: bool = True) -> dict[str, Any]:
    """The signals, queries and queues of a definition; each queue ``q`` is fed by ``add_q``
    and read by the query ``q_items``."""
    signals = [{"name": q["signal"]} for q in queues] + ([{"name": "go"}] if gated else [])
    return {
        "signals": signals,
        "queries": [{"name": f"{q['name']}_items"} for q in queues],
        "work_queues": [{**q, "query": f"{q['name']}_items"} for q in queues],
    }


async def send(
    client: httpx.AsyncClient, who: Account, execution_id: str, signal: str, payload: Any
) -> httpx.Response:
    return await client.post(
        f"/api/v1/executions/{execution_id}/signals/{signal}",
        headers=who.headers,
        json={"payload": payload},
    )


async def add(
    client: httpx.AsyncClient, who: Account, execution_id: str, signal: str, payload: Any
) -> dict[str, Any]:
    r = await send(client, who, execution_id, signal, payload)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def query(client: httpx.AsyncClient, who: Account, execution_id: str, name: str) -> Any:
    r = await client.get(f"/api/v1/executions/{execution_id}/queries/{name}", headers=who.headers)
    assert r.status_code == 200, r.text
    return r.json()["result"]


def outputs(body: dict[str, Any]) -> dict[str, Any]:
    return {s["step_key"]: s["output"] for s in body["steps"] if s["scope"] == ""}


async def waiting(client: httpx.AsyncClient, who: Account, execution_id: str) -> dict:
    return await wait_for(client, who, execution_id, lambda b: b["status"] == "waiting")


async def test_items_leave_in_fifo_lifo_and_priority_order(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "order@example.com")
    definition = {
        **declare(queue_def("f"), queue_def("l", order="lifo"), queue_def("p", order="priority")),
        "steps": [
            gate(),
            take("from_f", "f", deps=("go",), max_items=10),
            take("from_l", "l", deps=("go",), max_items=10),
            take("from_p", "p", deps=("go",), max_items=10),
        ],
    }
    execution_id = await start(client, owner, definition)
    await waiting(client, owner, execution_id)
    for n in range(1, 4):
        assert await add(client, owner, execution_id, "add_f", n) == {
            "signal": "add_f",
            "delivered_to": 0,
            "queued": True,
            "duplicate": False,
        }
        await add(client, owner, execution_id, "add_l", n)
    ranked = [{"n": 1}, {"n": 2, "priority": 5}, {"n": 3, "priority": 1}, {"n": 4, "priority": 5}]
    for item in ranked:
        await add(client, owner, execution_id, "add_p", item)

    assert await query(client, owner, execution_id, "p_items") == {
        "name": "p",
        "order": "priority",
        "size": 4,
        "items": [ranked[1], ranked[3], ranked[2], ranked[0]],
    }
    assert (await query(client, owner, execution_id, "l_items"))["items"] == [3, 2, 1]
    state = await query(client, owner, execution_id, "state")
    assert state["queues"] == {"f": 3, "l": 3, "p": 4} and state["waiting_for"] == ["go"]

    await add(client, owner, execution_id, "go", None)
    done = await wait_done(client, owner, execution_id)
    assert done["status"] == "completed", done
    assert outputs(done) | {"go": None} == {
        "go": None,
        "from_f": [1, 2, 3],
        "from_l": [3, 2, 1],
        "from_p": [ranked[1], ranked[3], ranked[2], ranked[0]],
    }
    state = await query(client, owner, execution_id, "state")
    assert state["queues"] == {"f": 0, "l": 0, "p": 0}
    assert (await query(client, owner, execution_id, "f_items")) == {
        "name": "f",
        "order": "fifo",
        "size": 0,
        "items": [],
    }
    # The execution has ended: its queues take no more.
    assert_problem(await send(client, owner, execution_id, "add_f", 4), 409)


async def test_dedupe_max_size_and_item_schema(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "dedupe@example.com")
    schema = {
        "type": "object",
        "properties": {"id": {"type": "integer"}, "tags": {"type": "object"}},
        "required": ["id"],
    }
    definition = {
        **declare(
            queue_def("uniq", deduplicate=True, max_size=2, item_schema=schema),
            queue_def("p", order="priority"),
        ),
        "steps": [gate(), take("batch", "uniq", deps=("go",), max_items=5)],
    }
    execution_id = await start(client, owner, definition)
    await waiting(client, owner, execution_id)

    first = {"id": 1, "tags": {"a": 1, "b": 2}}
    assert (await add(client, owner, execution_id, "add_uniq", first))["queued"] is True
    again = await add(
        client, owner, execution_id, "add_uniq", {"tags": {"b": 2, "a": 1.0}, "id": 1}
    )
    assert again == {"signal": "add_uniq", "delivered_to": 0, "queued": False, "duplicate": True}
    await add(client, owner, execution_id, "add_uniq", {"id": 2})
    full = assert_problem(await send(client, owner, execution_id, "add_uniq", {"id": 3}), 409)
    assert full["code"] == "queue_full" and "'uniq' is full" in full["detail"]
    # a duplicate of a pending item is still just dropped, full or not
    assert (await add(client, owner, execution_id, "add_uniq", {"id": 2}))["duplicate"] is True

    bad = assert_problem(await send(client, owner, execution_id, "add_uniq", {"id": "x"}), 422)
    assert [e["field"] for e in bad["errors"]] == ["body.payload.id"]
    bad = assert_problem(await send(client, owner, execution_id, "add_p", {"priority": 1.5}), 422)
    assert [e["field"] for e in bad["errors"]] == ["body.payload.priority"]
    assert (await query(client, owner, execution_id, "uniq_items"))["items"] == [first, {"id": 2}]

    await add(client, owner, execution_id, "go", None)
    done = await wait_done(client, owner, execution_id)
    assert outputs(done)["batch"] == [first, {"id": 2}]
    assert (await query(client, owner, execution_id, "uniq_items"))["size"] == 0


async def test_a_waiting_step_takes_the_next_item_in_the_signal_transaction(
    client: httpx.AsyncClient,
) -> None:
    owner = await signup(client, "handout@example.com")
    definition = {
        **declare(queue_def("jobs", deduplicate=True), gated=False),
        "steps": [
            take("first", "jobs", max_items=3),
            take("second", "jobs"),
            data_step(
                "after", deps=("first", "second"), mapping={"n": "{{ len(steps.first.output) }}"}
            ),
        ],
        "outputs": {"first": "{{ steps.first.output }}", "second": "{{ steps.second.output }}"},
    }
    execution_id = await start(client, owner, definition)
    body = await waiting(client, owner, execution_id)
    runs = {s["step_key"]: s for s in body["steps"]}
    assert runs["first"]["status"] == runs["second"]["status"] == "waiting"
    state = await query(client, owner, execution_id, "state")
    assert state["waiting_for"] == ["add_jobs"] and state["queues"] == {"jobs": 0}

    # The oldest waiter takes the item at once (it does not wait to fill max_items), so the
    # queue is empty again and the same item is no duplicate.
    assert await add(client, owner, execution_id, "add_jobs", {"job": 1}) == {
        "signal": "add_jobs",
        "delivered_to": 1,
        "queued": True,
        "duplicate": False,
    }
    body = await client.get(f"/api/v1/executions/{execution_id}", headers=owner.headers)
    taken = [s for s in body.json()["steps"] if s["status"] == "completed"]
    assert len(taken) == 1 and taken[0]["output"] == [{"job": 1}]
    assert (await add(client, owner, execution_id, "add_jobs", {"job": 1}))["delivered_to"] == 1

    done = await wait_done(client, owner, execution_id)
    assert done["status"] == "completed", done
    assert sorted(done["output_data"].values(), key=str) == [[{"job": 1}], [{"job": 1}]]
    assert (await query(client, owner, execution_id, "jobs_items"))["size"] == 0


async def test_a_signal_feeding_a_queue_also_completes_its_signal_waits(
    client: httpx.AsyncClient,
) -> None:
    owner = await signup(client, "both@example.com")
    definition = {
        **declare(queue_def("jobs"), gated=False),
        "steps": [
            {"key": "hear", "type": "wait", "signal": {"name": "add_jobs"}},
            take("consume", "jobs", deps=("hear",)),
        ],
    }
    execution_id = await start(client, owner, definition)
    await waiting(client, owner, execution_id)
    delivery = await add(client, owner, execution_id, "add_jobs", {"n": 1})
    assert delivery["queued"] is True and delivery["delivered_to"] == 1
    done = await wait_done(client, owner, execution_id)
    assert done["status"] == "completed"
    assert outputs(done) == {"hear": {"n": 1}, "consume": [{"n": 1}]}


async def test_a_queue_wait_times_out(client: httpx.AsyncClient, clock: Clock) -> None:
    owner = await signup(client, "qtimeout@example.com")
    definition = {
        **declare(queue_def("jobs"), gated=False),
        "steps": [take("consume", "jobs", timeout_ms=2000)],
    }
    execution_id = await start(client, owner, definition)
    await waiting(client, owner, execution_id)
    clock.advance(seconds=3)
    done = await wait_done(client, owner, execution_id)
    assert done["status"] == "failed"
    assert "no item of work queue 'jobs' arrived in time" in done["error_message"]
    assert done["steps"][0]["error"]["type"] == "queue_timeout"


async def test_a_loop_takes_one_item_per_iteration(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "qloop@example.com")
    definition = {
        **declare(queue_def("jobs"), gated=False),
        "steps": [
            {
                "key": "each",
                "type": "loop",
                "over": "{{ range(3) }}",
                "body": take("one", "jobs"),
            }
        ],
        "outputs": {"taken": "{{ steps.each.output }}"},
    }
    execution_id = await start(client, owner, definition)
    for n in range(3):
        body = await waiting(client, owner, execution_id)
        iterations = [s for s in body["steps"] if s["step_key"] == "one"]
        assert len(iterations) == n + 1 and iterations[-1]["status"] == "waiting"
        assert (await add(client, owner, execution_id, "add_jobs", f"job {n}"))["delivered_to"] == 1
    done = await wait_done(client, owner, execution_id)
    assert done["status"] == "completed", done
    assert done["output_data"] == {"taken": [["job 0"], ["job 1"], ["job 2"]]}


async def test_a_loop_drains_items_queued_before_it_starts(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "qdrain@example.com")
    definition = {
        **declare(queue_def("jobs", order="lifo")),
        "steps": [
            gate(),
            {
                "key": "each",
                "type": "loop",
                "depends_on": ["go"],
                "over": "{{ range(3) }}",
                "body": take("batch", "jobs", max_items=2),
            },
        ],
        "outputs": {"taken": "{{ steps.each.output }}"},
    }
    execution_id = await start(client, owner, definition)
    await waiting(client, owner, execution_id)
    for n in range(1, 6):
        await add(client, owner, execution_id, "add_jobs", n)
    await add(client, owner, execution_id, "go", None)
    done = await wait_done(client, owner, execution_id)
    assert done["status"] == "completed", done
    assert done["output_data"] == {"taken": [[5, 4], [3, 2], [1]]}


async def test_a_long_drain_goes_on_in_the_wait_sweep(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Past TAKE_AT_ONCE completions in one transaction, waits that would find items are left
    # due at once; the worker's sweep of due waits completes them, a batch per transaction.
    monkeypatch.setattr(frames, "TAKE_AT_ONCE", 2)
    owner = await signup(client, "qsweep@example.com")
    definition = {
        **declare(queue_def("jobs")),
        "steps": [
            gate(),
            {
                "key": "each",
                "type": "loop",
                "depends_on": ["go"],
                "over": "{{ range(7) }}",
                "body": take("one", "jobs", timeout_ms=60_000),
            },
        ],
        "outputs": {"taken": "{{ steps.each.output }}"},
    }
    execution_id = await start(client, owner, definition)
    await waiting(client, owner, execution_id)
    for n in range(1, 8):
        await add(client, owner, execution_id, "add_jobs", n)
    await add(client, owner, execution_id, "go", None)
    done = await wait_done(client, owner, execution_id)
    assert done["status"] == "completed", done
    assert done["output_data"] == {"taken": [[n] for n in range(1, 8)]}


async def test_a_pending_execution_accepts_items_for_when_it_starts(
    client: httpx.AsyncClient,
) -> None:
    owner = await signup(client, "qpending@example.com")
    definition = {
        **declare(queue_def("jobs")),
        "steps": [gate(), take("consume", "jobs")],
    }
    wf = await client.post(
        "/api/v1/workflows",
        headers=owner.headers,
        json={"name": "one-at-a-time", "definition": definition, "max_concurrent_executions": 1},
    )
    assert wf.status_code == 201, wf.text
    url = f"/api/v1/workflows/{wf.json()['id']}/executions"
    first, second = [
        (await client.post(url, headers=owner.headers, json={})).json()["id"] for _ in range(2)
    ]
    await waiting(client, owner, first)
    body = (await client.get(f"/api/v1/executions/{second}", headers=owner.headers)).json()
    assert body["status"] == "pending"
    assert_problem(await send(client, owner, second, "go", None), 409)  # nobody waits yet
    assert (await add(client, owner, second, "add_jobs", "early"))["queued"] is True

    await add(client, owner, first, "go", None)
    assert (await add(client, owner, first, "add_jobs", "late"))["delivered_to"] == 1
    assert outputs(await wait_done(client, owner, first))["consume"] == ["late"]
    await waiting(client, owner, second)  # started; its item waits in the queue
    await add(client, owner, second, "go", None)
    done = await wait_done(client, owner, second)
    assert outputs(done)["consume"] == ["early"]
