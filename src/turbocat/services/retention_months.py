"""Retention by whole months, where executions and logs are partitioned (PostgreSQL, migration
0006, ``db.partitions``).

Before the per-organization sweeps of ``services.retention``, every past month is looked at:

- its **executions** partition is dropped when every execution in it is past its period under
  its own organization's policy (the same predicate as the batched sweep: completed ones by the
  successful period, failed, timed-out and cancelled ones by the failed period, never live
  ones). The month's logs partition goes with it (its lines all belong to those executions);
  work items and step runs of the month's executions are deleted first in batches (they are
  not partitioned), and links to them from other executions (child, re-run) set to NULL;
- otherwise its **logs** partition is dropped when every line in it is past the logs period of
  its organization and none of the month's executions is still live (pending, running or
  waiting: it may write more lines).

A month with a single row that a policy keeps stays, and the batched sweeps that follow remove
its expired rows one batch at a time, as on SQLite. Rows of organizations the run does not cover
(``--org``, invalid overrides) keep their month. The rows a drop removes are counted per
organization first, so the report says the same as a dry run (which drops nothing: the batched
predicates count the same rows) plus the partitions dropped. A drop that fails (a lock not
granted within 5 s, a reference that appeared meanwhile) is logged and left to the batched
sweeps.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    column,
    exists,
    func,
    literal,
    or_,
    select,
    update,
    values,
)

from turbocat.db import partitions
from turbocat.db.engine import TenantContext
from turbocat.db.models import ExecutionLogRow, ExecutionRow, StepRunRow, WorkItemRow
from turbocat.db.partitions import Partition
from turbocat.db.types import GUID, UTCDateTime
from turbocat.domain.enums import ExecutionStatus
from turbocat.domain.retention import Kind

log = logging.getLogger("turbocat.retention")
SYSTEM = TenantContext(system=True)

FAILED_STATUSES = (ExecutionStatus.FAILED, ExecutionStatus.TIMEOUT, ExecutionStatus.CANCELLED)
"""Kept for the failed period: an execution that did not complete, cancelled ones included
(someone may still want to know why it was stopped)."""
LIVE_STATUSES = tuple(
    s for s in ExecutionStatus if s is not ExecutionStatus.COMPLETED and s not in FAILED_STATUSES
)

Counts = Counter[str]


@dataclass
class MonthsResult:
    removed: dict[uuid.UUID, Counts] = field(default_factory=lambda: defaultdict(Counts))
    """Rows removed by the drops, per organization."""
    dropped: list[str] = field(default_factory=list)
    """Partitions dropped (on a dry run: those that would be)."""


_FOREVER = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
"""The cutoff of a period kept forever: nothing ended before it."""


def _cutoffs(scopes: Sequence[Any]) -> Any:
    """A VALUES table of each covered organization's cutoffs."""
    rows = [
        (
            s.organization_id,
            s.cutoff(Kind.SUCCESSFUL_EXECUTIONS) or _FOREVER,
            s.cutoff(Kind.FAILED_EXECUTIONS) or _FOREVER,
            s.cutoff(Kind.LOGS) or _FOREVER,
        )
        for s in scopes
        if s.organization_id is not None
    ]
    if not rows:
        return None
    return values(
        column("org", GUID),
        column("successful", UTCDateTime()),
        column("failed", UTCDateTime()),
        column("logs", UTCDateTime()),
        name="cutoffs",
    ).data(rows)


def _expired(cut: Any) -> ColumnElement[bool]:
    """``services.retention.expired_executions`` with the organization's cutoffs joined in."""
    ended = func.coalesce(ExecutionRow.completed_at, ExecutionRow.created_at)
    return or_(
        and_(ExecutionRow.status == ExecutionStatus.COMPLETED, ended < cut.c.successful),
        and_(ExecutionRow.status.in_(FAILED_STATUSES), ended < cut.c.failed),
    )


def _latest(scopes: Sequence[Any], *kinds: Kind) -> dt.datetime | None:
    found = [
        c
        for s in scopes
        if s.organization_id is not None
        for k in kinds
        if (c := s.cutoff(k)) is not None
    ]
    return max(found, default=None)


