"""turbocat's side of the bench, on one database; ``engine.py`` runs it as a child process (so
peak memory is per database) with the project's interpreter.

    python bench/turbocat_bench.py --db sqlite|postgresql --out FILE [--repetitions R] ...

It works on a fresh database: a SQLite file in a temporary folder, or a temporary PostgreSQL
database created on ``TURBOCAT_BENCH_PG_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``), migrated, and dropped afterwards. An
organization, user and API key are made through the real app (``create_app`` over httpx's ASGI
transport); executions are started through the API and run by the real engine: the worker
inside the API process (``AppContext.worker``, as in ``turbocat serve``) or ``turbocat worker``
processes (PostgreSQL only: turbocat refuses them on SQLite). ``TURBOCAT_*`` variables of the
caller are ignored so that every run sets up the same way. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    FAN_OUT_STEPS,
    SEQ_STEPS,
    PeakMemory,
    burst_result,
    idle_cpu_percent,
    latency_summary,
    result_file,
    scratch_dir,
)

PG_ADMIN_URL = os.environ.get(
    "TURBOCAT_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
RUN_TIMEOUT_SECONDS = 120.0


def clean_env() -> dict[str, str]:
    """The caller's environment without TURBOCAT_* settings (the bench sets its own)."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TURBOCAT_") or k.startswith("TURBOCAT_BENCH_")
    }


