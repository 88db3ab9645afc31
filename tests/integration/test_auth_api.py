"""Sign-up, login, logout, sessions and the bad-input classes of the auth routes."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.conftest import (
    PASSWORD,
    Clock,
    assert_problem,
    bearer,
    count_rows,
    signup,
)
from turbocat.bootstrap import AppContext
from turbocat.db.engine import Database
from turbocat.db.models import MembershipRow, OrganizationRow, UserRow


async def test_signup_creates_user_org_and_owner_and_logs_in(client: httpx.AsyncClient) -> None:
    account = await signup(client, "Ada@Example.com", "Analytical Engines")
    assert account.body["organization"]["plan"] == "starter"
    assert account.body["organization"]["slug"] == "analytical-engines"
    assert account.body["token_type"] == "bearer"

    me = await client.get("/api/v1/users/me", headers=account.headers)
    assert me.status_code == 200, me.text
    body = me.json()
    assert body["email"] == "Ada@example.com"  # the domain is normalized
    assert [(o["id"], o["role"]) for o in body["organizations"]] == [(account.org_id, "owner")]
    assert "password_hash" not in body


async def test_duplicate_email_is_refused_case_insensitively_without_partial_write(
    client: httpx.AsyncClient, operator_db: Database, app_context: AppContext
) -> None:
    await signup(client, "grace@example.com")
    orgs_before = await count_rows(operator_db, OrganizationRow)
    r = await client.post(
        "/api/v1/auth/signup",
        json={"email": "GRACE@example.COM", "password": PASSWORD, "organization_name": "Other"},
    )
    assert_problem(r, 409, "conflict")
    assert await count_rows(operator_db, OrganizationRow) == orgs_before
    assert await count_rows(operator_db, UserRow) == 1


async def test_same_org_name_gets_distinct_slugs(client: httpx.AsyncClient) -> None:
    a = await signup(client, "a@example.com", "Acme")
    b = await signup(client, "b@example.com", "Acme")
    slug_a = a.body["organization"]["slug"]
    slug_b = b.body["organization"]["slug"]
    assert slug_a == "acme"
    assert slug_b.startswith("acme-") and slug_b != slug_a


async def test_signup_can_be_disabled(
    client: httpx.AsyncClient, operator_db: Database, app_context: AppContext
) -> None:
    app_context.settings.auth.signup_enabled = False
    r = await client.post(
        "/api/v1/auth/signup",
        json={"email": "x@example.com", "password": PASSWORD, "organization_name": "X"},
    )
    assert_problem(r, 403, "disabled")
    assert await count_rows(operator_db, UserRow) == 0


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"email": "not-an-email", "password": PASSWORD, "organization_name": "X"}, "body.email"),
        (
            {"email": "x@example.com", "password": "short", "organization_name": "X"},
            "body.password",
        ),
        (
            {"email": "x@example.com", "password": PASSWORD, "organization_name": ""},
            "body.organization_name",
        ),
        (
            {"email": "x@example.com", "password": 12345678901, "organization_name": "X"},
            "body.password",
        ),
        ({"email": "x@example.com", "password": PASSWORD}, "body.organization_name"),
        (
            {
                "email": "x@example.com",
                "password": PASSWORD,
                "organization_name": "X",
                "plan": "enterprise",
            },
            "body.plan",
        ),
    ],
)
async def test_bad_signup_input_names_the_field_and_writes_nothing(
    client: httpx.AsyncClient,
    operator_db: Database,
    app_context: AppContext,
    payload: dict[str, object],
    field: str,
) -> None:
    r = await client.post("/api/v1/auth/signup", json=payload)
    body = assert_problem(r, 422, "validation_failed")
    assert field in [e["field"] for e in body["errors"]], body
    assert await count_rows(operator_db, UserRow) == 0
    assert await count_rows(operator_db, OrganizationRow) == 0


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/auth/signup", content=b'{"email": ', headers={"content-type": "application/json"}
    )
    assert_problem(r, 400, "malformed_json")


async def test_oversized_body_is_413(
    client: httpx.AsyncClient, operator_db: Database, app_context: AppContext
) -> None:
    big = "x" * (app_context.settings.api.max_body_bytes + 1)
    r = await client.post(
        "/api/v1/auth/signup",
        json={"email": "x@example.com", "password": PASSWORD, "organization_name": big},
    )
    assert_problem(r, 413, "payload_too_large")

    async def chunks():  # no Content-Length: counted while streaming
        for _ in range(3):
            yield big[: app_context.settings.api.max_body_bytes // 2].encode()

    r = await client.post(
        "/api/v1/auth/signup", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_problem(r, 413, "payload_too_large")
    assert await count_rows(operator_db, UserRow) == 0


async def test_login_logout_and_wrong_password(client: httpx.AsyncClient) -> None:
    account = await signup(client, "lin@example.com")
    wrong = await client.post(
        "/api/v1/auth/login", json={"email": "lin@example.com", "password": "wrong password!"}
    )
    body = assert_problem(wrong, 401, "unauthenticated")
    assert wrong.headers["www-authenticate"].startswith("Bearer")
    assert "wrong email or password" in body["detail"]

    unknown = await client.post(
        "/api/v1/auth/login", json={"email": "nobody@example.com", "password": PASSWORD}
    )
    assert unknown.json()["detail"] == body["detail"]  # no hint whether the email exists

    ok = await client.post(
        "/api/v1/auth/login", json={"email": "LIN@example.com", "password": PASSWORD}
    )
    assert ok.status_code == 200, ok.text
    token = ok.json()["access_token"]
    assert (await client.get("/api/v1/users/me", headers=bearer(token))).status_code == 200

    assert (await client.post("/api/v1/auth/logout", headers=bearer(token))).status_code == 204
    after = await client.get("/api/v1/users/me", headers=bearer(token))
    assert_problem(after, 401)
    assert "revoked" in after.json()["detail"]
    # the signup token is a separate session and still works
    assert (await client.get("/api/v1/users/me", headers=account.headers)).status_code == 200


async def test_repeated_failures_are_throttled_with_retry_after(
    client: httpx.AsyncClient, app_context: AppContext, clock: Clock
) -> None:
    await signup(client, "eve@example.com")
    limit = app_context.settings.auth.login_max_failures
    for _ in range(limit):
        r = await client.post(
            "/api/v1/auth/login", json={"email": "eve@example.com", "password": "nope nope nope"}
        )
        assert r.status_code == 401
    r = await client.post(
        "/api/v1/auth/login", json={"email": "eve@example.com", "password": PASSWORD}
    )
    assert_problem(r, 429, "rate_limited")
    assert int(r.headers["retry-after"]) > 0
    clock.advance(seconds=app_context.settings.auth.login_failure_window_seconds + 1)
    r = await client.post(
        "/api/v1/auth/login", json={"email": "eve@example.com", "password": PASSWORD}
    )
    assert r.status_code == 200, r.text


async def test_tokens_expire(
    client: httpx.AsyncClient, app_context: AppContext, clock: Clock
) -> None:
    account = await signup(client, "tim@example.com")
    clock.advance(seconds=app_context.settings.auth.session_ttl_seconds + 1)
    r = await client.get("/api/v1/users/me", headers=account.headers)
    assert_problem(r, 401)
    assert "expired" in r.json()["detail"]


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Basic abc",
        "Bearer",
        "Bearer not-a-token",
        "Bearer tc_" + "A" * 38,
        "Bearer tcs_" + "A" * 43,
    ],
)
async def test_bad_credentials_are_401(client: httpx.AsyncClient, header: str) -> None:
    headers = {"Authorization": header} if header else {}
    assert_problem(await client.get("/api/v1/users/me", headers=headers), 401, "unauthenticated")


async def test_inactive_and_deleted_users_cannot_log_in(
    client: httpx.AsyncClient, app_context: AppContext
) -> None:
    account = await signup(client, "ina@example.com", "Solo")
    async with app_context.db.transaction() as session:
        user = await session.get(UserRow, __import__("uuid").UUID(account.user_id))
        assert user is not None
        user.is_active = False
    r = await client.post(
        "/api/v1/auth/login", json={"email": "ina@example.com", "password": PASSWORD}
    )
    assert_problem(r, 401)
    assert_problem(await client.get("/api/v1/users/me", headers=account.headers), 401)

    other = await signup(client, "del@example.com", "Solo 2")
    assert (await client.delete("/api/v1/users/me", headers=other.headers)).status_code == 204
    r = await client.post(
        "/api/v1/auth/login", json={"email": "del@example.com", "password": PASSWORD}
    )
    assert_problem(r, 401)
    assert_problem(await client.get("/api/v1/users/me", headers=other.headers), 401)


async def test_profile_update_and_password_change(client: httpx.AsyncClient) -> None:
    account = await signup(client, "pat@example.com")
    r = await client.patch("/api/v1/users/me", headers=account.headers, json={"full_name": "Pat Q"})
    assert r.status_code == 200 and r.json()["full_name"] == "Pat Q"
    r = await client.patch(
        "/api/v1/users/me", headers=account.headers, json={"email": "new@example.com"}
    )
    assert_problem(r, 422)

    r = await client.post(
        "/api/v1/users/me/password",
        headers=account.headers,
        json={"current_password": "wrong wrong", "new_password": "another long password"},
    )
    assert_problem(r, 401)
    r = await client.post(
        "/api/v1/users/me/password",
        headers=account.headers,
        json={"current_password": PASSWORD, "new_password": "another long password"},
    )
    assert r.status_code == 204
    r = await client.post(
        "/api/v1/auth/login", json={"email": "pat@example.com", "password": PASSWORD}
    )
    assert_problem(r, 401)
    r = await client.post(
        "/api/v1/auth/login", json={"email": "pat@example.com", "password": "another long password"}
    )
    assert r.status_code == 200


async def test_membership_rows_match_signups(
    client: httpx.AsyncClient, operator_db: Database, app_context: AppContext
) -> None:
    await signup(client, "m1@example.com", "One")
    await signup(client, "m2@example.com", "Two")
    assert await count_rows(operator_db, MembershipRow) == 2
