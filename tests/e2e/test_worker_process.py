"""``turbocat worker`` processes against PostgreSQL, beside an API server without a worker."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import clean_env, free_port

pytestmark = pytest.mark.slow


def test_worker_refuses_sqlite(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "turbocat", "worker"],
        env=clean_env(TURBOCAT_HOME=str(tmp_path)), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and "PostgreSQL" in done.stderr


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


def test_separate_worker_processes_run_the_steps(empty_pg_url: str, tmp_path: Path) -> None:
    env = clean_env(
        TURBOCAT_HOME=str(tmp_path), TURBOCAT_DATABASE_URL=empty_pg_url,
        TURBOCAT_ENGINE__EMBEDDED_WORKER="false", TURBOCAT_ENGINE__POLL_SECONDS="0.2",
    )  # fmt: skip
    port = free_port()
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with api_log.open("w") as out:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "turbocat", "serve", "--port", str(port), "--migrate"],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            ))  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/readyz", procs[0], api_log)
        token = httpx.post(
            f"{base}/api/v1/auth/signup",
            json={
                "email": "w@example.com",
                "password": "a long password",
                "organization_name": "W",
            },
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        definition = {"steps": [
            {"key": "a", "type": "agent", "component": {"kind": "data", "config": {"mapping": {"n": "{{ input.n }}"}}}},
            {"key": "b", "type": "agent", "depends_on": ["a"], "component": {"kind": "data", "config": {"mapping": {"n2": "{{ steps.a.output.n * 2 }}"}}}},
        ], "outputs": {"n2": "{{ steps.b.output.n2 }}"}}  # fmt: skip
        wf = httpx.post(
            f"{base}/api/v1/workflows",
            headers=headers,
            json={"name": "double", "definition": definition},
        ).json()
        ids = [
            httpx.post(
                f"{base}/api/v1/workflows/{wf['id']}/executions",
                headers=headers,
                json={"input": {"n": n}},
            ).json()["id"]
            for n in range(5)
        ]
        time.sleep(0.5)  # nothing runs without a worker
        assert (
            httpx.get(f"{base}/api/v1/executions/{ids[0]}", headers=headers).json()["status"]
            == "running"
        )
        with worker_log.open("w") as out:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "turbocat", "worker", "-c", "4"],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        deadline = time.monotonic() + 60
        for n, execution_id in enumerate(ids):
            while True:
                body = httpx.get(f"{base}/api/v1/executions/{execution_id}", headers=headers).json()
                if body["status"] == "completed":
                    assert body["output_data"] == {"n2": n * 2}
                    break
                assert time.monotonic() < deadline, worker_log.read_text()
                time.sleep(0.1)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=15)
