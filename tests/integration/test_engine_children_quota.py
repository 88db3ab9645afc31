"""A child execution counts against the organization's monthly execution quota."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import Clock, signup
from tests.integration.test_engine_children import HOLD, child_step, create, get, start
from turbocat.bootstrap import AppContext
from turbocat.config import Settings
from turbocat.engine.worker import WorkerConfig


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path / "home",
        database_url=database_url,
        plans={"starter": {"executions_per_month": 1}},
    )


@pytest.fixture
def app_context(settings: Settings, clock: Clock) -> AppContext:
    settings.engine.embedded_worker = False
    ctx = AppContext.build(settings)
    ctx.clock = clock
    return ctx


async def test_a_child_beyond_the_quota_is_not_started(
    client: httpx.AsyncClient, app_context: AppContext
) -> None:
    owner = await signup(client, "quota-kids@example.com")
    await create(client, owner, "Hold", HOLD)
    parent = await create(client, owner, "p", {"steps": [child_step("call", workflow="hold")]})
    execution_id = await start(client, owner, parent["id"])  # the month's only execution
    await app_context.worker(WorkerConfig(worker_id="w-quota")).drain()
    done = await get(client, owner, execution_id)
    error = done["steps"][0]["error"]
    assert done["status"] == "failed" and error["type"] == "child_not_started", done
    assert "quota" in error["message"].lower() or "limit" in error["message"].lower(), error
