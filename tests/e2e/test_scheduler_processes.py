"""``turbocat scheduler`` processes beside a server's embedded scheduler on PostgreSQL: three
schedulers, every second a slot per schedule, each slot fired exactly once and none missed."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from tests.e2e.conftest import clean_env, free_port
from tests.e2e.test_worker_process import wait_http
from turbocat.config import Settings
from turbocat.db.engine import Database
from turbocat.db.models import ExecutionRow

pytestmark = pytest.mark.slow


def test_scheduler_refuses_sqlite(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "turbocat", "scheduler"],
        env=clean_env(TURBOCAT_HOME=str(tmp_path)), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and "PostgreSQL" in done.stderr


async def scheduled(url: str) -> list[ExecutionRow]:
    db = Database.from_settings(Settings(database_url=url), app_role=False)
    try:
        async with db.transaction() as session:
            stmt = select(ExecutionRow).where(ExecutionRow.trigger_type == "scheduled")
            return list((await session.execute(stmt)).scalars())
    finally:
        await db.dispose()


def test_three_schedulers_fire_each_slot_once(empty_pg_url: str, tmp_path: Path) -> None:
    env = clean_env(
        TURBOCAT_HOME=str(tmp_path), TURBOCAT_DATABASE_URL=empty_pg_url,
        TURBOCAT_SCHEDULER__POLL_SECONDS="0.2", TURBOCAT_LOG_LEVEL="warning",
    )  # fmt: skip
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    logs = [tmp_path / f"{name}.log" for name in ("api", "scheduler1", "scheduler2")]
    try:
        with logs[0].open("w") as out:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "turbocat", "serve", "--port", str(port), "--migrate"],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            ))  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/readyz", procs[0], logs[0])
        for log in logs[1:]:
            with log.open("w") as out:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "turbocat", "scheduler"],
                    env=env, stdout=out, stderr=subprocess.STDOUT,
                ))  # fmt: skip
        token = httpx.post(
            f"{base}/api/v1/auth/signup",
            json={"email": "s@example.com", "password": "a long password", "organization_name": "S"},
        ).json()["access_token"]  # fmt: skip
        headers = {"Authorization": f"Bearer {token}"}
        definition = {"steps": [{"key": "a", "type": "agent", "component": {
            "kind": "data", "config": {"mapping": {"n": "{{ input.n }}"}}}}]}  # fmt: skip
        wf = httpx.post(
            f"{base}/api/v1/workflows", headers=headers,
            json={"name": "every second", "definition": definition},
        ).json()  # fmt: skip
        time.sleep(2)  # the scheduler processes are up
        ids = []
        for n in range(4):
            r = httpx.post(
                f"{base}/api/v1/schedules", headers=headers,
                json={"workflow_id": wf["id"], "cron_expression": "* * * * * *", "input": {"n": n}},
            )  # fmt: skip
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        time.sleep(6)
        for schedule_id in ids:
            r = httpx.post(f"{base}/api/v1/schedules/{schedule_id}/disable", headers=headers)
            assert r.status_code == 200
        time.sleep(0.5)  # a firing that began before the disable commits
        for proc, log in zip(procs, logs, strict=True):
            assert proc.poll() is None, log.read_text()
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=15)

    runs = asyncio.run(scheduled(empty_pg_url))
    keys = Counter(r.idempotency_key for r in runs)
    assert keys and set(keys.values()) == {1}, keys.most_common(3)
    slots: dict[str, list[dt.datetime]] = defaultdict(list)
    for r in runs:
        slots[r.trigger_data["schedule_id"]].append(
            dt.datetime.fromisoformat(r.trigger_data["slot"])
        )
    assert set(slots) == set(ids)
    for fired in slots.values():
        fired.sort()
        assert len(fired) >= 4
        gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(fired)}
        assert gaps == {1.0}, fired  # no slot missed, none twice
