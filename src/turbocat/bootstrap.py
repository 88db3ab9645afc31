"""The composition root: builds what a process needs from the settings, once."""

from __future__ import annotations

import datetime as dt
import gc
from collections.abc import Callable
from dataclasses import dataclass, field

from turbocat import tracing
from turbocat.api.ratelimit import RateLimiter
from turbocat.config import Settings
from turbocat.db.engine import Database
from turbocat.engine import custom
from turbocat.engine.plan import PlanCache
from turbocat.engine.scheduler import RetentionJob, Scheduler, SchedulerConfig
from turbocat.engine.worker import Notifier, Worker, WorkerConfig
from turbocat.security.crypto import KeyringSource
from turbocat.security.passwords import PasswordHasher
from turbocat.services.api_calls import ApiCallBuffer
from turbocat.services.events import Dispatcher
from turbocat.services.key_usage import KeyUsageBuffer
from turbocat.tracing import Tracing


def utc_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


_frozen = False


def freeze_startup_objects() -> None:
    """Move what exists once a process has started (modules, ORM mappers, schemas, routes:
    about 280,000 objects) out of the cyclic garbage collector's sight, once per process.
    None of it becomes garbage, yet every full collection scanned all of it: about 150 ms
    on a 2-core machine, during which every request and step of the process stood still.
    What is made later (rows, requests) is collected as before."""
    global _frozen
    if _frozen:
        return
    _frozen = True
    gc.collect()
    gc.freeze()


@dataclass
class AppContext:
    """Everything a request handler or CLI verb reaches through one object."""

    settings: Settings
    db: Database
    hasher: PasswordHasher
    keyring: KeyringSource
    """Credential encryption keys, loaded on first use (``keyring.get()``)."""
    clock: Callable[[], dt.datetime] = utc_clock
    rate_limiter: RateLimiter = field(default_factory=RateLimiter)
    key_usage: KeyUsageBuffer = field(default_factory=KeyUsageBuffer)
    api_calls: ApiCallBuffer = field(default_factory=ApiCallBuffer)
    """Authenticated requests per organization (usage ``api_calls_made``), written behind."""
    notifier: Notifier = field(default_factory=Notifier)
    """Wakes this process's worker when a commit made steps ready."""
    plans: PlanCache = field(default_factory=PlanCache)
    events: Notifier = field(default_factory=Notifier)
    """Wakes this process's event dispatcher when a commit published an event."""
    tracing: Tracing = field(default_factory=Tracing)
    """Spans of requests, executions and steps (no-op unless ``otel.exporter`` is set)."""
    components: custom.Served | None = None
    """Custom components of this environment's ``turbocat.components`` entry points, loaded
    when the first worker is built (never by the API alone: it does not import them)."""

    def worker(self, config: WorkerConfig | None = None) -> Worker:
        engine = self.settings.engine
        config = config or WorkerConfig(
            queues=list(engine.queues),
            concurrency=engine.concurrency,
            lease_seconds=engine.lease_seconds,
            poll_seconds=engine.poll_seconds,
        )
        return Worker(
            self.db, config, clock=self.clock, notifier=self.notifier, plans=self.plans,
            keyring=self.keyring.get, runtime_settings=self.settings.runtimes,
            tracing=self.tracing, components=self.served_components(),
        )  # fmt: skip

    def served_components(self) -> custom.Served:
        if self.components is None:
            self.components = custom.load()
        return self.components

    def dispatcher(self) -> Dispatcher:
        """The event dispatcher that runs beside a worker (``services.events``)."""
        triggers = self.settings.triggers
        return Dispatcher(
            self.db, plans=self.plans, notify=self.notifier.notify, clock=self.clock,
            max_depth=triggers.event_max_depth, poll_seconds=triggers.event_poll_seconds,
            wake=self.events, retention=dt.timedelta(days=triggers.event_retention_days),
        )  # fmt: skip

    def scheduler(self) -> Scheduler:
        """A scheduler over this process's database, clock and plan cache (settings applied)."""
        conf = self.settings.scheduler
        config = SchedulerConfig(
            poll_seconds=conf.poll_seconds,
            misfire_grace=dt.timedelta(seconds=conf.misfire_grace_seconds),
            health_check_every=dt.timedelta(seconds=conf.health_check_seconds),
            health_window=dt.timedelta(seconds=conf.health_window_seconds),
            heartbeat_timeout=dt.timedelta(seconds=conf.worker_heartbeat_timeout_seconds),
            usage_gauges_every=dt.timedelta(seconds=conf.usage_gauge_seconds),
            retention=self.retention_job(),
        )
        return Scheduler(
            self.db, config, clock=self.clock, plans=self.plans, notify=self.notifier.notify
        )

    def retention_job(self) -> RetentionJob | None:
        """The scheduler's periodic retention run (settings ``[retention]``)."""
        conf = self.settings.retention
        if not conf.scheduled:
            return None
        return RetentionJob(
            policy=conf.policy(), batch_size=conf.batch_size,
            every=dt.timedelta(hours=conf.every_hours),
            start_delay=dt.timedelta(seconds=conf.start_delay_seconds),
        )  # fmt: skip

    @classmethod
    def build(cls, settings: Settings, *, app_role: bool = True) -> AppContext:
        return cls(
            settings=settings,
            db=Database.from_settings(settings, app_role=app_role),
            hasher=PasswordHasher(settings.auth),
            keyring=KeyringSource(settings),
            plans=PlanCache(quotas=settings.quotas()),
            tracing=tracing.from_settings(settings.otel),
        )

    async def close(self) -> None:
        await self.key_usage.flush(self.db)
        await self.api_calls.flush(self.db, self.clock())
        await self.db.dispose()
        self.tracing.shutdown()