async def drop_expired_months(
    sweeper: Any, scopes: Sequence[Any], now: dt.datetime
) -> MonthsResult:
    """Drop the months whose rows are all past their periods (see the module's doc)."""
    result = MonthsResult()
    async with sweeper.db.transaction(SYSTEM, readonly=True) as session:
        if not await partitions.is_partitioned(session):
            return result
        found = await partitions.monthly(session)
    cut = _cutoffs(scopes)
    if cut is None:
        return result
    latest_execution = _latest(scopes, Kind.SUCCESSFUL_EXECUTIONS, Kind.FAILED_EXECUTIONS)
    latest_logs = _latest(scopes, Kind.LOGS)
    by_month: dict[dt.datetime, dict[str, Partition]] = defaultdict(dict)
    for partition in found:
        by_month[partition.month][partition.parent] = partition
    current = partitions.month_start(now)
    for month in sorted(by_month):
        if month >= current:
            break
        runs, logs = by_month[month].get("executions"), by_month[month].get("execution_logs")
        if runs is not None and latest_execution is not None and runs.end <= latest_execution:
            keeps = (
                select(literal(1))
                .select_from(ExecutionRow)
                .outerjoin(cut, cut.c.org == ExecutionRow.organization_id)
                .where(runs.holds(ExecutionRow.id), _expired(cut).is_not(True))
            )
            if not await _exists(sweeper, keeps):
                await _drop_executions(sweeper, runs, logs, result)
                continue
        if logs is not None and latest_logs is not None and logs.end <= latest_logs:
            keeps = (
                select(literal(1))
                .select_from(ExecutionLogRow)
                .outerjoin(cut, cut.c.org == ExecutionLogRow.organization_id)
                .where(
                    logs.holds(ExecutionLogRow.execution_id),
                    (ExecutionLogRow.created_at < cut.c.logs).is_not(True),
                )
            )
            # A live execution of the month may still write lines there.
            live = select(literal(1)).where(
                logs.holds(ExecutionRow.id), ExecutionRow.status.in_(LIVE_STATUSES)
            )
            if not await _exists(sweeper, keeps) and not await _exists(sweeper, live):
                await _drop_logs(sweeper, logs, result)
    return result


async def _exists(sweeper: Any, stmt: Any) -> bool:
    async with sweeper.db.transaction(SYSTEM, readonly=True) as session:
        return bool((await session.execute(select(exists(stmt)))).scalar_one())


async def _per_organization(
    sweeper: Any, model: Any, where: ColumnElement[bool]
) -> dict[uuid.UUID, int]:
    stmt = select(model.organization_id, func.count()).where(where).group_by(model.organization_id)
    async with sweeper.db.transaction(SYSTEM, readonly=True) as session:
        return {org: int(n) for org, n in (await session.execute(stmt)).all()}


async def _drop(sweeper: Any, partition: Partition) -> bool:
    try:
        async with sweeper.db.transaction(SYSTEM) as session:
            await partitions.drop(session, partition)
    except Exception as exc:  # a lock not granted, a reference that appeared: sweep instead
        log.warning("retention: could not drop %s (%s); rows left to the batched sweeps",
                    partition.name, exc)  # fmt: skip
        return False
    log.info("retention dropped partition %s", partition.name)
    return True


async def _unlink(sweeper: Any, link: Any, runs: Partition) -> None:
    """Set ``link`` to NULL on the executions of other months that point into ``runs`` (what
    ON DELETE SET NULL would do, which dropping a partition does not), in batches."""
    pointing = and_(runs.holds(link), ~runs.holds(ExecutionRow.id))
    while True:
        picked = select(ExecutionRow.id).where(pointing).limit(sweeper.batch_size)
        stmt = update(ExecutionRow).where(ExecutionRow.id.in_(picked)).values({link.key: None})
        async with sweeper.db.transaction(SYSTEM) as session:
            result = await session.execute(stmt, execution_options={"synchronize_session": False})
        if int(result.rowcount or 0) < sweeper.batch_size:
            return


def _add(result: MonthsResult, table: str, counts: dict[uuid.UUID, int]) -> None:
    for org, n in counts.items():
        result.removed[org][table] += n


async def _drop_logs(sweeper: Any, logs: Partition, result: MonthsResult) -> None:
    if sweeper.dry_run:
        result.dropped.append(logs.name)
        return
    counts = await _per_organization(
        sweeper, ExecutionLogRow, logs.holds(ExecutionLogRow.execution_id)
    )
    if await _drop(sweeper, logs):
        result.dropped.append(logs.name)
        _add(result, "execution_logs", counts)


async def _drop_executions(
    sweeper: Any, runs: Partition, logs: Partition | None, result: MonthsResult
) -> None:
    if sweeper.dry_run:
        result.dropped += ([logs.name] if logs is not None else []) + [runs.name]
        return
    if logs is not None:
        await _drop_logs(sweeper, logs, result)
    for model, table in ((WorkItemRow, "work_items"), (StepRunRow, "step_runs")):
        where = runs.holds(model.execution_id)
        _add(result, table, await _per_organization(sweeper, model, where))
        # Step runs: a loop's or parallel step's body goes with it by cascade.
        await sweeper.remove(model, where, cascades=model is StepRunRow)
    for link in (ExecutionRow.parent_execution_id, ExecutionRow.rerun_of_execution_id):
        await _unlink(sweeper, link, runs)
    counts = await _per_organization(sweeper, ExecutionRow, runs.holds(ExecutionRow.id))
    if await _drop(sweeper, runs):
        result.dropped.append(runs.name)
        _add(result, "executions", counts)


__all__ = ["MonthsResult", "drop_expired_months"]
