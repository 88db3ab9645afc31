"""How long a retention run takes, and how long its longest write transaction holds locks.

    python bench/retention.py --db sqlite|postgresql [--executions N] [--logs-per 10]
                              [--batch-size 1000] [--out FILE]

On a fresh database (``turbocat_bench.fresh_database``) it writes N completed executions of one
organization, half 100 days old (past the 90-day period) and half 10 days old, each with two
step runs and ``--logs-per`` log lines as old as the execution; then it times a dry run and a
run (``services.retention.run``) and every DELETE statement the run makes (each is its own
transaction, so the longest one bounds how long a table is locked).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import percentile
from turbocat_bench import fresh_database

NOW = dt.datetime(2026, 7, 1, tzinfo=dt.UTC)


async def generate(db: Any, executions: int, logs_per: int) -> None:
    from sqlalchemy import insert

    from turbocat.db.engine import TenantContext
    from turbocat.db.models import (
        ExecutionLogRow,
        ExecutionRow,
        OrganizationRow,
        StepRunRow,
        WorkflowRow,
    )

    system = TenantContext(system=True)
    org, workflow = uuid.uuid4(), uuid.uuid4()
    async with db.transaction(system) as session:
        await session.execute(
            insert(OrganizationRow),
            [{"id": org, "name": "o", "slug": "o", "settings": {}, "created_at": NOW,
              "updated_at": NOW}],
        )  # fmt: skip
        await session.execute(
            insert(WorkflowRow),
            [{"id": workflow, "organization_id": org, "name": "w", "kebab_name": "w",
              "created_at": NOW, "updated_at": NOW}],
        )  # fmt: skip
    for start in range(0, executions, 2000):
        runs, steps, logs = [], [], []
        for i in range(start, min(executions, start + 2000)):
            execution = uuid.uuid4()
            at = NOW - dt.timedelta(days=100 if i % 2 == 0 else 10)
            common = {"organization_id": org, "created_at": at}
            runs.append(
                {**common, "id": execution, "workflow_id": workflow, "status": "completed",
                 "trigger_type": "manual", "completed_at": at, "updated_at": at}
            )  # fmt: skip
            for k in range(2):
                steps.append(
                    {**common, "id": uuid.uuid4(), "execution_id": execution,
                     "step_key": f"s{k}", "step_type": "agent", "status": "completed",
                     "idempotency_key": f"{execution}:s{k}:0", "updated_at": at}
                )  # fmt: skip
            logs += [
                {**common, "id": uuid.uuid4(), "execution_id": execution, "message": "x" * 80}
                for _ in range(logs_per)
            ]
        async with db.transaction(system) as session:
            await session.execute(insert(ExecutionRow), runs)
            await session.execute(insert(StepRunRow), steps)
            await session.execute(insert(ExecutionLogRow), logs)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    from sqlalchemy import event

    from turbocat.config import Settings
    from turbocat.db.engine import Database
    from turbocat.domain.retention import Policy
    from turbocat.services import retention

    with tempfile.TemporaryDirectory() as tmp:
        async with fresh_database(args.db, Path(tmp)) as url:
            db = Database.from_settings(Settings(database_url=url))
            try:
                started = time.perf_counter()
                await generate(db, args.executions, args.logs_per)
                generated = time.perf_counter() - started
                deletes: list[float] = []

                @event.listens_for(db.engine.sync_engine, "before_cursor_execute")
                def _before(conn: Any, *_: Any) -> None:
                    conn.info["retention_t0"] = time.perf_counter()

                @event.listens_for(db.engine.sync_engine, "after_cursor_execute")
                def _after(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
                    if statement.lstrip().upper().startswith("DELETE"):
                        deletes.append(time.perf_counter() - conn.info["retention_t0"])

                started = time.perf_counter()
                dry = await retention.run(
                    db, Policy(), NOW, dry_run=True, batch_size=args.batch_size
                )
                dry_seconds = time.perf_counter() - started
                started = time.perf_counter()
                report = await retention.run(db, Policy(), NOW, batch_size=args.batch_size)
                seconds = time.perf_counter() - started
            finally:
                await db.dispose()
    return {
        "db": args.db,
        "batch_size": args.batch_size,
        "generated_seconds": round(generated, 1),
        "removed": dict(report.totals()),
        "dry_run_matches": dict(report.totals()) == dict(dry.totals()),
        "dry_run_seconds": round(dry_seconds, 2),
        "run_seconds": round(seconds, 2),
        "deletes": len(deletes),
        "delete_ms": {
            "p50": round(percentile(deletes, 50) * 1000, 1),
            "p99": round(percentile(deletes, 99) * 1000, 1),
            "max": round(max(deletes, default=0) * 1000, 1),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgresql"], required=True)
    parser.add_argument("--executions", type=int, default=20_000)
    parser.add_argument("--logs-per", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = asyncio.run(bench(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
