"""Prometheus /metrics, OpenTelemetry spans and JSON logs, through the real app and worker."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio.to_thread
import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import Account, Clock, signup
from tests.integration.test_engine import data_step
from turbocat import logging as tc_logging
from turbocat import tracing
from turbocat.api.app import create_app
from turbocat.bootstrap import AppContext
from turbocat.config import Settings


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # No embedded worker or scheduler: each test runs the worker when it wants one.
    return Settings(
        home=tmp_path / "home",
        database_url=database_url,
        engine={"embedded_worker": False},
        scheduler={"embedded": False},
        metrics={"cache_seconds": 0},
    )


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, keyed by name and sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = await client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return samples(r.text)


async def start(client: httpx.AsyncClient, who: Account, definition: dict) -> str:
    r = await client.post(
        "/api/v1/workflows",
        headers=who.headers,
        json={"name": f"wf {uuid.uuid4().hex[:6]}", "definition": definition},
    )
    assert r.status_code == 201, r.text
    r = await client.post(
        f"/api/v1/workflows/{r.json()['id']}/executions", headers=who.headers, json={"input": {}}
    )
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


TWO_STEPS = {"steps": [data_step("a", mapping={"x": "1"}), data_step("b", deps=("a",), query="x")]}


async def test_requests_are_counted_and_timed_by_route_template(
    client: httpx.AsyncClient,
) -> None:
    owner = await signup(client, "metrics@example.com")
    created = await client.post(
        "/api/v1/workflows", headers=owner.headers, json={"name": "m", "definition": TWO_STEPS}
    )
    workflow_id = created.json()["id"]
    for _ in range(2):
        r = await client.get(f"/api/v1/workflows/{workflow_id}", headers=owner.headers)
        assert r.status_code == 200
    assert (await client.get("/no/such/path")).status_code == 404
    r = await client.get("/metrics")
    assert workflow_id not in r.text  # raw paths never become labels
    found = samples(r.text)
    route = (("method", "GET"), ("route", "/api/v1/workflows/{workflow_id}"))
    assert found[("turbocat_http_requests_total", (*route, ("status", "200")))] == 2
    assert found[("turbocat_http_request_duration_seconds_count", route)] == 2
    unmatched = (("method", "GET"), ("route", "unmatched"), ("status", "404"))
    assert found[("turbocat_http_requests_total", unmatched)] == 1
    signup_route = (("method", "POST"), ("route", "/api/v1/auth/signup"), ("status", "201"))
    assert found[("turbocat_http_requests_total", signup_route)] == 1
    assert found[("turbocat_build_info", (("version", __import__("turbocat").__version__),))] == 1


async def test_database_gauges_follow_executions_queues_workers_and_schedules(
    client: httpx.AsyncClient, app_context: AppContext, clock: Clock
) -> None:
    owner = await signup(client, "gauges@example.com")
    execution_id = await start(client, owner, TWO_STEPS)
    workflow = await client.get(f"/api/v1/executions/{execution_id}", headers=owner.headers)
    r = await client.post(
        "/api/v1/schedules",
        headers=owner.headers,
        json={"workflow_id": workflow.json()["workflow_id"], "cron_expression": "* * * * *"},
    )
    assert r.status_code == 201, r.text
    clock.advance(minutes=5)  # no worker, no scheduler: the step waits, the slot is overdue

    found = await scrape(client)
    assert found[("turbocat_executions", (("status", "running"),))] == 1
    assert found[("turbocat_executions", (("status", "completed"),))] == 0
    assert found[("turbocat_step_runs", (("status", "ready"),))] == 1
    assert found[("turbocat_queue_ready_steps", (("queue", "default"),))] == 1
    age = found[("turbocat_queue_oldest_ready_age_seconds", (("queue", "default"),))]
    assert 299 <= age <= 301
    lag = found[("turbocat_scheduler_lag_seconds", ())]
    assert 4 * 60 <= lag <= 5 * 60, lag
    assert found[("turbocat_schedules_due", ())] == 1
    assert found[("turbocat_workers", (("state", "live"),))] == 0

    stop = asyncio.Event()
    worker = asyncio.create_task(app_context.worker().run(stop))
    try:
        async with asyncio.timeout(20):
            while True:
                found = await scrape(client)
                if found[("turbocat_executions", (("status", "completed"),))] == 1:
                    break
                await asyncio.sleep(0.02)
        assert found[("turbocat_step_runs", (("status", "completed"),))] == 2
        assert found[("turbocat_queue_ready_steps", (("queue", "default"),))] == 0
        assert found[("turbocat_workers", (("state", "live"),))] == 1
        assert found[("turbocat_worker_slots", (("state", "total"),))] == 8
        assert found[("turbocat_worker_slots", (("state", "busy"),))] == 0
    finally:
        stop.set()
        await worker


async def test_metrics_need_the_token_when_one_is_set_and_loopback_otherwise(
    settings: Settings, app_context: AppContext
) -> None:
    app = create_app(settings, app_context)
    async with app.router.lifespan_context(app):
        remote = httpx.ASGITransport(app=app, client=("192.0.2.10", 40000))
        async with httpx.AsyncClient(transport=remote, base_url="http://t") as c:
            assert (await c.get("/metrics")).status_code == 404
        settings.metrics.token = "s3cret-metrics-token"
        async with httpx.AsyncClient(transport=remote, base_url="http://t") as c:
            assert (await c.get("/metrics")).status_code == 401
            wrong = {"Authorization": "Bearer not-the-token-at-all"}
            assert (await c.get("/metrics", headers=wrong)).status_code == 401
            right = {"Authorization": "Bearer s3cret-metrics-token"}
            r = await c.get("/metrics", headers=right)
            assert r.status_code == 200 and "turbocat_executions" in r.text


@pytest.fixture
def exporter(app_context: AppContext) -> InMemorySpanExporter:
    spans = InMemorySpanExporter()
    app_context.tracing = tracing.tracer_for(spans)
    return spans


@pytest.fixture
async def traced_client(
    settings: Settings, app_context: AppContext, exporter: InMemorySpanExporter
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, app_context)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c


async def test_requests_executions_and_steps_are_traced(
    traced_client: httpx.AsyncClient, app_context: AppContext, exporter: InMemorySpanExporter
) -> None:
    owner = await signup(traced_client, "trace@example.com")
    failing = {"steps": [data_step("ok", mapping={"x": "1"}),
                         data_step("bad", deps=("ok",), query="[[[")]}  # fmt: skip
    good_id = await start(traced_client, owner, TWO_STEPS)
    r = await traced_client.get(f"/api/v1/executions/{good_id}", headers=owner.headers)
    assert r.status_code == 200
    await app_context.worker().drain()

    spans = exporter.get_finished_spans()
    request = next(s for s in spans if s.name == "GET /api/v1/executions/{execution_id}")
    assert request.attributes is not None
    assert request.attributes["http.route"] == "/api/v1/executions/{execution_id}"
    assert request.attributes["http.response.status_code"] == 200
    assert request.attributes["turbocat.request_id"] == r.headers["x-request-id"]

    execution = uuid.UUID(good_id)
    in_trace = [s for s in spans if s.context is not None and s.context.trace_id == execution.int]
    names = sorted(s.name for s in in_trace)
    assert names == ["execution", "step a", "step b"], names
    root = next(s for s in in_trace if s.name == "execution")
    assert root.parent is None and root.context is not None
    for step in (s for s in in_trace if s.name != "execution"):
        assert step.parent is not None and step.parent.span_id == root.context.span_id
        assert step.status.status_code != StatusCode.ERROR
    assert root.attributes is not None and root.attributes["turbocat.execution_status"] == (
        "completed"
    )

    bad_id = uuid.UUID(await start(traced_client, owner, failing))
    await app_context.worker().drain()
    spans = [
        s for s in exporter.get_finished_spans()
        if s.context is not None and s.context.trace_id == bad_id.int
    ]  # fmt: skip
    bad = next(s for s in spans if s.name == "step bad")
    assert bad.status.status_code == StatusCode.ERROR
    root = next(s for s in spans if s.name == "execution")
    assert root.status.status_code == StatusCode.ERROR


async def test_json_logs_carry_request_and_execution_ids(
    client: httpx.AsyncClient, app_context: AppContext
) -> None:
    stream = io.StringIO()
    logger = logging.getLogger("turbocat")
    saved = logger.handlers[:], logger.level, logger.propagate
    tc_logging.configure("debug", json_lines=True, stream=stream)
    try:
        owner = await signup(client, "logs@example.com")
        execution_id = await start(client, owner, TWO_STEPS)
        await app_context.worker().drain()
        token = tc_logging.request_id_var.set("req-123")
        try:
            logging.getLogger("turbocat.api").warning("something to say")
        finally:
            tc_logging.request_id_var.reset(token)
    finally:
        logger.handlers[:], level, logger.propagate = saved
        logger.setLevel(level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    steps = [e for e in lines if e.get("execution_id") == execution_id]
    assert {e["step_key"] for e in steps} == {"a", "b"}, lines
    assert all(e["logger"] == "turbocat.worker" and e["ts"].endswith("Z") for e in steps)
    said = next(e for e in lines if e["message"] == "something to say")
    assert said["request_id"] == "req-123" and said["level"] == "warning"
    assert "execution_id" not in said


async def test_a_worker_serves_its_own_slots_and_steps_over_http(
    client: httpx.AsyncClient, app_context: AppContext
) -> None:
    from turbocat.engine import worker_metrics

    owner = await signup(client, "wm@example.com")
    failing = {"steps": [data_step("bad", query="[[[")]}
    await start(client, owner, TWO_STEPS)
    await start(client, owner, failing)
    worker = app_context.worker()
    await worker.drain()
    server = worker_metrics.serve(worker, 0)  # any free port on 127.0.0.1
    try:
        async with httpx.AsyncClient() as http:
            r = await http.get(f"http://127.0.0.1:{server.port}/metrics")
    finally:
        await anyio.to_thread.run_sync(server.close)
    found = samples(r.text)
    assert found[("turbocat_worker_process_steps_total", (("outcome", "succeeded"),))] == 2
    assert found[("turbocat_worker_process_steps_total", (("outcome", "failed"),))] == 1
    assert found[("turbocat_worker_process_slots", (("state", "total"),))] == 8
    assert found[("turbocat_worker_process_slots", (("state", "busy"),))] == 0


def test_tracing_is_off_unless_an_exporter_is_chosen() -> None:
    from turbocat.config import OtelSettings

    assert not tracing.from_settings(OtelSettings()).enabled
    console = tracing.from_settings(OtelSettings(exporter="console"))
    try:
        assert console.enabled
    finally:
        console.shutdown()
    execution = uuid.uuid4()
    trace_id, span_id = tracing.execution_ids(execution)
    assert trace_id == execution.int and span_id == execution.int & (2**64 - 1)
