"""API keys: shown once, hashed at rest, scopes, expiry, revocation, rate limits, usage."""

from __future__ import annotations

import datetime as dt
import hashlib

import httpx
from sqlalchemy import select

from tests.integration.conftest import Clock, assert_problem, bearer, signup
from turbocat.bootstrap import AppContext
from turbocat.db.engine import Database
from turbocat.db.models import ApiKeyRow


async def make_key(client: httpx.AsyncClient, headers: dict[str, str], **body: object) -> dict:
    payload = {"name": "ci", "scopes": ["*"]} | body
    r = await client.post("/api/v1/api-keys", headers=headers, json=payload)
    assert r.status_code == 201, r.text
    return r.json()


async def test_key_is_shown_once_and_stored_as_sha256(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    owner = await signup(client, "k@example.com")
    created = await make_key(client, owner.headers, name="deploy bot")
    secret = created["secret"]
    assert secret.startswith("tc_") and len(secret) >= 40
    assert created["key_prefix"] == secret[:12]

    listed = await client.get("/api/v1/api-keys", headers=owner.headers)
    assert listed.status_code == 200
    assert "secret" not in listed.text and secret not in listed.text
    got = await client.get(f"/api/v1/api-keys/{created['id']}", headers=owner.headers)
    assert "secret" not in got.json()

    async with operator_db.transaction() as session:
        row = (await session.execute(select(ApiKeyRow))).scalar_one()
    assert row.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in repr(row.__dict__)


async def test_key_authenticates_like_a_token(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "k2@example.com")
    secret = (await make_key(client, owner.headers))["secret"]
    me = await client.get("/api/v1/users/me", headers=bearer(secret))
    assert me.status_code == 200 and me.json()["email"] == "k2@example.com"
    keys = await client.get("/api/v1/api-keys", headers=bearer(secret))
    assert keys.status_code == 200 and len(keys.json()["items"]) == 1


async def test_missing_scope_is_403_naming_the_scope(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "s@example.com")
    secret = (await make_key(client, owner.headers, scopes=["api_keys:read"]))["secret"]
    assert (await client.get("/api/v1/api-keys", headers=bearer(secret))).status_code == 200
    r = await client.post(
        "/api/v1/api-keys", headers=bearer(secret), json={"name": "x", "scopes": ["*"]}
    )
    body = assert_problem(r, 403, "missing_scope")
    assert body["missing_scope"] == "api_keys:write"
    r = await client.get("/api/v1/audit-logs", headers=bearer(secret))
    assert assert_problem(r, 403, "missing_scope")["missing_scope"] == "audit_logs:read"


async def test_a_key_cannot_mint_broader_keys(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "b@example.com")
    secret = (await make_key(client, owner.headers, scopes=["api_keys:write"]))["secret"]
    ok = await client.post(
        "/api/v1/api-keys", headers=bearer(secret), json={"name": "n", "scopes": ["api_keys:read"]}
    )
    assert ok.status_code == 201
    r = await client.post(
        "/api/v1/api-keys", headers=bearer(secret), json={"name": "n", "scopes": ["*"]}
    )
    assert_problem(r, 403, "forbidden")


async def test_bad_key_requests(
    client: httpx.AsyncClient, operator_db: Database, clock: Clock
) -> None:
    owner = await signup(client, "bad@example.com")
    r = await client.post(
        "/api/v1/api-keys", headers=owner.headers, json={"name": "x", "scopes": ["root"]}
    )
    body = assert_problem(r, 422, "validation_failed")
    assert body["errors"][0]["field"] == "body.scopes"
    r = await client.post(
        "/api/v1/api-keys", headers=owner.headers, json={"name": "x", "scopes": []}
    )
    assert_problem(r, 422)
    past = (clock.now - dt.timedelta(days=1)).isoformat()
    r = await client.post(
        "/api/v1/api-keys",
        headers=owner.headers,
        json={"name": "x", "scopes": ["*"], "expires_at": past},
    )
    assert assert_problem(r, 422)["errors"][0]["field"] == "body.expires_at"
    r = await client.post(
        "/api/v1/api-keys",
        headers=owner.headers,
        json={"name": "x", "scopes": ["*"], "expires_at": "2030-01-01T00:00:00"},
    )
    assert_problem(r, 422)  # naive datetime
    r = await client.get("/api/v1/api-keys/not-a-uuid", headers=owner.headers)
    assert assert_problem(r, 422)["errors"][0]["field"] == "path.key_id"
    async with operator_db.transaction() as session:
        assert (await session.execute(select(ApiKeyRow))).first() is None


async def test_revocation_is_immediate(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "r@example.com")
    created = await make_key(client, owner.headers)
    assert (
        await client.get("/api/v1/users/me", headers=bearer(created["secret"]))
    ).status_code == 200
    assert (
        await client.delete(f"/api/v1/api-keys/{created['id']}", headers=owner.headers)
    ).status_code == 204
    r = await client.get("/api/v1/users/me", headers=bearer(created["secret"]))
    assert_problem(r, 401)
    assert "revoked" in r.json()["detail"]
    assert_problem(
        await client.delete(f"/api/v1/api-keys/{created['id']}", headers=owner.headers), 404
    )
    assert (await client.get("/api/v1/api-keys", headers=owner.headers)).json()["items"] == []


async def test_keys_expire(client: httpx.AsyncClient, clock: Clock) -> None:
    owner = await signup(client, "e@example.com")
    expires = (clock.now + dt.timedelta(hours=1)).isoformat()
    secret = (await make_key(client, owner.headers, expires_at=expires))["secret"]
    assert (await client.get("/api/v1/users/me", headers=bearer(secret))).status_code == 200
    clock.advance(hours=2)
    r = await client.get("/api/v1/users/me", headers=bearer(secret))
    assert_problem(r, 401)
    assert "expired" in r.json()["detail"]


async def test_rate_limit_answers_429_with_retry_after(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "rl@example.com")
    secret = (await make_key(client, owner.headers, rate_limit_per_minute=3))["secret"]
    statuses = [
        (await client.get("/api/v1/api-keys", headers=bearer(secret))).status_code for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]
    r = await client.get("/api/v1/api-keys", headers=bearer(secret))
    assert_problem(r, 429, "rate_limited")
    assert 1 <= int(r.headers["retry-after"]) <= 60
    # a login token of the same user is not limited by the key's budget
    assert (await client.get("/api/v1/api-keys", headers=owner.headers)).status_code == 200


async def test_usage_is_counted_in_batches(
    client: httpx.AsyncClient, app_context: AppContext, operator_db: Database
) -> None:
    owner = await signup(client, "u@example.com")
    created = await make_key(client, owner.headers)
    for _ in range(5):
        assert (
            await client.get("/api/v1/api-keys", headers=bearer(created["secret"]))
        ).status_code == 200
    async with operator_db.transaction() as session:
        row = await session.get(ApiKeyRow, __import__("uuid").UUID(created["id"]))
        assert row is not None and row.usage_count == 0  # nothing written per request
    assert await app_context.key_usage.flush(app_context.db) == 1
    async with operator_db.transaction() as session:
        row = await session.get(ApiKeyRow, __import__("uuid").UUID(created["id"]))
        assert row is not None and row.usage_count == 5 and row.last_used_at is not None


async def test_pagination_with_cursor(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "p@example.com")
    ids = [(await make_key(client, owner.headers, name=f"k{i}"))["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/api/v1/api-keys", headers=owner.headers, params=params)).json()
        seen += [k["id"] for k in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    r = await client.get("/api/v1/api-keys", headers=owner.headers, params={"cursor": "garbage!"})
    assert assert_problem(r, 422)["errors"][0]["field"] == "query.cursor"
    r = await client.get("/api/v1/api-keys", headers=owner.headers, params={"limit": 1000})
    assert assert_problem(r, 422)["errors"][0]["field"] == "query.limit"
