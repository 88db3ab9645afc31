"""Triggers against a real ``turbocat serve`` process: ``turbocat workflows run --wait`` and a
signed webhook over real HTTP, then the execution.completed event starting a subscriber."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest

from tests.e2e.conftest import Server, clean_env
from turbocat.domain import webhooks as hooks

pytestmark = pytest.mark.slow

DEFINITION = {
    "inputs": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
    "steps": [
        {
            "key": "double",
            "type": "agent",
            "component": {"kind": "data", "config": {"mapping": {"v": "{{ input.n * 2 }}"}}},
        }
    ],
    "outputs": {"v": "{{ steps.double.output.v }}"},
}


def api_key(base: str) -> str:
    r = httpx.post(
        f"{base}/api/v1/auth/signup",
        json={"email": "t@example.com", "password": "a long password", "organization_name": "T"},
    )
    token = r.json()["access_token"]
    r = httpx.post(
        f"{base}/api/v1/api-keys",
        headers={"Authorization": f"Bearer {token}"},
        json={"name": "cli", "scopes": ["*"]},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["secret"])


def test_cli_run_waits_and_a_signed_webhook_chains_an_event(server: Server) -> None:
    key = api_key(server.base)
    auth = {"Authorization": f"Bearer {key}"}
    r = httpx.post(
        f"{server.base}/api/v1/workflows", headers=auth,
        json={"name": "Doubler", "definition": DEFINITION, "status": "active"},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    doubler = r.json()["id"]

    done = subprocess.run(
        [sys.executable, "-m", "turbocat", "workflows", "run", "doubler", "--input", '{"n": 21}',
         "--wait", "30", "--idempotency-key", "once"],
        env=clean_env(TURBOCAT_URL=server.base, TURBOCAT_API_KEY=key),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    assert json.loads(done.stdout) == {"v": 42}

    r = httpx.post(
        f"{server.base}/api/v1/workflows", headers=auth,
        json={"name": "Follower", "status": "active",
              "definition": {"steps": [{"key": "s", "type": "agent",
                                        "component": {"kind": "data", "config": {"query": "v"}},
                                        "inputs": {"data": "{{ input.output }}"}}]},
              "trigger_config": {"events": [{"pattern": "execution.completed",
                                             "filter": "event.payload.trigger_type == 'webhook'"}]}},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    follower = r.json()["id"]

    r = httpx.post(
        f"{server.base}/api/v1/workflows/{doubler}/webhooks", headers=auth,
        json={"signed": True, "wait_for_result": True},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    hook = r.json()
    body = b'{"n": 5}'
    now = int(time.time())
    r = httpx.post(
        hook["url"], content=body, timeout=30,
        headers={"content-type": "application/json", "x-turbocat-timestamp": str(now),
                 "x-turbocat-signature": hooks.signature_header(hook["signing_secret"], now, body)},
    )  # fmt: skip
    assert r.status_code == 200 and r.json() == {"v": 10}, r.text

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        runs = httpx.get(
            f"{server.base}/api/v1/executions", headers=auth, params={"workflow_id": follower}
        ).json()["items"]
        if runs and runs[0]["status"] == "completed":
            break
        time.sleep(0.1)
    assert len(runs) == 1 and runs[0]["trigger_type"] == "event"
    assert runs[0]["status"] == "completed"
