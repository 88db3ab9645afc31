"""Prefect 3's side of the bench; runs inside ``bench/.venvs/prefect`` with ``PYTHONPATH=bench``.

    python bench/peers/prefect_bench.py --out FILE [--repetitions R] [--executions N]

Starts ``prefect server start`` on a free port with its SQLite database in a temporary
``PREFECT_HOME`` (the same server and database that Prefect's ephemeral mode runs), and
measures, with Prefect's defaults:

- a flow of 40 sequential no-op tasks, and one of 100 parallel no-op tasks (``submit`` then
  ``result``), end to end (flow call to return) in the bench process;
- N flow runs of a one-task flow created through the API (``create_flow_run_from_deployment``)
  and run by 1 or 2 ``flow.serve`` processes (each runs a flow run in a subprocess, as Prefect
  does; ``limit`` 8 runs at once per process, like turbocat's 8 slots; runners poll every
  second, not every 10 s): throughput and start-to-finish latency (the flow run's ``created``
  to its ``end_time``);
- the idle CPU of a serving process, and the peak RSS of the whole tree (server included).

``serve`` runs one serving process (the bench starts these itself).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from common import (
    FAN_OUT_STEPS,
    SEQ_STEPS,
    PeakMemory,
    burst_result,
    free_port,
    idle_cpu_percent,
    latency_summary,
    result_file,
    scratch_dir,
    wait_for_port,
)

DEPLOYMENT = "bench-single"
SERVE_LIMIT = 8
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def configure(home: Path) -> None:
    """Prefect reads its settings from the environment: set them before it is imported."""
    os.environ.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        }
    )


@contextlib.contextmanager
def server(home: Path) -> Iterator[str]:
    port = free_port()
    cmd = [
        sys.executable, "-m", "prefect", "server", "start",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    with (home / "server.log").open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
    try:
        wait_for_port(port, 120, lambda: proc.poll() is None)
        url = f"http://127.0.0.1:{port}/api"
        os.environ["PREFECT_API_URL"] = url
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


async def wait_healthy(limit: float = 60) -> None:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + limit
    async with get_client() as client:
        while True:
            with contextlib.suppress(Exception):
                if await client.api_healthcheck() is None:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError("the Prefect server is not healthy")
            await asyncio.sleep(0.2)


def timed_runs(flow: Any, steps: int, repetitions: int) -> list[float]:
    """One warm-up run, then ``repetitions`` timed ones, in ms."""
    times = []
    for i in range(repetitions + 1):
        start = time.perf_counter()
        flow(steps)
        if i:
            times.append((time.perf_counter() - start) * 1000)
    return times


@contextlib.asynccontextmanager
async def serve_processes(count: int, home: Path) -> AsyncIterator[list[int]]:
    procs = []
    try:
        for i in range(count):
            with (home / f"serve-{count}-{i}.log").open("wb") as log:
                procs.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable, __file__, "serve", stdout=log, stderr=log
                    )
                )
        await wait_deployment()
        await asyncio.sleep(3)  # every runner has polled once
        for proc in procs:
            if proc.returncode is not None:
                raise RuntimeError(f"a serving process exited; see {home}")
        yield [p.pid for p in procs]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def wait_deployment(limit: float = 120) -> None:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + limit
    async with get_client() as client:
        while True:
            with contextlib.suppress(Exception):
                await client.read_deployment_by_name(f"single/{DEPLOYMENT}")
                return
            if time.monotonic() > deadline:
                raise TimeoutError("the deployment was not created")
            await asyncio.sleep(0.5)


async def burst(n: int, clients: int, budget: float) -> dict[str, Any]:
    """``n`` flow runs created through the API by ``clients`` concurrent callers, all done
    within ``budget`` seconds or counted as unfinished (a serving process runs every flow run
    in a subprocess of its own: 1,000 of them take far longer than the other systems)."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        deployment = await client.read_deployment_by_name(f"single/{DEPLOYMENT}")
        warm = [await client.create_flow_run_from_deployment(deployment.id) for _ in range(3)]
        await wait_runs(client, [r.id for r in warm], 300)
        ids: list[Any] = []
        remaining = iter(range(n))
        first = time.time()
        deadline = first + budget

        async def starter() -> None:
            for _ in remaining:
                if time.time() > deadline:
                    return
                ids.append((await create_run(client, deployment.id)).id)

        await asyncio.gather(*(starter() for _ in range(clients)))
        runs = await wait_runs(client, ids, deadline - time.time())
        done = [r for r in runs if state(r) == "COMPLETED" and r.end_time]
        failed = [r for r in runs if state(r) in TERMINAL - {"COMPLETED"}]
        if failed:
            raise RuntimeError(f"{len(failed)} of {n} flow runs did not complete")
        latencies = [(r.end_time - r.created).total_seconds() * 1000 for r in done]
        if len(done) == n:
            return burst_result(latencies, first, max(r.end_time.timestamp() for r in done), n)
        return burst_result(latencies, first, time.time(), n)  # gave up: the budget is spent


