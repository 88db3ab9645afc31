"""The composition root: builds what a process needs from the settings, once."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from turbocat.api.ratelimit import RateLimiter
from turbocat.config import Settings
from turbocat.db.engine import Database
from turbocat.engine.plan import PlanCache
from turbocat.engine.worker import Notifier, Worker, WorkerConfig
from turbocat.security.crypto import KeyringSource
from turbocat.security.passwords import PasswordHasher
from turbocat.services.events import Dispatcher
from turbocat.services.key_usage import KeyUsageBuffer


def utc_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


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
    notifier: Notifier = field(default_factory=Notifier)
    """Wakes this process's worker when a commit made steps ready."""
    plans: PlanCache = field(default_factory=PlanCache)
    events: Notifier = field(default_factory=Notifier)
    """Wakes this process's event dispatcher when a commit published an event."""

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
        )  # fmt: skip

    def dispatcher(self) -> Dispatcher:
        """The event dispatcher that runs beside a worker (``services.events``)."""
        triggers = self.settings.triggers
        return Dispatcher(
            self.db, plans=self.plans, notify=self.notifier.notify, clock=self.clock,
            max_depth=triggers.event_max_depth, poll_seconds=triggers.event_poll_seconds,
            wake=self.events,
        )  # fmt: skip

    @classmethod
    def build(cls, settings: Settings, *, app_role: bool = True) -> AppContext:
        return cls(
            settings=settings,
            db=Database.from_settings(settings, app_role=app_role),
            hasher=PasswordHasher(settings.auth),
            keyring=KeyringSource(settings),
        )

    async def close(self) -> None:
        await self.key_usage.flush(self.db)
        await self.db.dispose()
