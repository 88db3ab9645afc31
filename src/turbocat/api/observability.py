"""Prometheus metrics and request tracing: the ``/metrics`` route and the middleware that
counts and times each request by route template (never by raw path: ids would make every
request a new series).

Each app has its own registry, so several apps in one process (tests) never collide.
Database figures (``services.monitoring``) are read when scraped, at most every
``metrics.cache_seconds``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import ipaddress
import time
from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from opentelemetry import propagate
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import turbocat
from turbocat.bootstrap import AppContext
from turbocat.db.engine import TenantContext
from turbocat.services import monitoring
from turbocat.tracing import Tracing

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UNMATCHED = "unmatched"
"""Route label of requests no route matched (404s): one series for all of them."""


class Metrics:
    """The app's registry: request counters and histograms, and the database collector."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "turbocat_http_requests", "HTTP requests answered, by route template and status.",
            ["method", "route", "status"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "turbocat_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response, by route template.",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.in_flight = Gauge(
            "turbocat_http_requests_in_flight", "Requests being answered now.",
            registry=self.registry,
        )  # fmt: skip
        info = Gauge(
            "turbocat_build_info", "Always 1; the version is a label.", ["version"],
            registry=self.registry,
        )  # fmt: skip
        info.labels(turbocat.__version__).set(1)
        self.scrape_errors = Counter(
            "turbocat_metrics_database_errors", "Scrapes whose database figures failed.",
            registry=self.registry,
        )  # fmt: skip
        self.snapshot: monitoring.Snapshot | None = None
        self._taken = 0.0
        self._lock = asyncio.Lock()
        self.registry.register(_DatabaseCollector(self))

    async def refresh(self) -> None:
        """Read the database figures unless the last reading is recent enough."""
        async with self._lock:
            if self.snapshot is not None and (
                time.monotonic() - self._taken < self.ctx.settings.metrics.cache_seconds
            ):
                return
            timeout = self.ctx.settings.scheduler.worker_heartbeat_timeout_seconds
            try:
                async with self.ctx.db.transaction(
                    TenantContext(system=True), readonly=True
                ) as session:
                    self.snapshot = await monitoring.snapshot(
                        session, self.ctx.clock(), dt.timedelta(seconds=timeout)
                    )
            except Exception:  # the scrape still answers: request metrics and the error count
                self.scrape_errors.inc()
                self.snapshot = None
                return
            self._taken = time.monotonic()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _DatabaseCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        snap = self.metrics.snapshot
        if snap is None:
            return
        executions = GaugeMetricFamily(
            "turbocat_executions", "Executions by status.", labels=["status"]
        )
        for status, count in snap.executions.items():
            executions.add_metric([status], count)
        steps = GaugeMetricFamily("turbocat_step_runs", "Step runs by status.", labels=["status"])
        for status, count in snap.step_runs.items():
            steps.add_metric([status], count)
        depth = GaugeMetricFamily(
            "turbocat_queue_ready_steps", "Steps ready to run now, per task queue.",
            labels=["queue"],
        )  # fmt: skip
        age = GaugeMetricFamily(
            "turbocat_queue_oldest_ready_age_seconds",
            "How long the oldest ready step of each task queue has waited for a worker.",
            labels=["queue"],
        )
        running = GaugeMetricFamily(
            "turbocat_queue_running_steps", "Steps running now, per task queue.", labels=["queue"]
        )
        for queue, figures in sorted(snap.queues.items()):
            depth.add_metric([queue], figures.ready)
            age.add_metric([queue], figures.oldest_ready_seconds)
            running.add_metric([queue], figures.running)
        workers = GaugeMetricFamily(
            "turbocat_workers", "Registered workers not stopped, by heartbeat state.",
            labels=["state"],
        )  # fmt: skip
        live = sum(1 for w in snap.workers if w.live)
        workers.add_metric(["live"], live)
        workers.add_metric(["stale"], len(snap.workers) - live)
        slots = GaugeMetricFamily(
            "turbocat_worker_slots", "Step slots of live workers: total and busy.",
            labels=["state"],
        )  # fmt: skip
        slots.add_metric(["total"], snap.slots_total)
        slots.add_metric(["busy"], snap.slots_busy)
        lag = GaugeMetricFamily(
            "turbocat_scheduler_lag_seconds",
            "Now minus the oldest due, unfired slot of an enabled schedule (0: none due).",
            value=snap.scheduler_lag_seconds,
        )
        due = GaugeMetricFamily(
            "turbocat_schedules_due", "Enabled schedules whose next slot is due and unfired.",
            value=snap.schedules_due,
        )  # fmt: skip
        yield from (executions, steps, depth, age, running, workers, slots, lag, due)


def route_of(scope: Scope) -> str:
    """The matched route's template (``/api/v1/workflows/{workflow_id}``).

    FastAPI may leave the route's template relative to the routers it is included in
    (``/workflows/{workflow_id}`` under ``/api/v1``); those outer prefixes are literal, so they
    are the leading segments of the request path that the template does not cover.
    """
    route = scope.get("route")
    template = getattr(route, "path", None)
    if not isinstance(template, str):
        return UNMATCHED
    segments = scope["path"].split("/")
    extra = len(segments) - len(template.split("/"))
    return "/".join(segments[: extra + 1]) + template if extra > 0 else template


class ObservabilityMiddleware:
    """Counts, times and (when tracing is on) traces each HTTP request by route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics, tracing: Tracing) -> None:
        self.app = app
        self.metrics = metrics
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        method = scope["method"]

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        span = None
        if self.tracing.enabled:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            span = self.tracing.tracer.start_span(
                method, context=propagate.extract(headers), kind=SpanKind.SERVER,
                attributes={"http.request.method": method, "url.path": scope["path"]},
            )  # fmt: skip
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.in_flight.dec()
            route = route_of(scope)
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)
            if span is not None:
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                request_id = scope.get("state", {}).get("request_id")
                if request_id:
                    span.set_attribute("turbocat.request_id", request_id)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                span.end()


router = APIRouter(tags=["health"])


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@router.get(
    "/metrics",
    name="metrics",
    summary="Prometheus metrics",
    description="The Prometheus text format. With `metrics.token` set it takes "
    "`Authorization: Bearer <token>`; without, it answers only clients on the loopback "
    "interface (404 to others).",
)
async def metrics(request: Request) -> Response:
    registry: Metrics = request.app.state.metrics
    settings = registry.ctx.settings.metrics
    if not settings.enabled:
        return Response(status_code=404)
    if settings.token is not None:
        given = request.headers.get("authorization", "")
        expected = f"Bearer {settings.token}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return Response(status_code=401, headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    elif not _loopback(request):
        return Response(status_code=404)
    await registry.refresh()
    return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)
