"""The engine's store driven directly (no embedded worker): retries and lease fencing."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import httpx
import pytest
from sqlalchemy import select

from tests.integration.conftest import Account, Clock, signup
from tests.integration.test_engine import data_step
from turbocat.bootstrap import AppContext
from turbocat.db.engine import TenantContext
from turbocat.db.models import ExecutionRow, StepRunRow, WorkflowRow
from turbocat.engine import claims, store
from turbocat.engine.runner import StepFailure, StepOutcome
from turbocat.engine.worker import WorkerConfig


async def started_execution(
    client: httpx.AsyncClient, app_context: AppContext, who: Account, definition: dict
) -> str:
    """Create and start an execution with the embedded worker kept out of the way."""
    wf = (
        await client.post(
            "/api/v1/workflows",
            headers=who.headers,
            json={"name": "direct", "definition": definition},
        )
    ).json()
    r = await client.post(f"/api/v1/workflows/{wf['id']}/executions", headers=who.headers, json={})
    return str(r.json()["id"])


async def saved_data_agent(
    client: httpx.AsyncClient, who: Account, name: str, *, limit: int
) -> None:
    """A saved data agent that runs at most ``limit`` at once."""
    r = await client.post(
        "/api/v1/agents",
        headers=who.headers,
        json={"name": name, "type": "data", "config": {"mapping": {"ok": True}},
              "max_concurrent_executions": limit},
    )  # fmt: skip
    assert r.status_code == 201, r.text


@pytest.fixture
def app_context(settings, clock: Clock) -> AppContext:
    settings.engine.embedded_worker = False  # these tests drive the worker themselves
    ctx = AppContext.build(settings)
    ctx.clock = clock
    return ctx


async def test_retries_schedule_new_attempts_with_backoff(
    client: httpx.AsyncClient, app_context: AppContext, clock: Clock
) -> None:
    owner = await signup(client, "retry@example.com")
    step = {
        **data_step("flaky", mapping={"x": 1}),
        "retry": {"count": 2, "delay_ms": 1000, "jitter": False},
    }
    execution_id = await started_execution(client, app_context, owner, {"steps": [step]})
    worker = app_context.worker(WorkerConfig(worker_id="w1"))
    db = app_context.db
    wf_row = None
    async with db.transaction(TenantContext(system=True)) as session:
        (claimed,) = await claims.claim(
            session,
            worker_id="w1",
            queues=["default"],
            limit=5,
            now=clock.now,
            lease=dt.timedelta(seconds=30),
        )
        wf_row = (await session.execute(select(WorkflowRow))).scalar_one()
    plan = app_context.plans.get(
        wf_row.id, wf_row.updated_at.isoformat(), wf_row.definition, wf_row.task_queue
    )
    boom = StepOutcome(failure=StepFailure("ConnectionError", "upstream reset", retryable=True))
    async with db.transaction(TenantContext(system=True)) as session:
        recorded = await store.record_outcome(
            session,
            run_id=claimed.id,
            epoch=claimed.lease_epoch,
            outcome=boom,
            plan=plan,
            now=clock.now,
            rand=0.5,
        )
    assert not recorded.finished
    async with db.transaction(TenantContext(system=True)) as session:
        runs = (
            (await session.execute(select(StepRunRow).order_by(StepRunRow.attempt))).scalars().all()
        )
    assert [(r.attempt, r.status.value) for r in runs] == [(1, "failed"), (2, "ready")]
    assert runs[1].scheduled_for == clock.now + dt.timedelta(seconds=1)
    assert runs[1].idempotency_key == runs[0].idempotency_key
    assert await worker.tick() == 0  # not due yet
    clock.advance(seconds=1)
    await worker.drain()
    done = (await client.get(f"/api/v1/executions/{execution_id}", headers=owner.headers)).json()
    assert done["status"] == "completed" and [s["attempt"] for s in done["steps"]] == [1, 2]


async def test_a_worker_that_lost_its_lease_cannot_commit(
    client: httpx.AsyncClient, app_context: AppContext, clock: Clock
) -> None:
    owner = await signup(client, "lease@example.com")
    execution_id = await started_execution(
        client, app_context, owner, {"steps": [data_step("a", mapping={"x": 1})]}
    )
    db = app_context.db
    lease = dt.timedelta(seconds=30)
    async with db.transaction(TenantContext(system=True)) as session:
        (first,) = await claims.claim(
            session, worker_id="dead", queues=["default"], limit=1, now=clock.now, lease=lease
        )
        wf_row = (await session.execute(select(WorkflowRow))).scalar_one()
    plan = app_context.plans.get(
        wf_row.id, wf_row.updated_at.isoformat(), wf_row.definition, wf_row.task_queue
    )
    clock.advance(seconds=31)  # the first worker died; its lease runs out
    rescuer = app_context.worker(WorkerConfig(worker_id="alive", lease_seconds=30))
    await rescuer.maintain(clock.now)
    async with db.transaction(TenantContext(system=True)) as session:
        (second,) = await claims.claim(
            session, worker_id="alive", queues=["default"], limit=1, now=clock.now, lease=lease
        )
    assert second.id == first.id and second.lease_epoch == first.lease_epoch + 1
    assert second.idempotency_key == first.idempotency_key
    stale = StepOutcome(output={"from": "dead"})
    async with db.transaction(TenantContext(system=True)) as session:
        recorded = await store.record_outcome(
            session,
            run_id=first.id,
            epoch=first.lease_epoch,
            outcome=stale,
            plan=plan,
            now=clock.now,
            rand=0.5,
        )
    assert recorded.lost_lease
    async with db.transaction(TenantContext(system=True)) as session:
        # the stale outcome's completion was counted as the execution was locked, then taken back
        counted = await session.get(ExecutionRow, uuid.UUID(execution_id))
        assert counted is not None and counted.steps_completed == 0
    async with db.transaction(TenantContext(system=True)) as session:
        recorded = await store.record_outcome(
            session,
            run_id=second.id,
            epoch=second.lease_epoch,
            outcome=StepOutcome(output={"from": "alive"}),
            plan=plan,
            now=clock.now,
            rand=0.5,
        )
    assert recorded.finished
    done = (await client.get(f"/api/v1/executions/{execution_id}", headers=owner.headers)).json()
    assert done["status"] == "completed" and done["steps"][0]["output"] == {"from": "alive"}
    assert done["steps_completed"] == 1


async def test_a_batch_counts_each_outcome_once_even_after_a_lost_lease(
    client: httpx.AsyncClient, app_context: AppContext, clock: Clock
) -> None:
    # two outcomes of one execution in one transaction (a worker's batch): the first locks
    # and counts; the second finds the execution locked, counts in memory, loses its fence
    # and takes its count back
    owner = await signup(client, "batch-lease@example.com")
    definition = {"steps": [data_step("a", mapping={"x": 1}), data_step("b", mapping={"y": 2})]}
    execution_id = await started_execution(client, app_context, owner, definition)
    db = app_context.db
    lease = dt.timedelta(seconds=30)
    async with db.transaction(TenantContext(system=True)) as session:
        runs = await claims.claim(
            session, worker_id="w", queues=["default"], limit=2, now=clock.now, lease=lease
        )
        wf_row = (await session.execute(select(WorkflowRow))).scalar_one()
    plan = app_context.plans.get(
        wf_row.id, wf_row.updated_at.isoformat(), wf_row.definition, wf_row.task_queue
    )
    first, second = sorted(runs, key=lambda run: run.step_key)
    async with db.transaction(TenantContext(system=True)) as session:
        fresh = await store.record_outcome(  # holds the execution, as a worker's batch does
            session, run_id=second.id, epoch=second.lease_epoch,
            outcome=StepOutcome(output={}), plan=plan, now=clock.now, rand=0.5,
        )  # fmt: skip
        stale = await store.record_outcome(
            session, run_id=first.id, epoch=first.lease_epoch - 1,
            outcome=StepOutcome(output={}), plan=plan, now=clock.now, rand=0.5,
        )  # fmt: skip
    assert stale.lost_lease and not fresh.lost_lease
    async with db.transaction(TenantContext(system=True)) as session:
        counted = await session.get(ExecutionRow, uuid.UUID(execution_id))
        assert counted is not None and counted.steps_completed == 1


async def test_cancel_stops_running_steps_and_refuses_twice(
    client: httpx.AsyncClient, app_context: AppContext, clock: Clock
) -> None:
    owner = await signup(client, "cancel@example.com")
    definition = {
        "steps": [data_step("a", mapping={"x": 1}), data_step("b", deps=("a",), mapping={"y": 2})]
    }
    execution_id = await started_execution(client, app_context, owner, definition)
    worker = app_context.worker(WorkerConfig(worker_id="w-cancel"))
    async with app_context.db.transaction(TenantContext(system=True)) as session:
        (run,) = await claims.claim(
            session,
            worker_id="w-cancel",
            queues=["default"],
            limit=1,
            now=clock.now,
            lease=dt.timedelta(seconds=30),
        )
    # stand-in for a long step the worker is running (an LLM call, say)
    long_step = asyncio.create_task(asyncio.sleep(60))
    worker._running[run.id] = long_step

    r = await client.post(f"/api/v1/executions/{execution_id}/cancel", headers=owner.headers)
    assert (
        r.status_code == 200
        and r.json()["status"] == "cancelled"
        and r.json()["result"] == "cancelled"
    )
    assert await worker.stop_cancelled() == 1
    with pytest.raises(asyncio.CancelledError):
        await long_step
    done = (await client.get(f"/api/v1/executions/{execution_id}", headers=owner.headers)).json()
    assert {s["step_key"]: s["status"] for s in done["steps"]} == {
        "a": "cancelled",
        "b": "cancelled",
    }
    r = await client.post(f"/api/v1/executions/{execution_id}/cancel", headers=owner.headers)
    assert r.status_code == 409
    logs = (
        await client.get(f"/api/v1/executions/{execution_id}/logs", headers=owner.headers)
    ).json()
    assert "cancelled by user" in logs[-1]["message"]


async def test_execution_timeout_cancels_what_runs(
    client: httpx.AsyncClient, app_context: AppContext, clock: Clock
) -> None:
    owner = await signup(client, "timeout@example.com")
    definition = {"timeout_seconds": 5, "steps": [data_step("a", mapping={"x": 1})]}
    execution_id = await started_execution(client, app_context, owner, definition)
    worker = app_context.worker(WorkerConfig(worker_id="w-timeout"))
    async with app_context.db.transaction(TenantContext(system=True)) as session:
        await claims.claim(
            session,
            worker_id="w-timeout",
            queues=["default"],
            limit=1,
            now=clock.now,
            lease=dt.timedelta(seconds=30),
        )
    clock.advance(seconds=4)
    await worker.maintain(clock.now)
    assert (await client.get(f"/api/v1/executions/{execution_id}", headers=owner.headers)).json()[
        "status"
    ] == "running"
    clock.advance(seconds=2)
    await worker.maintain(clock.now)
    done = (await client.get(f"/api/v1/executions/{execution_id}", headers=owner.headers)).json()
    assert done["status"] == "timeout" and done["result"] == "failure"
    assert done["steps"][0]["status"] == "cancelled" and "time limit" in done["error_message"]
    wf = (
        await client.get(f"/api/v1/workflows/{done['workflow_id']}", headers=owner.headers)
    ).json()
    assert wf["total_executions"] == 1 and wf["failed_executions"] == 1


async def test_a_saved_agent_runs_at_most_its_limit_at_once(
    client: httpx.AsyncClient, app_context: AppContext, clock: Clock
) -> None:
    owner = await signup(client, "agentlimit@example.com")
    await saved_data_agent(client, owner, "tagger", limit=2)
    steps = [{"key": f"t{i}", "type": "agent", "agent": "tagger"} for i in range(5)]
    steps.append(data_step("free", mapping={"x": 1}))  # no saved agent: no limit
    await started_execution(client, app_context, owner, {"steps": steps})
    db = app_context.db
    lease = dt.timedelta(seconds=30)

    async def claim(worker: str) -> list[StepRunRow]:
        async with db.transaction(TenantContext(system=True)) as session:
            return await claims.claim(
                session, worker_id=worker, queues=["default"], limit=10, now=clock.now, lease=lease
            )

    first = await claim("w1")
    assert len([r for r in first if r.agent_id]) == 2  # of the five t* steps
    assert "free" in {r.step_key for r in first}
    assert await claim("w2") == []  # another worker finds the agent at its limit
    async with db.transaction(TenantContext(system=True)) as session:
        wf_row = (await session.execute(select(WorkflowRow))).scalar_one()
        plan = await app_context.plans.load(session, wf_row)
    done = next(r for r in first if r.agent_id)
    async with db.transaction(TenantContext(system=True)) as session:
        await store.record_outcome(
            session, run_id=done.id, epoch=done.lease_epoch, outcome=StepOutcome(output={}),
            plan=plan, now=clock.now, rand=0.5,
        )  # fmt: skip
    again = await claim("w2")
    assert len(again) == 1 and again[0].agent_id == done.agent_id


async def test_the_recording_worker_takes_the_next_step_only_within_its_limits(
    client: httpx.AsyncClient, app_context: AppContext, clock: Clock
) -> None:
    # a -> b -> c: b runs the saved agent "solo" (one at a time); c is on another queue
    owner = await signup(client, "chain@example.com")
    await saved_data_agent(client, owner, "solo", limit=1)
    steps = [
        data_step("a", mapping={"x": 1}),
        {"key": "b", "type": "agent", "agent": "solo", "depends_on": ["a"]},
        {**data_step("c", deps=("b",), mapping={"y": 2}), "task_queue": "elsewhere"},
    ]
    first_id = await started_execution(client, app_context, owner, {"steps": steps})
    wf_id = (await client.get(f"/api/v1/executions/{first_id}", headers=owner.headers)).json()[
        "workflow_id"
    ]
    r = await client.post(f"/api/v1/workflows/{wf_id}/executions", headers=owner.headers, json={})
    second_id = r.json()["id"]
    db = app_context.db
    lease = dt.timedelta(seconds=30)
    chain = store.Chain("w", ["default"], 8, lease)
    async with db.transaction(TenantContext(system=True)) as session:
        plan = await app_context.plans.load(
            session, (await session.execute(select(WorkflowRow))).scalars().first()
        )
        a_runs = {
            run.execution_id: run
            for run in await claims.claim(
                session, worker_id="w", queues=["default"], limit=8, now=clock.now, lease=lease
            )
        }

    async def record(run: StepRunRow) -> store.Recorded:
        async with db.transaction(TenantContext(system=True)) as session:
            return await store.record_outcome(
                session, run_id=run.id, epoch=run.lease_epoch, outcome=StepOutcome(output={}),
                plan=plan, now=clock.now, rand=0.5, chain=chain,
                claimed=(run.execution_id, run.started_at),
            )  # fmt: skip

    # the first execution's a completes: its b is taken straight to running by the recorder
    first = await record(a_runs[uuid.UUID(first_id)])
    (b_first,) = first.chained
    assert (b_first.step_key, b_first.status, b_first.lease_owner) == ("b", "running", "w")
    assert b_first.lease_epoch == 1 and b_first.started_at is not None
    # the second execution's b would exceed the agent's limit: made ready, not taken
    second = await record(a_runs[uuid.UUID(second_id)])
    assert second.chained == [] or all(run.step_key != "b" for run in second.chained)
    async with db.transaction(TenantContext(system=True)) as session:
        b_second = (
            await session.execute(
                select(StepRunRow).where(
                    StepRunRow.execution_id == uuid.UUID(second_id), StepRunRow.step_key == "b"
                )
            )
        ).scalar_one()
    assert b_second.status == "ready" and b_second.lease_owner is None
    # the first b completes: c is on a queue this worker does not serve, so it waits there
    after_b = await record(b_first)
    assert all(run.step_key != "c" for run in after_b.chained)
    done = (await client.get(f"/api/v1/executions/{first_id}", headers=owner.headers)).json()
    statuses = {s["step_key"]: s["status"] for s in done["steps"]}
    assert statuses == {"a": "completed", "b": "completed", "c": "ready"}
    assert done["steps_completed"] == 2