@contextlib.asynccontextmanager
async def fresh_database(db: str, tmp: Path) -> AsyncIterator[str]:
    from sqlalchemy.engine import make_url

    from turbocat.config import Settings
    from turbocat.db import migrate

    if db == "sqlite":
        url = f"sqlite:///{tmp / 'bench.db'}"
        migrate.upgrade(Settings(database_url=url), "head")
        yield url
        return
    import asyncpg

    admin = PG_ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://")
    name = f"tc_bench_{uuid.uuid4().hex[:12]}"

    async def admin_execute(statement: str) -> None:
        conn = await asyncio.wait_for(asyncpg.connect(admin), timeout=10)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    await admin_execute(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(PG_ADMIN_URL).set(drivername="postgresql", database=name)
        url_text = url.render_as_string(hide_password=False)
        migrate.upgrade(Settings(database_url=url_text), "head")
        yield url_text
    finally:
        await admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def noop(key: str, deps: list[str] | None = None) -> dict[str, Any]:
    """A step that does nothing: a data component returning a constant."""
    step: dict[str, Any] = {
        "key": key,
        "type": "agent",
        "component": {"kind": "data", "config": {"mapping": {"x": 1}}},
    }
    if deps:
        step["depends_on"] = deps
    return step


SEQUENTIAL = {
    "steps": [noop(f"s{i:02d}", [f"s{i - 1:02d}"] if i else None) for i in range(SEQ_STEPS)]
}
FAN_OUT = {
    "steps": [
        *(noop(f"p{i:03d}") for i in range(FAN_OUT_STEPS)),
        noop("join", [f"p{i:03d}" for i in range(FAN_OUT_STEPS)]),
    ]
}
SINGLE = {"steps": [noop("only")]}


class SqlCounter:
    """SQL statements and commits an engine issues (in this process)."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.statements = 0
        self.commits = 0
        event.listen(engine.sync_engine, "before_cursor_execute", self._statement)
        event.listen(engine.sync_engine, "commit", self._commit)

    def _statement(self, *_: Any) -> None:
        self.statements += 1

    def _commit(self, *_: Any) -> None:
        self.commits += 1


@dataclass
class Bench:
    args: argparse.Namespace
    tmp: Path
    url: str
    ctx: Any
    client: Any
    observer: Any
    """An engine that only reads: watching executions must not slow the engine down."""
    headers: dict[str, str]

    async def create_workflow(self, name: str, definition: dict[str, Any], **fields: Any) -> str:
        r = await self.client.post(
            "/api/v1/workflows",
            headers=self.headers,
            json={"name": name, "definition": definition, "status": "active", **fields},
        )
        if r.status_code != 201:
            raise RuntimeError(f"creating workflow {name}: {r.status_code} {r.text}")
        return str(r.json()["id"])

    async def start(self, workflow_id: str) -> str:
        r = await self.client.post(
            f"/api/v1/workflows/{workflow_id}/executions", headers=self.headers, json={}
        )
        if r.status_code != 202:
            raise RuntimeError(f"starting an execution: {r.status_code} {r.text}")
        return str(r.json()["id"])

    async def unfinished(self, workflow_id: str) -> int:
        from sqlalchemy import func, select

        from turbocat.db.models import ExecutionRow
        from turbocat.domain.enums import ExecutionStatus as ES

        active = [ES.PENDING, ES.RUNNING, ES.WAITING]
        stmt = select(func.count()).where(
            ExecutionRow.workflow_id == uuid.UUID(workflow_id), ExecutionRow.status.in_(active)
        )
        async with self.observer.connect() as conn:
            return int((await conn.execute(stmt)).scalar_one())

    async def finished(self, ids: list[str]) -> list[Any]:
        from sqlalchemy import select

        from turbocat.db.models import ExecutionRow

        rows: list[Any] = []
        for i in range(0, len(ids), 500):
            chunk = [uuid.UUID(x) for x in ids[i : i + 500]]
            stmt = select(
                ExecutionRow.status, ExecutionRow.created_at, ExecutionRow.completed_at
            ).where(ExecutionRow.id.in_(chunk))
            async with self.observer.connect() as conn:
                rows.extend((await conn.execute(stmt)).all())
        failed = [r for r in rows if r.status.value != "completed"]
        if failed or len(rows) != len(ids):
            raise RuntimeError(f"{len(failed)} of {len(ids)} executions did not complete")
        return rows

    async def wait_idle(self, workflow_id: str, limit: float, interval: float) -> None:
        """Until no execution of the workflow is pending or running (at most ``limit`` s).
        Polls: the latencies come from the rows' own timestamps, not from this loop."""
        try:
            async with asyncio.timeout(limit):
                while True:
                    if not await self.unfinished(workflow_id):
                        return
                    await asyncio.sleep(interval)  # polling the database is the point
        except TimeoutError:
            raise RuntimeError(f"executions still running after {limit:.0f} s") from None

    async def latency_runs(self, workflow_id: str) -> list[float]:
        """One warm-up run, then timed runs: request sent -> execution completed_at, in ms."""
        times = []
        for i in range(self.args.repetitions + 1):
            sent = dt.datetime.now(dt.UTC)
            execution = await self.start(workflow_id)
            await self.wait_idle(workflow_id, RUN_TIMEOUT_SECONDS, 0.05)
            (row,) = await self.finished([execution])
            if i:
                times.append(ms(aware(row.completed_at) - sent))
        return times

    async def burst(self, workflow_id: str) -> dict[str, Any]:
        """Start executions through the API from concurrent clients; wait for all of them."""
        for _ in range(10):  # warm-up: connections, plan caches
            await self.start(workflow_id)
        await self.wait_idle(workflow_id, RUN_TIMEOUT_SECONDS, 0.05)
        n, ids = self.args.executions, []
        remaining = iter(range(n))

        async def client_loop() -> None:
            for _ in remaining:
                ids.append(await self.start(workflow_id))

        first = time.time()
        clients = [asyncio.create_task(client_loop()) for _ in range(self.args.clients)]
        await asyncio.wait_for(asyncio.gather(*clients), timeout=max(60.0, n * 0.2))
        await self.wait_idle(workflow_id, max(60.0, n * 0.5), 0.1)
        rows = await self.finished(ids)
        last = max(aware(r.completed_at) for r in rows)
        latencies = [ms(aware(r.completed_at) - aware(r.created_at)) for r in rows]
        return burst_result(latencies, first, last.timestamp(), n)


def aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def ms(delta: dt.timedelta) -> float:
    return delta.total_seconds() * 1000


@contextlib.asynccontextmanager
async def inprocess_worker(ctx: Any, concurrency: int, poll: float) -> AsyncIterator[None]:
    from turbocat.engine.worker import WorkerConfig

    stop = asyncio.Event()
    config = WorkerConfig(concurrency=concurrency, poll_seconds=poll)
    task = asyncio.create_task(ctx.worker(config).run(stop), name="bench-worker")
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


@contextlib.asynccontextmanager
async def worker_processes(b: Bench, count: int) -> AsyncIterator[list[int]]:
    """``python -m turbocat worker`` subprocesses on the bench database; yields their pids."""
    env = clean_env() | {
        "TURBOCAT_DATABASE_URL": b.url,
        "TURBOCAT_HOME": str(b.tmp / "home"),
        "TURBOCAT_ENGINE__POLL_SECONDS": str(b.args.worker_poll),
        "TURBOCAT_ENGINE__CONCURRENCY": str(b.args.concurrency),
        "TURBOCAT_LOG_LEVEL": "warning",
    }
    procs: list[tuple[asyncio.subprocess.Process, Path]] = []
    try:
        for i in range(count):
            log = b.tmp / f"worker-{count}-{i}.log"
            with log.open("wb") as out:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "turbocat", "worker",
                    env=env, stdout=out, stderr=asyncio.subprocess.STDOUT,
                )  # fmt: skip
            procs.append((proc, log))
        async with asyncio.timeout(60):
            for proc, log in procs:
                while "serving" not in log.read_text(errors="replace"):
                    if proc.returncode is not None:
                        raise RuntimeError(f"worker did not start:\n{log.read_text()}")
                    await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # first poll, connection pool, LISTEN
        yield [proc.pid for proc, _ in procs]
    finally:
        for proc, _ in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc, log in procs:
            try:
                await asyncio.wait_for(proc.wait(), timeout=15)
            except TimeoutError:
                proc.kill()
                await asyncio.wait_for(proc.wait(), timeout=5)
                print(f"bench: worker {proc.pid} had to be killed; log {log}", file=sys.stderr)


