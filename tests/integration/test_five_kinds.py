"""examples/five-kinds end to end, on SQLite and PostgreSQL: an api step fetches orders from a
local shop server, a data step reshapes them, an llm agent (a local fake of the OpenAI protocol)
calls a data agent as a tool and answers in a JSON Schema, a sandboxed code step sums, and a
child workflow writes the message. The example files are used as they are in the repository."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.fakes.llm_server import FakeLLM, Script, running
from tests.integration.conftest import signup
from tests.integration.test_engine import wait_done
from tests.unit.test_code_runtime import private_uids
from turbocat.config import (
    CodeRuntimeSettings,
    EngineSettings,
    HttpRuntimeSettings,
    LlmRuntimeSettings,
    RuntimeSettings,
    Settings,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "five-kinds"
ORDERS = [
    {"id": 1, "customer": "ada", "total": 250, "status": "open"},
    {"id": 2, "customer": "bob", "total": 20, "status": "open"},
    {"id": 3, "customer": "cy", "total": 101, "status": "open"},
    {"id": 4, "customer": "dee", "total": 900, "status": "shipped"},
]
OPEN = [{k: o[k] for k in ("id", "customer", "total")} for o in ORDERS if o["status"] == "open"]

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="code steps need the sandbox (root)"),
    pytest.mark.usefixtures("key_file"),
]


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    loopback = ["127.0.0.1/32"]
    runtimes = RuntimeSettings(
        http=HttpRuntimeSettings(allow=loopback),
        llm=LlmRuntimeSettings(allow=loopback),
        code=CodeRuntimeSettings(**private_uids()),
    )
    return Settings(
        home=tmp_path / "home", database_url=database_url, runtimes=runtimes,
        engine=EngineSettings(poll_seconds=0.05),
    )  # fmt: skip


@pytest.fixture
def shop() -> Iterator[str]:
    """The shop's API: ``GET /orders``."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            body = json.dumps({"orders": ORDERS}).encode()
            self.send_response(200 if self.path == "/orders" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    with running(api_key="sk-five-kinds") as server:
        yield server


def load(name: str) -> Any:
    return yaml.safe_load((EXAMPLE / name).read_text())


async def post(client: httpx.AsyncClient, headers: dict[str, str], url: str, body: Any) -> Any:
    r = await client.post(url, headers=headers, json=body)
    assert r.status_code in (200, 201, 202), r.text
    return r.json()


async def test_one_workflow_runs_every_agent_kind(
    client: httpx.AsyncClient, shop: str, fake: FakeLLM
) -> None:
    owner = await signup(client, "five@example.com")
    h = owner.headers
    integration = await post(client, h, "/api/v1/integrations", {
        "name": "openai", "provider": "openai", "credentials": {"api_key": "sk-five-kinds"},
        "settings": {"base_url": fake.openai_url},
    })  # fmt: skip
    for agent in load("agents.yaml"):
        if agent["type"] == "llm":
            agent["config"]["integration_id"] = integration["id"]
        await post(client, h, "/api/v1/agents", agent)
    for name, file in (("five-kinds-notify", "notify.yaml"), ("five-kinds-triage", "triage.yaml")):
        body = {"name": name, "status": "active", "definition": load(file)}
        triage = await post(client, h, "/api/v1/workflows", body)

    fake.tool("big-orders", {"data": OPEN}, call_id="call_1", usage=(120, 15))
    fake.add(Script(text='{"priority": "high", "ids": [1, 3]}', usage=(180, 12)))
    started = await post(
        client, h, f"/api/v1/workflows/{triage['id']}/executions", {"input": {"shop_url": shop}}
    )
    done = await wait_done(client, owner, started["id"], seconds=60)

    assert done["status"] == "completed", [(s["step_key"], s["error"]) for s in done["steps"]]
    assert done["output_data"] == {
        "priority": "high",
        "total": 351,
        "message": "HIGH: 2 orders flagged, 351 in total",
    }
    steps = {s["step_key"]: s for s in done["steps"]}
    assert steps["fetch"]["output"]["status"] == 200
    assert steps["reshape"]["output"] == OPEN
    decided = steps["decide"]["output"]
    assert decided["tool_calls"][0]["name"] == "big-orders"
    assert decided["tool_calls"][0]["output"] == [1, 3]  # the data agent ran as the tool
    assert decided["usage"]["total"] == 327
    assert steps["score"]["output"] == {"ids": [1, 3], "total": 351}
    assert fake.bodies[0]["messages"][1]["content"].startswith("Open orders: [")

    children = (
        await client.get(
            "/api/v1/executions", headers=h, params={"parent_execution_id": done["id"]}
        )
    ).json()["items"]
    assert [c["status"] for c in children] == ["completed"]
    assert children[0]["output_data"]["priority"] == "high"
