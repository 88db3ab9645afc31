"""Organizations, members and roles, tenant isolation over HTTP, and the audit trail."""

from __future__ import annotations

import httpx

from tests.integration.conftest import Account, assert_problem, bearer, signup


async def add(
    client: httpx.AsyncClient, actor: Account, org_id: str, email: str, role: str
) -> httpx.Response:
    return await client.post(
        f"/api/v1/organizations/{org_id}/members",
        headers=actor.headers,
        json={"email": email, "role": role},
    )


async def test_members_lifecycle(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "owner@example.com", "Team")
    admin = await signup(client, "admin@example.com", "Admin's own")
    viewer = await signup(client, "viewer@example.com", "Viewer's own")
    org = owner.org_id

    assert (await add(client, owner, org, "admin@example.com", "admin")).status_code == 201
    assert (await add(client, owner, org, "VIEWER@example.com", "viewer")).status_code == 201
    assert_problem(await add(client, owner, org, "viewer@example.com", "member"), 409)
    assert_problem(await add(client, owner, org, "ghost@example.com", "member"), 404)

    members = (
        await client.get(f"/api/v1/organizations/{org}/members", headers=viewer.headers)
    ).json()
    assert {(m["email"], m["role"]) for m in members} == {
        ("owner@example.com", "owner"),
        ("admin@example.com", "admin"),
        ("viewer@example.com", "viewer"),
    }
    # viewers cannot add; admins cannot give the owner role
    assert_problem(await add(client, viewer, org, "x@example.com", "member"), 403)
    third = await signup(client, "third@example.com", "Third's own")
    assert_problem(await add(client, admin, org, third.email, "owner"), 403)
    assert (await add(client, admin, org, third.email, "member")).status_code == 201

    # change role: admins cannot touch the owner; the last owner cannot be demoted
    url = f"/api/v1/organizations/{org}/members/{owner.user_id}"
    assert_problem(await client.patch(url, headers=admin.headers, json={"role": "member"}), 403)
    assert_problem(await client.patch(url, headers=owner.headers, json={"role": "admin"}), 409)
    r = await client.patch(url, headers=owner.headers, json={"role": "superuser"})
    assert assert_problem(r, 422)["errors"][0]["field"] == "body.role"

    # the last owner cannot be removed or leave; after promoting another owner, they can leave
    assert_problem(await client.delete(url, headers=owner.headers), 409)
    promote = f"/api/v1/organizations/{org}/members/{admin.user_id}"
    assert (await client.patch(promote, headers=owner.headers, json={"role": "owner"})).json()[
        "role"
    ] == "owner"
    assert (await client.delete(url, headers=owner.headers)).status_code == 204
    assert_problem(await client.get(f"/api/v1/organizations/{org}", headers=owner.headers), 403)

    # a member removes nobody but themselves
    third_url = f"/api/v1/organizations/{org}/members/{third.user_id}"
    viewer_url = f"/api/v1/organizations/{org}/members/{viewer.user_id}"
    assert_problem(await client.delete(viewer_url, headers=third.headers), 403)
    assert (await client.delete(third_url, headers=third.headers)).status_code == 204


async def test_organizations_create_rename_and_switch(client: httpx.AsyncClient) -> None:
    me = await signup(client, "multi@example.com", "First")
    r = await client.post("/api/v1/organizations", headers=me.headers, json={"name": "Second"})
    assert r.status_code == 201 and r.json()["role"] == "owner"
    second = r.json()["id"]
    orgs = (await client.get("/api/v1/organizations", headers=me.headers)).json()
    assert [o["name"] for o in orgs] == ["First", "Second"]

    r = await client.patch(
        f"/api/v1/organizations/{second}", headers=me.headers, json={"name": "Deuxième"}
    )
    assert r.json()["name"] == "Deuxième" and r.json()["slug"] == "second"

    # keys are made in the organization chosen by X-Organization-Id
    r = await client.post(
        "/api/v1/api-keys",
        headers=me.headers | {"X-Organization-Id": second},
        json={"name": "s", "scopes": ["*"]},
    )
    assert r.json()["organization_id"] == second
    default = await client.get("/api/v1/api-keys", headers=me.headers)
    assert default.json()["items"] == []


