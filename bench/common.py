"""Helpers shared by every bench script: turbocat's and the peers', which run inside their own
virtualenvs. Standard library only (the peers' virtualenvs have nothing of ours installed)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

SEQ_STEPS = 40
FAN_OUT_STEPS = 100


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
    return ordered[index]


def burst_result(
    latencies_ms: list[float], started: float, finished: float, total: int
) -> dict[str, Any]:
    """Throughput and start-to-finish latency of a burst of ``total`` executions, of which those
    in ``latencies_ms`` finished. ``started`` and ``finished`` are epoch seconds: the first
    start request sent, the last execution finished (or the bench gave up). Unfinished
    executions count as infinitely slow: a percentile they reach is None."""
    padded = latencies_ms + [math.inf] * (total - len(latencies_ms))
    seconds = max(finished - started, 1e-9)

    def pct(p: float) -> float | None:
        value = percentile(padded, p)
        return None if math.isinf(value) else value

    return {
        "n": total,
        "completed": len(latencies_ms),
        "seconds": seconds,
        "throughput": len(latencies_ms) / seconds,
        "p50": pct(50),
        "p99": pct(99),
    }


def latency_summary(times_ms: list[float]) -> dict[str, Any]:
    return {
        "runs": times_ms,
        "median": statistics.median(times_ms),
        "min": min(times_ms),
        "max": max(times_ms),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the server meant for port {port} exited")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {timeout:.0f} s")


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (psutil is not a dependency)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu_percent(pids: list[int], seconds: float) -> float:
    """CPU used by the processes over ``seconds`` of doing nothing, in % of one core (the
    largest of the processes)."""
    before = [proc_cpu_seconds(pid) for pid in pids]
    start = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - start
    after = [proc_cpu_seconds(pid) for pid in pids]
    return max(100 * (b - a) / elapsed for a, b in zip(before, after, strict=True))


def _parents() -> dict[int, int]:
    parents = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(entry.path, "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def _rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def tree_rss_kib(root: int) -> int:
    """Resident memory of a process and all its descendants, summed."""
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += _rss_kib(pid)
        todo.extend(children.get(pid, []))
    return total


class PeakMemory:
    """Samples the summed RSS of this process's tree (the bench process, its servers and
    workers) every ``interval`` seconds in a thread; ``peak_kib`` is the largest sample."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.peak_kib = 0
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._thread = threading.Thread(target=self._run, name="peak-memory", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._running.is_set():
                self.peak_kib = max(self.peak_kib, tree_rss_kib(os.getpid()))
            self._stop.wait(self.interval)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No sampling (its CPU would count as this process's while idle CPU is measured)."""
        self._running.clear()
        time.sleep(self.interval)  # a sample under way ends
        try:
            yield
        finally:
            self.peak_kib = max(self.peak_kib, tree_rss_kib(os.getpid()))
            self._running.set()

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@contextlib.contextmanager
def result_file(path: Path) -> Iterator[dict[str, Any]]:
    """Collects a bench script's results and writes them as JSON, also when a workload fails
    (the error is recorded; the parent shows it in the table)."""
    result: dict[str, Any] = {}
    try:
        yield result
    except BaseException as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"[:300]
        raise
    finally:
        path.write_text(json.dumps(result, indent=2))


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary folder, removed afterwards unless ``BENCH_KEEP=1`` (to read its logs)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if os.environ.get("BENCH_KEEP") == "1":
            print(f"bench: kept {path}", flush=True)
        else:
            shutil.rmtree(path, ignore_errors=True)


def run_bounded(cmd: list[str], env: dict[str, str], timeout: float) -> None:
    """Runs a bench script in a process group of its own and, when it ends (or after
    ``timeout``, or on Ctrl-C), stops whatever it left running: servers, workers, the
    subprocesses a Prefect runner starts."""
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)  # noqa: S603
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop_group(proc)
        raise TimeoutError(f"timed out after {timeout:.0f} s") from None
    except BaseException:
        _stop_group(proc)
        raise
    with contextlib.suppress(ProcessLookupError):  # stragglers must not load the next system
        os.killpg(proc.pid, signal.SIGKILL)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
