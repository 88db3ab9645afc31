"""Webhooks through HTTP on both databases: the secret URL, signatures, limits, rotation."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Account, Clock, assert_problem, count_rows, signup
from tests.integration.test_engine import data_step, wait_done
from tests.integration.test_triggers_api import SIGNAL_WAIT, make_workflow
from turbocat.bootstrap import AppContext
from turbocat.config import Settings
from turbocat.db.engine import Database
from turbocat.db.models import AuditLogRow, ExecutionRow
from turbocat.domain import webhooks as hooks
from turbocat.security import crypto
from turbocat.services import key_rotation

ECHO: dict[str, Any] = {
    "inputs": {"type": "object", "properties": {"n": {"type": "integer"}}},
    "steps": [data_step("echo", mapping={"n": "{{ input.n }}"})],
    "outputs": {"n": "{{ steps.echo.output.n }}"},
}

pytestmark = pytest.mark.usefixtures("key_file")


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path / "home",
        database_url=database_url,
        triggers={"webhook_max_body_bytes": 2048, "webhook_secret_grace_seconds": 3600},
    )


async def make_hook(
    client: httpx.AsyncClient, who: Account, workflow_id: str, **body: Any
) -> dict[str, Any]:
    r = await client.post(
        f"/api/v1/workflows/{workflow_id}/webhooks", headers=who.headers, json=body
    )
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


def hook_path(created: dict[str, Any]) -> str:
    return "/hooks/" + str(created["token"])


def signed(secret: str, body: bytes, timestamp: int, **extra: str) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "x-turbocat-timestamp": str(timestamp),
        "x-turbocat-signature": hooks.signature_header(secret, timestamp, body),
        **extra,
    }


async def test_a_webhook_starts_the_workflow_with_the_request(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    owner = await signup(client, "hook@example.com")
    wf = await make_workflow(client, owner, ECHO)
    created = await make_hook(client, owner, wf, name="orders")
    assert created["url"] == f"http://testserver/hooks/{created['token']}"
    assert created["token"].startswith("whk_") and created["signing_secret"] is None
    r = await client.post(
        hook_path(created) + "?source=shop&tag=a&tag=b",
        json={"n": 7},
        headers={"X-Shop": "acme", "Authorization": "Bearer secret-of-the-sender"},
    )
    assert r.status_code == 202, r.text
    assert r.headers["x-turbocat-execution-id"] == r.json()["execution_id"]
    done = await wait_done(client, owner, r.json()["execution_id"])
    assert done["trigger_type"] == "webhook" and done["output_data"] == {"n": 7}
    async with operator_db.transaction() as session:
        row = await session.get(ExecutionRow, uuid.UUID(done["id"]))
        assert row is not None
        trigger = row.trigger_data
    assert trigger["method"] == "POST" and trigger["body"] == {"n": 7}
    assert trigger["query"] == {"source": "shop", "tag": ["a", "b"]}
    assert trigger["headers"]["x-shop"] == "acme" and "authorization" not in trigger["headers"]
    assert trigger["webhook_id"] == created["id"] and trigger["signed"] is False

    listed = (await client.get(f"/api/v1/workflows/{wf}/webhooks", headers=owner.headers)).json()
    assert [h["trigger_count"] for h in listed] == [1]
    assert "token" not in listed[0] and listed[0]["token_prefix"] == created["token"][:12]
    audit = (await client.get("/api/v1/audit-logs", headers=owner.headers)).json()["items"]
    assert "webhook.create" in {a["action"] for a in audit}


async def test_a_waiting_webhook_answers_with_the_output(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "waiting@example.com")
    wf = await make_workflow(
        client, owner, ECHO, trigger_config={"webhook": {"response_status": 201}}
    )
    created = await make_hook(client, owner, wf, wait_for_result=True, wait_timeout_ms=20_000)
    r = await client.post(hook_path(created), json={"n": 3})
    assert r.status_code == 201, r.text
    assert r.json() == {"n": 3} and r.headers["x-turbocat-execution-id"]

    slow = await make_workflow(client, owner, SIGNAL_WAIT)
    hook = await make_hook(client, owner, slow, wait_for_result=True, wait_timeout_ms=300)
    r = await client.post(hook_path(hook), json={})
    assert r.status_code == 202 and r.json()["status"] in ("running", "waiting")


async def test_signatures_valid_wrong_stale_and_replayed(
    client: httpx.AsyncClient, clock: Clock, operator_db: Database
) -> None:
    owner = await signup(client, "signed@example.com")
    wf = await make_workflow(client, owner, ECHO)
    created = await make_hook(client, owner, wf, signed=True)
    secret, path = created["signing_secret"], hook_path(created)
    assert secret.startswith("whsec_") and created["signed"] and created["signing_secrets"] == 1
    now = int(clock.now.timestamp())
    body = json.dumps({"n": 1}).encode()

    r = await client.post(path, content=body, headers={"content-type": "application/json"})
    assert_problem(r, 401, "invalid_signature")
    r = await client.post(path, content=body, headers=signed("whsec_wrong", body, now))
    assert_problem(r, 401, "invalid_signature")
    tampered = json.dumps({"n": 2}).encode()
    headers = signed(secret, body, now)
    r = await client.post(path, content=tampered, headers=headers)
    assert_problem(r, 401, "invalid_signature")
    r = await client.post(path, content=body, headers=signed(secret, body, now - 301))
    assert "300 s" in assert_problem(r, 401, "invalid_signature")["detail"]
    assert await count_rows(operator_db, ExecutionRow) == 0

    r = await client.post(path, content=body, headers=headers)
    assert r.status_code == 202, r.text
    replay = await client.post(path, content=body, headers=headers)
    assert "replay" in assert_problem(replay, 401, "invalid_signature")["detail"]
    clock.advance(seconds=301)
    r = await client.post(path, content=body, headers=headers)
    assert_problem(r, 401, "invalid_signature")  # too old now
    assert await count_rows(operator_db, ExecutionRow) == 1


async def test_a_delivery_id_dedupes_retries(
    client: httpx.AsyncClient, clock: Clock, operator_db: Database
) -> None:
    owner = await signup(client, "delivery@example.com")
    wf = await make_workflow(client, owner, ECHO)
    created = await make_hook(client, owner, wf, signed=True)
    secret, path = created["signing_secret"], hook_path(created)
    body = json.dumps({"n": 5}).encode()
    now = int(clock.now.timestamp())
    first = await client.post(
        path, content=body, headers=signed(secret, body, now, **{"x-turbocat-delivery": "d-1"})
    )
    retry = await client.post(
        path, content=body,
        headers=signed(secret, body, now + 30, **{"x-turbocat-delivery": "d-1"}),
    )  # fmt: skip
    assert first.status_code == retry.status_code == 202, retry.text
    assert first.json()["execution_id"] == retry.json()["execution_id"]
    assert retry.json()["duplicate"] is True
    other = json.dumps({"n": 6}).encode()
    r = await client.post(
        path, content=other, headers=signed(secret, other, now, **{"x-turbocat-delivery": "d-1"})
    )
    assert_problem(r, 409, "idempotency_key_reused")
    assert await count_rows(operator_db, ExecutionRow) == 1


async def test_unknown_disabled_and_rotated_tokens_get_the_same_404(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    owner = await signup(client, "404@example.com")
    wf = await make_workflow(client, owner, ECHO)
    created = await make_hook(client, owner, wf)
    base = f"/api/v1/workflows/{wf}/webhooks/{created['id']}"

    def same(r: httpx.Response) -> tuple[Any, ...]:
        body = assert_problem(r, 404, "not_found")
        return (body["title"], body["detail"], body["code"])

    unknown = same(await client.post("/hooks/whk_" + "A" * 43, json={}))
    assert same(await client.post("/hooks/nonsense", json={})) == unknown
    r = await client.patch(base, headers=owner.headers, json={"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False
    assert same(await client.post(hook_path(created), json={})) == unknown
    await client.patch(base, headers=owner.headers, json={"enabled": True})
    assert (await client.post(hook_path(created), json={})).status_code == 202

    r = await client.post(f"{base}/rotate", headers=owner.headers, json={"token": True})
    assert r.status_code == 200, r.text
    rotated = r.json()
    assert rotated["token"] != created["token"] and rotated["id"] == created["id"]
    assert same(await client.post(hook_path(created), json={})) == unknown
    assert (await client.post(hook_path(rotated), json={})).status_code == 202

    r = await client.patch(
        f"/api/v1/workflows/{wf}", headers=owner.headers, json={"status": "paused"}
    )
    assert r.status_code == 200, r.text
    assert same(await client.post(hook_path(rotated), json={})) == unknown
    r = await client.patch(
        f"/api/v1/workflows/{wf}", headers=owner.headers, json={"status": "active"}
    )
    assert r.status_code == 200, r.text
    r = await client.patch(
        f"/api/v1/workflows/{wf}", headers=owner.headers,
        json={"trigger_config": {"webhook": {"enabled": False}}},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    assert same(await client.post(hook_path(rotated), json={})) == unknown

    assert (await client.delete(base, headers=owner.headers)).status_code == 204
    assert (await client.get(base, headers=owner.headers)).status_code == 404
    assert await count_rows(operator_db, ExecutionRow) == 2
    actions = {
        a["action"]
        for a in (await client.get("/api/v1/audit-logs", headers=owner.headers)).json()["items"]
    }
    assert {"webhook.create", "webhook.update", "webhook.rotate", "webhook.delete"} <= actions
    assert await count_rows(operator_db, AuditLogRow) > 0


async def test_bad_bodies_are_refused_and_nothing_is_written(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    owner = await signup(client, "limits@example.com")
    wf = await make_workflow(client, owner, ECHO)
    created = await make_hook(client, owner, wf)
    path = hook_path(created)
    r = await client.post(path, json={"n": 1, "pad": "x" * 4000})
    assert_problem(r, 413, "payload_too_large")
    r = await client.post(path, content=b"<n>1</n>", headers={"content-type": "text/xml"})
    assert_problem(r, 415, "unsupported_media_type")
    r = await client.post(path, content=b"n=1", headers={"content-type": "text/plain"})
    assert_problem(r, 415, "unsupported_media_type")
    r = await client.post(path, content=b"{not json", headers={"content-type": "application/json"})
    assert_problem(r, 422, "validation_failed")
    r = await client.post(path, json={"n": "seven"})
    assert_problem(r, 422, "validation_failed")
    assert await count_rows(operator_db, ExecutionRow) == 0

    form = await make_hook(
        client, owner, wf, allowed_content_types=["application/x-www-form-urlencoded"]
    )
    r = await client.post(hook_path(form), data={"who": "ada"})
    assert r.status_code == 202, r.text
    r = await client.post(
        f"/api/v1/workflows/{wf}/webhooks", headers=owner.headers,
        json={"allowed_content_types": ["multipart/form-data"]},
    )  # fmt: skip
    assert_problem(r, 422, "validation_failed")


async def test_rotating_the_signing_secret_keeps_the_old_one_for_a_grace_period(
    client: httpx.AsyncClient, clock: Clock
) -> None:
    owner = await signup(client, "rotate@example.com")
    wf = await make_workflow(client, owner, ECHO)
    created = await make_hook(client, owner, wf, signed=True)
    old, path = created["signing_secret"], hook_path(created)
    r = await client.post(
        f"/api/v1/workflows/{wf}/webhooks/{created['id']}/rotate",
        headers=owner.headers, json={"token": False, "signing_secret": True},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    new = r.json()["signing_secret"]
    assert new != old and r.json()["token"] is None and r.json()["signing_secrets"] == 2

    def post(secret: str, n: int) -> Any:
        body = json.dumps({"n": n}).encode()
        return client.post(
            path, content=body, headers=signed(secret, body, int(clock.now.timestamp()))
        )

    assert (await post(old, 1)).status_code == 202
    assert (await post(new, 2)).status_code == 202
    clock.advance(seconds=3601)
    assert_problem(await post(old, 3), 401, "invalid_signature")
    assert (await post(new, 4)).status_code == 202


async def test_signing_secrets_survive_a_key_rotation(
    client: httpx.AsyncClient, app_context: AppContext, settings: Settings, clock: Clock
) -> None:
    owner = await signup(client, "keys@example.com")
    wf = await make_workflow(client, owner, ECHO)
    created = await make_hook(client, owner, wf, signed=True)
    new = app_context.keyring.get().with_new_active_key()
    crypto.write_key_file(crypto.key_file_path(settings), new)
    report = await key_rotation.rotate_credentials(app_context.db, new)
    assert report.reencrypted["webhooks.signing_secrets_encrypted"] == 1 and not report.failures
    crypto.write_key_file(crypto.key_file_path(settings), new.without_inactive_keys())
    body = b'{"n": 9}'
    r = await client.post(
        hook_path(created), content=body,
        headers=signed(created["signing_secret"], body, int(clock.now.timestamp())),
    )  # fmt: skip
    assert r.status_code == 202, r.text
