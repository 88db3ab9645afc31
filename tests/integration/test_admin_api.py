"""System administrators manage accounts across organizations, audited in each."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from tests.integration.conftest import assert_problem, signup
from turbocat.bootstrap import AppContext
from turbocat.db.models import UserRow
from turbocat.domain.enums import SystemRole


async def make_admin(ctx: AppContext, user_id: str) -> None:
    async with ctx.db.transaction() as session:  # users are not tenant rows: no RLS needed
        user = await session.get(UserRow, uuid.UUID(user_id))
        assert user is not None
        user.role = SystemRole.ADMIN


async def test_admin_soft_deletes_and_restores_a_user(
    client: httpx.AsyncClient, app_context: AppContext
) -> None:
    admin = await signup(client, "root@example.com", "Platform")
    victim = await signup(client, "v@example.com", "Victim Co")
    assert_problem(await client.get("/api/v1/admin/users", headers=admin.headers), 403)
    await make_admin(app_context, admin.user_id)

    listed = (await client.get("/api/v1/admin/users", headers=admin.headers)).json()["items"]
    assert {u["email"] for u in listed} == {"root@example.com", "v@example.com"}

    r = await client.delete(f"/api/v1/admin/users/{victim.user_id}", headers=admin.headers)
    assert r.status_code == 200 and r.json()["deleted_at"] is not None
    assert_problem(await client.get("/api/v1/users/me", headers=victim.headers), 401)
    listed = (await client.get("/api/v1/admin/users", headers=admin.headers)).json()["items"]
    assert [u["email"] for u in listed] == ["root@example.com"]
    everyone = await client.get(
        "/api/v1/admin/users", headers=admin.headers, params={"include_deleted": True}
    )
    assert len(everyone.json()["items"]) == 2

    r = await client.post(f"/api/v1/admin/users/{victim.user_id}/restore", headers=admin.headers)
    assert r.status_code == 200 and r.json()["deleted_at"] is None
    login = {"email": "v@example.com", "password": "correct horse battery"}
    relogin = await client.post("/api/v1/auth/login", json=login)
    assert relogin.status_code == 200
    victim_headers = {"Authorization": f"Bearer {relogin.json()['access_token']}"}
    assert_problem(
        await client.post(f"/api/v1/admin/users/{victim.user_id}/restore", headers=admin.headers),
        422,
    )

    # the victim's organization saw both changes in its own audit trail
    trail = (
        await client.get(
            "/api/v1/audit-logs", headers=victim_headers, params={"resource_type": "user"}
        )
    ).json()
    assert [e["action"] for e in trail["items"]][:2] == ["user.restore", "user.delete"]
    assert trail["items"][0]["user_id"] == admin.user_id

    assert_problem(
        await client.delete(f"/api/v1/admin/users/{uuid.uuid4()}", headers=admin.headers), 404
    )
    assert_problem(
        await client.delete(f"/api/v1/admin/users/{admin.user_id}", headers=admin.headers), 403
    )


async def test_workers_register_and_are_listed_for_system_admins(
    client: httpx.AsyncClient, app_context: AppContext
) -> None:
    admin = await signup(client, "ops@example.com", "Ops")
    member = await signup(client, "member@example.com", "Member")
    await make_admin(app_context, admin.user_id)
    # the embedded worker registered itself when the app started
    async with asyncio.timeout(5):
        while not (
            rows := (await client.get("/api/v1/admin/workers", headers=admin.headers)).json()
        ):
            await asyncio.sleep(0.05)
    (worker,) = rows
    assert worker["status"] == "running" and worker["queues"] == ["default"] and worker["pid"]
    assert_problem(await client.get("/api/v1/admin/workers", headers=member.headers), 403)