async def bench_database(args: argparse.Namespace, result: dict[str, Any], tmp: Path) -> None:
    import httpx
    from sqlalchemy.ext.asyncio import create_async_engine

    import turbocat
    from turbocat.api.app import create_app
    from turbocat.bootstrap import AppContext
    from turbocat.config import Settings
    from turbocat.db.engine import async_url

    source = Path(turbocat.__file__).parent.parent
    result["version"] = f"turbocat {turbocat.__version__} from {source}"
    async with fresh_database(args.db, tmp) as url:
        settings = Settings(home=tmp / "home", database_url=url)
        ctx = AppContext.build(settings)
        # Plain reads: on SQLite (WAL) they never take the write lock that turbocat's
        # transactions take (BEGIN IMMEDIATE).
        observer = create_async_engine(async_url(url))
        app = create_app(settings, ctx, embedded_worker=False)
        try:
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://bench", timeout=60
                ) as client,
            ):
                bench = Bench(args, tmp, url, ctx, client, observer, {})
                bench.headers = await make_api_key(client)
                await run_workloads(bench, result)
        finally:
            await observer.dispose()  # the app's lifespan closed ctx


async def make_api_key(client: Any) -> dict[str, str]:
    r = await client.post(
        "/api/v1/auth/signup",
        json={
            "email": "bench@example.com",
            "password": "bench password 1234",
            "organization_name": "Bench",
        },
    )
    if r.status_code != 201:
        raise RuntimeError(f"signup: {r.status_code} {r.text}")
    r = await client.post(
        "/api/v1/api-keys",
        headers={"Authorization": f"Bearer {r.json()['access_token']}"},
        json={"name": "bench", "scopes": ["*"], "rate_limit_per_minute": 100_000},
    )
    if r.status_code != 201:
        raise RuntimeError(f"API key: {r.status_code} {r.text}")
    return {"Authorization": f"Bearer {r.json()['secret']}"}


