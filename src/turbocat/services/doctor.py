"""``turbocat doctor``: checks of an installation's health, each ok, warn or fail with a detail.

Failing checks are problems an operator must act on (the database unreachable or behind its
migrations, steps whose lease ran out with no worker to rescue them, executions past their
time limit that nobody ends, ready work and no live worker); warnings deserve a look (stale
worker registrations, a scheduler behind, slow statements, missing months ahead or rows in
the DEFAULT partitions on PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sqlalchemy import text

from turbocat.config import Settings
from turbocat.db import migrate, partitions
from turbocat.db.dialects import stats
from turbocat.db.engine import Database, TenantContext
from turbocat.services import monitoring

Status = Literal["ok", "warn", "fail"]
SLOW_MEAN_MS = 500.0
"""A statement whose mean time passes this is reported as slow."""


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


async def run_checks(db: Database, settings: Settings, now: dt.datetime) -> list[Check]:
    """Every check, in order; after a failed connection only that one is reported."""
    try:
        async with db.engine.connect() as conn:
            version_sql = "SHOW server_version" if db.dialect == "postgresql" else (
                "SELECT sqlite_version()"
            )  # fmt: skip
            version = (await conn.execute(text(version_sql))).scalar_one()
            revision = await conn.run_sync(migrate.current_on_connection)
            checks = [Check("connectivity", "ok", f"{db.dialect} {version}")]
            checks.append(_migrations(revision))
            checks.append(await _table_sizes(conn))
            if revision is not None:
                checks.append(await _partitions(conn, now))
            # Last on this connection: an unreadable pg_stat_statements aborts its transaction.
            checks.append(await _slow_queries(conn))
    except Exception as exc:  # the report says what failed; it never raises
        return [Check("connectivity", "fail", f"cannot reach the database: {exc}")]
    if checks[1].status == "fail" and revision is None:
        return checks  # no schema: the other checks would only repeat it
    async with db.transaction(TenantContext(system=True), readonly=True) as session:
        timeout = dt.timedelta(seconds=settings.scheduler.worker_heartbeat_timeout_seconds)
        snapshot = await monitoring.snapshot(session, now, timeout)
        grace = dt.timedelta(seconds=settings.engine.lease_seconds)
        stuck = await monitoring.stuck_steps(session, now, grace)
        overdue = await monitoring.overdue_executions(session, now, grace)
    checks.append(_stuck(stuck, settings.engine.lease_seconds))
    checks.append(_overdue(overdue))
    checks.append(_workers(snapshot))
    checks.append(_scheduler(snapshot, settings.scheduler.misfire_grace_seconds))
    return checks


def _migrations(revision: str | None) -> Check:
    heads = migrate.heads()
    data = {"current": revision, "heads": heads}
    if revision in heads:
        return Check("migrations", "ok", f"at head {revision}", data)
    detail = (
        f"at {revision or 'an empty schema'}, not {', '.join(heads)}: run 'turbocat db upgrade'"
    )
    return Check("migrations", "fail", detail, data)


async def _table_sizes(conn: Any) -> Check:
    sizes = await stats.table_sizes(conn)
    if sizes is None:
        return Check("table_sizes", "ok", "skipped: this SQLite has no dbstat table")
    total = sum(s.bytes for s in sizes)
    top = ", ".join(f"{s.name} {_size(s.bytes)}" for s in sizes[:5])
    data = {"total_bytes": total, "tables": {s.name: s.bytes for s in sizes}}
    return Check("table_sizes", "ok", f"{_size(total)} in all; largest: {top}", data)


async def _slow_queries(conn: Any) -> Check:
    if not await stats.has_statement_stats(conn):
        return Check("slow_queries", "ok", "skipped: pg_stat_statements is not installed")
    try:
        slow = await stats.slow_statements(conn)
    except Exception as exc:  # installed but not preloaded (shared_preload_libraries)
        return Check("slow_queries", "warn", f"pg_stat_statements cannot be read: {exc}")
    data = {"statements": [asdict(s) for s in slow]}
    over = [s for s in slow if s.mean_ms >= SLOW_MEAN_MS]
    if not over:
        return Check("slow_queries", "ok", f"no statement averages {SLOW_MEAN_MS:.0f} ms", data)
    worst = over[0]
    detail = (
        f"{len(over)} statements average >= {SLOW_MEAN_MS:.0f} ms; slowest "
        f"{worst.mean_ms:.0f} ms over {worst.calls} calls: {worst.query[:120]}"
    )
    return Check("slow_queries", "warn", detail, data)


async def _partitions(conn: Any, now: dt.datetime) -> Check:
    """Monthly partitions (PostgreSQL): the months present, whether next month exists, and rows
    stranded in the DEFAULT partitions (ids that carry no month that exists)."""
    if not await partitions.is_partitioned(conn):
        return Check("partitions", "ok", f"not partitioned ({conn.dialect.name}: plain tables)")
    months = await partitions.monthly(conn)
    stranded = await partitions.default_rows(conn)
    runs = sorted(p.month for p in months if p.parent == "executions")
    data: dict[str, Any] = {
        "months": [m.strftime("%Y-%m") for m in runs],
        "default_rows": stranded,
    }
    span = f"{runs[0]:%Y-%m} to {runs[-1]:%Y-%m}" if runs else "none"
    problems = []
    ahead = partitions.next_month(partitions.month_start(now))
    if ahead not in runs:
        problems.append(
            f"no partition for {ahead:%Y-%m} yet: is a scheduler running? (it creates "
            f"{partitions.AHEAD_MONTHS} months ahead; until then new rows go to the DEFAULT "
            "partition)"
        )
    if any(stranded.values()):
        rows = ", ".join(f"{n} in {t}" for t, n in stranded.items() if n)
        problems.append(f"rows outside every month: {rows}")
    if problems:
        return Check(
            "partitions", "warn", f"{len(runs)} months ({span}); " + "; ".join(problems), data
        )
    return Check("partitions", "ok", f"{len(runs)} months ({span}), DEFAULT partitions empty", data)


def _stuck(stuck: list[monitoring.StuckStep], lease_seconds: float) -> Check:
    data = {"steps": [asdict(s) for s in stuck]}
    if not stuck:
        return Check("stuck_steps", "ok", "no running step has an expired lease", data)
    first = stuck[0]
    detail = (
        f"{len(stuck)} running steps' leases expired over {lease_seconds:.0f}s ago and no "
        f"worker rescued them (e.g. step {first.step_key!r} of execution {first.execution_id}, "
        f"held by {first.lease_owner}): start a worker for their queues"
    )
    return Check("stuck_steps", "fail", detail, data)


def _overdue(overdue: list[monitoring.OverdueExecution]) -> Check:
    data = {"executions": [asdict(e) for e in overdue]}
    if not overdue:
        return Check("overdue_executions", "ok", "no execution runs past its time limit", data)
    first = overdue[0]
    detail = (
        f"{len(overdue)} executions are past their time limit and still {first.status} "
        f"(e.g. {first.execution_id}, {first.overdue_seconds:.0f}s over): no worker maintains them"
    )
    return Check("overdue_executions", "fail", detail, data)


def _workers(snapshot: monitoring.Snapshot) -> Check:
    live = [w for w in snapshot.workers if w.live]
    stale = [w for w in snapshot.workers if not w.live]
    data = {"workers": [asdict(w) for w in snapshot.workers]}
    waiting = {q: f.ready for q, f in snapshot.queues.items() if f.ready}
    served = {q for w in live for q in w.queues}
    unserved = {q: n for q, n in waiting.items() if q not in served}
    if unserved:
        names = ", ".join(f"{q} ({n} ready)" for q, n in sorted(unserved.items()))
        return Check("workers", "fail", f"no live worker serves queues with work: {names}", data)
    summary = f"{len(live)} live ({snapshot.slots_busy}/{snapshot.slots_total} slots busy)"
    if stale:
        oldest = max(stale, key=lambda w: w.heartbeat_age_seconds)
        detail = (
            f"{summary}; {len(stale)} not stopped but silent (e.g. {oldest.worker_id}, last "
            f"heartbeat {oldest.heartbeat_age_seconds:.0f}s ago): crashed workers"
        )
        return Check("workers", "warn", detail, data)
    return Check("workers", "ok", summary, data)


def _scheduler(snapshot: monitoring.Snapshot, grace_seconds: float) -> Check:
    data = {"lag_seconds": snapshot.scheduler_lag_seconds, "due": snapshot.schedules_due}
    if snapshot.scheduler_lag_seconds <= grace_seconds:
        return Check("scheduler", "ok", f"{snapshot.schedules_due} schedules due", data)
    detail = (
        f"{snapshot.schedules_due} schedules are due, the oldest "
        f"{snapshot.scheduler_lag_seconds:.0f}s ago: is a scheduler running?"
    )
    return Check("scheduler", "warn", detail, data)