async def test_tenants_never_see_each_other(client: httpx.AsyncClient) -> None:
    a = await signup(client, "a@example.com", "A")
    b = await signup(client, "b@example.com", "B")
    key_a = (
        await client.post(
            "/api/v1/api-keys", headers=a.headers, json={"name": "a", "scopes": ["*"]}
        )
    ).json()

    # b cannot read a's organization, members, or key, by id or by header
    assert_problem(await client.get(f"/api/v1/organizations/{a.org_id}", headers=b.headers), 403)
    assert_problem(
        await client.get(f"/api/v1/organizations/{a.org_id}/members", headers=b.headers), 403
    )
    assert_problem(await client.get(f"/api/v1/api-keys/{key_a['id']}", headers=b.headers), 404)
    assert_problem(await client.delete(f"/api/v1/api-keys/{key_a['id']}", headers=b.headers), 404)
    assert_problem(
        await client.get("/api/v1/api-keys", headers=b.headers | {"X-Organization-Id": a.org_id}),
        403,
    )
    # a's key cannot be pointed at b's organization
    r = await client.get("/api/v1/api-keys", headers=bearer(key_a["secret"], b.org_id))
    assert_problem(r, 404)
    # and a's key still works afterwards (b's attempt to revoke failed)
    assert (
        await client.get("/api/v1/api-keys", headers=bearer(key_a["secret"]))
    ).status_code == 200


async def test_audit_log_records_changes_with_secrets_redacted(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "audit@example.com", "Audited")
    other = await signup(client, "member@example.com", "Other")
    key = (
        await client.post(
            "/api/v1/api-keys", headers=owner.headers, json={"name": "a", "scopes": ["*"]}
        )
    ).json()
    await add(client, owner, owner.org_id, other.email, "viewer")
    await client.delete(f"/api/v1/api-keys/{key['id']}", headers=owner.headers)

    r = await client.get(
        "/api/v1/audit-logs",
        headers=owner.headers | {"User-Agent": "pytest-agent"},
        params={"limit": 50},
    )
    assert r.status_code == 200, r.text
    entries = r.json()["items"]
    actions = [e["action"] for e in entries]
    assert actions[:3] == ["api_key.revoke", "member.add", "api_key.create"]
    assert {"organization.create", "user.signup"} <= set(actions)
    assert key["secret"] not in r.text
    created = next(e for e in entries if e["action"] == "api_key.create")
    assert created["user_id"] == owner.user_id and created["resource_id"] == key["id"]
    assert created["changes"]["after"]["name"] == "a"
    assert created["ip_address"] is not None
    revoked = next(e for e in entries if e["action"] == "api_key.revoke")
    assert revoked["changes"]["before"]["is_active"] is True
    assert revoked["changes"]["after"]["is_active"] is False

    filtered = await client.get(
        "/api/v1/audit-logs", headers=owner.headers, params={"action": "member.add"}
    )
    assert [e["action"] for e in filtered.json()["items"]] == ["member.add"]
    # other organizations' entries are invisible; viewers may not read the trail
    assert all(e["resource_id"] != other.org_id for e in entries)
    r = await client.get(
        "/api/v1/audit-logs", headers=other.headers | {"X-Organization-Id": owner.org_id}
    )
    assert_problem(r, 403)


async def test_delete_me_refused_for_last_owner_with_members(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "lo@example.com", "Crew")
    mate = await signup(client, "mate@example.com", "Mate's own")
    await add(client, owner, owner.org_id, mate.email, "member")
    assert_problem(await client.delete("/api/v1/users/me", headers=owner.headers), 409)
    assert (await client.get("/api/v1/users/me", headers=owner.headers)).status_code == 200
