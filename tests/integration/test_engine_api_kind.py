"""The ``api`` kind through the engine on both databases: a workflow calls a local HTTP server
with an integration's credential, and SSRF protection fails a step that aims at a refused
address."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import signup
from tests.integration.test_engine import run_workflow
from tests.local_http import LocalServer, local_server
from turbocat.config import Settings

pytestmark = pytest.mark.usefixtures("key_file")


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # the test server listens on 127.0.0.1, which the SSRF rules refuse unless allowed
    return Settings(
        home=tmp_path / "home",
        database_url=database_url,
        runtimes={"http": {"allow": ["127.0.0.1/32"]}},
    )


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with local_server() as s:
        yield s


async def test_api_steps_call_out_with_credentials_and_idempotency_keys(
    client: httpx.AsyncClient, server: LocalServer
) -> None:
    owner = await signup(client, "api@example.com")
    r = await client.post(
        "/api/v1/integrations",
        headers=owner.headers,
        json={
            "name": "crm",
            "provider": "http",
            "auth_kind": "bearer",
            "credentials": {"token": "crm-token-42"},
            "settings": {"base_url": server.url("")},
        },
    )
    assert r.status_code == 201, r.text
    integration_id = r.json()["id"]
    r = await client.post(
        "/api/v1/agents",
        headers=owner.headers,
        json={"name": "crm-lookup", "type": "api", "config": {
            "url": "/echo", "integration_id": integration_id,
            "headers": {"X-Email": "{{ inputs.email }}"},
        }},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    definition = {
        "vars": {"tag": "vip"},
        "steps": [
            {
                "key": "create",
                "type": "agent",
                "component": {
                    "kind": "api",
                    "config": {
                        "method": "POST",
                        "url": "/echo",
                        "integration_id": integration_id,
                        "query": {"tag": "{{ vars.tag }}"},
                        "body": {"name": "{{ input.name }}"},
                    },
                },
            },
            {
                "key": "lookup",
                "type": "agent",
                "agent": "crm-lookup",
                "depends_on": ["create"],
                "inputs": {"email": "ada@example.com", "query": {"id": "{{ input.name }}"}},
            },
            {
                "key": "metadata",
                "type": "agent",
                "depends_on": ["create"],
                "component": {
                    "kind": "api",
                    "config": {"url": "http://169.254.169.254/latest/meta-data/"},
                },
                "on_error": "continue",
            },
        ],
        "outputs": {
            "sent": "{{ steps.create.output.body.body }}",
            "status": "{{ steps.create.output.status }}",
        },
    }
    done = await run_workflow(client, owner, definition, {"name": "Ada"})
    assert done["status"] == "completed" and done["result"] == "partial", done
    assert done["output_data"] == {"sent": '{"name":"Ada"}', "status": 200}
    steps = {s["step_key"]: s for s in done["steps"]}
    seen, looked_up = server.requests
    assert looked_up.method == "GET" and looked_up.path == "/echo?id=Ada"
    assert looked_up.headers["X-Email"] == "ada@example.com"
    assert looked_up.headers["Authorization"] == "Bearer crm-token-42"
    assert steps["lookup"]["status"] == "completed"
    assert seen.method == "POST" and seen.path == "/echo?tag=vip"
    assert seen.headers["Authorization"] == "Bearer crm-token-42"
    assert seen.headers["Idempotency-Key"] == steps["create"]["idempotency_key"]
    assert steps["create"]["idempotency_key"] == f"{done['id']}:create:0"
    error = steps["metadata"]["error"]
    assert steps["metadata"]["status"] == "failed" and error["type"] == "ssrf_blocked"
    assert "169.254.169.254" in error["message"] and "metadata" in error["message"]
    logs = (await client.get(f"/api/v1/executions/{done['id']}/logs", headers=owner.headers)).json()
    assert any(line["message"].startswith("POST http://127.0.0.1:") for line in logs)
    assert not any("crm-token-42" in str(line) for line in logs)
    assert "crm-token-42" not in str(done)  # the echoed header is redacted in the output
