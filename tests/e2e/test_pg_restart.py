"""PostgreSQL goes away in the middle of a run: the API and the workers reconnect, and everything
completes, once.

Restarting the server would disturb every other test on it, so the restart is simulated for this
test's database only: its backends are terminated several times while steps run, and once it
refuses new connections for a few seconds (``ALLOW_CONNECTIONS false``), as a server that is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import PG_ADMIN_URL
from tests.e2e.conftest import clean_env, free_port
from tests.e2e.test_worker_process import wait_http

pytestmark = [pytest.mark.slow, pytest.mark.pg]

BEFORE = 40
"""Executions started before the database first goes away."""
DURING = 5
"""Started between the terminations (each retried until the API answers)."""
AFTER = 15
"""Started once the database accepts connections again."""
STEPS = 5
POLL_SECONDS = 5.0
"""High on purpose: new work must reach the workers through LISTEN/NOTIFY, not polling."""
WORKERS = 2


def step(i: int) -> dict[str, Any]:
    s: dict[str, Any] = {
        "key": f"s{i}",
        "type": "agent",
        "component": {"kind": "data", "config": {"mapping": {"i": i, "n": "{{ input.n }}"}}},
    }
    if i:
        s["depends_on"] = [f"s{i - 1}"]
    return s


class Admin:
    """Statements about the test database, run as the superuser from the admin database."""

    def __init__(self, url: str) -> None:
        self.db = str(make_url(url).database)
        self.dsn = PG_ADMIN_URL.replace("postgresql+asyncpg", "postgresql")

    def fetchval(self, sql: str, *args: object) -> Any:
        async def go() -> Any:
            conn = await asyncpg.connect(self.dsn)
            try:
                return await conn.fetchval(sql, *args)
            finally:
                await conn.close()

        return asyncio.run(go())

    def terminate(self) -> int:
        """Drop every connection to the test database, as a server restart would."""
        return int(
            self.fetchval(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()) t",
                self.db,
            )
        )

    def allow_connections(self, allow: bool) -> None:
        self.fetchval(f'ALTER DATABASE "{self.db}" ALLOW_CONNECTIONS {str(allow).lower()}')

    def listeners(self) -> int:
        """Backends whose last statement was a LISTEN: the workers' notification connections."""
        return int(
            self.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN%'",
                self.db,
            )
        )


def request(
    send: Callable[[], httpx.Response], deadline: float, outages: list[httpx.Response]
) -> httpx.Response:
    """Retry while the database is unavailable: the API answers 503 (never 500, never hangs)."""
    while True:
        started = time.monotonic()
        response = send()
        assert time.monotonic() - started < 20, "a request hung while the database was away"
        if response.status_code != 503:
            assert response.status_code < 500, response.text
            return response
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.headers["retry-after"].isdigit(), response.headers
        assert response.json()["status"] == 503
        outages.append(response)
        assert time.monotonic() < deadline, response.text
        time.sleep(0.3)


def wait_listening(admin: Admin, logs: Callable[[], str]) -> None:
    deadline = time.monotonic() + 30
    while admin.listeners() < WORKERS:
        assert time.monotonic() < deadline, f"the workers do not LISTEN\n{logs()}"
        time.sleep(0.2)