async def run_workloads(b: Bench, result: dict[str, Any]) -> None:
    args = b.args
    sequential = await b.create_workflow("bench sequential", SEQUENTIAL)
    fan_out = await b.create_workflow("bench fan-out", FAN_OUT)
    # No concurrency limit (the default is 10 at once, seed 003): the burst measures the
    # engine's throughput, not the admission queue.
    single = await b.create_workflow("bench single step", SINGLE, max_concurrent_executions=None)
    counter = SqlCounter(b.ctx.db.engine)
    result["api"] = {}
    with PeakMemory() as memory:
        async with inprocess_worker(b.ctx, args.concurrency, args.worker_poll):
            await asyncio.sleep(1.0)
            with memory.paused():
                before, start = time.process_time(), time.monotonic()
                await asyncio.sleep(args.idle_seconds)
                used = time.process_time() - before
                result["idle_cpu_inproc"] = 100 * used / (time.monotonic() - start)
            if "seq" in args.workloads:
                log(args, "40-step flow")
                statements, commits = counter.statements, counter.commits
                with profiled(args.profile):
                    result["seq40"] = latency_summary(await b.latency_runs(sequential))
                steps = (args.repetitions + 1) * SEQ_STEPS
                result["seq40_sql"] = [
                    (counter.statements - statements) / steps,
                    (counter.commits - commits) / steps,
                ]
            if "fanout" in args.workloads:
                log(args, "fan-out")
                with profiled(args.profile if "seq" not in args.workloads else None):
                    result["fanout"] = latency_summary(await b.latency_runs(fan_out))
            if "api" in args.workloads:
                log(args, f"{args.executions} executions, worker in the API process")
                result["api"]["embedded"] = await b.burst(single)
        if args.db == "postgresql" and "api" in args.workloads:
            for count in args.workers:
                log(args, f"{args.executions} executions, {count} worker processes")
                async with worker_processes(b, count) as pids:
                    if count == 1:
                        with memory.paused():
                            idle = await asyncio.to_thread(
                                idle_cpu_percent, pids, args.idle_seconds
                            )
                        result["idle_cpu"] = idle
                    result["api"][str(count)] = await b.burst(single)
    result["peak_rss_kib"] = memory.peak_kib


@contextlib.contextmanager
def profiled(path: Path | None) -> Iterator[None]:
    """cProfile over the block (this process: API, engine and worker), saved to ``path``."""
    if path is None:
        yield
        return
    import cProfile

    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        profile.dump_stats(path)


def log(args: argparse.Namespace, what: str) -> None:
    print(f"bench: turbocat {args.db}: {what}", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgresql"], required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repetitions", type=int, default=10)
    parser.add_argument("--executions", type=int, default=1000)
    parser.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    parser.add_argument("--clients", type=int, default=8, help="concurrent API clients")
    parser.add_argument("--concurrency", type=int, default=8, help="slots of each worker")
    parser.add_argument("--worker-poll", type=float, default=1.0, help="idle poll, seconds")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--workloads", default="seq,fanout,api")
    parser.add_argument(
        "--profile",
        type=Path,
        help="cProfile the 40-step flow (the fan-out without seq) into this file",
    )
    args = parser.parse_args()
    for key in [k for k in os.environ if k.startswith("TURBOCAT_")]:
        if not key.startswith("TURBOCAT_BENCH_"):
            del os.environ[key]
    with result_file(args.out) as result, scratch_dir("tc-bench-") as tmp:
        os.environ["TURBOCAT_HOME"] = str(tmp / "home")  # no turbocat.toml is read
        import logging

        logging.getLogger().setLevel(logging.WARNING)
        asyncio.run(bench_database(args, result, tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
