"""``create_app(settings)``: the ASGI application, with its lifespan and background flushers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.routing import APIRoute

import turbocat
from turbocat.api import errors
from turbocat.api.bodies import YamlBodyMiddleware
from turbocat.api.middleware import (
    BodySizeLimitMiddleware,
    ConflictRetryMiddleware,
    RequestIdMiddleware,
)
from turbocat.api.observability import Metrics, ObservabilityMiddleware
from turbocat.api.observability import router as metrics_router
from turbocat.api.routes import (
    activity,
    admin,
    agents,
    api_keys,
    audit_logs,
    auth,
    billing,
    components,
    deployments,
    events,
    executions,
    health,
    hooks,
    integrations,
    organizations,
    projects,
    prompts,
    schedules,
    task_queues,
    templates,
    users,
    webhooks,
    workflows,
)
from turbocat.bootstrap import AppContext, freeze_startup_objects
from turbocat.config import Settings

log = logging.getLogger("turbocat.api")

DESCRIPTION = """
Build, run, deploy and govern AI-agent workflows.

**Authentication**: every `/api/v1` route except sign-up and login takes
`Authorization: Bearer <token>`, where the token is a login token (`POST /api/v1/auth/login`)
or an API key (`POST /api/v1/api-keys`). Login tokens act in your oldest organization unless
you send `X-Organization-Id`; API keys act in the organization they were made in.

**Errors** are RFC 9457 `application/problem+json` bodies with a stable `code`, and for bad
input an `errors` list whose entries name the field (`body.email`).

**Lists** are cursor-paginated: pass the `next_cursor` of one page as `cursor` for the next.
"""


def _operation_id(route: APIRoute) -> str:
    return route.name


async def _flush_key_usage(ctx: AppContext) -> None:
    while True:
        await asyncio.sleep(ctx.settings.auth.api_key_usage_flush_seconds)
        try:
            await ctx.key_usage.flush(ctx.db)
        except Exception:
            log.exception("could not write API key usage; will retry")
        try:
            await ctx.api_calls.flush(ctx.db, ctx.clock())
        except Exception:
            log.exception("could not write API call counts; will retry")


def create_app(
    settings: Settings,
    context: AppContext | None = None,
    *,
    embedded_worker: bool | None = None,
    embedded_scheduler: bool | None = None,
) -> FastAPI:
    """The API; with ``embedded_worker`` / ``embedded_scheduler`` (default: the settings) a
    worker and a scheduler run in the process."""
    ctx = context or AppContext.build(settings)
    if embedded_worker is None:
        embedded_worker = settings.engine.embedded_worker
    if embedded_scheduler is None:
        embedded_scheduler = settings.scheduler.embedded

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        flusher = asyncio.create_task(_flush_key_usage(ctx), name="key-usage-flush")
        stop_worker = asyncio.Event()
        worker = None
        if embedded_worker:
            embedded = ctx.worker()
            await embedded.prepare()  # registered, with its components, before any request
            worker = asyncio.create_task(embedded.run(stop_worker), name="embedded-worker")
        dispatcher = (
            asyncio.create_task(ctx.dispatcher().run(stop_worker), name="event-dispatcher")
            if embedded_worker
            else None
        )
        scheduler = (
            asyncio.create_task(ctx.scheduler().run(stop_worker), name="embedded-scheduler")
            if embedded_scheduler
            else None
        )
        freeze_startup_objects()
        try:
            yield
        finally:
            stop_worker.set()
            if worker is not None:
                await worker
            if scheduler is not None:
                await scheduler
            if dispatcher is not None:
                await dispatcher
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await ctx.close()

    app = FastAPI(
        title="turbocat",
        version=turbocat.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
        docs_url="/docs",
        redoc_url="/redoc",
        openapi_url="/openapi.json",
    )
    app.state.ctx = ctx
    hooks.hide_tokens_in_access_log()
    errors.install(app)
    app.add_middleware(ConflictRetryMiddleware)  # innermost: replays a whole transaction
    app.add_middleware(YamlBodyMiddleware)  # sees bodies already size-checked
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.api.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    app.state.metrics = Metrics(ctx)  # outermost: times and counts every answer, 413s too
    app.add_middleware(ObservabilityMiddleware, metrics=app.state.metrics, tracing=ctx.tracing)

    app.include_router(health.router)
    app.include_router(metrics_router)
    app.include_router(hooks.router)
    # Each module's router directly under the app, not under a shared /api/v1 router: FastAPI
    # walks every level of included routers on each request (about 1 ms a request with two).
    for module in (
        auth,
        users,
        organizations,
        api_keys,
        audit_logs,
        admin,
        projects,
        agents,
        integrations,
        workflows,
        executions,
        components,
        prompts,
        templates,
        task_queues,
        schedules,
        deployments,
        billing,
        webhooks,
        events,
        activity,
    ):
        app.include_router(module.router, prefix="/api/v1")
    return app
