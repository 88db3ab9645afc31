"""Database statistics for ``turbocat doctor``: table sizes and slow statements, per dialect."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True)
class TableSize:
    name: str
    bytes: int
    """Table, indexes and TOAST on PostgreSQL; the table's and its indexes' pages on SQLite."""


@dataclass(frozen=True)
class SlowStatement:
    query: str
    calls: int
    mean_ms: float
    total_ms: float


async def table_sizes(conn: AsyncConnection) -> list[TableSize] | None:
    """Sizes of the application's tables, largest first (None where the database cannot
    tell: an SQLite built without the dbstat table)."""
    if conn.dialect.name == "postgresql":
        rows = await conn.execute(
            text(
                "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')"
                " ORDER BY 2 DESC"
            )
        )
        return [TableSize(name, int(size)) for name, size in rows.all()]
    try:
        rows = await conn.execute(
            text(
                "SELECT COALESCE(m.tbl_name, s.name), SUM(s.pgsize) FROM dbstat s"
                " LEFT JOIN sqlite_master m ON m.name = s.name"
                " GROUP BY 1 ORDER BY 2 DESC"
            )
        )
    except Exception:  # no dbstat virtual table in this SQLite build
        return None
    return [TableSize(name, int(size)) for name, size in rows.all()]


async def has_statement_stats(conn: AsyncConnection) -> bool:
    """Whether pg_stat_statements is installed in this database (never on SQLite)."""
    if conn.dialect.name != "postgresql":
        return False
    found = await conn.execute(
        text("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'")
    )
    return found.first() is not None


async def slow_statements(conn: AsyncConnection, limit: int = 5) -> list[SlowStatement]:
    """This database's statements with the highest mean time (pg_stat_statements)."""
    rows = await conn.execute(
        text(
            "SELECT query, calls, mean_exec_time, total_exec_time FROM pg_stat_statements"
            " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " ORDER BY mean_exec_time DESC LIMIT :limit"
        ),
        {"limit": limit},
    )
    return [
        SlowStatement(" ".join(str(query).split())[:300], int(calls), float(mean), float(total))
        for query, calls, mean, total in rows.all()
    ]
