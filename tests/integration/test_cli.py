"""CLI verbs against real databases, without a server."""

from __future__ import annotations

import re
from collections.abc import Callable

import anyio.to_thread
import httpx
import pytest
from typer.testing import CliRunner

from tests.integration.conftest import bearer
from turbocat.cli.main import app
from turbocat.config import Settings

Invoke = Callable[..., tuple[int, str]]


@pytest.fixture
def invoke(settings: Settings) -> Invoke:
    """Run ``turbocat ARGS`` in-process against the test database: (exit code, output)."""
    runner = CliRunner()
    env = {
        "TURBOCAT_DATABASE_URL": settings.resolved_database_url,
        "TURBOCAT_HOME": str(settings.home),
    }

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, list(args), env=env)
        return result.exit_code, result.output

    return run


def ok(invoke: Invoke, *args: str) -> str:
    code, out = invoke(*args)
    assert code == 0, out
    return out


def test_db_current_reports_up_to_date(invoke: Invoke) -> None:
    assert "up to date" in ok(invoke, "db", "current")


async def test_admin_verbs_create_user_org_and_a_working_key(
    invoke: Invoke, client: httpx.AsyncClient
) -> None:
    async def cli(*args: str) -> str:  # the CLI runs its own event loop: keep it off this one
        return await anyio.to_thread.run_sync(lambda: ok(invoke, *args))

    out = await cli(
        "users", "create", "--email", "ops@example.com", "--password", "a long password",
        "--organization", "Ops Team",
    )  # fmt: skip
    assert "created user ops@example.com" in out and "ops-team" in out
    out = await cli(
        "keys", "create", "--user", "ops@example.com", "--org", "ops-team", "--name", "cron",
        "--scope", "api_keys:read",
    )  # fmt: skip
    found = re.search(r"(tc_[0-9A-Za-z]+)", out)
    assert found is not None
    key = bearer(found.group(1))
    r = await client.get("/api/v1/api-keys", headers=key)
    assert r.status_code == 200 and r.json()["items"][0]["name"] == "cron"

    assert "ops@example.com" in await cli("users", "list")
    assert "ops-team" in await cli("orgs", "list")
    assert "cron" in await cli("keys", "list", "--org", "ops-team")
    await cli("orgs", "set-plan", "ops-team", "professional")
    assert "professional" in await cli("orgs", "list")

    await cli("users", "deactivate", "ops@example.com")
    assert (await client.get("/api/v1/api-keys", headers=key)).status_code == 401
    await cli("users", "activate", "ops@example.com")
    assert (await client.get("/api/v1/api-keys", headers=key)).status_code == 200

    login = {"email": "ops@example.com", "password": "a long password"}
    await cli("users", "delete", "ops@example.com")
    assert (await client.post("/api/v1/auth/login", json=login)).status_code == 401
    assert "ops@example.com" not in await cli("users", "list")
    assert "ops@example.com" in await cli("users", "list", "--deleted")
    await cli("users", "restore", "ops@example.com")
    assert (await client.post("/api/v1/auth/login", json=login)).status_code == 200

    await cli("users", "create", "--email", "two@example.com", "--password", "another password")
    await cli("orgs", "add-member", "ops-team", "two@example.com", "--role", "viewer")
    await cli(
        "keys",
        "revoke",
        (await client.get("/api/v1/api-keys", headers=key)).json()["items"][0]["id"],
    )
    assert (await client.get("/api/v1/api-keys", headers=key)).status_code == 401


def test_cli_errors_are_messages_not_tracebacks(invoke: Invoke) -> None:
    code, out = invoke(
        "keys", "create", "--user", "nobody@example.com", "--org", "nowhere", "--name", "x"
    )
    assert code == 1 and "not found" in out and "Traceback" not in out
    code, out = invoke("keys", "revoke", "not-a-uuid")
    assert code == 1 and "not a key id" in out
    code, out = invoke("users", "create", "--email", "weak@example.com", "--password", "short")
    assert code == 1 and "at least" in out
    code, out = invoke("orgs", "set-plan", "x", "platinum")
    assert code == 2 and "platinum" in out
