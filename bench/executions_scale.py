"""Reads and retention over 1,000,000 executions on PostgreSQL, partitioned by month.

    python bench/executions_scale.py [--rows 1000000] [--logs-per 4] [--months 12]
                                     [--samples 200] [--out FILE]

On a throwaway database (``turbocat_bench.fresh_database``: created, migrated, dropped) it
writes ``--rows`` executions spread evenly over the last ``--months`` months (the current one
included) of 5 organizations with 4 workflows each, every execution with 2 step runs and
``--logs-per`` log lines; 10% failed, 3% cancelled, the rest completed, and 2% of the current
month still running. Rows are made by ``INSERT ... SELECT`` over ``generate_series`` in the
database (ids are UUIDv7 of each row's ``created_at``), one month per statement, then ANALYZEd.

Then it times, as the application role through the services (row-level security on, one read
transaction each, as an API request does), ``--samples`` times each on random organizations,
workflows and executions:

- the execution list's first page (50, newest first), and a page after a cursor at a random
  point of the history;
- the list filtered by workflow, status and a 30-day window;
- an execution with its step runs; the log lines of an execution (first 100);

and finally one retention run with the default policies (``services.retention.run``), which
drops the months past every period whole and deletes the rest in batches.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import percentile
from turbocat_bench import fresh_database

ORGS = 5
WORKFLOWS_PER_ORG = 4
STEPS_PER = 2

# A UUIDv7 carrying the timestamp expression {t} (milliseconds) and random bits.
ID_AT = (
    "(lpad(to_hex((extract(epoch FROM {t}) * 1000)::bigint), 12, '0') || '7'"
    " || substr(gen_random_uuid()::text, 16, 3) || '8'"
    " || translate(substr(gen_random_uuid()::text, 21, 16), '-', ''))::uuid"
)

EXECUTIONS_SQL = f"""
INSERT INTO executions (id, organization_id, workflow_id, status, result, trigger_type,
  trigger_data, input_data, output_data, steps_total, steps_completed, steps_failed,
  task_queue, created_at, updated_at, started_at, completed_at, duration_ms, error_message)
SELECT {ID_AT.format(t="s.t")}, ($3::uuid[])[1 + s.g % {ORGS}],
  ($4::uuid[])[1 + s.g % {ORGS * WORKFLOWS_PER_ORG}], s.status,
  CASE s.status WHEN 'completed' THEN 'success' WHEN 'running' THEN 'pending' ELSE 'failure' END,
  'api', '{{}}', jsonb_build_object('n', s.g), '{{"ok": true}}', {STEPS_PER},
  CASE s.status WHEN 'completed' THEN {STEPS_PER} ELSE 1 END,
  CASE s.status WHEN 'failed' THEN 1 ELSE 0 END, 'default', s.t, s.t, s.t,
  CASE s.status WHEN 'running' THEN NULL ELSE s.t + interval '2 seconds' END,
  CASE s.status WHEN 'running' THEN NULL ELSE 2000 END,
  CASE s.status WHEN 'failed' THEN 'step b failed' END
FROM (
  SELECT g, $1::timestamptz + (g::float8 / $5) * ($2::timestamptz - $1::timestamptz) AS t,
    CASE WHEN $6 AND g % 100 < 2 THEN 'running' WHEN g % 100 < 12 THEN 'failed'
         WHEN g % 100 < 15 THEN 'cancelled' ELSE 'completed' END AS status
  FROM generate_series(0, $5 - 1) AS g
) AS s
"""

STEPS_SQL = f"""
INSERT INTO step_runs (id, organization_id, execution_id, step_key, scope, step_type,
  iteration, attempt, status, queue, input, output, idempotency_key, lease_epoch,
  started_at, completed_at, duration_ms, created_at, updated_at)
