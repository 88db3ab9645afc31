"""Events: custom ones published through the API, and the dispatcher that starts the workflows
subscribed to each event (``trigger_config.events``), once per event and subscriber.

Delivery is at least once to the dispatcher and exactly once per subscriber: every start carries
the idempotency key ``event:<event id>``, unique per (organization, workflow version), so two
dispatchers (two workers on PostgreSQL) racing on one event start one execution. An event chain
is bounded: an execution started by an event of depth *d* has depth *d* + 1 and the events it
causes carry it; past ``max_depth`` nothing more starts (a workflow triggering itself stops).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db.engine import Database, TenantContext, after_commit
from turbocat.db.listing import PageRequest, apply_page
from turbocat.db.models import EventRow, WorkflowRow
from turbocat.domain import events
from turbocat.domain.access import Principal
from turbocat.domain.enums import TriggerType, WorkflowStatus
from turbocat.domain.errors import TurbocatError, ValidationFailed
from turbocat.engine.plan import PlanCache
from turbocat.engine.worker import Notifier
from turbocat.services import executions, outbox, versions

log = logging.getLogger("turbocat.events")

SYSTEM = TenantContext(system=True)
MAX_ATTEMPTS = 5
"""An event whose dispatch keeps failing is given up (``last_error`` says why) after this."""


async def publish(
    session: AsyncSession,
    principal: Principal,
    name: str,
    payload: dict[str, Any],
    *,
    wake: Callable[[], None],
    now: dt.datetime,
) -> EventRow:
    """A custom event of the caller's organization; platform names are refused. ``wake``
    runs after the commit (this process's dispatcher need not wait for its next poll)."""
    principal.require_access("events", write=True)
    reason = events.check_name(name)
    if reason is not None:
        raise ValidationFailed.field(("body", "name"), reason)
    row = outbox.emit(session, principal.organization_id, name, payload, now)
    await session.flush()
    after_commit(session, wake)
    return row


async def list_events(
    session: AsyncSession, principal: Principal, name: str | None, page: PageRequest
) -> list[EventRow]:
    """Recent events of the organization, platform and custom, newest first."""
    principal.require_access("events")
    stmt = select(EventRow).where(EventRow.organization_id == principal.organization_id)
    if name is not None:
        stmt = stmt.where(EventRow.name == name)
    stmt = apply_page(stmt, page, id_col=EventRow.id, created_col=EventRow.created_at)
    return list((await session.execute(stmt)).scalars())


@dataclass
class Dispatched:
    events: int = 0
    started: int = 0
    stopped_by_depth: int = 0
    more: bool = False
    """The batch was full: more events may be waiting."""


@dataclass(frozen=True)
class _Subscription:
    workflow: WorkflowRow
    filter: str | None


async def _subscribers(session: AsyncSession, event: EventRow) -> list[_Subscription]:
    """Active workflows (their latest version) with a subscription matching the event."""
    stmt = select(WorkflowRow).where(
        WorkflowRow.organization_id == event.organization_id,
        WorkflowRow.status == WorkflowStatus.ACTIVE,
        versions.is_latest(WorkflowRow),
    )
    found = []
    for workflow in (await session.execute(stmt)).scalars():
        for sub in (workflow.trigger_config or {}).get("events", []):
            if events.matches(str(sub.get("pattern", "")), event.name):
                found.append(_Subscription(workflow, sub.get("filter")))
                break
    return found


def _event_doc(event: EventRow) -> dict[str, Any]:
    return {
        "id": str(event.id),
        "name": event.name,
        "payload": event.payload,
        "depth": _depth(event),
        "created_at": event.created_at.isoformat(),
    }


def _depth(event: EventRow) -> int:
    """Platform events carry the depth of what caused them; a custom event starts a chain."""
    if event.name.startswith(events.PLATFORM_PREFIXES):
        return events.depth_of(event.payload)
    return 0


async def dispatch_one(
    session: AsyncSession,
    event_id: uuid.UUID,
    *,
    plans: PlanCache,
    notify: Callable[[], None],
    max_depth: int,
    now: dt.datetime,
    report: Dispatched,
) -> None:
    """Start every subscriber of one event and mark it processed, in one transaction."""
    stmt = select(EventRow).where(EventRow.id == event_id, EventRow.processed_at.is_(None))
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    event = (await session.execute(stmt)).scalar_one_or_none()
    if event is None:  # another dispatcher has it, or had it
        return
    report.events += 1
    event.processed_at = now
    doc = _event_doc(event)
    depth = doc["depth"] + 1
    for sub in await _subscribers(session, event):
        if not events.passes(sub.filter, doc):
            continue
        if depth > max_depth:
            report.stopped_by_depth += 1
            log.warning(
                "event %s (%s) not delivered to workflow %s: the event chain reached the depth "
                "limit of %d (a workflow triggering itself?)",
                event.id, event.name, sub.workflow.id, max_depth,
            )  # fmt: skip
            continue
        try:
            started = await executions.launch(
                session, sub.workflow, input_data=_input(event.payload),
                trigger_type=TriggerType.EVENT, trigger_data={"event": doc, "depth": depth},
                plans=plans, notify=notify, now=now, idempotency_key=f"event:{event.id}",
                input_path=("event", "payload"),
            )  # fmt: skip
        except TurbocatError as exc:  # the workflow cannot take this event: the others can
            log.warning("event %s not delivered to workflow %s: %s", event.id, sub.workflow.id, exc)
            continue
        report.started += int(started.created)


def _input(payload: Any) -> dict[str, Any]:
    return dict(payload) if isinstance(payload, dict) else {"payload": payload}


async def dispatch_pending(
    db: Database,
    *,
    plans: PlanCache,
    notify: Callable[[], None],
    max_depth: int,
    now: dt.datetime,
    limit: int = 200,
) -> Dispatched:
    """Dispatch up to ``limit`` undispatched events, oldest first.

    Most events (every execution's end) have no subscriber: those are marked processed
    together in one short transaction; each event that someone subscribes to is dispatched
    in its own transaction."""
    report = Dispatched()
    async with db.transaction(SYSTEM, readonly=True) as session:
        pending = (
            await session.execute(
                select(EventRow.id, EventRow.organization_id, EventRow.name)
                .where(EventRow.processed_at.is_(None))
                .order_by(EventRow.created_at, EventRow.id)
                .limit(limit)
            )
        ).all()  # fmt: skip
        patterns = await _patterns(session, {org for _, org, _ in pending}) if pending else {}
    report.more = len(pending) == limit
    heard: list[uuid.UUID] = []
    unheard: list[uuid.UUID] = []
    for event_id, org, name in pending:
        subscribed = any(events.matches(pattern, name) for pattern in patterns.get(org, ()))
        (heard if subscribed else unheard).append(event_id)
    if unheard:
        async with db.transaction(SYSTEM) as session:
            await session.execute(
                update(EventRow)
                .where(EventRow.id.in_(unheard), EventRow.processed_at.is_(None))
                .values(processed_at=now),
                execution_options={"synchronize_session": False},
            )
        report.events += len(unheard)
    for event_id in heard:
        try:
            async with db.transaction(SYSTEM) as session:
                await dispatch_one(
                    session, event_id, plans=plans, notify=notify, max_depth=max_depth,
                    now=now, report=report,
                )  # fmt: skip
        except Exception as exc:
            log.exception("dispatching event %s failed", event_id)
            await _record_failure(db, event_id, exc, now)
    return report


async def _patterns(
    session: AsyncSession, organizations: set[uuid.UUID]
) -> dict[uuid.UUID, list[str]]:
    """The event patterns active workflows subscribe to, by organization."""
    rows = await session.execute(
        select(WorkflowRow.organization_id, WorkflowRow.trigger_config).where(
            WorkflowRow.organization_id.in_(organizations),
            WorkflowRow.status == WorkflowStatus.ACTIVE,
            versions.is_latest(WorkflowRow),
        )
    )
    found: dict[uuid.UUID, list[str]] = {}
    for org, config in rows:
        for sub in (config or {}).get("events", []):
            found.setdefault(org, []).append(str(sub.get("pattern", "")))
    return found


async def _record_failure(
    db: Database, event_id: uuid.UUID, exc: Exception, now: dt.datetime
) -> None:
    with contextlib.suppress(Exception):  # the database itself may be what fails
        async with db.transaction(SYSTEM) as session:
            event = await session.get(EventRow, event_id)
            if event is None or event.processed_at is not None:
                return
            event.attempts += 1
            event.last_error = f"{type(exc).__name__}: {exc}"[:2000]
            if event.attempts >= MAX_ATTEMPTS:
                event.processed_at = now


PURGE_EVERY_SECONDS = 300.0


async def purge(db: Database, before: dt.datetime, batch: int = 5000) -> int:
    """Delete events dispatched before ``before`` (every execution leaves one)."""
    removed = 0
    while True:
        async with db.transaction(SYSTEM) as session:
            ids = (
                await session.execute(
                    select(EventRow.id)
                    .where(EventRow.processed_at.is_not(None), EventRow.processed_at < before)
                    .limit(batch)
                )
            ).scalars().all()  # fmt: skip
            if ids:
                await session.execute(
                    delete(EventRow).where(EventRow.id.in_(ids)),
                    execution_options={"synchronize_session": False},
                )
        removed += len(ids)
        if len(ids) < batch:
            return removed


class Dispatcher:
    """The loop a worker process runs beside its worker: dispatch, then sleep ``poll_seconds``
    (or until ``wake`` is notified after a local commit that published an event)."""

    def __init__(
        self,
        db: Database,
        *,
        plans: PlanCache,
        notify: Callable[[], None],
        clock: Callable[[], dt.datetime],
        max_depth: int,
        poll_seconds: float,
        wake: Notifier,
        retention: dt.timedelta = dt.timedelta(days=7),
    ) -> None:
        self.db = db
        self.plans = plans
        self.notify = notify
        self.clock = clock
        self.max_depth = max_depth
        self.poll_seconds = poll_seconds
        self.retention = retention
        self._wake = wake
        self._next_purge = 0.0

    async def run_once(self) -> Dispatched:
        return await dispatch_pending(
            self.db, plans=self.plans, notify=self.notify, max_depth=self.max_depth,
            now=self.clock(),
        )  # fmt: skip

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            report = Dispatched()
            try:
                report = await self.run_once()
                if report.started or report.stopped_by_depth:
                    log.info(
                        "dispatched %d events: %d executions started, %d stopped by depth",
                        report.events, report.started, report.stopped_by_depth,
                    )  # fmt: skip
                if time.monotonic() >= self._next_purge:
                    self._next_purge = time.monotonic() + PURGE_EVERY_SECONDS
                    await purge(self.db, self.clock() - self.retention)
            except Exception:
                log.exception("event dispatch failed; retrying")
            if report.more:
                continue
            self._wake.event.clear()
            stopping = asyncio.ensure_future(stop.wait())
            waking = asyncio.ensure_future(self._wake.event.wait())
            try:
                await asyncio.wait(
                    {stopping, waking}, timeout=self.poll_seconds,
                    return_when=asyncio.FIRST_COMPLETED,
                )  # fmt: skip
            finally:
                for task in (stopping, waking):
                    task.cancel()
