"""Code steps through the API and the embedded worker, on SQLite and PostgreSQL: user code that
attacks its limits fails its own step, and the worker goes on running the steps after it."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import signup
from tests.integration.test_engine import run_workflow
from tests.unit.test_code_runtime import no_leftovers, private_uids
from turbocat.config import CodeRuntimeSettings, RuntimeSettings, Settings

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox needs root (as on CI)")

FORK_BOMB = """
import os
def main(input):
    while True:
        try:
            os.fork()
        except OSError:
            pass
"""
MEMORY_HOG = """
def main(input):
    hog = []
    while True:
        hog.append(bytearray(1 << 20))
"""
SUMMARY = """
import os
def main(input, context):
    return {"seen": input, "step": context["step_key"], "uid_is_root": os.getuid() == 0}
"""


@pytest.fixture
def uids() -> dict[str, int]:
    return private_uids()


@pytest.fixture
def settings(database_url: str, tmp_path: Path, uids: dict[str, int]) -> Settings:
    """The app's settings with a uid range of this test's own (see no_leftovers)."""
    runtimes = RuntimeSettings(code=CodeRuntimeSettings(**uids))
    return Settings(home=tmp_path / "home", database_url=database_url, runtimes=runtimes)


def code_step(key: str, source: str, **extra: object) -> dict:
    return {"key": key, "type": "agent", "component": {"kind": "code", "config": {"source": source}},
            **extra}  # fmt: skip


@needs_root
async def test_the_worker_survives_a_fork_bomb_and_a_memory_hog(
    client: httpx.AsyncClient, uids: dict[str, int]
) -> None:
    owner = await signup(client, "code@example.com")
    r = await client.post(
        "/api/v1/agents",
        headers=owner.headers,
        json={"name": "hog", "type": "code", "config": {"source": MEMORY_HOG},
              "max_execution_time": 5, "max_memory_mb": 64},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    definition = {
        "steps": [
            code_step("bomb", FORK_BOMB, timeout_ms=1500, on_error="continue"),
            {"key": "hog", "type": "agent", "agent": "hog", "on_error": "continue"},
            code_step(
                "after", SUMMARY, depends_on=["bomb", "hog"],
                inputs={"bomb": "{{ steps.bomb.error.type }}", "hog": "{{ steps.hog.error.type }}",
                        "n": "{{ input.n }}"},
            ),
        ],
        "outputs": {"after": "{{ steps.after.output }}"},
    }  # fmt: skip
    try:
        done = await run_workflow(client, owner, definition, {"n": 7}, seconds=30)
    except TimeoutError:  # say where it stands
        listed = (await client.get("/api/v1/executions", headers=owner.headers)).json()
        execution_id = listed["items"][0]["id"]
        r = await client.get(f"/api/v1/executions/{execution_id}", headers=owner.headers)
        pytest.fail(f"the execution did not end: {r.json()}")
    assert done["status"] == "completed" and done["result"] == "partial", done
    after = done["output_data"]["after"]
    # the engine's step timeout and the sandbox's wall clock are the same 1.5 s: either may win
    assert after["seen"]["bomb"] in ("timeout", "code_timeout")
    assert after == {
        "seen": {"bomb": after["seen"]["bomb"], "hog": "code_memory", "n": 7},
        "step": "after", "uid_is_root": False,
    }  # fmt: skip
    hog = next(s for s in done["steps"] if s["step_key"] == "hog")
    assert "64 MB" in hog["error"]["message"]
    no_leftovers(uids["uid_first"], uids["uid_count"])
