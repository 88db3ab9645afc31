"""``turbocat usage`` against a running server, as an owner's API key would run it."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.e2e.conftest import Server
from tests.e2e.test_cli_workflows import turbocat

pytestmark = pytest.mark.slow

DOUBLE = {"steps": [{"key": "d", "type": "agent",
                     "component": {"kind": "data", "config": {"query": "a"}}}]}  # fmt: skip


def test_usage_verb_reports_executions(server: Server) -> None:
    r = httpx.post(f"{server.base}/api/v1/auth/signup", json={
        "email": "cli-usage@example.com", "password": "a long password",
        "organization_name": "Usage"})  # fmt: skip
    auth = {"Authorization": f"Bearer {r.json()['access_token']}"}

    def key(*scopes: str) -> str:
        r = httpx.post(f"{server.base}/api/v1/api-keys", headers=auth,
                       json={"name": "cli", "scopes": list(scopes)})  # fmt: skip
        assert r.status_code == 201, r.text
        return str(r.json()["secret"])

    reader = key("usage:read")
    r = httpx.post(f"{server.base}/api/v1/workflows", headers=auth,
                   json={"name": "u", "definition": DOUBLE, "status": "active"})  # fmt: skip
    assert r.status_code == 201, r.text
    for _ in range(2):
        started = httpx.post(f"{server.base}/api/v1/workflows/{r.json()['id']}/executions",
                             headers=auth, json={"input": {}})  # fmt: skip
        assert started.status_code == 202, started.text

    done = turbocat("usage", "--json", "-m", "workflow_executions", key=reader, base=server.base)
    assert done.returncode == 0, done.stderr + done.stdout
    body = json.loads(done.stdout)
    assert body["totals"] == {"workflow_executions": 2}
    assert [p["quantity"] for p in body["data"]] == [2]

    table = turbocat("usage", "--granularity", "month", key=reader, base=server.base)
    assert table.returncode == 0, table.stderr + table.stdout
    assert "workflow_executions" in table.stdout and "by month" in table.stdout

    refused = turbocat("usage", key=key("workflows:read"), base=server.base)
    assert refused.returncode != 0 and "usage:read" in refused.stderr + refused.stdout
    wrong = turbocat("usage", "-m", "nonsense", key=reader, base=server.base)
    assert wrong.returncode != 0 and "unknown metric" in wrong.stderr + wrong.stdout
