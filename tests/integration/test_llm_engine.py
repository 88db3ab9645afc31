"""The llm kind through the engine, on both databases: a saved llm agent whose API key comes from
an integration, streaming into the execution's logs, an agent tool, token usage on the step and
metered in usage_records; provider refusals fail the step with a message a user understands."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.fakes.llm_server import FakeLLM, Script, running
from tests.integration.conftest import Account, Clock, signup
from tests.integration.test_engine import run_workflow
from turbocat.config import EngineSettings, LlmRuntimeSettings, RuntimeSettings, Settings
from turbocat.db.engine import Database
from turbocat.db.models import UsageRecordRow
from turbocat.domain.enums import UsageMetric

ORDERS = [{"id": 1, "total": 250}, {"id": 2, "total": 20}, {"id": 3, "total": 101}]
TOKEN_ROWS = select(UsageRecordRow).where(UsageRecordRow.metric == UsageMetric.AI_TOKENS_USED)
"""The token counters (executions, API calls and gauges are metered beside them)."""

pytestmark = pytest.mark.usefixtures("key_file")


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    llm = LlmRuntimeSettings(allow=["127.0.0.1/32"], stream_log_chars=16)
    return Settings(
        home=tmp_path / "home", database_url=database_url, runtimes=RuntimeSettings(llm=llm),
        engine=EngineSettings(poll_seconds=0.05),
    )  # fmt: skip


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    with running(api_key="sk-live-123") as server:
        yield server


async def create(client: httpx.AsyncClient, who: Account, url: str, body: dict[str, Any]) -> dict:
    r = await client.post(url, headers=who.headers, json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def integration(client: httpx.AsyncClient, who: Account, fake: FakeLLM, key: str) -> str:
    """An openai integration holding ``key`` and the fake's URL."""
    found = await create(client, who, "/api/v1/integrations", {
        "name": f"llm {uuid.uuid4().hex[:4]}", "provider": "openai",
        "credentials": {"api_key": key}, "settings": {"base_url": fake.openai_url},
    })  # fmt: skip
    return str(found["id"])


async def assistant(
    client: httpx.AsyncClient, who: Account, fake: FakeLLM, key: str | None = None,
    integration_id: str | None = None, **config: Any,
) -> str:  # fmt: skip
    """An llm agent using ``integration_id`` (or a new integration holding ``key``)."""
    if integration_id is None:
        assert key is not None
        integration_id = await integration(client, who, fake, key)
    name = f"assistant-{uuid.uuid4().hex[:6]}"
    await create(client, who, "/api/v1/agents", {
        "name": name, "type": "llm", "status": "active",
        "config": {"provider": "openai", "model": "m-1", "integration_id": integration_id,
                   "system_prompt": "You help with orders.",
                   "user_prompt": "Which orders are big? {{ inputs.orders }}"} | config,
    })  # fmt: skip
    return name


def ask(agent: str, **extra: Any) -> dict[str, Any]:
    return {
        "steps": [{"key": "ask", "type": "agent", "agent": agent,
                   "inputs": {"orders": "{{ input.orders }}"}} | extra],
        "outputs": {"answer": "{{ steps.ask.output.content }}"},
    }  # fmt: skip


async def test_llm_step_with_a_tool_streams_and_meters_tokens(
    client: httpx.AsyncClient, fake: FakeLLM, operator_db: Database
) -> None:
    owner = await signup(client, "llm@example.com")
    await create(client, owner, "/api/v1/agents", {
        "name": "big-orders", "type": "data", "status": "active",
        "description": "Ids of the orders over 100",
        "config": {"query": "[?total > `100`].id"},
        "parameters": {"type": "object", "properties": {"data": {"type": "array"}},
                       "required": ["data"]},
    })  # fmt: skip
    key = await integration(client, owner, fake, "sk-live-123")
    agent = await assistant(
        client, owner, fake, integration_id=key, stream=True,
        tools=[{"type": "agent", "ref": "big-orders"}],
    )  # fmt: skip
    fake.tool("big-orders", {"data": ORDERS}, call_id="call_a", usage=(100, 20))
    fake.add(Script(text="Orders 1 and 3 are over 100.", usage=(150, 30)))

    done = await run_workflow(client, owner, ask(agent), {"orders": ORDERS})
    assert done["status"] == "completed", done
    assert done["output_data"] == {"answer": "Orders 1 and 3 are over 100."}
    (step,) = done["steps"]
    output = step["output"]
    assert output["tool_calls"] == [{"id": "call_a", "name": "big-orders",
                                     "arguments": {"data": ORDERS}, "output": [1, 3]}]  # fmt: skip
    assert output["usage"] == {"prompt": 250, "completion": 50,
                               "total": 300, "calls": 2}  # fmt: skip
    first = fake.bodies[0]
    assert first["messages"][1]["content"].startswith("Which orders are big? [{")
    assert first["tools"][0]["function"]["name"] == "big-orders"

    logs = (await client.get(f"/api/v1/executions/{done['id']}/logs", headers=owner.headers)).json()
    streamed = [x["message"] for x in logs if (x.get("metadata") or {}).get("stream")]
    assert "".join(streamed) == "Orders 1 and 3 are over 100." and len(streamed) >= 2
    usage = [x["metadata"]["usage"] for x in logs if "usage" in (x.get("metadata") or {})]
    assert [(u["prompt"], u["completion"]) for u in usage] == [(100, 20), (150, 30)]
    assert any(x["message"].startswith("tool big-orders") for x in logs)

    async with operator_db.transaction() as session:
        rows = (await session.execute(TOKEN_ROWS)).scalars().all()
    assert [(str(r.organization_id), r.metric, int(r.quantity)) for r in rows] == [
        (owner.org_id, UsageMetric.AI_TOKENS_USED, 300)
    ]

    # a second execution adds to the same day's row
    fake.add(Script(text="None.", usage=(5, 1)))
    done = await run_workflow(client, owner, ask(agent), {"orders": []})
    assert done["status"] == "completed", done
    async with operator_db.transaction() as session:
        (row,) = (await session.execute(TOKEN_ROWS)).scalars().all()
    assert int(row.quantity) == 306

    # tokens spent by a step that fails are metered too
    strict = await assistant(
        client, owner, fake, integration_id=key, response_schema={"type": "integer"}
    )
    for _ in range(3):
        fake.add(Script(text="not a number", usage=(10, 0)))
    done = await run_workflow(client, owner, ask(strict), {"orders": []})
    assert done["steps"][0]["error"]["type"] == "llm_invalid_output", done
    assert done["steps"][0]["error"]["details"]["usage"]["total"] == 30
    async with operator_db.transaction() as session:
        (row,) = (await session.execute(TOKEN_ROWS)).scalars().all()
    assert int(row.quantity) == 336


