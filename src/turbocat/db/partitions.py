"""Monthly partitions of executions and execution_logs on PostgreSQL (migration 0006).

``executions`` is partitioned by RANGE on ``id`` and ``execution_logs`` on ``execution_id``:
ids are UUIDv7, which begin with their creation time, so the month ``YYYY-MM`` is the id range
``[id_floor(first instant of the month), id_floor(first instant of the next month))`` and its
partitions are named ``executions_pYYYY_MM`` and ``execution_logs_pYYYY_MM``. Each table also has
a DEFAULT partition (``<table>_default``) for ids outside the existing months.

Creating and dropping partitions is DDL that only the tables' owner may run; the functions
``turbocat_create_partitions`` and ``turbocat_drop_partition`` (SECURITY DEFINER) do it for the
application role, one creator at a time (an advisory lock) and with a 5 s lock timeout, so a
busy table makes them fail rather than queue every query behind them.

On SQLite the tables are plain and every function here answers "nothing to do".
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from turbocat.domain.ids import id_floor

PARENTS = {"executions": "id", "execution_logs": "execution_id"}
"""Partitioned tables and their partition keys."""
AHEAD_MONTHS = 3
"""Months created ahead of the current one (by the migration and the scheduler)."""
KEYS_TABLE = "execution_idempotency_keys"
"""Where PostgreSQL keeps executions' idempotency keys unique (migration 0006)."""

_MONTHLY = re.compile(r"^(executions|execution_logs)_p(\d{4})_(\d{2})$")
_MACHINERY = frozenset({"executions_default", "execution_logs_default", KEYS_TABLE})


def is_partition_machinery(table: str) -> bool:
    """A table the models do not describe: a partition, or the idempotency keys' table."""
    return table in _MACHINERY or _MONTHLY.match(table) is not None


def month_start(when: dt.datetime) -> dt.datetime:
    when = when.astimezone(dt.UTC)
    return dt.datetime(when.year, when.month, 1, tzinfo=dt.UTC)


def next_month(month: dt.datetime) -> dt.datetime:
    return month.replace(year=month.year + month.month // 12, month=month.month % 12 + 1)


@dataclass(frozen=True)
class Partition:
    parent: str
    name: str
    month: dt.datetime
    """The first instant of the partition's month (UTC)."""

    @property
    def end(self) -> dt.datetime:
        """The first instant after the month."""
        return next_month(self.month)

    @property
    def lower(self) -> uuid.UUID:
        return id_floor(self.month)

    @property
    def upper(self) -> uuid.UUID:
        return id_floor(self.end)

    def holds(self, column: Any) -> ColumnElement[bool]:
        """``column`` (the partition key, or a reference to it) falls in this month."""
        return (column >= self.lower) & (column < self.upper)  # type: ignore[no-any-return]


def created_window(
    id_col: Any, since: dt.datetime | None, until: dt.datetime | None
) -> list[ColumnElement[bool]]:
    """Id bounds implied by ``since <= created_at < until`` for rows whose id carries their
    ``created_at`` (executions: ``ExecutionRow`` derives the id from it). Added to a query next
    to the time filter, they let PostgreSQL skip the months outside it; on SQLite they are an
    extra range on the primary key, true of the same rows."""
    bounds: list[ColumnElement[bool]] = []
    if since is not None:
        bounds.append(id_col >= id_floor(since))
    if until is not None:
        # created_at < until: its millisecond, which the id carries, is before until rounded
        # up to a whole millisecond.
        bounds.append(id_col < id_floor(_ceil_ms(until)))
    return bounds


def _ceil_ms(when: dt.datetime) -> dt.datetime:
    spare = when.microsecond % 1000
    return when if spare == 0 else when + dt.timedelta(microseconds=1000 - spare)


async def is_partitioned(conn: AsyncConnection | AsyncSession) -> bool:
    """Whether this database partitions executions (PostgreSQL at migration 0006 or later)."""
    if _dialect(conn) != "postgresql":
        return False
    found = await conn.execute(
        text("SELECT relkind::text FROM pg_class WHERE oid = to_regclass('executions')")
    )
    return found.scalar_one_or_none() == "p"


async def monthly(conn: AsyncConnection | AsyncSession) -> list[Partition]:
    """The monthly partitions of both tables, oldest first (none on SQLite)."""
    if _dialect(conn) != "postgresql":
        return []
    rows = await conn.execute(
        text(
            "SELECT p.relname, c.relname FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent"
            " WHERE i.inhparent IN (to_regclass('executions'), to_regclass('execution_logs'))"
        )
    )
    found = []
    for parent, name in rows.all():
        matched = _MONTHLY.match(name)
        if matched is not None:
            month = dt.datetime(int(matched[2]), int(matched[3]), 1, tzinfo=dt.UTC)
            found.append(Partition(parent, name, month))
    return sorted(found, key=lambda p: (p.month, p.parent))


async def create_ahead(
    session: AsyncSession, now: dt.datetime, months: int = AHEAD_MONTHS
) -> list[str]:
    """Create the missing partitions from ``now``'s month to ``months`` months ahead (both
    tables); the names created. Idempotent, and safe beside other schedulers."""
    last = month_start(now)
    for _ in range(months):
        last = next_month(last)
    return await create_months(session, now, last)


async def create_months(session: AsyncSession, first: dt.datetime, last: dt.datetime) -> list[str]:
    """Create the missing partitions of the months from ``first``'s to ``last``'s (both
    tables); the names created. A month whose rows already sit in a DEFAULT partition is left
    out, with a warning from PostgreSQL."""
    if not await is_partitioned(session):
        return []
    rows = await session.execute(
        text("SELECT turbocat_create_partitions(:first, :last)"),
        {"first": month_start(first), "last": month_start(last)},
    )
    return [str(name) for (name,) in rows.all()]


async def drop(session: AsyncSession, partition: Partition) -> None:
    """Detach and drop one monthly partition. PostgreSQL refuses while rows elsewhere still
    reference its rows (the caller removes those first)."""
    await session.execute(text("SELECT turbocat_drop_partition(:name)"), {"name": partition.name})


async def default_rows(conn: AsyncConnection | AsyncSession) -> dict[str, int]:
    """Rows in each DEFAULT partition: ids outside every month (made elsewhere, or by a clock
    far off); empty on SQLite. The owner counts the partition itself; the application role,
    which may not read partitions, counts through the parent (a scan of every month)."""
    if not await is_partitioned(conn):
        return {}
    counts = {}
    for parent in PARENTS:
        default = f"{parent}_default"
        direct = await conn.execute(
            text("SELECT has_table_privilege(CAST(:t AS regclass), 'SELECT')"), {"t": default}
        )
        sql = (
            f"SELECT count(*) FROM {default}"
            if direct.scalar_one()
            else f"SELECT count(*) FROM {parent} WHERE tableoid = to_regclass('{default}')"
        )
        counts[default] = int((await conn.execute(text(sql))).scalar_one())
    return counts


def _dialect(conn: AsyncConnection | AsyncSession) -> str:
    if isinstance(conn, AsyncSession):
        return conn.get_bind().dialect.name
    return conn.dialect.name


__all__ = [
    "AHEAD_MONTHS",
    "KEYS_TABLE",
    "PARENTS",
    "Partition",
    "create_ahead",
    "create_months",
    "created_window",
    "default_rows",
    "drop",
    "is_partition_machinery",
    "is_partitioned",
    "month_start",
    "monthly",
    "next_month",
]
