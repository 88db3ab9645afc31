"""Platform-wide figures read from the database for ``/metrics`` and ``turbocat doctor``:
executions and step runs by status, queue depth and age, workers and their busy slots, and
how far the scheduler is behind.

Read in one read-only transaction acting as the system (workers, the scheduler and operators
see every tenant); every query is served by an index (``ix_executions_status``,
``ix_step_runs_claim``, ``ix_step_runs_lease_expiry``, ``ix_schedules_next_fire_at``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db.models import ExecutionRow, ScheduleRow, StepRunRow, TaskQueueRow, WorkerRow
from turbocat.domain.enums import ExecutionStatus, StepStatus, WorkerStatus


@dataclass(frozen=True)
class QueueFigures:
    """One task queue: steps ready now, the age of the oldest of them, steps running."""

    ready: int = 0
    oldest_ready_seconds: float = 0.0
    running: int = 0


@dataclass(frozen=True)
class WorkerFigures:
    """A registered worker that has not stopped."""

    worker_id: str
    hostname: str
    queues: list[str]
    concurrency: int
    busy: int
    last_heartbeat_at: dt.datetime
    heartbeat_age_seconds: float
    live: bool
    """Heartbeat within the timeout; a worker that is not live has most likely died."""


@dataclass(frozen=True)
class Snapshot:
    taken_at: dt.datetime
    executions: dict[str, int]
    """Every execution status, zero included, so a gauge drops to 0 rather than vanishing."""
    step_runs: dict[str, int]
    queues: dict[str, QueueFigures]
    workers: list[WorkerFigures] = field(default_factory=list)
    scheduler_lag_seconds: float = 0.0
    """now - the oldest due ``next_fire_at`` of an enabled schedule (0 when none is due)."""
    schedules_due: int = 0

    @property
    def slots_total(self) -> int:
        return sum(w.concurrency for w in self.workers if w.live)

    @property
    def slots_busy(self) -> int:
        return sum(w.busy for w in self.workers if w.live)


async def _counts(session: AsyncSession, column: object, values: list[str]) -> dict[str, int]:
    rows = (await session.execute(select(column, func.count()).group_by(column))).all()  # type: ignore[call-overload]
    counts = dict.fromkeys(values, 0)
    for status, count in rows:
        counts[str(getattr(status, "value", status))] = int(count)
    return counts


async def snapshot(
    session: AsyncSession, now: dt.datetime, heartbeat_timeout: dt.timedelta
) -> Snapshot:
    """The figures as of ``now``; a worker whose heartbeat is older than ``heartbeat_timeout``
    is reported, but not live."""
    executions = await _counts(session, ExecutionRow.status, [s.value for s in ExecutionStatus])
    step_runs = await _counts(session, StepRunRow.status, [s.value for s in StepStatus])
    # Every queue someone defined or serves reports, at 0 when idle, rather than vanishing.
    known = (await session.execute(select(TaskQueueRow.name).distinct())).scalars().all()
    served = (
        await session.execute(
            select(WorkerRow.queues).where(WorkerRow.status != WorkerStatus.STOPPED)
        )
    ).scalars()
    queues = {name: QueueFigures() for name in [*known, *(q for qs in served for q in qs)]}
    ready = await session.execute(
        select(StepRunRow.queue, func.count(), func.min(StepRunRow.scheduled_for))
        .where(StepRunRow.status == StepStatus.READY, StepRunRow.scheduled_for <= now)
        .group_by(StepRunRow.queue)
    )
    for queue, count, oldest in ready.all():
        age = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
        queues[queue] = QueueFigures(ready=int(count), oldest_ready_seconds=age)
    running = await session.execute(
        select(StepRunRow.queue, StepRunRow.lease_owner, func.count())
        .where(StepRunRow.status == StepStatus.RUNNING)
        .group_by(StepRunRow.queue, StepRunRow.lease_owner)
    )
    busy_by_worker: dict[str | None, int] = {}
    for queue, owner, count in running.all():
        figures = queues.get(queue, QueueFigures())
        queues[queue] = QueueFigures(
            figures.ready, figures.oldest_ready_seconds, figures.running + int(count)
        )
        busy_by_worker[owner] = busy_by_worker.get(owner, 0) + int(count)
    workers = await _workers(session, now, heartbeat_timeout, busy_by_worker)
    due = (
        await session.execute(
            select(func.count(), func.min(ScheduleRow.next_fire_at)).where(
                ScheduleRow.enabled.is_(True), ScheduleRow.next_fire_at <= now
            )
        )
    ).one()
    lag = max(0.0, (now - due[1]).total_seconds()) if due[1] is not None else 0.0
    return Snapshot(now, executions, step_runs, queues, workers, lag, int(due[0]))


async def _workers(
    session: AsyncSession,
    now: dt.datetime,
    heartbeat_timeout: dt.timedelta,
    busy: dict[str | None, int],
) -> list[WorkerFigures]:
    rows = (
        await session.execute(
            select(WorkerRow)
            .where(WorkerRow.status != WorkerStatus.STOPPED)
            .order_by(WorkerRow.started_at)
        )
    ).scalars()
    return [
        WorkerFigures(
            worker_id=row.worker_id,
            hostname=row.hostname,
            queues=list(row.queues),
            concurrency=row.concurrency,
            busy=busy.get(row.worker_id, 0),
            last_heartbeat_at=row.last_heartbeat_at,
            heartbeat_age_seconds=max(0.0, (now - row.last_heartbeat_at).total_seconds()),
            live=now - row.last_heartbeat_at <= heartbeat_timeout,
        )
        for row in rows
    ]


@dataclass(frozen=True)
class StuckStep:
    step_run_id: str
    execution_id: str
    step_key: str
    lease_owner: str | None
    expired_seconds: float


@dataclass(frozen=True)
class OverdueExecution:
    execution_id: str
    status: str
    overdue_seconds: float


async def stuck_steps(
    session: AsyncSession, now: dt.datetime, grace: dt.timedelta, limit: int = 20
) -> list[StuckStep]:
    """Running step runs whose lease expired more than ``grace`` ago: no worker renews them
    and none has rescued them (a live worker would within a third of a lease)."""
    rows = (
        await session.execute(
            select(StepRunRow)
            .where(
                StepRunRow.status == StepStatus.RUNNING,
                StepRunRow.lease_expires_at < now - grace,
            )
            .order_by(StepRunRow.lease_expires_at)
            .limit(limit)
        )
    ).scalars()
    return [
        StuckStep(
            str(row.id),
            str(row.execution_id),
            row.step_key,
            row.lease_owner,
            (now - row.lease_expires_at).total_seconds() if row.lease_expires_at else 0.0,
        )
        for row in rows
    ]


async def overdue_executions(
    session: AsyncSession, now: dt.datetime, grace: dt.timedelta, limit: int = 20
) -> list[OverdueExecution]:
    """Executions still active more than ``grace`` past their ``timeout_at`` (a worker's
    maintenance ends them as ``timeout``; when it does not, no worker is maintaining)."""
    active = (ExecutionStatus.RUNNING, ExecutionStatus.WAITING, ExecutionStatus.PENDING)
    rows = (
        await session.execute(
            select(ExecutionRow.id, ExecutionRow.status, ExecutionRow.timeout_at)
            .where(ExecutionRow.status.in_(active), ExecutionRow.timeout_at < now - grace)
            .order_by(ExecutionRow.timeout_at)
            .limit(limit)
        )
    ).all()
    return [
        OverdueExecution(str(id_), status.value, (now - timeout_at).total_seconds())
        for id_, status, timeout_at in rows
        if timeout_at is not None
    ]