async def run_advancing(
    client: httpx.AsyncClient, who: Account, clock: Clock, definition: dict[str, Any]
) -> dict[str, Any]:
    """Run ``definition``, moving the app's clock on so that retries fall due."""
    r = await client.post(
        "/api/v1/workflows",
        headers=who.headers,
        json={"name": f"wf {uuid.uuid4().hex[:6]}", "definition": definition},
    )
    assert r.status_code == 201, r.text
    r = await client.post(f"/api/v1/workflows/{r.json()['id']}/executions",
                          headers=who.headers, json={"input": {"orders": []}})  # fmt: skip
    assert r.status_code == 202, r.text
    url = f"/api/v1/executions/{r.json()['id']}"
    async with asyncio.timeout(20):
        while True:
            body: dict[str, Any] = (await client.get(url, headers=who.headers)).json()
            if body["status"] not in ("pending", "running", "waiting"):
                return body
            clock.advance(seconds=0.5)  # the app's clock only moves when told
            await asyncio.sleep(0.02)


async def test_refused_key_fails_for_good_and_429_is_retried(
    client: httpx.AsyncClient, fake: FakeLLM, clock: Clock
) -> None:
    owner = await signup(client, "llm-fail@example.com")
    retry = {"retry": {"count": 2, "delay_ms": 1, "jitter": False}, "on_error": "retry"}
    wrong = await assistant(client, owner, fake, "sk-wrong")
    done = await run_workflow(client, owner, ask(wrong, **retry), {"orders": []})
    assert done["status"] == "failed", done
    (step,) = done["steps"]
    assert step["error"]["type"] == "llm_unauthorized" and step["attempt"] == 1
    assert "refused the credentials of integration" in step["error"]["message"]
    assert "sk-wrong" not in str(done)

    right = await assistant(client, owner, fake, "sk-live-123")
    fake.add(Script(status=429, headers={"Retry-After": "0"}), Script(status=503))
    fake.text("fine now")
    done = await run_advancing(client, owner, clock, ask(right, **retry))
    assert done["status"] == "completed", done
    assert done["output_data"] == {"answer": "fine now"}
    assert done["steps"][-1]["attempt"] == 3


async def test_prompt_from_the_catalog_and_tools_only_of_the_organization(
    client: httpx.AsyncClient, fake: FakeLLM
) -> None:
    owner = await signup(client, "llm-prompt@example.com")
    other = await signup(client, "llm-other@example.com", organization="Other")
    prompt = await create(client, owner, "/api/v1/prompts", {
        "name": "orders-helper", "model_name": "prompt-model", "parameters": {"temperature": 0.2},
        "prompt_content": "You help {{ vars.company }} with orders.",
        "prompt_variables": {"company": {"type": "string", "required": True}},
    })  # fmt: skip
    key = await integration(client, owner, fake, "sk-live-123")
    agent = await assistant(
        client, owner, fake, integration_id=key, model=None, system_prompt=None,
        prompt_id=prompt["id"], prompt_variables={"company": "{{ input.company }}"},
    )  # fmt: skip
    fake.text("ok")
    done = await run_workflow(client, owner, ask(agent), {"orders": [], "company": "Acme"})
    assert done["status"] == "completed", done
    body = fake.bodies[-1]
    assert body["model"] == "prompt-model" and body["temperature"] == 0.2
    assert body["messages"][0] == {"role": "system", "content": "You help Acme with orders."}

    # another organization's agent and private prompt are out of reach, by id or by name
    theirs = await create(client, other, "/api/v1/agents", {
        "name": "their-tool", "type": "data", "config": {"query": "@"},
    })  # fmt: skip
    their_prompt = await create(client, other, "/api/v1/prompts", {
        "name": "their-prompt", "model_name": "m", "prompt_content": "secret instructions",
        "visibility": "private",
    })  # fmt: skip
    for ref in (theirs["id"], "their-tool"):
        sneaky = await assistant(
            client, owner, fake, integration_id=key, tools=[{"type": "agent", "ref": ref}]
        )
        done = await run_workflow(client, owner, ask(sneaky), {"orders": []})
        (step,) = done["steps"]
        assert step["error"]["type"] == "tool_unavailable", step
    sneaky = await assistant(
        client, owner, fake, integration_id=key, system_prompt=None, prompt_id=their_prompt["id"]
    )
    done = await run_workflow(client, owner, ask(sneaky), {"orders": []})
    assert done["steps"][0]["error"]["type"] == "prompt_unavailable", done
    assert len(fake.requests) == 1  # none of these reached the provider
