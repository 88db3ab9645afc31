"""The component registry over HTTP: built-ins, registration, visibility, ownership."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from tests.integration.conftest import Account, assert_problem, signup
from turbocat.db.engine import Database
from turbocat.db.models import AuditLogRow, ComponentRow
from turbocat.domain.components import BUILTINS
from turbocat.services.catalog import seed_catalog

SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}


async def register(client: httpx.AsyncClient, who: Account, **body: Any) -> dict[str, Any]:
    payload = {
        "name": "acme.ocr",
        "display_name": "OCR",
        "description": "reads scanned documents",
        "version": "1.0.0",
        "config_schema": {"type": "object"},
        "input_schema": SCHEMA,
        "output_schema": SCHEMA,
        "implementation_path": "acme_components.ocr:run",
        "task_queue": "gpu",
        "tags": ["Vision", "ocr"],
        "capabilities": ["ocr"],
    } | body
    r = await client.post("/api/v1/components", headers=who.headers, json=payload)
    assert r.status_code == 201, r.text
    return r.json()


async def test_builtins_are_seeded_once_and_listed(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    await seed_catalog(operator_db)
    await seed_catalog(operator_db)
    async with operator_db.transaction() as session:
        count = (
            await session.execute(
                select(func.count())
                .select_from(ComponentRow)
                .where(ComponentRow.organization_id.is_(None))
            )
        ).scalar_one()
    assert count == len(BUILTINS) == 9
    owner = await signup(client, "comp@example.com")
    r = await client.get("/api/v1/components?builtin=true&limit=50", headers=owner.headers)
    items = r.json()["items"]
    assert {c["kind"] for c in items} == {
        "llm", "code", "api", "data", "workflow", "condition", "loop", "parallel", "wait",
    }  # fmt: skip
    llm = next(c for c in items if c["kind"] == "llm")
    assert llm["builtin"] and "model" in llm["config_schema"]["properties"]
    loop = next(c for c in items if c["kind"] == "loop")
    assert "over" in str(loop["config_schema"])
    r = await client.get(f"/api/v1/components/{llm['id']}", headers=owner.headers)
    assert r.json()["name"] == "llm"
    assert_problem(
        await client.patch(
            f"/api/v1/components/{llm['id']}", headers=owner.headers, json={"description": "x"}
        ),
        403,
    )
    assert_problem(
        await client.delete(f"/api/v1/components/{llm['id']}", headers=owner.headers), 403
    )


async def test_register_validates_and_conflicts(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    owner = await signup(client, "reg@example.com")
    made = await register(client, owner)
    assert made["kind"] == "custom" and made["tags"] == ["ocr", "vision"] and not made["builtin"]
    r = await client.post(
        "/api/v1/components", headers=owner.headers, json={"name": "acme.ocr", "version": "1.0.0"}
    )
    assert_problem(r, 409, "conflict")
    await register(client, owner, version="1.1.0")
    for body, field in [
        ({"name": "x", "version": "1.0"}, "body.version"),
        ({"name": "x", "implementation_path": "os.system('rm -rf /')"}, "body.implementation_path"),
        ({"name": "x", "implementation_path": "acme"}, "body.implementation_path"),
        ({"name": "x", "input_schema": {"type": "nonsense"}}, "body.input_schema"),
        ({"name": "llm"}, "body.name"),
        ({"name": "bad name!"}, "body.name"),
        ({"name": "x", "kind": "llm"}, "body.kind"),
    ]:
        r = await client.post("/api/v1/components", headers=owner.headers, json=body)
        problem = assert_problem(r, 422)
        assert any(e["field"].startswith(field) for e in problem["errors"]), (body, problem)
    async with operator_db.transaction() as session:
        actions = (
            await session.execute(
                select(AuditLogRow.action).where(AuditLogRow.resource_type == "component")
            )
        ).scalars()
        assert list(actions) == ["component.create", "component.create"]


async def test_visibility_between_organizations_and_members(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "vis@example.com", "Vis")
    other = await signup(client, "vis2@example.com", "Other")
    member = await signup(client, "vis3@example.com", "Mine")
    r = await client.post(
        f"/api/v1/organizations/{owner.org_id}/members", headers=owner.headers,
        json={"email": member.email, "role": "viewer"},
    )  # fmt: skip
    assert r.status_code == 201
    as_member = member.headers | {"X-Organization-Id": owner.org_id}
    org_wide = await register(client, owner, name="acme.org")
    private = await register(client, owner, name="acme.private", visibility="private")
    public = await register(client, owner, name="acme.public", visibility="public")
    for comp, other_sees, member_sees in [
        (org_wide, False, True),
        (private, False, False),
        (public, True, True),
    ]:
        r = await client.get(f"/api/v1/components/{comp['id']}", headers=other.headers)
        assert r.status_code == (200 if other_sees else 404), comp["name"]
        r = await client.get(f"/api/v1/components/{comp['id']}", headers=as_member)
        assert r.status_code == (200 if member_sees else 404), comp["name"]
    names = {
        c["name"]
        for c in (await client.get("/api/v1/components", headers=other.headers)).json()["items"]
    }
    assert "acme.public" in names and not names & {"acme.org", "acme.private"}
    # others may read a public component but never change or delete it
    assert_problem(
        await client.patch(
            f"/api/v1/components/{public['id']}", headers=other.headers, json={"deprecated": True}
        ),
        404,
    )
    assert_problem(
        await client.delete(f"/api/v1/components/{public['id']}", headers=other.headers), 404
    )
    # viewers read but do not register
    assert_problem(
        await client.post("/api/v1/components", headers=as_member, json={"name": "v"}), 403
    )


async def test_filters_update_and_delete(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "upd@example.com")
    made = await register(client, owner)
    await register(client, owner, name="acme.translate", tags=["nlp"], description="translation")
    r = await client.get("/api/v1/components?tags=vision&builtin=false", headers=owner.headers)
    assert [c["name"] for c in r.json()["items"]] == ["acme.ocr"]
    r = await client.get("/api/v1/components?q=translation", headers=owner.headers)
    assert [c["name"] for c in r.json()["items"]] == ["acme.translate"]
    r = await client.get("/api/v1/components?kind=custom&sort=name&limit=1", headers=owner.headers)
    page = r.json()
    assert [c["name"] for c in page["items"]] == ["acme.ocr"] and page["next_cursor"]
    r = await client.get(
        f"/api/v1/components?kind=custom&sort=name&limit=1&cursor={page['next_cursor']}",
        headers=owner.headers,
    )
    assert [c["name"] for c in r.json()["items"]] == ["acme.translate"]
    r = await client.patch(
        f"/api/v1/components/{made['id']}", headers=owner.headers,
        json={"deprecated": True, "visibility": "public", "tags": ["OCR"]},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    assert (
        r.json()["deprecated"]
        and r.json()["visibility"] == "public"
        and r.json()["tags"] == ["ocr"]
    )
    r = await client.patch(
        f"/api/v1/components/{made['id']}", headers=owner.headers, json={"version": "2.0.0"}
    )
    assert_problem(r, 422)
    r = await client.get(
        "/api/v1/components?include_deprecated=false&kind=custom", headers=owner.headers
    )
    assert [c["name"] for c in r.json()["items"]] == ["acme.translate"]
    r = await client.delete(f"/api/v1/components/{made['id']}", headers=owner.headers)
    assert r.status_code == 204
    assert_problem(await client.get(f"/api/v1/components/{made['id']}", headers=owner.headers), 404)
