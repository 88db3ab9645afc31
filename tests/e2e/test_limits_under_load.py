"""Limits hold under load across worker processes: sampled while two workers run, a
workflow's running executions and a loop's live iterations never exceed their bounds."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.e2e.conftest import clean_env, free_port
from tests.e2e.test_worker_process import wait_http

pytestmark = pytest.mark.slow

EXECUTIONS = 16
MAX_EXECUTIONS = 3
MAX_ITERATIONS = 2


def data(key: str, **extra: object) -> dict:
    return {"key": key, "type": "agent",
            "component": {"kind": "data", "config": {"mapping": {"i": "{{ item }}"}}}, **extra}  # fmt: skip


DEFINITION = {
    "steps": [
        {"key": "pause", "type": "wait", "duration_ms": 100},
        {
            "key": "each",
            "type": "loop",
            "depends_on": ["pause"],
            "over": "{{ range(6) }}",
            "max_concurrency": MAX_ITERATIONS,
            "body": {
                "steps": [
                    {"key": "nap", "type": "wait", "duration_ms": 30},
                    data("echo", depends_on=["nap"]),
                ],
                "output": "{{ steps.echo.output.i }}",
            },
        },
    ],
    "outputs": {"items": "{{ steps.each.output }}"},
}


async def sample(url: str, stop: asyncio.Event) -> tuple[int, int, int]:
    """Peak running executions, peak live iterations of one loop, and the number of samples."""
    conn = await asyncpg.connect(url)
    peak_exec = peak_iter = samples = 0
    try:
        while not stop.is_set():
            running = await conn.fetchval(
                "SELECT count(*) FROM executions WHERE status IN ('running', 'waiting')"
            )
            iterations = await conn.fetchval(
                "SELECT coalesce(max(n), 0) FROM (SELECT count(DISTINCT scope) AS n"
                " FROM step_runs WHERE parent_id IS NOT NULL"
                " AND status IN ('pending', 'ready', 'running', 'waiting')"
                " GROUP BY parent_id) f"
            )
            peak_exec, peak_iter = max(peak_exec, running), max(peak_iter, iterations)
            samples += 1
            await asyncio.sleep(0.005)
    finally:
        await conn.close()
    return peak_exec, peak_iter, samples


@pytest.mark.timeout(240)
def test_limits_hold_with_two_workers(empty_pg_url: str, tmp_path: Path) -> None:
    env = clean_env(
        TURBOCAT_HOME=str(tmp_path), TURBOCAT_DATABASE_URL=empty_pg_url,
        TURBOCAT_ENGINE__EMBEDDED_WORKER="false", TURBOCAT_ENGINE__POLL_SECONDS="0.2",
        TURBOCAT_LOG_LEVEL="warning",
    )  # fmt: skip
    port = free_port()
    api_log = tmp_path / "api.log"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with api_log.open("w") as out:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "turbocat", "serve", "--port", str(port), "--migrate"],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            ))  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/readyz", procs[0], api_log)
        for n in range(2):
            with (tmp_path / f"worker-{n}.log").open("w") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "turbocat", "worker", "-c", "8"],
                    env=env, stdout=log, stderr=subprocess.STDOUT,
                ))  # fmt: skip
        token = httpx.post(
            f"{base}/api/v1/auth/signup",
            json={"email": "l@example.com", "password": "a long password",
                  "organization_name": "L"},
        ).json()["access_token"]  # fmt: skip
        headers = {"Authorization": f"Bearer {token}"}

        async def scenario() -> tuple[int, int, int, list[dict]]:
            stop = asyncio.Event()
            sampler = asyncio.create_task(sample(empty_pg_url, stop))
            async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
                wf = (
                    await client.post(
                        "/api/v1/workflows",
                        json={"name": "bounded", "definition": DEFINITION,
                              "max_concurrent_executions": MAX_EXECUTIONS},
                    )
                ).json()  # fmt: skip
                started = await asyncio.gather(
                    *(
                        client.post(f"/api/v1/workflows/{wf['id']}/executions", json={})
                        for _ in range(EXECUTIONS)
                    )
                )
                ids = [r.json()["id"] for r in started]
                deadline = time.monotonic() + 120
                done: list[dict] = []
                while len(done) < len(ids):
                    assert time.monotonic() < deadline, "executions did not finish"
                    await asyncio.sleep(0.2)
                    done = [
                        body
                        for i in ids
                        if (body := (await client.get(f"/api/v1/executions/{i}")).json())["status"]
                        not in ("pending", "running", "waiting")
                    ]
            stop.set()
            peak_exec, peak_iter, samples = await sampler
            return peak_exec, peak_iter, samples, done

        peak_exec, peak_iter, samples, done = asyncio.run(scenario())
        assert all(b["status"] == "completed" for b in done), done
        assert all(b["output_data"] == {"items": list(range(6))} for b in done)
        assert samples > 50
        assert 1 <= peak_exec <= MAX_EXECUTIONS, peak_exec
        assert 1 <= peak_iter <= MAX_ITERATIONS, peak_iter
        assert all(p.poll() is None for p in procs)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
