"""Benchmark of turbocat's engine on SQLite and PostgreSQL, beside Prefect 3 and Temporal.

    .venv/bin/python bench/engine.py [--db sqlite|postgresql|both] [--no-peers] [--quick]
                                     [--json FILE]

Runs the same workloads on every system, each in a process tree of its own (turbocat with the
project's interpreter; each peer in its own virtualenv under ``bench/.venvs``, installed on
first use) and prints one table. See bench/README.md for what each row measures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import run_bounded
from peers.venv import PEERS, PeerUnavailable, run_peer

BENCH = Path(__file__).resolve().parent
DATABASES = ("sqlite", "postgresql")
CHILD_TIMEOUT = 1800.0


@dataclass(frozen=True)
class Sizes:
    repetitions: int
    """Timed runs of the 40-step flow and of the fan-out (after one warm-up run each)."""
    executions: int
    """Single-step executions started through the API per worker configuration."""
    idle_seconds: float
    prefect_budget: float
    """Seconds Prefect gets to finish its executions per configuration (it runs each flow
    run in a fresh subprocess: about 0.2-2 runs/s here, so 1,000 would take hours)."""

    def options(self) -> list[str]:
        return [
            f"--repetitions={self.repetitions}",
            f"--executions={self.executions}",
            f"--idle-seconds={self.idle_seconds}",
        ]


FULL = Sizes(repetitions=10, executions=1000, idle_seconds=5.0, prefect_budget=180.0)
QUICK = Sizes(repetitions=3, executions=100, idle_seconds=3.0, prefect_budget=60.0)

# --- running the systems ---------------------------------------------------------------------


def settle(limit: float = 90.0, quiet: float = 1.5) -> float:
    """Waits (at most ``limit`` s) for the 1-minute load average to drop below ``quiet``, so
    that one system's leftovers do not slow the next one down; returns the load then."""
    deadline = time.monotonic() + limit
    while os.getloadavg()[0] >= quiet and time.monotonic() < deadline:
        time.sleep(5)
    return os.getloadavg()[0]


