"""API runs (wait, Idempotency-Key, input schema) and events, through HTTP on both databases."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.integration.conftest import Account, Clock, assert_problem, count_rows, signup
from tests.integration.test_engine import data_step, wait_done
from turbocat.api.app import create_app
from turbocat.bootstrap import AppContext
from turbocat.config import Settings
from turbocat.db.engine import Database
from turbocat.db.models import EventRow, ExecutionRow
from turbocat.services import events

DEFINITION: dict[str, Any] = {
    "inputs": {
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
    },
    "steps": [data_step("double", mapping={"twice": "{{ input.n * 2 }}"})],
    "outputs": {"twice": "{{ steps.double.output.twice }}"},
}
SIGNAL_WAIT: dict[str, Any] = {
    "signals": [{"name": "go"}],
    "steps": [{"key": "hold", "type": "wait", "signal": {"name": "go"}}],
}


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path / "home",
        database_url=database_url,
        triggers={"event_max_depth": 3, "event_poll_seconds": 0.05},
    )


async def make_workflow(
    client: httpx.AsyncClient,
    who: Account,
    definition: dict[str, Any],
    *,
    trigger_config: dict[str, Any] | None = None,
) -> str:
    body: dict[str, Any] = {
        "name": f"wf {uuid.uuid4().hex[:6]}",
        "definition": definition,
        "status": "active",
    }
    if trigger_config is not None:
        body["trigger_config"] = trigger_config
    r = await client.post("/api/v1/workflows", headers=who.headers, json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def run_url(workflow_id: str) -> str:
    return f"/api/v1/workflows/{workflow_id}/executions"


async def test_wait_answers_with_the_output(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "wait@example.com")
    wf = await make_workflow(client, owner, DEFINITION)
    r = await client.post(
        f"{run_url(wf)}?wait=20", headers=owner.headers, json={"input": {"n": 21}}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "completed" and body["output_data"] == {"twice": 42}
    assert body["trigger_type"] == "api"
    assert r.headers["location"] == f"/api/v1/executions/{body['id']}"

    r = await client.post(
        run_url(wf), headers=owner.headers, json={"input": {"n": 1}, "trigger_type": "manual"}
    )
    assert r.status_code == 202 and r.json()["trigger_type"] == "manual"
    assert (await wait_done(client, owner, r.json()["id"]))["output_data"] == {"twice": 2}


async def test_wait_that_runs_out_answers_202_with_the_id(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "slow@example.com")
    wf = await make_workflow(client, owner, SIGNAL_WAIT)
    loop = asyncio.get_running_loop()
    began = loop.time()
    r = await client.post(f"{run_url(wf)}?wait=0.5", headers=owner.headers, json={"input": {}})
    assert r.status_code == 202, r.text
    assert 0.45 <= loop.time() - began < 5
    assert r.json()["status"] in ("running", "waiting")
    r = await client.post(f"{run_url(wf)}?wait=100000", headers=owner.headers, json={})
    assert_problem(r, 422, "validation_failed")


async def test_input_that_fails_the_schema_writes_nothing(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    owner = await signup(client, "schema@example.com")
    wf = await make_workflow(client, owner, DEFINITION)
    r = await client.post(run_url(wf), headers=owner.headers, json={"input": {"n": "x"}})
    body = assert_problem(r, 422, "validation_failed")
    assert body["errors"][0]["field"].startswith("body.input")
    r = await client.post(
        run_url(wf), headers={**owner.headers, "Idempotency-Key": "k"}, json={"input": {}}
    )
    assert_problem(r, 422, "validation_failed")
    assert await count_rows(operator_db, ExecutionRow) == 0


async def test_idempotency_key_returns_the_same_execution(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    owner = await signup(client, "idem@example.com")
    wf = await make_workflow(client, owner, DEFINITION)
    headers = {**owner.headers, "Idempotency-Key": "order-17"}
    first = await client.post(run_url(wf), headers=headers, json={"input": {"n": 3}})
    again = await client.post(run_url(wf), headers=headers, json={"input": {"n": 3}})
    assert first.status_code == again.status_code == 202, again.text
    assert first.json()["id"] == again.json()["id"]
    other = await client.post(run_url(wf), headers=headers, json={"input": {"n": 4}})
    assert_problem(other, 409, "idempotency_key_reused")
    fresh = await client.post(
        run_url(wf),
        headers={**owner.headers, "Idempotency-Key": "order-18"},
        json={"input": {"n": 4}},
    )
    assert fresh.status_code == 202 and fresh.json()["id"] != first.json()["id"]
    assert await count_rows(operator_db, ExecutionRow) == 2
    # waiting on a replayed key answers with the first execution's output
    r = await client.post(f"{run_url(wf)}?wait=20", headers=headers, json={"input": {"n": 3}})
    assert r.status_code == 200 and r.json()["output_data"] == {"twice": 6}
    # a retry still gets its execution after the workflow was paused
    r = await client.patch(
        f"/api/v1/workflows/{wf}", headers=owner.headers, json={"status": "paused"}
    )
    assert r.status_code == 200, r.text
    r = await client.post(run_url(wf), headers=headers, json={"input": {"n": 3}})
    assert r.status_code == 202 and r.json()["id"] == first.json()["id"]
    fresh_key = {**owner.headers, "Idempotency-Key": "order-19"}
    r = await client.post(run_url(wf), headers=fresh_key, json={"input": {"n": 3}})
    assert_problem(r, 409, "conflict")


async def test_concurrent_duplicates_make_one_execution(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    owner = await signup(client, "race@example.com")
    wf = await make_workflow(client, owner, DEFINITION)
    headers = {**owner.headers, "Idempotency-Key": "burst"}
    answers = await asyncio.gather(
        *[client.post(run_url(wf), headers=headers, json={"input": {"n": 5}}) for _ in range(6)]
    )
    assert {r.status_code for r in answers} == {202}, [r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    assert await count_rows(operator_db, ExecutionRow) == 1


async def executions_of(client: httpx.AsyncClient, who: Account, workflow_id: str) -> list[dict]:
    r = await client.get(
        "/api/v1/executions", headers=who.headers, params={"workflow_id": workflow_id}
    )
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


async def until(predicate: Any, seconds: float = 15) -> Any:
    async with asyncio.timeout(seconds):
        while not (result := await predicate()):
            await asyncio.sleep(0.05)
    return result


async def all_dispatched(db: Database) -> bool:
    async with db.transaction() as session:
        left = await session.execute(
            select(func.count()).select_from(EventRow).where(EventRow.processed_at.is_(None))
        )
        return left.scalar_one() == 0


async def test_a_custom_event_starts_subscribed_workflows_that_pass_the_filter(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    owner = await signup(client, "events@example.com")
    echo = {
        "steps": [data_step("echo", mapping={"amount": "{{ input.amount }}"})],
        "outputs": {"amount": "{{ steps.echo.output.amount }}"},
    }
    big = await make_workflow(
        client, owner, echo,
        trigger_config={"events": [{"pattern": "invoice.*", "filter": "event.payload.amount > 100"}]},
    )  # fmt: skip
    every = await make_workflow(
        client, owner, echo, trigger_config={"events": [{"pattern": "invoice.paid"}]}
    )
    other = await make_workflow(
        client, owner, echo, trigger_config={"events": [{"pattern": "order.*"}]}
    )
    for amount in (50, 500):
        r = await client.post(
            "/api/v1/events", headers=owner.headers,
            json={"name": "invoice.paid", "payload": {"amount": amount}},
        )  # fmt: skip
        assert r.status_code == 202, r.text
    await until(lambda: all_dispatched(operator_db))
    runs = await executions_of(client, owner, big)
    assert len(runs) == 1 and runs[0]["trigger_type"] == "event"
    done = await wait_done(client, owner, runs[0]["id"])
    assert done["output_data"] == {"amount": 500}
    assert len(await executions_of(client, owner, every)) == 2
    assert await executions_of(client, owner, other) == []
    detail = (await client.get(f"/api/v1/executions/{runs[0]['id']}", headers=owner.headers)).json()
    assert detail["input_data"] == {"amount": 500}

    # another organization's subscriber never sees these events
    stranger = await signup(client, "stranger@example.com", organization="Other")
    theirs = await make_workflow(
        client, stranger, echo, trigger_config={"events": [{"pattern": "*"}]}
    )
    await client.post("/api/v1/events", headers=owner.headers, json={"name": "invoice.paid"})
    await until(lambda: all_dispatched(operator_db))
    assert await executions_of(client, stranger, theirs) == []


async def test_platform_names_and_bad_filters_are_refused(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "names@example.com")
    for name in ("execution.completed", "Bad Name", "schedule.misfired"):
        r = await client.post("/api/v1/events", headers=owner.headers, json={"name": name})
        assert_problem(r, 422, "validation_failed")
    r = await client.post(
        "/api/v1/workflows", headers=owner.headers,
        json={"name": "bad filter", "definition": DEFINITION,
              "trigger_config": {"events": [{"pattern": "x", "filter": "input.y"}]}},
    )  # fmt: skip
    body = assert_problem(r, 422, "validation_failed")
    assert body["errors"][0]["field"] == "body.trigger_config.events.0.filter"


async def test_execution_completed_triggers_another_workflow(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "chain@example.com")
    first = await make_workflow(client, owner, DEFINITION)
    follower = await make_workflow(
        client, owner,
        {"steps": [data_step("note", mapping={"got": "{{ input.output.twice }}"})],
         "outputs": {"got": "{{ steps.note.output.got }}"}},
        trigger_config={"events": [{
            "pattern": "execution.completed",
            "filter": f"event.payload.workflow_id == '{first}'",
        }]},
    )  # fmt: skip
    r = await client.post(
        f"{run_url(first)}?wait=20", headers=owner.headers, json={"input": {"n": 4}}
    )
    assert r.status_code == 200, r.text

    async def started() -> list[dict]:
        return await executions_of(client, owner, follower)

    runs = await until(started)
    assert len(runs) == 1
    done = await wait_done(client, owner, runs[0]["id"])
    assert done["output_data"] == {"got": 8}
    detail = (await client.get(f"/api/v1/executions/{done['id']}", headers=owner.headers)).json()
    assert detail["trigger_type"] == "event"
    listed = (await client.get("/api/v1/events", headers=owner.headers)).json()["items"]
    assert {e["name"] for e in listed} == {"execution.completed"}
    assert any(e["payload"]["execution_id"] == r.json()["id"] for e in listed)


async def test_a_workflow_triggering_itself_stops_at_the_depth_limit(
    client: httpx.AsyncClient, operator_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    owner = await signup(client, "loop@example.com")
    wf = await make_workflow(
        client, owner, {"steps": [data_step("tick", mapping={"x": 1})]},
        trigger_config={"events": [{"pattern": "execution.*"}]},
    )  # fmt: skip
    r = await client.post(run_url(wf), headers=owner.headers, json={})
    assert r.status_code == 202

    async def settled() -> bool:
        runs = await executions_of(client, owner, wf)
        live = [x for x in runs if x["status"] in ("pending", "running")]
        return len(runs) == 4 and not live and await all_dispatched(operator_db)

    await until(settled)
    await asyncio.sleep(0.3)  # a few more dispatcher polls: nothing else starts
    runs = await executions_of(client, owner, wf)
    assert len(runs) == 4  # the manual run, then depths 1, 2 and 3 (the limit)
    async with operator_db.transaction() as session:
        depths = sorted(
            (row.trigger_data or {}).get("depth", 0)
            for row in (await session.execute(select(ExecutionRow))).scalars()
        )
    assert depths == [0, 1, 2, 3]
    assert "depth limit of 3" in caplog.text


async def test_unheard_events_are_marked_in_batches_and_purged_later(
    settings: Settings, app_context: AppContext, operator_db: Database
) -> None:
    app = create_app(settings, app_context, embedded_worker=False)  # no dispatcher racing us
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            owner = await signup(client, "batch@example.com")
    now = app_context.clock()
    db = Database.from_settings(settings)
    try:
        async with operator_db.transaction() as session:
            session.add_all(
                EventRow(organization_id=uuid.UUID(owner.org_id), name="nobody.listens",
                         payload={"i": i}, created_at=now)
                for i in range(450)
            )  # fmt: skip
        reports = []
        while not reports or reports[-1].more:
            reports.append(
                await events.dispatch_pending(
                    db,
                    plans=app_context.plans,
                    notify=lambda: None,
                    max_depth=8,
                    now=now,
                    limit=200,
                )
            )
        assert [(r.events, r.started, r.more) for r in reports] == [
            (200, 0, True),
            (200, 0, True),
            (50, 0, False),
        ]
        assert await all_dispatched(operator_db)
        assert await events.purge(db, now - dt.timedelta(seconds=1)) == 0
        assert await events.purge(db, now + dt.timedelta(seconds=1), batch=100) == 450
        assert await count_rows(operator_db, EventRow) == 0
    finally:
        await db.dispose()


async def test_every_way_an_execution_ends_emits_its_event(
    client: httpx.AsyncClient, clock: Clock
) -> None:
    owner = await signup(client, "ends@example.com")
    failing = await make_workflow(
        client, owner, {"steps": [data_step("bad", mapping={"v": "{{ input.x.y }}"})]}
    )
    slow = await make_workflow(client, owner, {**SIGNAL_WAIT, "timeout_seconds": 5})
    failed = (await client.post(f"{run_url(failing)}?wait=20", headers=owner.headers,
                                json={"input": {"x": 1}})).json()  # fmt: skip
    assert failed["status"] == "failed", failed
    cancelled = (await client.post(run_url(slow), headers=owner.headers, json={})).json()
    r = await client.post(f"/api/v1/executions/{cancelled['id']}/cancel", headers=owner.headers)
    assert r.status_code == 200, r.text
    timed_out = (await client.post(run_url(slow), headers=owner.headers, json={})).json()
    clock.advance(seconds=60)  # the worker's next maintenance finds it past its time limit
    assert (await wait_done(client, owner, timed_out["id"]))["status"] == "timeout"

    listed = (await client.get("/api/v1/events", headers=owner.headers)).json()["items"]
    ends = {e["payload"]["execution_id"]: (e["name"], e["payload"]["status"]) for e in listed}
    assert ends == {
        failed["id"]: ("execution.failed", "failed"),
        cancelled["id"]: ("execution.cancelled", "cancelled"),
        timed_out["id"]: ("execution.timeout", "timeout"),
    }
    by_id = {e["payload"]["execution_id"]: e["payload"] for e in listed}
    assert "failed" in by_id[failed["id"]]["error"] and by_id[failed["id"]]["depth"] == 0


async def test_a_loop_through_a_child_workflow_stops_at_the_depth_limit(
    client: httpx.AsyncClient, operator_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A subscriber to a child's completion that starts that child again: the child's events
    carry its parent's chain depth (not 0), so the loop stops at the limit."""
    owner = await signup(client, "childloop@example.com")
    child = await make_workflow(client, owner, {"steps": [data_step("tick", mapping={"x": 1})]})
    parent = await make_workflow(
        client, owner,
        {"steps": [{"key": "call", "type": "agent",
                    "component": {"kind": "workflow", "config": {"workflow": child}}}]},
        trigger_config={"events": [{
            "pattern": "execution.completed",
            "filter": f"event.payload.workflow_id == '{child}'",
        }]},
    )  # fmt: skip
    r = await client.post(run_url(child), headers=owner.headers, json={})
    assert r.status_code == 202

    async def settled() -> bool:
        runs = await executions_of(client, owner, parent)
        live = [x for x in await executions_of(client, owner, child) + runs
                if x["status"] in ("pending", "running")]  # fmt: skip
        return len(runs) == 3 and not live and await all_dispatched(operator_db)

    await until(settled)
    await asyncio.sleep(0.3)  # a few more dispatcher polls: nothing else starts
    assert len(await executions_of(client, owner, parent)) == 3  # depths 1, 2 and 3
    assert len(await executions_of(client, owner, child)) == 4  # the manual run, 3 children
    async with operator_db.transaction() as session:
        ended = (
            await session.execute(select(EventRow).where(EventRow.name == "execution.completed"))
        ).scalars()
        depths = sorted(e.payload["depth"] for e in ended)
    assert depths == [0, 1, 1, 2, 2, 3, 3]  # the first child run, then each parent and child
    assert "depth limit of 3" in caplog.text