@pytest.mark.timeout(300)
def test_workers_and_api_survive_a_database_restart(empty_pg_url: str, tmp_path: Path) -> None:
    env = clean_env(
        TURBOCAT_HOME=str(tmp_path), TURBOCAT_DATABASE_URL=empty_pg_url,
        TURBOCAT_ENGINE__EMBEDDED_WORKER="false", TURBOCAT_ENGINE__LEASE_SECONDS="3",
        TURBOCAT_ENGINE__POLL_SECONDS=str(POLL_SECONDS), TURBOCAT_LOG_LEVEL="warning",
    )  # fmt: skip
    admin = Admin(empty_pg_url)
    port = free_port()
    api_log = tmp_path / "api.log"
    with api_log.open("w") as out:
        api = subprocess.Popen(
            [sys.executable, "-m", "turbocat", "serve", "--port", str(port), "--migrate"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    workers: list[subprocess.Popen[bytes]] = []
    outages: list[httpx.Response] = []

    def logs() -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(tmp_path.glob("*.log"))
        )

    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/readyz", api, api_log)
        token = httpx.post(
            f"{base}/api/v1/auth/signup",
            json={
                "email": "restart@example.com",
                "password": "a long password",
                "organization_name": "Restart",
            },
        ).json()["access_token"]
        definition = {
            "steps": [step(i) for i in range(STEPS)],
            "outputs": {"n": f"{{{{ steps.s{STEPS - 1}.output.n }}}}"},
        }
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as client:
            wf = client.post(
                "/api/v1/workflows", json={"name": "restart", "definition": definition}
            ).json()
            started: dict[str, int] = {}  # execution id -> input n

            def start(n: int, deadline: float) -> None:
                response = request(
                    lambda: client.post(
                        f"/api/v1/workflows/{wf['id']}/executions", json={"input": {"n": n}}
                    ),
                    deadline,
                    outages,
                )
                assert response.status_code == 202, response.text
                started[response.json()["id"]] = n

            for i in range(WORKERS):
                with (tmp_path / f"worker-{i}.log").open("w") as log:
                    workers.append(
                        subprocess.Popen(
                            [sys.executable, "-m", "turbocat", "worker", "-c", "4"],
                            env=env,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                        )
                    )
            for n in range(BEFORE):
                start(n, time.monotonic() + 30)
            wait_listening(admin, logs)  # the workers are up and at work: now the "restart"

            # Connections dropped while steps run, a second or so apart; executions started
            # between the drops go through the API's (pre-pinged) pool.
            killed = 0
            for n in range(BEFORE, BEFORE + DURING):
                killed += admin.terminate()
                time.sleep(0.3)
                start(n, time.monotonic() + 30)
                time.sleep(0.7)

            # The server is "down": nobody may connect for a few seconds.
            admin.allow_connections(False)
            try:
                killed += admin.terminate()
                down_at = time.monotonic()
                first = next(iter(started))
                for send in (
                    lambda: client.get(f"/api/v1/executions/{first}"),
                    lambda: client.post(
                        f"/api/v1/workflows/{wf['id']}/executions", json={"input": {"n": -1}}
                    ),
                ):
                    t0 = time.monotonic()
                    response = send()
                    assert time.monotonic() - t0 < 10, "a request hung while the database was down"
                    assert response.status_code == 503, response.text
                    assert response.headers["content-type"].startswith("application/problem+json")
                    assert int(response.headers["retry-after"]) >= 1
                    assert response.json()["code"] == "database_unavailable", response.text
                time.sleep(max(0.0, 2.5 - (time.monotonic() - down_at)))
            finally:
                admin.allow_connections(True)
            killed += admin.terminate()  # and once more as it comes back
            assert killed >= WORKERS

            for n in range(BEFORE + DURING, BEFORE + DURING + AFTER):
                start(n, time.monotonic() + 30)

            deadline = time.monotonic() + 120
            pending = dict(started)
            while pending:
                assert time.monotonic() < deadline, (
                    f"{len(pending)} executions never finished\n{logs()}"
                )
                for execution_id, n in list(pending.items()):
                    body = request(
                        lambda e=execution_id: client.get(f"/api/v1/executions/{e}"),
                        deadline,
                        outages,
                    ).json()
                    if body["status"] not in ("pending", "running", "waiting"):
                        assert body["status"] == "completed", body
                        assert body["output_data"] == {"n": n}, body
                        del pending[execution_id]
                time.sleep(0.2)
            recovered_after = time.monotonic() - down_at

            # Every worker listens again, so new work starts at once, not at the next poll.
            wait_listening(admin, logs)
            latencies = []
            for n in range(3):
                time.sleep(0.5)  # the workers are idle, sleeping up to POLL_SECONDS
                t0 = time.monotonic()
                response = client.post(
                    f"/api/v1/workflows/{wf['id']}/executions", json={"input": {"n": 1000 + n}}
                )
                assert response.status_code == 202, response.text
                execution_id = response.json()["id"]
                while True:
                    body = client.get(f"/api/v1/executions/{execution_id}").json()
                    if body["status"] == "completed":
                        assert body["output_data"] == {"n": 1000 + n}
                        break
                    assert time.monotonic() - t0 < POLL_SECONDS * 0.6, (
                        f"new work waited for polling: LISTEN is gone\n{logs()}"
                    )
                    time.sleep(0.05)
                latencies.append(time.monotonic() - t0)

        assert api.poll() is None, f"the API died\n{logs()}"
        assert all(w.poll() is None for w in workers), f"a worker died\n{logs()}"

        async def audit() -> tuple[int, int, int, int]:
            conn = await asyncpg.connect(empty_pg_url)
            try:
                dupes = await conn.fetchval(
                    "SELECT count(*) FROM (SELECT execution_id, step_key FROM step_runs"
                    " WHERE status = 'completed' GROUP BY 1, 2 HAVING count(*) > 1) d"
                )
                completed = await conn.fetchval(
                    "SELECT count(*) FROM step_runs WHERE status = 'completed'"
                )
                executions = await conn.fetchval("SELECT count(*) FROM executions")
                unfinished = await conn.fetchval(
                    "SELECT count(*) FROM executions WHERE status <> 'completed'"
                )
                return int(dupes), int(completed), int(executions), int(unfinished)
            finally:
                await conn.close()

        dupes, completed, executions, unfinished = asyncio.run(audit())
        assert dupes == 0
        # A start whose commit raced the outage may exist without the client knowing its id;
        # it must have run to completion all the same.
        assert executions >= len(started) + 3
        assert unfinished == 0
        assert completed == executions * STEPS
        print(
            f"{killed} connections terminated, {len(outages)} requests answered 503 and retried,"
            f" all done {recovered_after:.1f}s after the outage,"
            f" new work done in {', '.join(f'{t:.2f}s' for t in latencies)}"
        )
    finally:
        with contextlib.suppress(Exception):
            admin.allow_connections(True)
        for proc in [*workers, api]:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
