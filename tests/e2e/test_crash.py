"""Kill workers at random moments: every execution still completes, no step completes twice."""

from __future__ import annotations

import asyncio
import os
import random
import signal
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

EXECUTIONS = 120
STEPS = 5


def step(i: int) -> dict:
    s: dict = {
        "key": f"s{i}",
        "type": "agent",
        "component": {"kind": "data", "config": {"mapping": {"i": i, "n": "{{ input.n }}"}}},
    }
    if i:
        s["depends_on"] = [f"s{i - 1}"]
    return s


@pytest.mark.timeout(300)
def test_killing_workers_loses_nothing(empty_pg_url: str, tmp_path: Path) -> None:
    env = clean_env(
        TURBOCAT_HOME=str(tmp_path), TURBOCAT_DATABASE_URL=empty_pg_url,
        TURBOCAT_ENGINE__EMBEDDED_WORKER="false", TURBOCAT_ENGINE__LEASE_SECONDS="2",
        TURBOCAT_ENGINE__POLL_SECONDS="0.2", TURBOCAT_LOG_LEVEL="warning",
    )  # fmt: skip
    port = free_port()
    api_log = tmp_path / "api.log"
    with api_log.open("w") as out:
        api = subprocess.Popen(
            [sys.executable, "-m", "turbocat", "serve", "--port", str(port), "--migrate"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    workers: list[subprocess.Popen[bytes]] = []
    rng = random.Random(7)

    def spawn() -> None:
        with (tmp_path / f"worker-{len(workers)}.log").open("w") as log:  # the child keeps a copy
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "turbocat", "worker", "-c", "4"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )

    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/readyz", api, api_log)
        token = httpx.post(
            f"{base}/api/v1/auth/signup",
            json={
                "email": "crash@example.com",
                "password": "a long password",
                "organization_name": "Crash",
            },
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        definition = {
            "steps": [step(i) for i in range(STEPS)],
            "outputs": {"n": f"{{{{ steps.s{STEPS - 1}.output.n }}}}"},
        }
        wf = httpx.post(
            f"{base}/api/v1/workflows",
            headers=headers,
            json={"name": "crash", "definition": definition},
        ).json()
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            ids = [
                client.post(
                    f"/api/v1/workflows/{wf['id']}/executions", json={"input": {"n": n}}
                ).json()["id"]
                for n in range(EXECUTIONS)
            ]
            for _ in range(3):
                spawn()
            kills = 0
            deadline = time.monotonic() + 180
            pending = set(ids)
            while pending:
                assert time.monotonic() < deadline, f"{len(pending)} executions never finished"
                if kills < 12:  # kill a random live worker while it works, start a new one
                    time.sleep(rng.uniform(0.2, 0.6))
                    victim = rng.choice([w for w in workers if w.poll() is None])
                    os.kill(victim.pid, signal.SIGKILL)
                    victim.wait()
                    kills += 1
                    spawn()
                for execution_id in list(pending):
                    body = client.get(f"/api/v1/executions/{execution_id}").json()
                    if body["status"] not in ("pending", "running", "waiting"):
                        assert body["status"] == "completed", body
                        pending.discard(execution_id)
                time.sleep(0.1)
        assert kills >= 3

        async def audit() -> tuple[int, int, int]:
            conn = await asyncpg.connect(empty_pg_url)
            try:
                dupes = await conn.fetchval(
                    "SELECT count(*) FROM (SELECT execution_id, step_key FROM step_runs"
                    " WHERE status = 'completed' GROUP BY 1, 2 HAVING count(*) > 1) d"
                )
                completed = await conn.fetchval(
                    "SELECT count(*) FROM step_runs WHERE status = 'completed'"
                )
                rescued = await conn.fetchval(
                    "SELECT count(*) FROM step_runs WHERE lease_epoch > 1"
                )
                return int(dupes), int(completed), int(rescued)
            finally:
                await conn.close()

        dupes, completed, rescued = asyncio.run(audit())
        assert dupes == 0
        assert completed == EXECUTIONS * STEPS
        print(f"{kills} kills, {rescued} steps claimed again after a lease expired")
    finally:
        for proc in [*workers, api]:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=15)
