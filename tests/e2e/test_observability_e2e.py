"""A server and a ``turbocat worker --metrics-port`` process on PostgreSQL: the server's
/metrics, the worker's own metrics, its JSON log lines, and ``turbocat doctor``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import clean_env, free_port
from tests.e2e.test_worker_process import wait_http

pytestmark = pytest.mark.slow


def values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_worker_metrics_json_logs_and_doctor_across_processes(
    empty_pg_url: str, tmp_path: Path
) -> None:
    env = clean_env(
        TURBOCAT_HOME=str(tmp_path), TURBOCAT_DATABASE_URL=empty_pg_url,
        TURBOCAT_ENGINE__EMBEDDED_WORKER="false", TURBOCAT_ENGINE__POLL_SECONDS="0.2",
        TURBOCAT_METRICS__CACHE_SECONDS="0",
    )  # fmt: skip
    port, metrics_port = free_port(), free_port()
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
        worker_env = env | {"TURBOCAT_LOG_JSON": "true", "TURBOCAT_LOG_LEVEL": "debug"}
        with worker_log.open("w") as out:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "turbocat", "worker", "-c", "3",
                 "--metrics-port", str(metrics_port)],
                env=worker_env, stdout=out, stderr=subprocess.STDOUT,
            ))  # fmt: skip
        wait_http(f"http://127.0.0.1:{metrics_port}/metrics", procs[1], worker_log)
        token = httpx.post(
            f"{base}/api/v1/auth/signup",
            json={
                "email": "o@example.com",
                "password": "a long password",
                "organization_name": "O",
            },
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        step = {"key": "a", "type": "agent", "component": {"kind": "data", "config": {"mapping": {"n": "1"}}}}  # fmt: skip
        wf = httpx.post(
            f"{base}/api/v1/workflows", headers=headers,
            json={"name": "one", "definition": {"steps": [step]}},
        ).json()  # fmt: skip
        execution_id = httpx.post(
            f"{base}/api/v1/workflows/{wf['id']}/executions", headers=headers, json={}
        ).json()["id"]
        deadline = time.monotonic() + 60
        while True:
            found = values(httpx.get(f"{base}/metrics").text)
            if found.get(("turbocat_executions", (("status", "completed"),))) == 1:
                break
            assert time.monotonic() < deadline, worker_log.read_text()
            time.sleep(0.1)
        assert found[("turbocat_workers", (("state", "live"),))] == 1
        assert found[("turbocat_worker_slots", (("state", "total"),))] == 3
        mine = values(httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text)
        assert mine[("turbocat_worker_process_steps_total", (("outcome", "succeeded"),))] == 1
        assert mine[("turbocat_worker_process_slots", (("state", "total"),))] == 3

        doctor = subprocess.run(
            [sys.executable, "-m", "turbocat", "doctor", "--json"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        report = json.loads(doctor.stdout)
        assert doctor.returncode == 0 and report["ok"], doctor.stdout + doctor.stderr
        workers = next(c for c in report["checks"] if c["name"] == "workers")
        assert workers["detail"].startswith("1 live"), workers
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=15)
    lines = [json.loads(line) for line in worker_log.read_text().splitlines() if line[:1] == "{"]
    assert any(
        line.get("execution_id") == execution_id and line.get("step_key") == "a" for line in lines
    ), worker_log.read_text()
