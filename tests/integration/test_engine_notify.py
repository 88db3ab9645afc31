"""On PostgreSQL an idle worker is woken by NOTIFY, not by polling."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import signup
from tests.integration.test_engine import data_step, wait_done
from turbocat.api.app import create_app
from turbocat.bootstrap import AppContext
from turbocat.config import Settings
from turbocat.engine.worker import WorkerConfig

pytestmark = pytest.mark.pg


async def test_an_idle_worker_in_another_context_wakes_within_a_second(
    pg_url: str, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path, database_url=pg_url)
    api_ctx = AppContext.build(settings)
    worker_ctx = AppContext.build(settings)  # another "process": its own notifier and pool
    worker = worker_ctx.worker(WorkerConfig(worker_id="sleepy", poll_seconds=30))
    stop = asyncio.Event()
    worker_task = asyncio.create_task(worker.run(stop))
    app = create_app(settings, api_ctx, embedded_worker=False)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t"
            ) as client,
        ):
            owner = await signup(client, "notify@example.com")
            await asyncio.sleep(0.5)  # the worker has looked once and is now idle for 30 s
            definition = {
                "steps": [
                    data_step("a", mapping={"x": 1}),
                    data_step("b", deps=("a",), mapping={"y": 2}),
                ]
            }
            wf = (
                await client.post(
                    "/api/v1/workflows",
                    headers=owner.headers,
                    json={"name": "n", "definition": definition},
                )
            ).json()
            started = time.monotonic()
            r = await client.post(
                f"/api/v1/workflows/{wf['id']}/executions", headers=owner.headers, json={}
            )
            done = await wait_done(client, owner, r.json()["id"], seconds=10)
            assert done["status"] == "completed"
            assert time.monotonic() - started < 2.0
    finally:
        stop.set()
        await worker_task
        await worker_ctx.close()