def measured(run: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``run(*args)``'s results with the load average before and after."""
    before = settle()
    result = run(*args)
    result["load"] = [before, os.getloadavg()[0]]
    return result


def run_turbocat(db: str, sizes: Sizes, worker_poll: float) -> dict[str, Any]:
    print(f"bench: turbocat on {db} ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="tc-bench-out-") as out:
        result = Path(out) / "result.json"
        cmd = [
            sys.executable, str(BENCH / "turbocat_bench.py"), f"--db={db}", f"--out={result}",
            f"--worker-poll={worker_poll}", *sizes.options(),
        ]  # fmt: skip
        try:
            run_bounded(cmd, dict(os.environ), CHILD_TIMEOUT)
        except TimeoutError as exc:
            return {"error": str(exc)}
        if not result.exists():
            return {"error": "failed (see above)"}
        loaded: dict[str, Any] = json.loads(result.read_text())
        return loaded


def run_peers(sizes: Sizes) -> dict[str, dict[str, Any]]:
    results = {}
    for peer in PEERS:
        print(f"bench: {peer.name} ...", file=sys.stderr, flush=True)
        options = sizes.options()
        if peer.name == "prefect":
            options.append(f"--budget={sizes.prefect_budget}")
        try:
            results[peer.name] = measured(run_peer, peer, options, CHILD_TIMEOUT)
        except PeerUnavailable as exc:
            results[peer.name] = {"unavailable": str(exc)}
    return results


# --- the table ---------------------------------------------------------------------------------


def fmt_ms(value: float, unit_of: float | None = None) -> str:
    """Milliseconds, or seconds from 10 s on (decided by ``unit_of``, default the value)."""
    seconds = (value if unit_of is None else unit_of) >= 10_000
    return f"{value / 1000:.1f} s" if seconds else f"{value:.0f} ms"


def latency_cell(key: str) -> Callable[[dict[str, Any]], str | None]:
    def cell(res: dict[str, Any]) -> str | None:
        s = res.get(key)
        if not s:
            return None
        low, high = (fmt_ms(s[k], s["median"]).split()[0] for k in ("min", "max"))
        return f"{fmt_ms(s['median'])} ({low}-{high})"

    return cell


def throughput_cell(config: str) -> Callable[[dict[str, Any]], str | None]:
    def cell(res: dict[str, Any]) -> str | None:
        b = res.get("api", {}).get(config)
        if not b:
            return None
        rate = b["throughput"]
        text = f"{rate:.1f}/s" if rate < 10 else f"{rate:.0f}/s"
        if b["completed"] < b["n"]:
            text += f" ({b['completed']} of {b['n']} done in {b['seconds']:.0f} s)"
        return text

    return cell


def percentiles_cell(config: str) -> Callable[[dict[str, Any]], str | None]:
    def cell(res: dict[str, Any]) -> str | None:
        b = res.get("api", {}).get(config)
        if not b:
            return None
        over = f"> {b['seconds']:.0f} s"
        p50 = over if b["p50"] is None else fmt_ms(b["p50"])
        p99 = over if b["p99"] is None else fmt_ms(b["p99"])
        return f"{p50} / {p99}"

    return cell


def value_cell(key: str, fmt: Callable[[Any], str]) -> Callable[[dict[str, Any]], str | None]:
    def cell(res: dict[str, Any]) -> str | None:
        value = res.get(key)
        return None if value is None else fmt(value)

    return cell


# Each metric's value for the ratio column, as a cost (lower is better): time per execution,
# milliseconds, KiB. ratio = best peer's cost / turbocat's cost, so > 1 means turbocat wins.
def cost_latency(key: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda res: (res.get(key) or {}).get("median")


def cost_throughput(config: str) -> Callable[[dict[str, Any]], float | None]:
    def cost(res: dict[str, Any]) -> float | None:
        b = res.get("api", {}).get(config)
        return 1 / b["throughput"] if b and b["throughput"] else None

    return cost


def cost_p99(config: str) -> Callable[[dict[str, Any]], float | None]:
    def cost(res: dict[str, Any]) -> float | None:
        b = res.get("api", {}).get(config)
        return None if not b else math.inf if b["p99"] is None else b["p99"]

    return cost


@dataclass(frozen=True)
class Row:
    label: str
    target: str
    cell: Callable[[dict[str, Any]], str | None]
    cost: Callable[[dict[str, Any]], float | None] | None = None
    na: dict[str, str] | None = None
    """Why a system has no value here, by column."""


NO_PROC = {"turbocat sqlite": "n/a (workers need PG)"}
ONLY_TURBOCAT = {"prefect": "-", "temporal": "-"}
N = "{n}"
ROWS = [
    Row("40 sequential no-op steps, end to end", "< 100 ms", latency_cell("seq40"),
        cost_latency("seq40")),
    Row("100 parallel no-op steps, end to end", "< 300 ms", latency_cell("fanout"),
        cost_latency("fanout")),
    Row(f"{N} single-step via API, 1 worker process", "", throughput_cell("1"),
        cost_throughput("1"), NO_PROC),
    Row("  start-to-finish p50 / p99", "", percentiles_cell("1"), cost_p99("1"), NO_PROC),
    Row(f"{N} single-step via API, 2 worker processes", ">= 300/s (PG)", throughput_cell("2"),
        cost_throughput("2"), NO_PROC),
    Row("  start-to-finish p50 / p99", "p99 < 250 ms (PG)", percentiles_cell("2"),
        cost_p99("2"), NO_PROC),
    Row(f"{N} single-step via API, worker in API process", "", throughput_cell("embedded"),
        na=ONLY_TURBOCAT),
    Row("  start-to-finish p50 / p99", "", percentiles_cell("embedded"), na=ONLY_TURBOCAT),
    Row("peak memory (RSS of the whole process tree)", "",
        value_cell("peak_rss_kib", lambda v: f"{v / 1024:.0f} MiB"),
        lambda res: res.get("peak_rss_kib")),
    Row("idle worker process CPU", "< 1%", value_cell("idle_cpu", lambda v: f"{v:.2f}%"),
        na=NO_PROC),
    Row("idle worker CPU, in the API process", "< 1%",
        value_cell("idle_cpu_inproc", lambda v: f"{v:.2f}%"), na=ONLY_TURBOCAT),
    Row("SQL statements / commits per step (40-step flow)", "",
        value_cell("seq40_sql", lambda v: f"{v[0]:.1f} / {v[1]:.1f}"), na=ONLY_TURBOCAT),
]  # fmt: skip


def ratio_cell(row: Row, results: dict[str, dict[str, Any]]) -> str:
    if row.cost is None:
        return ""
    peers = [row.cost(results[p.name]) for p in PEERS if p.name in results]
    peers = [c for c in peers if c is not None]
    if not peers:
        return "-"
    best = min(peers)
    parts = []
    for db in DATABASES:
        ours = row.cost(results.get(f"turbocat {db}", {}))
        if ours is None or ours == 0 or math.isinf(ours):
            parts.append("-")
        else:
            parts.append("inf" if math.isinf(best) else f"{best / ours:.2f}x")
    return " / ".join(parts)


def column_cell(row: Row, column: str, res: dict[str, Any]) -> str:
    if "unavailable" in res:
        return f"n/a ({res['unavailable'].split(':')[0][:40]})"  # in full under the table
    if row.na and column in row.na:
        return row.na[column]
    value = row.cell(res)
    if value is None:
        return "n/a (failed)" if "error" in res else "-"
    return value


def render_table(results: dict[str, dict[str, Any]], sizes: Sizes, notes: list[str]) -> str:
    columns = list(results)
    header = ["workload", "target", *columns, "ratio peer/turbocat (sqlite / pg)"]
    lines = [header]
    for row in ROWS:
        label = row.label.replace(N, f"{sizes.executions:,}")
        cells = [column_cell(row, c, results[c]) for c in columns]
        lines.append([label, row.target, *cells, ratio_cell(row, results)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        " | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in lines
    ]
    text.insert(1, "-|-".join("-" * w for w in widths))
    versions = [f"{c}: {results[c]['version']}" for c in columns if "version" in results[c]]
    failures = [
        f"{c}: {results[c].get('error') or results[c].get('unavailable')}"
        for c in columns
        if "error" in results[c] or "unavailable" in results[c]
    ]
    return "\n".join([*text, "", *notes, *versions, *failures])


# --- main --------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=[*DATABASES, "both"], default="both")
    parser.add_argument("--peers", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument(
        "--worker-poll",
        type=float,
        default=1.0,
        help="idle poll interval of turbocat's workers, seconds [default: %(default)s]",
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    started = dt.datetime.now().astimezone()
    results: dict[str, dict[str, Any]] = {}
    for db in DATABASES if args.db == "both" else (args.db,):
        results[f"turbocat {db}"] = measured(run_turbocat, db, sizes, args.worker_poll)
    if args.peers:
        results.update(run_peers(sizes))
    loads = ", ".join(
        f"{name} {r['load'][0]:.1f} -> {r['load'][1]:.1f}"
        for name, r in results.items()
        if "load" in r
    )
    notes = [
        f"{started:%Y-%m-%d %H:%M %Z}, {platform.node()}, {os.cpu_count()} CPUs; "
        f"1-min load average before -> after each system: {loads}",
        f"latency rows: median (min-max) of {sizes.repetitions} runs after a warm-up; "
        f"turbocat: 8 API clients, 8 slots per worker, idle poll {args.worker_poll:g} s",
        "ratio: best peer / turbocat in time per execution, latency or memory "
        "(> 1: turbocat is better); p99 rows compare p99",
    ]
    print(render_table(results, sizes, notes))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    failed = [r for r in results.values() if "error" in r or "unavailable" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