SELECT {ID_AT.format(t="e.created_at")}, e.organization_id, e.id, k.key, '', 'agent', 0, 1,
  CASE WHEN e.status = 'failed' AND k.key = 'b' THEN 'failed'
       WHEN e.status = 'running' AND k.key = 'b' THEN 'running' ELSE 'completed' END,
  'default', '{{}}', '{{"x": 1}}', e.id::text || ':' || k.key || ':0', 1,
  e.created_at, e.created_at + interval '1 second', 1000, e.created_at, e.created_at
FROM executions AS e CROSS JOIN (VALUES ('a'), ('b')) AS k(key)
WHERE e.id >= $1 AND e.id < $2
"""

LOGS_SQL = f"""
INSERT INTO execution_logs (id, organization_id, execution_id, level, message, metadata,
  step_key, created_at)
SELECT {ID_AT.format(t="e.created_at")}, e.organization_id, e.id,
  CASE WHEN e.status = 'failed' AND n = $3 THEN 'error' ELSE 'info' END,
  'step ' || n || ' of execution ' || e.id::text || ': done', '{{}}', 'a',
  e.created_at + n * interval '100 milliseconds'
FROM executions AS e CROSS JOIN generate_series(1, $3) AS n
WHERE e.id >= $1 AND e.id < $2
"""


def month_start(when: dt.datetime) -> dt.datetime:
    return dt.datetime(when.year, when.month, 1, tzinfo=dt.UTC)


def next_month(month: dt.datetime) -> dt.datetime:
    return month.replace(year=month.year + month.month // 12, month=month.month % 12 + 1)


async def fill(url: str, args: argparse.Namespace, now: dt.datetime) -> dict[str, Any]:
    """Write the history as the URL's (owner) role; the per-phase seconds."""
    import asyncpg

    from turbocat.domain.ids import id_floor

    months = [month_start(now)]
    while len(months) < args.months:
        previous = months[0] - dt.timedelta(days=1)
        months.insert(0, month_start(previous))
    orgs = [uuid.uuid4() for _ in range(ORGS)]
    # Workflow w belongs to organization w % ORGS, as the row numbers pick them.
    workflows = [uuid.uuid4() for _ in range(ORGS * WORKFLOWS_PER_ORG)]
    await _parents(url, orgs, workflows, months[0])
    conn = await asyncpg.connect(url)
    timings: dict[str, float] = {}
    try:
        await conn.execute("SELECT set_config('turbocat.system', 'on', false)")
        await conn.execute(
            "SELECT count(*) FROM turbocat_create_partitions($1, $2)", months[0], months[-1]
        )
        # A bulk load as pg_restore does it: foreign-key triggers off for this session (the
        # rows are consistent by construction). Needs a superuser URL, as the bench's is.
        await conn.execute("SET session_replication_role = replica")
        per_month = args.rows // len(months)
        for phase in ("executions", "step_runs", "execution_logs"):
            started = time.perf_counter()
            for index, month in enumerate(months):
                end = min(next_month(month), now) if index == len(months) - 1 else next_month(month)
                count = per_month + (args.rows % len(months) if index == 0 else 0)
                current = index == len(months) - 1
                if phase == "executions":
                    await conn.execute(EXECUTIONS_SQL, month, end, orgs, workflows, count, current)
                elif phase == "step_runs":
                    await conn.execute(STEPS_SQL, id_floor(month), id_floor(next_month(month)))
                elif args.logs_per:
                    await conn.execute(
                        LOGS_SQL, id_floor(month), id_floor(next_month(month)), args.logs_per
                    )
            timings[phase] = time.perf_counter() - started
            print(f"  {phase}: {timings[phase]:.1f} s", file=sys.stderr, flush=True)
        started = time.perf_counter()
        await conn.execute("ANALYZE")
        timings["analyze"] = time.perf_counter() - started
        size = await conn.fetchval("SELECT pg_database_size(current_database())")
    finally:
        await conn.close()
    return {"seconds": timings, "database_bytes": int(size), "orgs": orgs, "months": months}


