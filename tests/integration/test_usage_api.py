"""Usage metering and monthly quotas through HTTP on both databases: the usage records agree
exactly with the executions, LLM tokens and API requests that happened; GET /api/v1/usage is
for owners and admins and derives months from days; an exhausted execution or token quota
refuses clearly and writes nothing."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.fakes.llm_server import FakeLLM, Script, running
from tests.integration.conftest import Account, assert_problem, bearer, signup
from tests.integration.test_engine import data_step, wait_done
from turbocat.bootstrap import AppContext
from turbocat.config import EngineSettings, LlmRuntimeSettings, RuntimeSettings, Settings
from turbocat.db.engine import Database
from turbocat.db.models import ExecutionRow, UsageRecordRow
from turbocat.domain.enums import UsageMetric
from turbocat.services import metering

DOUBLE: dict[str, Any] = {
    "steps": [data_step("double", mapping={"twice": "{{ input.n * 2 }}"})],
    "outputs": {"twice": "{{ steps.double.output.twice }}"},
}

pytestmark = pytest.mark.usefixtures("key_file")


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    llm = LlmRuntimeSettings(allow=["127.0.0.1/32"])
    return Settings(
        home=tmp_path / "home", database_url=database_url, runtimes=RuntimeSettings(llm=llm),
        engine=EngineSettings(poll_seconds=0.05),
        plans={"starter": {"executions_per_month": 6, "ai_tokens_per_month": 40}},
    )  # fmt: skip


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    with running(api_key="sk-live-1") as server:
        yield server


class Counted:
    """Counts the authenticated /api/v1 requests a client sends (the test's ground truth)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.count = 0
        client.event_hooks["request"].append(self._seen)

    async def _seen(self, request: httpx.Request) -> None:
        if "authorization" in request.headers and request.url.path.startswith("/api/v1/"):
            self.count += 1


async def post(client: httpx.AsyncClient, who: Account, url: str, body: dict[str, Any]) -> Any:
    r = await client.post(url, headers=who.headers, json=body)
    assert r.status_code in (201, 202), r.text
    return r.json()


async def records(db: Database, org_id: str) -> dict[UsageMetric, Decimal]:
    async with db.transaction() as session:
        rows = await session.execute(
            select(UsageRecordRow.metric, func.sum(UsageRecordRow.quantity))
            .where(UsageRecordRow.organization_id == uuid.UUID(org_id))
            .group_by(UsageRecordRow.metric)
        )
        return {metric: Decimal(total) for metric, total in rows.all()}


async def test_usage_records_match_what_happened(
    client: httpx.AsyncClient, app_context: AppContext, operator_db: Database, fake: FakeLLM
) -> None:
    owner = await signup(client, "meter@example.com")
    other = await signup(client, "other@example.com", "Other")
    counted = Counted(client)
    wf = (await post(client, owner, "/api/v1/workflows",
                     {"name": "double", "definition": DOUBLE, "status": "active"}))["id"]  # fmt: skip
    integration = await post(client, owner, "/api/v1/integrations", {
        "name": "llm", "provider": "openai", "credentials": {"api_key": "sk-live-1"},
        "settings": {"base_url": fake.openai_url},
    })  # fmt: skip
    llm_wf = (await post(client, owner, "/api/v1/workflows", {
        "name": "ask", "status": "active", "definition": {"steps": [{
            "key": "ask", "type": "agent", "component": {"kind": "llm", "config": {
                "provider": "openai", "model": "m", "integration_id": integration["id"],
                "user_prompt": "hi"}}}]},
    }))["id"]  # fmt: skip
    fake.add(Script(text="one", usage=(7, 3)), Script(text="two", usage=(11, 2)))
    started = [
        (await post(client, owner, f"/api/v1/workflows/{wf}/executions", {"input": {"n": n}}))
        for n in range(3)
    ]
    started += [
        await post(client, owner, f"/api/v1/workflows/{llm_wf}/executions", {"input": {}})
        for _ in range(2)
    ]
    tokens = 0
    for execution in started:
        done = await wait_done(client, owner, execution["id"])
        assert done["status"] == "completed", done
        tokens += sum(s["output"]["usage"]["total"] for s in done["steps"]
                      if isinstance(s["output"], dict) and "usage" in s["output"])  # fmt: skip
    # a retried request with the same Idempotency-Key is not a second execution
    for _ in range(2):
        r = await client.post(f"/api/v1/workflows/{wf}/executions", json={"input": {"n": 9}},
                              headers=owner.headers | {"Idempotency-Key": "k-1"})  # fmt: skip
        assert r.status_code in (200, 202), r.text
    await client.get("/api/v1/workflows", headers=bearer(other.token))
    owner_requests = counted.count - 1  # the last one was the other organization's
    await app_context.api_calls.flush(app_context.db, app_context.clock())

    async with operator_db.transaction() as session:
        executions = (await session.execute(
            select(func.count()).select_from(ExecutionRow)
            .where(ExecutionRow.organization_id == uuid.UUID(owner.org_id))
        )).scalar_one()  # fmt: skip
    got = await records(operator_db, owner.org_id)
    assert executions == 6 and tokens == 23
    assert got[UsageMetric.WORKFLOW_EXECUTIONS] == executions
    assert got[UsageMetric.AI_TOKENS_USED] == tokens
    assert got[UsageMetric.API_CALLS_MADE] == owner_requests
    assert (await records(operator_db, other.org_id))[UsageMetric.API_CALLS_MADE] == 1

    # the gauges, measured by the scheduler's job (run here at once)
    await app_context.scheduler().measure_usage(app_context.clock())
    got = await records(operator_db, owner.org_id)
    assert got[UsageMetric.ACTIVE_WORKFLOWS] == 2
    assert got[UsageMetric.ACTIVE_USERS] == 1  # logged in today (signup is a login)
    assert got[UsageMetric.STORAGE_GB] == Decimal("0.0001")  # a few KB, rounded up
    async with operator_db.transaction() as session:
        (storage,) = (await session.execute(select(UsageRecordRow).where(
            UsageRecordRow.organization_id == uuid.UUID(owner.org_id),
            UsageRecordRow.metric == UsageMetric.STORAGE_GB,
        ))).scalars().all()  # fmt: skip
    assert 1000 < storage.details["bytes"] < 100_000
    await app_context.scheduler().measure_usage(app_context.clock())  # idempotent: same day
    assert (await records(operator_db, owner.org_id))[UsageMetric.ACTIVE_WORKFLOWS] == 2

    # the endpoint agrees with the rows
    r = await client.get("/api/v1/usage", headers=owner.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["totals"]["workflow_executions"] == 6
    assert body["totals"]["ai_tokens_used"] == 23
    assert body["granularity"] == "day"
    assert {p["metric"] for p in body["data"]} == {m.value for m in UsageMetric}


async def test_usage_endpoint_permissions_and_months(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    owner = await signup(client, "own@example.com")
    org = uuid.UUID(owner.org_id)

    async def day(metric: UsageMetric, when: dt.date, quantity: str) -> None:
        async with operator_db.transaction() as session:
            at = dt.datetime.combine(when, dt.time(12), dt.UTC)
            if metric in metering.GAUGES:
                await metering.set_gauge(session, org, metric, Decimal(quantity), at)
            else:
                await metering.add(session, org, metric, Decimal(quantity), at)

    await day(UsageMetric.API_CALLS_MADE, dt.date(2026, 1, 30), "10")
    await day(UsageMetric.API_CALLS_MADE, dt.date(2026, 1, 31), "5")
    await day(UsageMetric.API_CALLS_MADE, dt.date(2026, 2, 1), "7")
    await day(UsageMetric.ACTIVE_USERS, dt.date(2026, 1, 30), "3")
    await day(UsageMetric.ACTIVE_USERS, dt.date(2026, 1, 31), "2")
    await day(UsageMetric.STORAGE_GB, dt.date(2026, 2, 1), "1.25")

    q = "from=2026-01-01&to=2026-03-01"
    by_day = (await client.get(f"/api/v1/usage?{q}&metric=api_calls_made",
                               headers=owner.headers)).json()  # fmt: skip
    assert [(p["period_start"][:10], p["quantity"]) for p in by_day["data"]] == [
        ("2026-01-30", 10),
        ("2026-01-31", 5),
        ("2026-02-01", 7),
    ]
    months = (
        await client.get(f"/api/v1/usage?{q}&granularity=month", headers=owner.headers)
    ).json()
    got = {(p["metric"], p["period_start"][:7]): p["quantity"] for p in months["data"]}
    assert got == {
        ("api_calls_made", "2026-01"): 15, ("api_calls_made", "2026-02"): 7,
        ("active_users", "2026-01"): 3,  # a gauge's month is its peak day
        ("storage_gb", "2026-02"): 1.25,
    }  # fmt: skip
    assert months["totals"]["api_calls_made"] == 22 and months["totals"]["active_users"] == 3
    # a range that cuts January keeps only its days
    cut = (await client.get("/api/v1/usage?from=2026-01-31&to=2026-02-01&granularity=month"
                            "&metric=api_calls_made", headers=owner.headers)).json()  # fmt: skip
    assert [p["quantity"] for p in cut["data"]] == [5]
    assert_problem(await client.get("/api/v1/usage?from=2026-02-01&to=2026-01-01",
                                    headers=owner.headers), 422, "validation_failed")  # fmt: skip

    # admins read it; members and viewers do not
    for role, status in (("admin", 200), ("member", 403), ("viewer", 403)):
        who = await signup(client, f"{role}@example.com", f"{role} org")
        r = await client.post(
            f"/api/v1/organizations/{owner.org_id}/members",
            headers=owner.headers,
            json={"email": who.email, "role": role},
        )
        assert r.status_code == 201, r.text
        r = await client.get(f"/api/v1/usage?{q}", headers=bearer(who.token, owner.org_id))
        assert r.status_code == status, r.text
        r = await client.get("/api/v1/subscription", headers=bearer(who.token, owner.org_id))
        assert r.status_code == status, r.text
    # an API key needs usage:read
    key = await post(client, owner, "/api/v1/api-keys", {"name": "k", "scopes": ["workflows:read"]})
    assert_problem(await client.get("/api/v1/usage", headers=bearer(key["secret"])), 403)
    key = await post(client, owner, "/api/v1/api-keys", {"name": "u", "scopes": ["usage:read"]})
    assert (await client.get("/api/v1/usage", headers=bearer(key["secret"]))).status_code == 200


async def test_an_exhausted_execution_quota_refuses_and_writes_nothing(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    owner = await signup(client, "quota@example.com")
    wf = (await post(client, owner, "/api/v1/workflows",
                     {"name": "q", "definition": DOUBLE, "status": "active"}))["id"]  # fmt: skip
    hold = (await post(client, owner, "/api/v1/workflows", {
        "name": "hold", "status": "active", "definition": {
            "signals": [{"name": "go"}],
            "steps": [{"key": "hold", "type": "wait", "signal": {"name": "go"}}]}},
    ))["id"]  # fmt: skip
    held = await post(client, owner, f"/api/v1/workflows/{hold}/executions", {"input": {}})
    r = await client.post(f"/api/v1/executions/{held['id']}/cancel", headers=owner.headers)
    assert r.status_code == 200, r.text
    rerun = await client.post(f"/api/v1/executions/{held['id']}/rerun", headers=owner.headers)
    assert rerun.status_code in (201, 202), rerun.text  # a re-run is an execution too
    for n in range(4):
        await post(client, owner, f"/api/v1/workflows/{wf}/executions", {"input": {"n": n}})
    r = await client.post(f"/api/v1/executions/{held['id']}/rerun", headers=owner.headers)
    assert_problem(r, 403, "quota_exceeded")
    r = await client.post(f"/api/v1/workflows/{wf}/executions", headers=owner.headers,
                          json={"input": {"n": 7}})  # fmt: skip
    body = assert_problem(r, 403, "quota_exceeded")
    assert body["limit"] == "executions_per_month" and body["plan"] == "starter"
    assert "6 executions per month" in body["detail"]
    now = dt.datetime.now(dt.UTC)
    nxt = dt.datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=dt.UTC)
    assert dt.datetime.fromisoformat(body["resets_at"]) == nxt
    assert (await records(operator_db, owner.org_id))[UsageMetric.WORKFLOW_EXECUTIONS] == 6
    async with operator_db.transaction() as session:
        count = (await session.execute(select(func.count()).select_from(ExecutionRow))).scalar()
    assert count == 6
    overview = (await client.get("/api/v1/subscription", headers=owner.headers)).json()
    assert overview["this_month"]["workflow_executions"] == 6
    assert overview["limits"]["executions_per_month"] == 6
    assert overview["limits"]["workflows"] == 5  # the default the operator left alone
    assert overview["subscription"] is None


async def test_an_exhausted_token_quota_fails_llm_steps_before_the_model_is_called(
    client: httpx.AsyncClient, fake: FakeLLM
) -> None:
    owner = await signup(client, "tokens@example.com")
    integration = await post(client, owner, "/api/v1/integrations", {
        "name": "llm", "provider": "openai", "credentials": {"api_key": "sk-live-1"},
        "settings": {"base_url": fake.openai_url},
    })  # fmt: skip
    wf = (await post(client, owner, "/api/v1/workflows", {
        "name": "ask", "status": "active", "definition": {"steps": [{
            "key": "ask", "type": "agent", "component": {"kind": "llm", "config": {
                "provider": "openai", "model": "m", "integration_id": integration["id"],
                "user_prompt": "hi"}}}]},
    }))["id"]  # fmt: skip
    fake.add(Script(text="big", usage=(30, 15)))  # 45 of the 40 allowed: the month is spent
    first = await post(client, owner, f"/api/v1/workflows/{wf}/executions", {"input": {}})
    assert (await wait_done(client, owner, first["id"]))["status"] == "completed"
    second = await post(client, owner, f"/api/v1/workflows/{wf}/executions", {"input": {}})
    done = await wait_done(client, owner, second["id"])
    assert done["status"] == "failed", done
    error = done["steps"][0]["error"]
    assert error["type"] == "token_quota_exceeded", error
    assert "40 AI tokens per month" in error["message"] and "resets at" in error["message"]
    assert len(fake.bodies) == 1  # the model was not asked again


async def test_concurrent_starts_do_not_pass_the_execution_quota(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    owner = await signup(client, "race@example.com")
    wf = (await post(client, owner, "/api/v1/workflows",
                     {"name": "r", "definition": DOUBLE, "status": "active"}))["id"]  # fmt: skip

    async def start(n: int) -> int:
        r = await client.post(f"/api/v1/workflows/{wf}/executions", headers=owner.headers,
                              json={"input": {"n": n}})  # fmt: skip
        return r.status_code

    statuses = await asyncio.gather(*(start(n) for n in range(14)))
    assert sorted(statuses) == [202] * 6 + [403] * 8, statuses
    async with operator_db.transaction() as session:
        count = (await session.execute(select(func.count()).select_from(ExecutionRow))).scalar()
    assert count == 6
    assert (await records(operator_db, owner.org_id))[UsageMetric.WORKFLOW_EXECUTIONS] == 6
