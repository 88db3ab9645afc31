"""Integrations over HTTP on both databases: sealed credentials, plans, roles, tenancy, expiry,
and key rotation."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from tests.integration.conftest import Account, Clock, assert_problem, bearer, signup
from turbocat.bootstrap import AppContext
from turbocat.config import Settings
from turbocat.db.engine import Database, TenantContext
from turbocat.db.models import AuditLogRow, IntegrationRow, OrganizationRow
from turbocat.domain.enums import Plan
from turbocat.domain.integrations import IntegrationUnavailable
from turbocat.security import crypto
from turbocat.security.crypto import Keyring
from turbocat.services import integrations, key_rotation

URL = "/api/v1/integrations"


pytestmark = pytest.mark.usefixtures("key_file")


async def create(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> dict:
    payload = {"name": "openai", "provider": "openai", "credentials": {"api_key": "sk-1"}} | body
    r = await client.post(URL, headers=headers, json=payload)
    assert r.status_code == 201, r.text
    return r.json()


async def set_plan(db: Database, org_id: str, plan: Plan) -> None:
    async with db.transaction() as session:
        await session.execute(
            update(OrganizationRow).where(OrganizationRow.id == uuid.UUID(org_id)).values(plan=plan)
        )


async def resolve(ctx: AppContext, org_id: str, integration_id: str) -> dict[str, str]:
    org = uuid.UUID(org_id)
    async with ctx.db.transaction(TenantContext(organization_id=org)) as session:
        resolved = await integrations.resolve_credentials(
            session, org, uuid.UUID(integration_id), ctx.keyring.get(), ctx.clock()
        )
    assert secret_free(repr(resolved), resolved.credentials.values())
    return resolved.credentials


def secret_free(text: str, secrets: Any) -> bool:
    return not [s for s in secrets if s in text]


async def add_member(client: httpx.AsyncClient, owner: Account, email: str, role: str) -> Account:
    member = await signup(client, email, f"{email}'s own")
    r = await client.post(
        f"/api/v1/organizations/{owner.org_id}/members",
        headers=owner.headers,
        json={"email": email, "role": role},
    )
    assert r.status_code == 201, r.text
    return Account(email, member.token, member.user_id, owner.org_id)


KINDS: list[dict[str, Any]] = [
    {
        "name": "openai",
        "provider": "openai",
        "credentials": {"api_key": "sk-openai-SECRET-0001"},
        "settings": {"base_url": "https://llm.example.com/v1/", "organization": "org-1"},
    },
    {
        "name": "api with header",
        "provider": "http",
        "auth_kind": "api_key",
        "credentials": {"api_key": "hdr-SECRET-0002"},
        "settings": {"base_url": "https://api.example.com", "header_name": "X-Token"},
    },
    {
        "name": "bearer",
        "provider": "http",
        "auth_kind": "bearer",
        "credentials": {"token": "bearer-SECRET-0003"},
    },
    {
        "name": "basic",
        "provider": "http",
        "auth_kind": "basic",
        "credentials": {"username": "alice", "password": "basic-SECRET-0004"},
    },
    {
        "name": "slack",
        "provider": "slack",
        "credentials": {
            "access_token": "xoxb-SECRET-0005",
            "refresh_token": "xoxe-SECRET-0006",
            "expires_at": "2099-01-01T00:00:00Z",
            "scope": "chat:write",
        },
        "settings": {"default_channel": "#ops"},
    },
]
SECRETS = [
    "sk-openai-SECRET-0001",
    "hdr-SECRET-0002",
    "bearer-SECRET-0003",
    "basic-SECRET-0004",
    "xoxb-SECRET-0005",
    "xoxe-SECRET-0006",
]


async def test_each_auth_kind_and_secrets_never_leave(
    client: httpx.AsyncClient,
    app_context: AppContext,
    operator_db: Database,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    owner = await signup(client, "i@example.com")
    await set_plan(operator_db, owner.org_id, Plan.PROFESSIONAL)
    texts: list[str] = []
    created = []
    for body in KINDS:
        r = await client.post(URL, headers=owner.headers, json=body)
        assert r.status_code == 201, r.text
        texts.append(r.text)
        created.append(r.json())
    by_name = {c["name"]: c for c in created}
    assert [by_name[b["name"]]["auth_kind"] for b in KINDS] == [
        "api_key",
        "api_key",
        "bearer",
        "basic",
        "oauth",
    ]
    for item in created:
        assert item["credentials_set"] is True and "credentials" not in item
        assert item["status"] == "active"
    assert by_name["openai"]["settings"] == {
        "base_url": "https://llm.example.com/v1",
        "organization": "org-1",
    }
    assert by_name["slack"]["expires_at"].startswith("2099-01-01")

    listed = await client.get(URL, headers=owner.headers)
    assert [i["name"] for i in listed.json()["items"]] == [b["name"] for b in reversed(KINDS)]
    texts.append(listed.text)
    for item in created:
        texts.append((await client.get(f"{URL}/{item['id']}", headers=owner.headers)).text)
    # a rejected update that carries a secret does not echo it either
    r = await client.patch(
        f"{URL}/{by_name['basic']['id']}",
        headers=owner.headers,
        json={"credentials": {"username": "alice", "password": 5, "pin": "basic-SECRET-0004"}},
    )
    texts.append(assert_problem(r, 422).__repr__())
    r = await client.patch(
        f"{URL}/{by_name['bearer']['id']}",
        headers=owner.headers,
        json={"credentials": {"token": "bearer-SECRET-0003"}},
    )
    assert r.status_code == 200
    texts.append(r.text)
    audit = await client.get("/api/v1/audit-logs", headers=owner.headers, params={"limit": 200})
    actions = [e["action"] for e in audit.json()["items"]]
    assert actions.count("integration.create") == 5 and "integration.update" in actions
    texts.append(audit.text)
    async with operator_db.transaction() as session:
        rows = (await session.execute(select(IntegrationRow))).scalars().all()
        audit_rows = (await session.execute(select(AuditLogRow))).scalars().all()
    for row in rows:
        assert row.credentials_encrypted is not None
        assert row.credentials_key_id == app_context.keyring.get().active_id
        texts.append(repr(row.credentials_encrypted) + repr(row.settings))
    texts += [repr(a.changes) + repr(a.metadata_) for a in audit_rows]
    texts.append(caplog.text)
    for text in texts:
        assert secret_free(text, SECRETS), text

    # ... yet they decrypt to exactly what was given
    assert await resolve(app_context, owner.org_id, by_name["basic"]["id"]) == {
        "username": "alice",
        "password": "basic-SECRET-0004",
    }
    slack = await resolve(app_context, owner.org_id, by_name["slack"]["id"])
    assert slack["access_token"] == "xoxb-SECRET-0005"
    assert slack["expires_at"] == "2099-01-01T00:00:00+00:00"


async def test_bad_input_is_422_with_field_paths_and_nothing_written(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    owner = await signup(client, "bad@example.com")

    async def field_of(body: dict[str, Any]) -> set[str]:
        r = await client.post(URL, headers=owner.headers, json=body)
        return {e["field"] for e in assert_problem(r, 422, "validation_failed")["errors"]}

    base = {"name": "x", "provider": "openai", "credentials": {"api_key": "k"}}
    assert await field_of(base | {"provider": "myspace"}) == {"body.provider"}
    assert await field_of(base | {"credentials": {}}) == {"body.credentials.api_key"}
    assert await field_of(base | {"credentials": {"api_key": "k", "x": "y"}}) == {
        "body.credentials.x"
    }
    assert await field_of(base | {"auth_kind": "basic"}) == {"body.auth_kind"}
    assert await field_of(base | {"auth_kind": "magic"}) == {"body.auth_kind"}
    assert await field_of(
        base | {"credentials": {"api_key": ""}, "settings": {"base_url": "ftp://x", "y": 1}}
    ) == {"body.credentials.api_key", "body.settings.base_url", "body.settings.y"}
    assert await field_of(base | {"surprise": 1}) == {"body.surprise"}
    assert await field_of(base | {"name": "  "}) == {"body.name"}
    oauth = {"name": "s", "provider": "slack", "credentials": {"access_token": "t"}}
    assert await field_of(oauth | {"credentials": {"access_token": "t", "expires_at": "soon"}}) == {
        "body.credentials.expires_at"
    }
    assert await field_of(
        {"name": "sf", "provider": "salesforce", "credentials": {"access_token": "t"}}
    ) == {"body.settings.instance_url"}
    r = await client.get(f"{URL}/not-a-uuid", headers=owner.headers)
    assert assert_problem(r, 422)["errors"][0]["field"] == "path.integration_id"
    async with operator_db.transaction() as session:
        assert (await session.execute(select(IntegrationRow))).first() is None
        assert (
            await session.execute(
                select(AuditLogRow).where(AuditLogRow.resource_type == "integration")
            )
        ).first() is None


async def test_starter_plan_allows_three(client: httpx.AsyncClient, operator_db: Database) -> None:
    owner = await signup(client, "plan@example.com")
    for i in range(3):
        await create(client, owner.headers, name=f"i{i}")
    r = await client.post(
        URL,
        headers=owner.headers,
        json={"name": "i3", "provider": "stripe", "credentials": {"api_key": "sk_4"}},
    )
    body = assert_problem(r, 403, "quota_exceeded")
    assert body["limit"] == "integrations" and body["plan"] == "starter"
    assert "3" in body["detail"]
    async with operator_db.transaction() as session:
        count = select(func.count()).select_from(IntegrationRow)
        assert (await session.execute(count)).scalar_one() == 3
        creates = select(func.count()).where(AuditLogRow.action == "integration.create")
        assert (await session.execute(creates)).scalar_one() == 3
    # deleting one frees a slot; a duplicate name is a conflict
    first = (await client.get(URL, headers=owner.headers)).json()["items"][-1]
    assert (await client.delete(f"{URL}/{first['id']}", headers=owner.headers)).status_code == 204
    assert_problem(
        await client.post(
            URL, headers=owner.headers, json={"name": "i1", "provider": "openai",
                                              "credentials": {"api_key": "k"}}
        ),
        409,
    )  # fmt: skip
    await create(client, owner.headers, name="i3")


async def test_roles_and_scopes(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "own@example.com")
    item = await create(client, owner.headers)
    viewer = await add_member(client, owner, "view@example.com", "viewer")
    member = await add_member(client, owner, "mem@example.com", "member")
    admin = await add_member(client, owner, "adm@example.com", "admin")
    body = {"name": "n", "provider": "openai", "credentials": {"api_key": "k"}}
    for who in (viewer, member):
        headers = bearer(who.token, owner.org_id)
        assert (await client.get(URL, headers=headers)).status_code == 200
        assert (await client.get(f"{URL}/{item['id']}", headers=headers)).status_code == 200
        assert (await client.get(f"{URL}/providers", headers=headers)).status_code == 200
        assert_problem(await client.post(URL, headers=headers, json=body), 403, "forbidden")
        assert_problem(
            await client.patch(f"{URL}/{item['id']}", headers=headers, json={"name": "z"}), 403
        )
        assert_problem(await client.delete(f"{URL}/{item['id']}", headers=headers), 403)
    assert (
        await client.post(URL, headers=bearer(admin.token, owner.org_id), json=body)
    ).status_code == 201
    r = await client.post(
        "/api/v1/api-keys",
        headers=owner.headers,
        json={"name": "ro", "scopes": ["integrations:read"]},
    )
    key = bearer(r.json()["secret"])
    assert (await client.get(URL, headers=key)).status_code == 200
    r = await client.post(URL, headers=key, json=body | {"name": "other"})
    assert assert_problem(r, 403, "missing_scope")["missing_scope"] == "integrations:write"


async def test_other_tenants_see_nothing(client: httpx.AsyncClient, operator_db: Database) -> None:
    owner = await signup(client, "a@example.com", "A")
    other = await signup(client, "b@example.com", "B")
    item = await create(client, owner.headers)
    url = f"{URL}/{item['id']}"
    assert (await client.get(URL, headers=other.headers)).json()["items"] == []
    assert_problem(await client.get(url, headers=other.headers), 404)
    assert_problem(await client.patch(url, headers=other.headers, json={"name": "x"}), 404)
    assert_problem(await client.delete(url, headers=other.headers), 404)
    # naming the other organization does not help either
    r = await client.get(url, headers=bearer(other.token, owner.org_id))
    assert r.status_code in (403, 404) and "sk-1" not in r.text
    got = await client.get(url, headers=owner.headers)
    assert got.status_code == 200 and got.json()["name"] == "openai"


async def test_update_disable_enable_delete(
    client: httpx.AsyncClient, app_context: AppContext, operator_db: Database
) -> None:
    owner = await signup(client, "u@example.com")
    other = await create(client, owner.headers, name="taken")
    item = await create(client, owner.headers, settings={"organization": "org-a"})
    url = f"{URL}/{item['id']}"
    r = await client.patch(url, headers=owner.headers, json={"name": "taken"})
    assert_problem(r, 409)
    r = await client.patch(
        url, headers=owner.headers, json={"name": "renamed", "settings": {"project": "p"}}
    )
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "renamed" and r.json()["settings"] == {"project": "p"}
    assert r.json()["auth_kind"] == "api_key"

    r = await client.patch(url, headers=owner.headers, json={"status": "disabled"})
    assert r.json()["status"] == "disabled"
    with pytest.raises(IntegrationUnavailable, match="disabled"):
        await resolve(app_context, owner.org_id, item["id"])
    r = await client.patch(url, headers=owner.headers, json={"status": "expired"})
    assert assert_problem(r, 422)["errors"][0]["field"] == "body.status"
    r = await client.patch(url, headers=owner.headers, json={"status": "active"})
    assert r.json()["status"] == "active"

    r = await client.patch(url, headers=owner.headers, json={"credentials": {"api_key": "sk-2"}})
    assert r.status_code == 200
    assert await resolve(app_context, owner.org_id, item["id"]) == {"api_key": "sk-2"}
    got = (await client.get(url, headers=owner.headers)).json()
    assert got["last_used_at"] is not None

    assert (await client.delete(url, headers=owner.headers)).status_code == 204
    assert_problem(await client.get(url, headers=owner.headers), 404)
    assert_problem(await client.delete(url, headers=owner.headers), 404)
    async with operator_db.transaction() as session:
        ids = (await session.execute(select(IntegrationRow.id))).scalars().all()
        assert ids == [uuid.UUID(other["id"])]
        actions = (
            (
                await session.execute(
                    select(AuditLogRow.action)
                    .where(AuditLogRow.resource_id == uuid.UUID(item["id"]))
                    .order_by(AuditLogRow.id)
                )
            )
            .scalars()
            .all()
        )
    assert actions == ["integration.create"] + ["integration.update"] * 4 + ["integration.delete"]


async def test_oauth_token_expiry(
    client: httpx.AsyncClient, app_context: AppContext, clock: Clock, operator_db: Database
) -> None:
    owner = await signup(client, "exp@example.com")
    expires = (clock.now + dt.timedelta(hours=1)).isoformat()
    item = await create(
        client,
        owner.headers,
        name="slack",
        provider="slack",
        credentials={"access_token": "xoxb-1", "expires_at": expires},
    )
    url = f"{URL}/{item['id']}"
    assert item["status"] == "active"
    assert await resolve(app_context, owner.org_id, item["id"])
    clock.advance(hours=2)
    with pytest.raises(IntegrationUnavailable, match="expired"):
        await resolve(app_context, owner.org_id, item["id"])
    expired = await client.get(URL, headers=owner.headers, params={"status": "expired"})
    assert [i["id"] for i in expired.json()["items"]] == [item["id"]]
    assert (await client.get(url, headers=owner.headers)).json()["status"] == "expired"
    async with operator_db.transaction() as session:
        row = await session.get(IntegrationRow, uuid.UUID(item["id"]))
        assert row is not None and row.status == "expired"
        stored = select(func.count()).where(AuditLogRow.action == "integration.expire")
        assert (await session.execute(stored)).scalar_one() == 1
    # fresh credentials make it active again
    later = (clock.now + dt.timedelta(hours=1)).isoformat()
    r = await client.patch(
        url,
        headers=owner.headers,
        json={"credentials": {"access_token": "xoxb-2", "expires_at": later}},
    )
    assert r.json()["status"] == "active"
    assert (await resolve(app_context, owner.org_id, item["id"]))["access_token"] == "xoxb-2"
    # a token given already expired is stored as expired
    past = (clock.now - dt.timedelta(minutes=1)).isoformat()
    stale = await create(
        client,
        owner.headers,
        name="old",
        provider="gmail",
        credentials={"access_token": "t", "expires_at": past},
    )
    assert stale["status"] == "expired"


async def test_list_filters_and_pagination(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    owner = await signup(client, "pg@example.com")
    await set_plan(operator_db, owner.org_id, Plan.ENTERPRISE)
    ids = [
        (await create(client, owner.headers, name=f"n{i}", provider=p))["id"]
        for i, p in enumerate(["openai", "anthropic", "openai", "cohere", "openai"])
    ]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get(URL, headers=owner.headers, params=params)).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    openai = await client.get(URL, headers=owner.headers, params={"provider": "openai"})
    assert [i["id"] for i in openai.json()["items"]] == [ids[4], ids[2], ids[0]]
    r = await client.get(URL, headers=owner.headers, params={"provider": "nope"})
    assert assert_problem(r, 422)["errors"][0]["field"] == "query.provider"


async def test_providers_list_forms(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "prov@example.com")
    r = await client.get(f"{URL}/providers", headers=owner.headers)
    assert r.status_code == 200
    providers = {p["provider"]: p for p in r.json()}
    assert "openai" in providers and "http" in providers
    slack = providers["slack"]
    assert [k["kind"] for k in slack["auth_kinds"]] == ["oauth", "bearer"]
    oauth_schema = slack["auth_kinds"][0]["credentials_schema"]
    assert oauth_schema["required"] == ["access_token"]
    assert set(providers["openai"]["settings_schema"]["properties"]) >= {"base_url"}
    assert_problem(await client.get(f"{URL}/providers"), 401)


async def test_ciphertext_moved_to_another_row_fails(
    client: httpx.AsyncClient, app_context: AppContext, operator_db: Database
) -> None:
    owner = await signup(client, "mv@example.com")
    a = await create(client, owner.headers, name="a", credentials={"api_key": "sk-a"})
    b = await create(client, owner.headers, name="b", credentials={"api_key": "sk-b"})
    async with operator_db.transaction() as session:
        row_a = await session.get(IntegrationRow, uuid.UUID(a["id"]))
        assert row_a is not None
        await session.execute(
            update(IntegrationRow)
            .where(IntegrationRow.id == uuid.UUID(b["id"]))
            .values(credentials_encrypted=row_a.credentials_encrypted)
        )
    with pytest.raises(IntegrationUnavailable, match="cannot be decrypted"):
        await resolve(app_context, owner.org_id, b["id"])
    assert await resolve(app_context, owner.org_id, a["id"]) == {"api_key": "sk-a"}


async def test_rotation_reencrypts_everything_then_retires_the_old_key(
    client: httpx.AsyncClient, app_context: AppContext, operator_db: Database, settings: Settings
) -> None:
    one = await signup(client, "r1@example.com", "One")
    two = await signup(client, "r2@example.com", "Two")
    made = {
        (
            await create(
                client, who.headers, name=f"k{i}", credentials={"api_key": f"sk-{who.email}-{i}"}
            )
        )["id"]: (who, f"sk-{who.email}-{i}")
        for who in (one, two)
        for i in range(3)
    }
    old = app_context.keyring.get()
    new = old.with_new_active_key()
    crypto.write_key_file(crypto.key_file_path(settings), new)  # running processes reload it
    assert app_context.keyring.get().active_id == new.active_id

    # batches of 2 over 6 rows in two tenants, each batch its own transaction
    report = await key_rotation.rotate_credentials(app_context.db, new, batch_size=2)
    assert report.reencrypted["integrations.credentials_encrypted"] == 6 and not report.failures
    assert await key_rotation.rows_not_using(app_context.db, new.active_id) == 0
    usage = await key_rotation.key_usage(app_context.db)
    assert [(u.column, u.key_id, u.rows) for u in usage] == [
        ("integrations.credentials_encrypted", new.active_id, 6)
    ]
    # running it again has nothing to do
    again = await key_rotation.rotate_credentials(app_context.db, new)
    assert again.total == 0

    retired = new.without_inactive_keys()
    crypto.write_key_file(crypto.key_file_path(settings), retired)
    assert app_context.keyring.get().ids == (new.active_id,)
    for integration_id, (who, secret) in made.items():
        assert await resolve(app_context, who.org_id, integration_id) == {"api_key": secret}
    async with operator_db.transaction() as session:
        for row in (await session.execute(select(IntegrationRow))).scalars():
            assert row.credentials_key_id == new.active_id
            assert row.credentials_encrypted is not None
            assert crypto.key_id_of(row.credentials_encrypted) == new.active_id
            with pytest.raises(crypto.UnknownKey):
                old.decrypt(
                    row.credentials_encrypted,
                    associated_data=crypto.row_aad(row.organization_id, row.id),
                )
    # and the API keeps working with the retired ring
    item = next(iter(made))
    who = made[item][0]
    r = await client.patch(
        f"{URL}/{item}", headers=who.headers, json={"credentials": {"api_key": "sk-new"}}
    )
    assert r.status_code == 200
    assert await resolve(app_context, who.org_id, item) == {"api_key": "sk-new"}


async def test_rotation_reports_values_it_cannot_open(
    client: httpx.AsyncClient, app_context: AppContext, operator_db: Database
) -> None:
    owner = await signup(client, "rf@example.com")
    good = await create(client, owner.headers, name="good")
    bad = await create(client, owner.headers, name="bad")
    stranger = Keyring.generate()
    async with operator_db.transaction() as session:
        await session.execute(
            update(IntegrationRow)
            .where(IntegrationRow.id == uuid.UUID(bad["id"]))
            .values(
                credentials_encrypted=stranger.encrypt(b"{}", associated_data=b"x"),
                credentials_key_id=stranger.active_id,
            )
        )
    new = app_context.keyring.get().with_new_active_key()
    report = await key_rotation.rotate_credentials(app_context.db, new)
    assert report.reencrypted["integrations.credentials_encrypted"] == 1
    assert [(f.row_id, "not in this keyring" in f.reason) for f in report.failures] == [
        (uuid.UUID(bad["id"]), True)
    ]
    assert await key_rotation.rows_not_using(app_context.db, new.active_id) == 1
    app_context.keyring.set(new)
    assert await resolve(app_context, owner.org_id, good["id"]) == {"api_key": "sk-1"}
