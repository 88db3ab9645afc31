"""``turbocat secrets``: init, status and rotation against real databases, with the API live."""

from __future__ import annotations

import json
import os
import stat
import uuid
from collections.abc import Callable

import anyio.to_thread
import httpx
import pytest
from typer.testing import CliRunner

from tests.integration.conftest import signup
from turbocat.bootstrap import AppContext
from turbocat.cli import secrets
from turbocat.config import Settings
from turbocat.db.engine import TenantContext
from turbocat.security import crypto
from turbocat.services import integrations

URL = "/api/v1/integrations"
Invoke = Callable[..., tuple[int, str]]


@pytest.fixture
def invoke(settings: Settings) -> Invoke:
    """Run ``turbocat secrets ARGS`` in-process against the test database."""
    runner = CliRunner()
    env = {
        "TURBOCAT_DATABASE_URL": settings.resolved_database_url,
        "TURBOCAT_HOME": str(settings.home),
    }

    def run(*args: str, extra_env: dict[str, str] | None = None) -> tuple[int, str]:
        result = runner.invoke(secrets.app, list(args), env=env | (extra_env or {}))
        return result.exit_code, result.output

    return run


async def cli(invoke: Invoke, *args: str, code: int = 0, **kwargs: dict[str, str]) -> str:
    exit_code, out = await anyio.to_thread.run_sync(lambda: invoke(*args, **kwargs))
    assert exit_code == code, out
    return out


async def resolve(ctx: AppContext, org_id: str, integration_id: str) -> dict[str, str]:
    org = uuid.UUID(org_id)
    async with ctx.db.transaction(TenantContext(organization_id=org)) as session:
        resolved = await integrations.resolve_credentials(
            session, org, uuid.UUID(integration_id), ctx.keyring.get(), ctx.clock()
        )
    return resolved.credentials


async def test_init_status_rotate_retire(
    invoke: Invoke, client: httpx.AsyncClient, app_context: AppContext, settings: Settings
) -> None:
    path = crypto.key_file_path(settings)
    out = await cli(invoke, "init")
    assert f"wrote {path}" in out.replace("\n", "")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = crypto.read_key_file(path)
    assert "already" in await cli(invoke, "init")

    made: dict[str, tuple[str, str]] = {}
    for email in ("c1@example.com", "c2@example.com"):
        owner = await signup(client, email, email)
        for i in range(2):
            secret = f"sk-{email}-{i}"
            r = await client.post(
                URL,
                headers=owner.headers,
                json={"name": f"n{i}", "provider": "openai", "credentials": {"api_key": secret}},
            )
            assert r.status_code == 201, r.text
            made[r.json()["id"]] = (owner.org_id, secret)

    out = await cli(invoke, "status")
    assert first.active_id in out and "active" in out and "4" in out
    assert not any(secret in out for _, secret in made.values())

    out = await cli(invoke, "rotate", "--batch-size", "3")
    second = crypto.read_key_file(path)
    assert second.active_id != first.active_id
    assert set(second.ids) == {first.active_id, second.active_id}  # old key kept
    assert "integrations.credentials_encrypted: re-encrypted 4" in out
    # the running API reloaded the file and reads every value
    for integration_id, (org_id, secret) in made.items():
        assert await resolve(app_context, org_id, integration_id) == {"api_key": secret}
    out = await cli(invoke, "status")
    assert second.active_id in out and first.active_id in out

    out = await cli(invoke, "rotate", "--no-new-key", "--retire-old")
    assert f"retired {first.active_id}" in out
    assert crypto.read_key_file(path).ids == (second.active_id,)
    assert first.active_id not in await cli(invoke, "status")
    for integration_id, (org_id, secret) in made.items():
        assert await resolve(app_context, org_id, integration_id) == {"api_key": secret}

    # one step on one machine: new key, re-encrypt, retire
    out = await cli(invoke, "rotate", "--retire-old")
    third = crypto.read_key_file(path)
    assert third.ids == (third.active_id,) and third.active_id != second.active_id
    for integration_id, (org_id, secret) in made.items():
        assert await resolve(app_context, org_id, integration_id) == {"api_key": secret}


async def test_unsafe_key_file_and_env_keys(invoke: Invoke, settings: Settings) -> None:
    await cli(invoke, "init")
    path = crypto.key_file_path(settings)
    os.chmod(path, 0o644)
    out = await cli(invoke, "status", code=1)
    assert "chmod 600" in out.replace("\n", "")
    os.chmod(path, 0o600)

    printed = await cli(invoke, "init", "--print")
    doc = json.loads(printed)
    assert set(doc) == {"active", "keys"} and doc["active"] in doc["keys"]
    env = {crypto.ENV_VAR: printed.strip()}
    out = await cli(invoke, "status", extra_env=env)
    assert doc["active"] in out and crypto.ENV_VAR in out
    out = await cli(invoke, "rotate", code=1, extra_env=env)
    assert "--no-new-key" in out.replace("\n", "")
    out = await cli(invoke, "rotate", "--no-new-key", "--retire-old", extra_env=env)
    assert json.loads(out.strip().splitlines()[-1])["active"] == doc["active"]