async def _parents(
    url: str, orgs: list[uuid.UUID], workflows: list[uuid.UUID], at: dt.datetime
) -> None:
    """The organizations and workflows, through the models (their defaults fill the rest)."""
    from sqlalchemy import insert

    from turbocat.config import Settings
    from turbocat.db.engine import Database, TenantContext
    from turbocat.db.models import OrganizationRow, WorkflowRow

    db = Database.from_settings(Settings(database_url=url), app_role=False)
    try:
        async with db.transaction(TenantContext(system=True)) as session:
            await session.execute(
                insert(OrganizationRow),
                [{"id": org, "name": f"org{i}", "slug": f"org{i}", "settings": {},
                  "created_at": at, "updated_at": at} for i, org in enumerate(orgs)],
            )  # fmt: skip
            await session.execute(
                insert(WorkflowRow),
                [{"id": w, "organization_id": orgs[i % ORGS], "name": f"flow-{i}",
                  "kebab_name": f"flow-{i}", "status": "active", "created_at": at,
                  "updated_at": at} for i, w in enumerate(workflows)],
            )  # fmt: skip
    finally:
        await db.dispose()


async def samples(url: str, count: int) -> list[tuple[uuid.UUID, uuid.UUID, uuid.UUID]]:
    """Random (execution, organization, workflow) triples."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT set_config('turbocat.system', 'on', false)")
        rows = await conn.fetch(
            "SELECT id, organization_id, workflow_id FROM executions TABLESAMPLE SYSTEM (1)"
            " ORDER BY random() LIMIT $1",
            count,
        )
    finally:
        await conn.close()
    return [(r["id"], r["organization_id"], r["workflow_id"]) for r in rows]


async def timed(
    db: Any, picks: list[Any], work: Callable[[Any, Any], Awaitable[Any]]
) -> list[float]:
    """Milliseconds of each call, each in its own read transaction as the pick's tenant."""
    from turbocat.db.engine import TenantContext

    times = []
    for pick in picks:
        context = TenantContext(organization_id=pick[1])
        started = time.perf_counter()
        async with db.transaction(context, readonly=True) as session:
            await work(session, pick)
        times.append((time.perf_counter() - started) * 1000)
    return times


