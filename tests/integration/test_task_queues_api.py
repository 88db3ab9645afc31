"""Task queues over HTTP and the operator CLI: the organization's own, system queues, access."""

from __future__ import annotations

import uuid
from typing import Any

import anyio.to_thread
import httpx
import pytest
from typer.testing import CliRunner

from tests.integration.conftest import Account, assert_problem, bearer, signup
from turbocat.bootstrap import AppContext
from turbocat.cli.main import app as cli_app
from turbocat.config import Settings
from turbocat.db.engine import Database
from turbocat.db.models import TaskQueueRow, UserRow
from turbocat.domain.enums import SystemRole

URL = "/api/v1/task-queues"


async def make_queue(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> dict:
    r = await client.post(URL, headers=headers, json={"name": "gpu-high"} | body)
    assert r.status_code == 201, r.text
    result: dict = r.json()
    return result


async def add_system_queue(db: Database, name: str, **limits: int) -> str:
    async with db.transaction() as session:
        row = TaskQueueRow(organization_id=None, name=name, is_system_queue=True, **limits)
        session.add(row)
    return str(row.id)


async def make_admin(ctx: AppContext, user_id: str) -> None:
    async with ctx.db.transaction() as session:  # users are not tenant rows: no RLS needed
        user = await session.get(UserRow, uuid.UUID(user_id))
        assert user is not None
        user.role = SystemRole.ADMIN


async def join(client: httpx.AsyncClient, owner: Account, email: str, role: str) -> dict:
    """A new user who is ``role`` in the owner's organization: headers acting there."""
    member = await signup(client, email, f"{email}'s own")
    r = await client.post(
        f"/api/v1/organizations/{owner.org_id}/members",
        headers=owner.headers,
        json={"email": email, "role": role},
    )
    assert r.status_code == 201, r.text
    return bearer(member.token, owner.org_id)


async def make_key(client: httpx.AsyncClient, headers: dict[str, str], *scopes: str) -> dict:
    r = await client.post(
        "/api/v1/api-keys", headers=headers, json={"name": "k", "scopes": list(scopes)}
    )
    assert r.status_code == 201, r.text
    return bearer(r.json()["secret"])


async def test_crud_with_defaults_paging_search_and_audit(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "q-owner@example.com")
    made = await make_queue(client, owner.headers, display_name="GPU (high)")
    assert made["organization_id"] == owner.org_id and made["is_system_queue"] is False
    assert (made["max_concurrent_workflows"], made["max_concurrent_activities"]) == (100, 1000)
    assert made["created_by_id"] == owner.user_id
    url = f"{URL}/{made['id']}"
    assert (await client.get(url, headers=owner.headers)).json() == made

    r = await client.patch(
        url,
        headers=owner.headers,
        json={"max_concurrent_workflows": 5, "max_concurrent_activities": 2, "description": "d"},
    )
    assert r.status_code == 200, r.text
    changed = r.json()
    assert (changed["max_concurrent_workflows"], changed["max_concurrent_activities"]) == (5, 2)
    assert changed["description"] == "d" and changed["display_name"] == "GPU (high)"

    for name in ("cpu.batch", "io_bound"):
        await make_queue(client, owner.headers, name=name)
    first = (
        await client.get(URL, headers=owner.headers, params={"sort": "name", "limit": 2})
    ).json()
    assert [q["name"] for q in first["items"]] == ["cpu.batch", "gpu-high"]
    rest = (
        await client.get(
            URL,
            headers=owner.headers,
            params={"sort": "name", "limit": 2, "cursor": first["next_cursor"]},
        )
    ).json()
    assert [q["name"] for q in rest["items"]] == ["io_bound"] and rest["next_cursor"] is None
    found = (await client.get(URL, headers=owner.headers, params={"q": "gpu (HIGH"})).json()
    assert [q["name"] for q in found["items"]] == ["gpu-high"]
    found = (await client.get(URL, headers=owner.headers, params={"q": "_b"})).json()
    assert [q["name"] for q in found["items"]] == ["io_bound"]  # '_' is literal, not a wildcard

    assert (await client.delete(url, headers=owner.headers)).status_code == 204
    assert_problem(await client.get(url, headers=owner.headers), 404, "not_found")
    assert_problem(await client.delete(url, headers=owner.headers), 404, "not_found")

    trail = (
        await client.get(
            "/api/v1/audit-logs",
            headers=owner.headers,
            params={"resource_type": "task_queue", "resource_id": made["id"]},
        )
    ).json()["items"]
    assert [e["action"] for e in trail] == [
        "task_queue.delete",
        "task_queue.update",
        "task_queue.create",
    ]
    update = trail[1]["changes"]
    assert update["before"]["max_concurrent_workflows"] == 100
    assert update["after"]["max_concurrent_workflows"] == 5


@pytest.mark.parametrize(
    ("method", "body", "field"),
    [
        ("post", {"name": "9lives"}, "body.name"),
        ("post", {"name": "has space"}, "body.name"),
        ("post", {"name": "x" * 101}, "body.name"),
        ("post", {}, "body.name"),
        ("post", {"name": "ok", "max_concurrent_workflows": 0}, "body.max_concurrent_workflows"),
        ("post", {"name": "ok", "max_concurrent_activities": -1}, "body.max_concurrent_activities"),
        ("post", {"name": "ok", "max_concurrent_workflows": 1.5}, "body.max_concurrent_workflows"),
        ("post", {"name": "ok", "organization_id": None}, "body.organization_id"),
        ("patch", {"max_concurrent_workflows": 0}, "body.max_concurrent_workflows"),
        ("patch", {"max_concurrent_activities": None}, "body.max_concurrent_activities"),
        ("patch", {"name": "renamed"}, "body.name"),
    ],
)
async def test_bad_input_names_the_field(
    client: httpx.AsyncClient, method: str, body: dict, field: str
) -> None:
    owner = await signup(client, "q-bad@example.com")
    url = URL
    if method == "patch":
        url = f"{URL}/{(await make_queue(client, owner.headers))['id']}"
    r = await client.request(method.upper(), url, headers=owner.headers, json=body)
    problem = assert_problem(r, 422, "validation_failed")
    assert field in [e["field"] for e in problem["errors"]], problem


async def test_duplicate_names_conflict_within_an_organization_only(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    owner = await signup(client, "q-dup@example.com")
    other = await signup(client, "q-dup2@example.com", "Other")
    await make_queue(client, owner.headers)
    problem = assert_problem(
        await client.post(URL, headers=owner.headers, json={"name": "gpu-high"}), 409, "conflict"
    )
    assert "body.name" in problem["detail"] and "gpu-high" in problem["detail"]
    await make_queue(client, other.headers)  # another organization's namespace
    # an organization may override a system queue of the same name
    system_id = await add_system_queue(operator_db, "default", max_concurrent_workflows=7)
    own = await make_queue(client, owner.headers, name="default", max_concurrent_workflows=2)
    listed = (await client.get(URL, headers=owner.headers, params={"sort": "name"})).json()
    assert {(q["name"], q["is_system_queue"]) for q in listed["items"]} == {
        ("default", True),
        ("default", False),
        ("gpu-high", False),
    }
    effective = (
        await client.get(URL, headers=owner.headers, params={"effective": True, "sort": "name"})
    ).json()
    assert [q["id"] for q in effective["items"] if q["name"] == "default"] == [own["id"]]
    system_only = (await client.get(URL, headers=owner.headers, params={"system": True})).json()
    assert [q["id"] for q in system_only["items"]] == [system_id]
    own_only = (await client.get(URL, headers=owner.headers, params={"system": False})).json()
    assert {q["name"] for q in own_only["items"]} == {"default", "gpu-high"}


async def test_other_organizations_neither_see_nor_change(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "q-iso@example.com")
    stranger = await signup(client, "q-iso2@example.com", "Elsewhere")
    queue = await make_queue(client, owner.headers)
    url = f"{URL}/{queue['id']}"
    assert (await client.get(URL, headers=stranger.headers)).json()["items"] == []
    assert_problem(await client.get(url, headers=stranger.headers), 404)
    assert_problem(
        await client.patch(url, headers=stranger.headers, json={"description": "x"}), 404
    )
    assert_problem(await client.delete(url, headers=stranger.headers), 404)
    assert (await client.get(url, headers=owner.headers)).json()["description"] is None


async def test_members_read_and_owners_and_admins_write(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "q-roles@example.com")
    member = await join(client, owner, "q-member@example.com", "member")
    viewer = await join(client, owner, "q-viewer@example.com", "viewer")
    admin = await join(client, owner, "q-admin@example.com", "admin")
    queue = await make_queue(client, owner.headers)
    url = f"{URL}/{queue['id']}"
    for reader in (member, viewer):
        assert [q["id"] for q in (await client.get(URL, headers=reader)).json()["items"]] == [
            queue["id"]
        ]
        assert (await client.get(url, headers=reader)).status_code == 200
        assert_problem(await client.post(URL, headers=reader, json={"name": "mine"}), 403)
        assert_problem(await client.patch(url, headers=reader, json={"description": "x"}), 403)
        assert_problem(await client.delete(url, headers=reader), 403)
    await make_queue(client, admin, name="by-admin")
    r = await client.patch(url, headers=admin, json={"max_concurrent_activities": 3})
    assert r.status_code == 200 and r.json()["max_concurrent_activities"] == 3
    assert (await client.delete(url, headers=admin)).status_code == 204


async def test_api_keys_need_the_task_queues_scopes(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "q-keys@example.com")
    queue = await make_queue(client, owner.headers)
    url = f"{URL}/{queue['id']}"
    reader = await make_key(client, owner.headers, "task_queues:read")
    writer = await make_key(client, owner.headers, "task_queues:write")
    unrelated = await make_key(client, owner.headers, "projects:write")

    assert (await client.get(URL, headers=reader)).status_code == 200
    assert (await client.get(url, headers=reader)).status_code == 200
    problem = assert_problem(
        await client.post(URL, headers=reader, json={"name": "k"}), 403, "missing_scope"
    )
    assert problem["missing_scope"] == "task_queues:write"
    assert_problem(await client.delete(url, headers=reader), 403, "missing_scope")
    problem = assert_problem(await client.get(URL, headers=unrelated), 403, "missing_scope")
    assert problem["missing_scope"] == "task_queues:read"

    assert (await client.get(URL, headers=writer)).status_code == 200  # write implies read
    await make_queue(client, writer, name="from-key")
    r = await client.patch(url, headers=writer, json={"display_name": "GPU"})
    assert r.status_code == 200 and r.json()["display_name"] == "GPU"
    assert (await client.delete(url, headers=writer)).status_code == 204


async def test_system_queues_are_shared_and_read_only_except_for_system_admins(
    client: httpx.AsyncClient, operator_db: Database, app_context: AppContext
) -> None:
    owner = await signup(client, "q-sys@example.com")
    other = await signup(client, "q-sys2@example.com", "Other")
    system_id = await add_system_queue(operator_db, "shared", max_concurrent_activities=4)
    url = f"{URL}/{system_id}"
    for who in (owner, other):
        listed = (await client.get(URL, headers=who.headers)).json()["items"]
        assert [(q["id"], q["organization_id"]) for q in listed] == [(system_id, None)]
        assert (await client.get(url, headers=who.headers)).json()["is_system_queue"] is True
    # an organization owner is not a system administrator
    assert_problem(await client.patch(url, headers=owner.headers, json={"description": "x"}), 403)
    assert_problem(await client.delete(url, headers=owner.headers), 403)
    r = await client.post(URL, headers=owner.headers, json={"name": "mine", "system": True})
    assert_problem(r, 403, "forbidden")

    await make_admin(app_context, other.user_id)
    r = await client.patch(url, headers=other.headers, json={"max_concurrent_activities": 9})
    assert r.status_code == 200, r.text
    assert r.json()["max_concurrent_activities"] == 9
    assert (await client.get(url, headers=owner.headers)).json()["max_concurrent_activities"] == 9
    made = await make_queue(client, other.headers, name="fleet", system=True)
    assert made["organization_id"] is None and made["is_system_queue"] is True
    assert_problem(
        await client.post(URL, headers=other.headers, json={"name": "fleet", "system": True}),
        409,
        "conflict",
    )
    # through an API key, system administration needs '*'
    narrow = await make_key(client, other.headers, "task_queues:write")
    assert_problem(await client.delete(url, headers=narrow), 403, "forbidden")
    full = await make_key(client, other.headers, "*")
    assert (await client.delete(url, headers=full)).status_code == 204
    assert_problem(await client.get(url, headers=owner.headers), 404)
    # the change is in the administrator's organization's audit trail
    trail = (
        await client.get(
            "/api/v1/audit-logs", headers=other.headers, params={"resource_type": "task_queue"}
        )
    ).json()["items"]
    assert [e["action"] for e in trail] == [
        "task_queue.delete",
        "task_queue.create",
        "task_queue.update",
    ]
    async with operator_db.transaction() as session:
        row = await session.get(TaskQueueRow, uuid.UUID(made["id"]))
        assert row is not None and row.organization_id is None


async def test_openapi_lists_the_routes_under_a_tag(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    ops = {
        op["operationId"]: op
        for path, item in spec["paths"].items()
        if path.startswith(URL)
        for op in item.values()
    }
    assert set(ops) == {
        "task-queues-create",
        "task-queues-list",
        "task-queues-get",
        "task-queues-update",
        "task-queues-delete",
    }
    assert all(op["tags"] == ["task-queues"] for op in ops.values())
    fields = spec["components"]["schemas"]["TaskQueueCreate"]["properties"]
    assert "description" in fields["max_concurrent_workflows"]


async def test_operator_cli_manages_system_queues(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    runner = CliRunner()
    env = {
        "TURBOCAT_DATABASE_URL": settings.resolved_database_url,
        "TURBOCAT_HOME": str(settings.home),
    }

    async def cli(*args: str) -> tuple[int, str]:  # the CLI runs its own event loop
        result = await anyio.to_thread.run_sync(lambda: runner.invoke(cli_app, list(args), env=env))
        return result.exit_code, result.output

    code, out = await cli("queues", "create", "bulk", "--max-workflows", "3")
    assert code == 0 and "created system task queue bulk" in out, out
    code, out = await cli("queues", "create", "bulk")
    assert code == 1 and "already exists" in out, out
    code, out = await cli("queues", "create", "bad name")
    assert code == 1 and "task queue name" in out, out
    code, out = await cli("queues", "update", "bulk", "--max-activities", "0")
    assert code == 1 and "from 1 to" in out, out
    code, out = await cli("queues", "update", "bulk", "--max-activities", "5")
    assert code == 0, out
    owner = await signup(client, "q-cli@example.com")
    listed = (await client.get(URL, headers=owner.headers)).json()["items"]
    assert [
        (q["name"], q["max_concurrent_workflows"], q["max_concurrent_activities"]) for q in listed
    ] == [("bulk", 3, 5)]
    code, out = await cli("queues", "list")
    assert code == 0 and "bulk" in out, out
    code, out = await cli("queues", "delete", "bulk")
    assert code == 0, out
    code, out = await cli("queues", "delete", "bulk")
    assert code == 1 and "not found" in out, out
    assert (await client.get(URL, headers=owner.headers)).json()["items"] == []
