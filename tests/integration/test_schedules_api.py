"""Schedules through the API and the scheduler: slots, DST, misfires, max runs, exactly once."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.integration.conftest import Account, Clock, assert_problem, count_rows, signup
from tests.integration.test_engine import data_step
from turbocat.bootstrap import AppContext
from turbocat.config import EngineSettings, SchedulerSettings, Settings
from turbocat.db.engine import Database
from turbocat.db.models import EventRow, ExecutionRow, ScheduleRow
from turbocat.engine.plan import PlanCache
from turbocat.engine.scheduler import Scheduler, SchedulerConfig

UTC = dt.UTC
DEFINITION: dict[str, Any] = {
    "inputs": {"type": "object", "properties": {"n": {"type": "integer"}}},
    "steps": [data_step("echo", mapping={"n": "{{ input.n }}"})],
}


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """No embedded scheduler (each test ticks its own at the times it chooses) and no worker
    (these tests count executions; running them is the engine's tests' business)."""
    return Settings(
        home=tmp_path / "home", database_url=database_url,
        scheduler=SchedulerSettings(embedded=False), engine=EngineSettings(embedded_worker=False),
    )  # fmt: skip


async def workflow(client: httpx.AsyncClient, who: Account) -> str:
    r = await client.post(
        "/api/v1/workflows", headers=who.headers, json={"name": "tick", "definition": DEFINITION}
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def schedule(
    client: httpx.AsyncClient, who: Account, workflow_id: str, **fields: Any
) -> dict[str, Any]:
    r = await client.post(
        "/api/v1/schedules", headers=who.headers, json={"workflow_id": workflow_id, **fields}
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def scheduled_runs(db: Database, schedule_id: str) -> list[ExecutionRow]:
    async with db.transaction() as session:
        rows = (await session.execute(select(ExecutionRow))).scalars().all()
    return [r for r in rows if r.trigger_data.get("schedule_id") == schedule_id]


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


async def test_slots_fire_once_with_input_and_next_fire_at(
    client: httpx.AsyncClient, app_context: AppContext, clock: Clock, operator_db: Database
) -> None:
    owner = await signup(client, "sched@example.com")
    wf = await workflow(client, owner)
    clock.now = dt.datetime(2026, 6, 1, 9, 58, tzinfo=UTC)
    body = await schedule(
        client, owner, wf, cron_expression="*/5 * * * *", timezone="Europe/Berlin",
        input={"n": 7}, name="every five",
    )  # fmt: skip
    assert at(body["next_fire_at"]) == dt.datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    assert body["run_count"] == 0 and body["misfire_policy"] == "skip"
    scheduler = app_context.scheduler()

    assert (await scheduler.tick()).fired == []  # not due yet
    clock.now = dt.datetime(2026, 6, 1, 10, 0, 1, tzinfo=UTC)
    fired = (await scheduler.tick()).fired
    assert len(fired) == 1 and fired[0].execution_id is not None
    assert (await scheduler.tick()).fired == []  # the slot fired once
    runs = await scheduled_runs(operator_db, body["id"])
    assert len(runs) == 1
    run = runs[0]
    assert run.trigger_type.value == "scheduled" and run.input_data == {"n": 7}
    assert run.user_id is None and run.idempotency_key.startswith(f"schedule:{body['id']}:")

    got = (await client.get(f"/api/v1/schedules/{body['id']}", headers=owner.headers)).json()
    assert got["run_count"] == 1 and at(got["last_fired_at"]) == clock.now
    assert at(got["next_fire_at"]) == dt.datetime(2026, 6, 1, 10, 5, tzinfo=UTC)
    listed = (await client.get("/api/v1/schedules", headers=owner.headers)).json()["items"]
    assert [s["id"] for s in listed] == [body["id"]]
    executions = (
        await client.get("/api/v1/executions?trigger_type=scheduled", headers=owner.headers)
    ).json()["items"]
    assert [e["id"] for e in executions] == [str(run.id)]


async def test_bad_input_is_refused_and_nothing_written(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    owner = await signup(client, "bad@example.com")
    wf = await workflow(client, owner)
    cases = [
        ({"cron_expression": "61 * * * *"}, "body.cron_expression"),
        ({"cron_expression": "* * *"}, "body.cron_expression"),
        ({"cron_expression": "0 0 30 2 *"}, "body.cron_expression"),  # never fires
        ({"cron_expression": "* * * * *", "timezone": "Mars/Olympus"}, "body.timezone"),
        ({"cron_expression": "* * * * *", "input": {"n": "seven"}}, "body.input.n"),
        ({"cron_expression": "* * * * *", "max_runs": 0}, "body.max_runs"),
    ]
    for fields, field in cases:
        r = await client.post(
            "/api/v1/schedules", headers=owner.headers, json={"workflow_id": wf, **fields}
        )
        problem = assert_problem(r, 422)
        assert field in [e["field"] for e in problem["errors"]], problem
    assert await count_rows(operator_db, ScheduleRow) == 0
    good = await schedule(client, owner, wf, cron_expression="0 * * * *")
    r = await client.patch(
        f"/api/v1/schedules/{good['id']}", headers=owner.headers, json={"timezone": "Nowhere"}
    )
    assert assert_problem(r, 422)["errors"][0]["field"] == "body.timezone"
    r = await client.patch(
        f"/api/v1/schedules/{good['id']}", headers=owner.headers,
        json={"misfire_policy": None, "max_runs": None, "input": None, "name": None},
    )  # fmt: skip
    assert r.status_code == 200 and r.json()["misfire_policy"] == "skip", r.text
    other = await signup(client, "other@example.com", organization="Other")
    assert_problem(await client.get(f"/api/v1/schedules/{good['id']}", headers=other.headers), 404)


@pytest.mark.parametrize("policy", ["skip", "run_once"])
async def test_misfire_after_downtime(
    client: httpx.AsyncClient, app_context: AppContext, clock: Clock, operator_db: Database,
    policy: str,
) -> None:  # fmt: skip
    owner = await signup(client, f"{policy}@example.com")
    wf = await workflow(client, owner)
    clock.now = dt.datetime(2026, 6, 1, 9, 30, tzinfo=UTC)
    body = await schedule(client, owner, wf, cron_expression="0 * * * *", misfire_policy=policy)
    clock.now = dt.datetime(2026, 6, 1, 15, 20, tzinfo=UTC)  # down since before 10:00
    fired = (await app_context.scheduler().tick()).fired
    assert len(fired) == 1 and fired[0].missed == 6
    runs = await scheduled_runs(operator_db, body["id"])
    assert len(runs) == (1 if policy == "run_once" else 0)
    assert all(r.trigger_data["missed_slots"] == 6 for r in runs)
    got = (await client.get(f"/api/v1/schedules/{body['id']}", headers=owner.headers)).json()
    assert at(got["next_fire_at"]) == dt.datetime(2026, 6, 1, 16, tzinfo=UTC)
    async with operator_db.transaction() as session:
        events = (await session.execute(select(EventRow))).scalars().all()
    misfired = [e for e in events if e.name == "schedule.misfired"]
    assert len(misfired) == 1 and misfired[0].payload["missed_slots"] == 6


async def test_start_immediately_max_runs_enable_disable(
    client: httpx.AsyncClient, app_context: AppContext, clock: Clock, operator_db: Database
) -> None:
    owner = await signup(client, "max@example.com")
    wf = await workflow(client, owner)
    clock.now = dt.datetime(2026, 6, 1, 9, 30, tzinfo=UTC)
    body = await schedule(
        client, owner, wf, cron_expression="0 * * * *", start_immediately=True, max_runs=2
    )
    assert at(body["next_fire_at"]) == clock.now
    scheduler = app_context.scheduler()
    assert len((await scheduler.tick()).fired) == 1
    url = f"/api/v1/schedules/{body['id']}"
    off = (await client.post(f"{url}/disable", headers=owner.headers)).json()
    assert off["enabled"] is False and off["next_fire_at"] is None
    clock.now = dt.datetime(2026, 6, 1, 10, 0, 5, tzinfo=UTC)
    assert (await scheduler.tick()).fired == []  # disabled: nothing
    clock.now = dt.datetime(2026, 6, 1, 10, 30, tzinfo=UTC)
    on = (await client.post(f"{url}/enable", headers=owner.headers)).json()
    assert at(on["next_fire_at"]) == dt.datetime(2026, 6, 1, 11, tzinfo=UTC)  # 10:00 not run
    clock.now = dt.datetime(2026, 6, 1, 11, 0, 1, tzinfo=UTC)
    assert len((await scheduler.tick()).fired) == 1
    done = (await client.get(url, headers=owner.headers)).json()
    assert done["run_count"] == 2 and done["next_fire_at"] is None
    clock.now = dt.datetime(2026, 6, 1, 12, 0, 1, tzinfo=UTC)
    assert (await scheduler.tick()).fired == []
    assert len(await scheduled_runs(operator_db, body["id"])) == 2
    assert (await client.delete(url, headers=owner.headers)).status_code == 204
    assert_problem(await client.get(url, headers=owner.headers), 404)


@pytest.mark.parametrize(
    ("zone", "day", "expected"),
    [
        # spring forward: 02:30 does not exist; run_once fires at 03:00 local, skip does not
        ("America/New_York", dt.date(2026, 3, 8), {"run_once": ["07:00"], "skip": []}),
        ("Europe/Berlin", dt.date(2026, 3, 29), {"run_once": ["01:00"], "skip": []}),
        # fall back: 02:30 happens twice (Berlin) / once (New York); one run either way
        ("Europe/Berlin", dt.date(2026, 10, 25), {"run_once": ["00:30"], "skip": ["00:30"]}),
        ("America/New_York", dt.date(2026, 11, 1), {"run_once": ["07:30"], "skip": ["07:30"]}),
    ],
)
async def test_dst_days_through_the_scheduler(
    client: httpx.AsyncClient, app_context: AppContext, clock: Clock, operator_db: Database,
    zone: str, day: dt.date, expected: dict[str, list[str]],
) -> None:  # fmt: skip
    """A 02:30 local job ticked every 30 minutes across the whole UTC day of a transition."""
    owner = await signup(client, "dst@example.com")
    wf = await workflow(client, owner)
    clock.now = dt.datetime.combine(day, dt.time(), UTC) - dt.timedelta(minutes=30)
    ids = {
        policy: (
            await schedule(
                client, owner, wf, cron_expression="30 2 * * *", timezone=zone,
                misfire_policy=policy,
            )
        )["id"]
        for policy in expected
    }  # fmt: skip
    scheduler = app_context.scheduler()
    for _ in range(24 * 2):
        clock.advance(minutes=30)
        await scheduler.tick()
    for policy, times in expected.items():
        runs = await scheduled_runs(operator_db, ids[policy])
        slots = sorted(at(r.trigger_data["slot"]).strftime("%H:%M") for r in runs)
        assert slots == times, (policy, slots)


@pytest.mark.pg
async def test_two_schedulers_fire_each_slot_exactly_once(
    client: httpx.AsyncClient, settings: Settings, clock: Clock, operator_db: Database
) -> None:
    """Two schedulers, each with its own engine and connection pool, race over the same due
    slots on PostgreSQL: every slot has exactly one execution."""
    if not settings.resolved_database_url.startswith("postgresql"):
        pytest.skip("several schedulers run against PostgreSQL")
    owner = await signup(client, "race@example.com")
    wf = await workflow(client, owner)
    clock.now = dt.datetime(2026, 6, 1, 10, 0, 0, 500_000, tzinfo=UTC)
    count, steps = 6, 20
    for i in range(count):
        await schedule(client, owner, wf, cron_expression="* * * * * *", input={"n": i})
    config = SchedulerConfig(misfire_grace=dt.timedelta(seconds=5))
    dbs = [Database.from_settings(settings) for _ in range(2)]
    schedulers = [Scheduler(db, config, clock=clock, plans=PlanCache()) for db in dbs]
    fired: Counter[int] = Counter()
    try:
        for _ in range(steps):
            clock.advance(seconds=1)
            results = await asyncio.gather(*(s.tick() for s in schedulers))
            for n, result in enumerate(results):
                fired[n] += len(result.fired)
    finally:
        for db in dbs:
            await db.dispose()
    async with operator_db.transaction() as session:
        runs = (await session.execute(select(ExecutionRow))).scalars().all()
    slots = Counter((r.trigger_data["schedule_id"], r.trigger_data["slot"]) for r in runs)
    assert len(slots) == count * steps and set(slots.values()) == {1}, slots.most_common(2)
    assert sum(fired.values()) == count * steps
    assert min(fired.values()) > 0, fired  # both took part: the race was real


async def test_trigger_config_schedules_become_schedules(
    client: httpx.AsyncClient, app_context: AppContext, clock: Clock, operator_db: Database
) -> None:
    owner = await signup(client, "tc@example.com")
    clock.now = dt.datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    config = {"schedules": [{"cron": "0 10 * * *", "timezone": "Europe/Berlin", "input": {"n": 1}}]}
    r = await client.post(
        "/api/v1/workflows", headers=owner.headers,
        json={"name": "declared", "definition": DEFINITION, "trigger_config": config},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    wf = r.json()["id"]
    url = f"/api/v1/schedules?workflow_id={wf}"
    [made] = (await client.get(url, headers=owner.headers)).json()["items"]
    assert made["name"] == "trigger_config.schedules[0]" and made["input"] == {"n": 1}
    assert at(made["next_fire_at"]) == dt.datetime(2026, 6, 2, 8, tzinfo=UTC)  # 10:00 CEST

    clock.now = dt.datetime(2026, 6, 2, 8, 0, 1, tzinfo=UTC)
    assert len((await app_context.scheduler().tick()).fired) == 1
    config["schedules"].append({"cron": "*/30 * * * *", "enabled": False})
    r = await client.patch(
        f"/api/v1/workflows/{wf}", headers=owner.headers, json={"trigger_config": config}
    )
    assert r.status_code == 200, r.text
    rows = (await client.get(url, headers=owner.headers)).json()["items"]
    by_name = {s["name"]: s for s in rows}
    assert by_name["trigger_config.schedules[0]"]["run_count"] == 1  # unchanged entry kept
    assert by_name["trigger_config.schedules[1]"]["next_fire_at"] is None  # disabled
    config["schedules"] = [{"cron": "0 11 * * *", "timezone": "Europe/Berlin"}]
    r = await client.patch(
        f"/api/v1/workflows/{r.json()['id']}",
        headers=owner.headers,
        json={"trigger_config": config},
    )
    assert r.status_code == 200, r.text
    [kept] = (await client.get(url, headers=owner.headers)).json()["items"]
    assert at(kept["next_fire_at"]) == dt.datetime(2026, 6, 2, 9, tzinfo=UTC)
    bad = await client.patch(
        f"/api/v1/workflows/{r.json()['id']}", headers=owner.headers,
        json={"trigger_config": {"schedules": [{"cron": "bad"}]}},
    )  # fmt: skip
    assert assert_problem(bad, 422)["errors"][0]["field"].startswith("body.trigger_config")
    assert await count_rows(operator_db, ScheduleRow) == 1