async def reads(
    db: Any, picks: list[Any], months: list[dt.datetime], now: dt.datetime
) -> dict[str, list[float]]:
    from turbocat.db.listing import PageRequest
    from turbocat.domain.access import Principal
    from turbocat.domain.enums import ExecutionStatus, LogLevel, MemberRole
    from turbocat.domain.ids import id_floor
    from turbocat.domain.pagination import Cursor
    from turbocat.services import executions

    rng = random.Random(7)  # noqa: S311 - sampling, not secrets
    start = months[0]
    span = (now - start).total_seconds()

    def who(pick: Any) -> Principal:
        return Principal(uuid.UUID(int=1), pick[1], MemberRole.OWNER)

    def at_random() -> dt.datetime:
        return start + dt.timedelta(seconds=rng.uniform(0, span))

    async def first_page(session: Any, pick: Any) -> None:
        rows = await executions.list_executions(
            session, who(pick), executions.ExecutionFilter(), PageRequest(limit=50)
        )
        assert len(rows) == 51

    async def cursor_page(session: Any, pick: Any) -> None:
        at = at_random()
        page = PageRequest(limit=50, cursor=Cursor(at.isoformat(), id_floor(at)))
        await executions.list_executions(session, who(pick), executions.ExecutionFilter(), page)

    async def filtered(session: Any, pick: Any) -> None:
        since = at_random() - dt.timedelta(days=30)
        flt = executions.ExecutionFilter(
            workflow_id=pick[2], status=rng.choice([ExecutionStatus.COMPLETED,
                                                    ExecutionStatus.FAILED]),
            since=since, until=since + dt.timedelta(days=30),
        )  # fmt: skip
        await executions.list_executions(session, who(pick), flt, PageRequest(limit=50))

    async def detail(session: Any, pick: Any) -> None:
        row = await executions.get(session, who(pick), pick[0])
        steps = await executions.step_runs(session, row)
        assert len(steps) == STEPS_PER

    async def logs(session: Any, pick: Any) -> None:
        await executions.logs(
            session, who(pick), pick[0], min_level=LogLevel.DEBUG, after_id=None, limit=100
        )

    work = {
        "list, first page": first_page,
        "list, page after a cursor": cursor_page,
        "list by workflow + status + 30 days": filtered,
        "execution with step runs": detail,
        "logs of an execution": logs,
    }
    results = {}
    for name, call in work.items():
        await timed(db, picks[:10], call)  # warm the pool and the plan caches
        results[name] = await timed(db, picks, call)
    return results


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    from turbocat.config import Settings
    from turbocat.db.engine import Database
    from turbocat.domain.retention import Policy
    from turbocat.services import retention

    now = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory() as tmp:
        async with fresh_database("postgresql", Path(tmp)) as url:
            print(f"filling {args.rows} executions ...", file=sys.stderr, flush=True)
            started = time.perf_counter()
            filled = await fill(url, args, now)
            fill_seconds = time.perf_counter() - started
            picks = await samples(url, args.samples)
            db = Database.from_settings(Settings(database_url=url))
            try:
                print("reading ...", file=sys.stderr, flush=True)
                timings = await reads(db, picks, filled["months"], now)
                print("retention ...", file=sys.stderr, flush=True)
                drops = DropTimes()
                logging.getLogger("turbocat.retention").addHandler(drops)
                logging.getLogger("turbocat.retention").setLevel(logging.INFO)
                started = time.perf_counter()
                report = await retention.run(db, Policy(), now)
                retention_seconds = time.perf_counter() - started
                drops_seconds = max(drops.at, default=started) - started
            finally:
                await db.dispose()
    return {
        "rows": args.rows,
        "logs_per": args.logs_per,
        "months": args.months,
        "samples": len(picks),
        "fill_seconds": round(fill_seconds, 1),
        "fill_phases": {k: round(v, 1) for k, v in filled["seconds"].items()},
        "database_mib": round(filled["database_bytes"] / 2**20),
        "reads_ms": {
            name: {
                "p50": round(percentile(times, 50), 2),
                "p95": round(percentile(times, 95), 2),
                "max": round(max(times), 2),
            }
            for name, times in timings.items()
        },
        "retention": {
            "seconds": round(retention_seconds, 1),
            "partitions_dropped_within_seconds": round(drops_seconds, 1),
            "partitions_dropped": report.partitions_dropped,
            "removed": dict(sorted(report.totals().items())),
        },
    }


class DropTimes(logging.Handler):
    """When retention logged each partition it dropped (``perf_counter``)."""

    def __init__(self) -> None:
        super().__init__()
        self.at: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("retention dropped partition"):
            self.at.append(time.perf_counter())


def table(result: dict[str, Any]) -> str:
    lines = [
        f"{result['rows']:,} executions over {result['months']} months, "
        f"{result['logs_per']} log lines and {STEPS_PER} step runs each "
        f"({result['database_mib']:,} MiB); filled in {result['fill_seconds']} s",
        "",
        f"| query ({result['samples']} samples) | p50 ms | p95 ms | max ms |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, ms in result["reads_ms"].items():
        lines.append(f"| {name} | {ms['p50']} | {ms['p95']} | {ms['max']} |")
    kept = result["retention"]
    removed = ", ".join(f"{n:,} {t}" for t, n in kept["removed"].items() if n)
    lines += [
        "",
        f"retention run: {kept['seconds']} s, {len(kept['partitions_dropped'])} partitions "
        f"dropped (all within the first {kept['partitions_dropped_within_seconds']} s); "
        f"removed {removed or 'nothing'}",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--logs-per", type=int, default=4)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.rows < args.months * 100:
        parser.error("--rows: at least 100 per month")
    result = asyncio.run(bench(args))
    print(table(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