def state(run: Any) -> str | None:
    return run.state_type.value if run.state_type else None


async def create_run(client: Any, deployment_id: Any) -> Any:
    """A flow run of the deployment. Prefect's server answers 503 while its SQLite database
    is locked by other writers (its client retries a few times, then raises): try again."""
    from prefect.exceptions import PrefectHTTPStatusError

    for attempt in range(30):
        try:
            return await client.create_flow_run_from_deployment(deployment_id)
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code != 503 or attempt == 29:
                raise
            await asyncio.sleep(1)
    raise AssertionError("unreachable")


async def wait_runs(client: Any, ids: list[Any], budget: float) -> list[Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    deadline = time.monotonic() + budget
    while True:
        runs = []
        for i in range(0, len(ids), 200):
            flow_filter = FlowRunFilter(id=FlowRunFilterId(any_=ids[i : i + 200]))
            runs += await client.read_flow_runs(
                flow_run_filter=flow_filter, sort=FlowRunSort.ID_DESC, limit=200
            )
        finished = [r for r in runs if state(r) in TERMINAL]
        if len(finished) == len(ids) or time.monotonic() > deadline:
            return runs
        await asyncio.sleep(1.0)


def bench(args: argparse.Namespace, result: dict[str, Any], home: Path) -> None:
    from importlib import metadata

    result["version"] = f"prefect {metadata.version('prefect')}"
    with PeakMemory() as memory, server(home):
        asyncio.run(wait_healthy())
        from peers.prefect_flows import fan_out, sequential

        if "seq" in args.workloads:
            log("40 sequential tasks")
            seq = timed_runs(sequential, SEQ_STEPS, args.repetitions)
            result["seq40"] = latency_summary(seq)
        if "fanout" in args.workloads:
            log("100 parallel tasks")
            fan = timed_runs(fan_out, FAN_OUT_STEPS, args.repetitions)
            result["fanout"] = latency_summary(fan)
        result["api"] = {}
        for count in args.workers if "api" in args.workloads else []:
            log(f"{args.executions} flow runs, {count} serving processes")
            result["api"][str(count)] = asyncio.run(api_workload(args, count, home, memory, result))
    result["peak_rss_kib"] = memory.peak_kib


async def api_workload(
    args: argparse.Namespace, count: int, home: Path, memory: PeakMemory, result: dict[str, Any]
) -> dict[str, Any]:
    async with serve_processes(count, home) as pids:
        if count == 1:
            with memory.paused():
                idle = await asyncio.to_thread(idle_cpu_percent, pids, args.idle_seconds)
            result["idle_cpu"] = idle
        return await burst(args.executions, 8, args.budget)


def serve() -> None:
    from peers.prefect_flows import single

    single.serve(name=DEPLOYMENT, limit=SERVE_LIMIT, print_starting_message=False)


def log(what: str) -> None:
    print(f"bench: prefect: {what}", file=sys.stderr, flush=True)


def main() -> int:
    if sys.argv[1:2] == ["serve"]:
        serve()  # PREFECT_* come from the bench process
        return 0
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repetitions", type=int, default=10)
    parser.add_argument("--executions", type=int, default=1000)
    parser.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--workloads", default="seq,fanout,api")
    parser.add_argument(
        "--budget", type=float, default=600, help="seconds to wait for the N flow runs"
    )
    args = parser.parse_args()
    with (
        result_file(args.out) as result,
        scratch_dir("tc-prefect-") as tmp,
    ):
        configure(Path(tmp))
        bench(args, result, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
