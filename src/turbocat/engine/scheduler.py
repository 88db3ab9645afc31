"""The scheduler loop: fire due cron slots, and run the periodic deployment health check,
usage gauges and (PostgreSQL) the creation of the monthly partitions ahead.

One runs inside ``turbocat serve`` (``scheduler.embedded``) and any number in ``turbocat
scheduler`` processes (PostgreSQL). They need no coordination: each slot is fired in its own
transaction that the database lets only one scheduler commit (``services.schedules.fire``).

Timers of wait steps (``wait`` with a duration, retry back-off, signal timeouts) are the same
idea served by the worker: a step run waits as ``ready`` with ``scheduled_for`` in the future,
and the worker's claim takes it when the time has come (``claims.claim`` filters on
``scheduled_for <= now``, ``claims.next_due`` bounds the idle sleep); the lease on the claimed
row makes that exactly-once too. The scheduler therefore only handles cron slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.exc import IntegrityError

from turbocat.db import jobs, partitions
from turbocat.db.engine import Database, TenantContext, is_conflict
from turbocat.domain import deployments as deployment_rules
from turbocat.domain.retention import Policy
from turbocat.engine.plan import PlanCache
from turbocat.services import deployments, metering, retention, schedules

log = logging.getLogger("turbocat.scheduler")
SYSTEM = TenantContext(system=True)


@dataclass
class RetentionJob:
    """The periodic retention run (``services.retention``)."""

    policy: Policy
    """The global defaults (organizations' overrides apply over them)."""
    batch_size: int = 1000
    every: dt.timedelta = dt.timedelta(days=1)
    start_delay: dt.timedelta = dt.timedelta(minutes=5)
    """The first run waits this long, so a starting process does not begin with a sweep."""


@dataclass
class SchedulerConfig:
    poll_seconds: float = 1.0
    misfire_grace: dt.timedelta = dt.timedelta(seconds=60)
    health_check_every: dt.timedelta = dt.timedelta(seconds=30)
    health_window: dt.timedelta = dt.timedelta(minutes=15)
    heartbeat_timeout: dt.timedelta = dt.timedelta(seconds=90)
    batch: int = 100
    """Due schedules looked at per pass."""
    usage_gauges_every: dt.timedelta = dt.timedelta(minutes=5)
    """How often every organization's usage gauges are measured (``metering.measure_gauges``)."""
    retention: RetentionJob | None = None
    """Run retention periodically, beside the ticks (None: never)."""
    partitions_every: dt.timedelta = dt.timedelta(hours=1)
    """How often the monthly partitions ahead are checked and created (PostgreSQL)."""


@dataclass
class TickResult:
    fired: list[schedules.Fired]
    health_checked: int = 0
    usage_measured: int = 0
    """Organizations whose usage gauges this tick measured."""
    partitions_created: list[str] = field(default_factory=list)
    """Monthly partitions this tick created ahead (PostgreSQL)."""


class Scheduler:
    def __init__(
        self,
        db: Database,
        config: SchedulerConfig,
        *,
        clock: Callable[[], dt.datetime],
        plans: PlanCache | None = None,
        notify: Callable[[], None] = lambda: None,
        thresholds: deployment_rules.HealthThresholds | None = None,
    ) -> None:
        self.db = db
        self.config = config
        self.clock = clock
        self.plans = plans or PlanCache()
        self.notify = notify
        self.thresholds = thresholds or deployment_rules.HealthThresholds()
        self._last_health: dt.datetime | None = None
        self._last_usage: dt.datetime | None = None
        self._upcoming: dt.datetime | None = None
        """The next slot after the last look at the due ones (one query fewer when idle)."""
        self._last_partitions: dt.datetime | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until ``stop`` is set (with retention beside it, when configured)."""
        maintenance = None
        if self.config.retention is not None:
            maintenance = asyncio.create_task(self._retention_loop(self.config.retention, stop))
        try:
            await self._tick_loop(stop)
        finally:
            if maintenance is not None:
                maintenance.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await maintenance

    async def _tick_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.tick()
                wait = await self._idle_wait()
            except Exception:
                log.exception("scheduler tick failed; retrying")
                wait = self.config.poll_seconds
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)

    async def _idle_wait(self) -> float:
        now = self.clock()
        nxt, self._upcoming = self._upcoming, None
        if nxt is None:  # the last look at the due slots did not see the next one
            async with self.db.transaction(SYSTEM, readonly=True) as session:
                nxt = await schedules.next_due(session)
        if nxt is None:
            return self.config.poll_seconds
        return max(0.0, min(self.config.poll_seconds, (nxt - now).total_seconds()))

    async def tick(self) -> TickResult:
        """Fire every slot due now (each in its own transaction), then the health check when
        it is due."""
        result = TickResult(fired=[])
        while True:
            now = self.clock()
            async with self.db.transaction(SYSTEM, readonly=True) as session:
                due, self._upcoming = await schedules.due(session, now, self.config.batch)
            fired_any = False
            for schedule_id in due:
                fired = await self._fire(schedule_id, now)
                if fired is not None:
                    result.fired.append(fired)
                    fired_any = True
            if len(due) < self.config.batch or not fired_any:
                break
        if result.fired:  # their next slots moved: the idle wait looks again
            self._upcoming = None
        now = self.clock()
        if self._last_health is None or now - self._last_health >= self.config.health_check_every:
            self._last_health = now
            result.health_checked = await self.check_health(now)
        if self._last_usage is None or now - self._last_usage >= self.config.usage_gauges_every:
            self._last_usage = now
            result.usage_measured = await self.measure_usage(now)
        if self._last_partitions is None or now - self._last_partitions >= (
            self.config.partitions_every
        ):
            self._last_partitions = now
            result.partitions_created = await self.create_partitions(now)
        return result

    async def create_partitions(self, now: dt.datetime) -> list[str]:
        """Create the months ahead of executions and logs that are missing (PostgreSQL; a
        no-op elsewhere). Every scheduler does it: the database serializes and skips what
        exists. A failure (a table too busy to lock) is logged and retried next time."""
        try:
            async with self.db.transaction(SYSTEM) as session:
                created = await partitions.create_ahead(session, now)
        except Exception:
            log.exception("creating the monthly partitions ahead failed; retrying later")
            return []
        if created:
            log.info("created partitions %s", ", ".join(created))
        return created

    async def _fire(self, schedule_id: uuid.UUID, now: dt.datetime) -> schedules.Fired | None:
        deadline = time.monotonic() + 10
        while True:
            try:
                async with self.db.transaction(SYSTEM) as session:
                    return await schedules.fire(
                        session, schedule_id, plans=self.plans, notify=self.notify,
                        now=now, grace=self.config.misfire_grace,
                    )  # fmt: skip
            except IntegrityError:
                return None  # the slot's execution exists: another scheduler fired it
            except Exception as exc:
                # A deadlock or serialization failure: the database refused one of two racing
                # schedulers; looking again finds the slot fired (or fires it).
                if not is_conflict(exc) or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.01)

    async def _retention_loop(self, job: RetentionJob, stop: asyncio.Event) -> None:
        """A run every ``job.every`` (a task of its own: a long sweep must not delay cron
        slots). Several schedulers each run it; the job lock lets one at a time sweep."""
        wait = job.start_delay.total_seconds()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)
                return
            wait = job.every.total_seconds()
            try:
                await self.run_retention(job)
            except Exception:
                log.exception("retention run failed; trying again at the next interval")

    async def run_retention(self, job: RetentionJob) -> retention.Report | None:
        """One retention run now, unless another process is running one (None then)."""
        async with jobs.exclusive(self.db, "retention") as held:
            if not held:
                log.info("retention: another process is running it; skipped")
                return None
            report = await retention.run(
                self.db, job.policy, self.clock(), batch_size=job.batch_size
            )
        totals = {table: n for table, n in sorted(report.totals().items()) if n}
        log.info("retention removed %s", totals or "nothing", extra={"removed": totals})
        return report

    async def measure_usage(self, now: dt.datetime) -> int:
        """Store today's storage_gb, active_users and active_workflows of every organization
        (an upsert of the day's value: several schedulers measuring at once is harmless)."""
        async with self.db.transaction(SYSTEM, readonly=True) as session:
            organizations = await metering.organization_ids(session)
        for organization_id in organizations:
            context = TenantContext(organization_id=organization_id)
            async with self.db.transaction(context) as session:
                await metering.measure_gauges(session, organization_id, now)
        return len(organizations)

    async def check_health(self, now: dt.datetime) -> int:
        async with self.db.transaction(SYSTEM, readonly=True) as session:
            if not await deployments.any_to_check(session):
                return 0
        async with self.db.transaction(SYSTEM) as session:
            return await deployments.check_health(
                session, now, window=self.config.health_window,
                heartbeat_timeout=self.config.heartbeat_timeout, thresholds=self.thresholds,
            )  # fmt: skip
