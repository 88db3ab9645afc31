"""The template library over HTTP: seeding, browsing, publishing, ratings, instantiation."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import func, select, update

from tests.integration.conftest import Account, assert_problem, signup
from turbocat.db.engine import Database
from turbocat.db.models import (
    AgentPromptRow,
    AuditLogRow,
    ComponentRow,
    OrganizationRow,
    TemplateRatingRow,
    TemplateRow,
    WorkflowRow,
)
from turbocat.domain.enums import Plan
from turbocat.services.catalog import seed_catalog
from turbocat.services.templates import read_official_templates

OFFICIAL = read_official_templates()
STEP = {"key": "shape", "type": "agent", "component": {"kind": "data", "config": {"query": "a"}}}
MINE = {
    "name": "Our intake flow",
    "description": "Shapes the intake form",
    "type": "workflow",
    "category": "operations",
    "tags": ["Intake"],
    "template_data": {
        "definition": {"vars": {"team": "ops"}, "steps": [STEP]},
        "name": "Intake",
    },
    "configuration_schema": {"type": "object", "properties": {"team": {"type": "string"}}},
}


async def _count(db: Database, model: type, *where: Any) -> int:
    async with db.transaction() as session:
        stmt = select(func.count()).select_from(model).where(*where)
        return int((await session.execute(stmt)).scalar_one())


async def _set_plan(db: Database, org_id: str, plan: Plan) -> None:
    async with db.transaction() as session:
        await session.execute(
            update(OrganizationRow).where(OrganizationRow.id == uuid.UUID(org_id)).values(plan=plan)
        )


async def _official(client: httpx.AsyncClient, who: Account, name: str) -> dict[str, Any]:
    r = await client.get("/api/v1/templates?official=true&limit=100", headers=who.headers)
    return next(t for t in r.json()["items"] if t["name"] == name)


async def test_seeding_is_idempotent_and_keeps_counters(operator_db: Database) -> None:
    await seed_catalog(operator_db)
    official = TemplateRow.organization_id.is_(None)
    assert await _count(operator_db, TemplateRow, official) == len(OFFICIAL) >= 12
    async with operator_db.transaction() as session:
        await session.execute(update(TemplateRow).values(usage_count=7))
    await seed_catalog(operator_db)
    assert await _count(operator_db, TemplateRow, official) == len(OFFICIAL)
    assert await _count(operator_db, TemplateRow, TemplateRow.usage_count == 7) == len(OFFICIAL)
    assert await _count(operator_db, ComponentRow) == 9
    assert await _count(operator_db, AgentPromptRow) == 3
    async with operator_db.transaction() as session:
        rows = (await session.execute(select(TemplateRow))).scalars().all()
    assert all(r.is_official and r.is_public and r.organization_id is None for r in rows)


async def test_browse_filters_sorts_and_pages(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    await seed_catalog(operator_db)
    async with operator_db.transaction() as session:
        for i, spec in enumerate(OFFICIAL):
            await session.execute(
                update(TemplateRow).where(TemplateRow.name == spec.name).values(usage_count=i * 3)
            )
    who = await signup(client, "browse@example.com")
    r = await client.get("/api/v1/templates?limit=5", headers=who.headers)
    first = r.json()
    counts = [t["usage_count"] for t in first["items"]]
    assert counts == sorted(counts, reverse=True) and counts[0] == (len(OFFICIAL) - 1) * 3
    seen = [t["id"] for t in first["items"]]
    cursor = first["next_cursor"]
    while cursor:
        page = (
            await client.get(f"/api/v1/templates?limit=5&cursor={cursor}", headers=who.headers)
        ).json()
        seen += [t["id"] for t in page["items"]]
        cursor = page["next_cursor"]
    assert len(seen) == len(set(seen)) == len(OFFICIAL)
    names = [
        t["name"]
        for t in (
            await client.get("/api/v1/templates?sort=name&limit=100", headers=who.headers)
        ).json()["items"]
    ]
    assert names == sorted(names)
    r = await client.get("/api/v1/templates?type=agent", headers=who.headers)
    assert {t["type"] for t in r.json()["items"]} == {"agent"} and len(r.json()["items"]) == 2
    r = await client.get("/api/v1/templates?category=sales", headers=who.headers)
    assert {t["category"] for t in r.json()["items"]} == {"sales"}
    r = await client.get("/api/v1/templates?tags=invoices&tags=legal", headers=who.headers)
    assert {t["name"] for t in r.json()["items"]} == {
        "Invoice data extraction", "Contract clause review",
    }  # fmt: skip
    r = await client.get("/api/v1/templates?difficulty=advanced", headers=who.headers)
    assert {t["difficulty"] for t in r.json()["items"]} == {"advanced"}
    r = await client.get("/api/v1/templates?q=invoices", headers=who.headers)
    assert "Invoice data extraction" in {t["name"] for t in r.json()["items"]}
    r = await client.get("/api/v1/templates?sort=rating&limit=3", headers=who.headers)
    assert r.status_code == 200 and r.json()["next_cursor"]
    r = await client.get(
        f"/api/v1/templates?sort=rating&limit=3&cursor={r.json()['next_cursor']}",
        headers=who.headers,
    )
    assert r.status_code == 200 and len(r.json()["items"]) == 3
    assert_problem(await client.get("/api/v1/templates?sort=colour", headers=who.headers), 422)


async def test_every_official_template_instantiates(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    await seed_catalog(operator_db)
    who = await signup(client, "inst@example.com")
    await _set_plan(operator_db, who.org_id, Plan.ENTERPRISE)
    listed = (await client.get("/api/v1/templates?limit=100", headers=who.headers)).json()["items"]
    assert len(listed) == len(OFFICIAL)
    for template in listed:
        r = await client.post(
            f"/api/v1/templates/{template['id']}/instantiate", headers=who.headers, json={}
        )
        assert r.status_code == 201, (template["name"], r.text)
        body = r.json()
        assert body["template"]["usage_count"] == 1
        if template["type"] == "agent":
            assert body["agent"]["organization_id"] == who.org_id and body["workflow"] is None
            continue
        workflow = body["workflow"]
        assert workflow["organization_id"] == who.org_id
        steps = (
            await client.get(f"/api/v1/workflows/{workflow['id']}/steps", headers=who.headers)
        ).json()
        assert len(steps) >= 1, template["name"]
        # required integrations are reported, not enforced
        assert body["missing_integrations"] == template["required_integrations"]
        assert len(body["warnings"]) == len(body["missing_integrations"])
    total = len([t for t in listed if t["type"] != "agent"])
    assert (
        await _count(operator_db, WorkflowRow, WorkflowRow.organization_id == uuid.UUID(who.org_id))
        == total
    )
    audits = await _count(operator_db, AuditLogRow, AuditLogRow.action == "template.instantiate")
    assert audits == len(listed)


async def test_instantiate_applies_overrides_and_picks_free_names(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    await seed_catalog(operator_db)
    who = await signup(client, "over@example.com")
    lead = await _official(client, who, "Lead scoring and routing")
    url = f"/api/v1/templates/{lead['id']}/instantiate"
    r = await client.post(
        url, headers=who.headers,
        json={"name": "Inbound leads", "tags": ["Q3"], "configuration": {"hot_threshold": 60}},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    wf = r.json()["workflow"]
    assert wf["name"] == "Inbound leads" and wf["kebab_name"] == "inbound-leads"
    assert wf["tags"] == ["q3"] and wf["definition"]["vars"]["hot_threshold"] == 60
    assert r.json()["configuration"]["model"] == "gpt-4o-mini"
    again = await client.post(url, headers=who.headers, json={"name": "Inbound leads"})
    assert again.json()["workflow"]["kebab_name"] == "inbound-leads-2"
    bad = assert_problem(
        await client.post(url, headers=who.headers, json={"configuration": {"hot_threshold": 500}}),
        422,
    )
    assert bad["errors"][0]["field"] == "body.overrides.configuration.hot_threshold"
    assert_problem(await client.post(url, headers=who.headers, json={"definition": {}}), 422)
    r = await client.get(f"/api/v1/templates/{lead['id']}", headers=who.headers)
    assert r.json()["usage_count"] == 2


async def test_plan_limit_refuses_sixth_workflow_and_writes_nothing(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    await seed_catalog(operator_db)
    who = await signup(client, "plan@example.com")
    template = await _official(client, who, "Web page summary")
    url = f"/api/v1/templates/{template['id']}/instantiate"
    for _ in range(5):
        assert (await client.post(url, headers=who.headers, json={})).status_code == 201
    problem = assert_problem(await client.post(url, headers=who.headers, json={}), 403)
    assert problem["code"] == "quota_exceeded" and problem["plan"] == "starter"
    assert (
        await _count(operator_db, WorkflowRow, WorkflowRow.organization_id == uuid.UUID(who.org_id))
        == 5
    )
    r = await client.get(f"/api/v1/templates/{template['id']}", headers=who.headers)
    assert r.json()["usage_count"] == 5
    assert await _count(operator_db, AuditLogRow, AuditLogRow.action == "template.instantiate") == 5
    # an agent template does not count against the workflow limit
    agent = await _official(client, who, "Lead qualification agent")
    r = await client.post(
        f"/api/v1/templates/{agent['id']}/instantiate", headers=who.headers, json={}
    )
    assert r.status_code == 201


async def test_ratings_one_per_user_exact_under_concurrency(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    await seed_catalog(operator_db)
    raters = [await signup(client, f"rater{i}@example.com", f"Org {i}") for i in range(5)]
    template = await _official(client, raters[0], "Support ticket triage")
    url = f"/api/v1/templates/{template['id']}/ratings"

    async def rate(who: Account, stars: int) -> httpx.Response:
        return await client.post(url, headers=who.headers, json={"rating": stars, "review": "ok"})

    first = await asyncio.gather(
        *(rate(w, s) for w, s in zip(raters, [5, 4, 4, 3, 1], strict=True))
    )
    assert all(r.status_code == 200 for r in first), [r.text for r in first]
    # re-rating replaces: 5,4,4,3,1 -> 2,4,5,3,1 (sum 15 over 5)
    second = await asyncio.gather(rate(raters[0], 2), rate(raters[2], 5), rate(raters[0], 2))
    assert all(r.status_code == 200 for r in second)
    got = (
        await client.get(f"/api/v1/templates/{template['id']}", headers=raters[1].headers)
    ).json()
    assert got["rating_count"] == 5 and Decimal(str(got["rating_average"])) == Decimal("3.00")
    r = await rate(raters[3], 4)  # 2,4,5,4,1 = 16/5
    assert Decimal(str(r.json()["rating_average"])) == Decimal("3.20")
    assert await _count(operator_db, TemplateRatingRow) == 5
    r = await rate(raters[4], 5)  # 2,4,5,4,5 = 20/5
    assert r.json()["rating_count"] == 5 and Decimal(str(r.json()["rating_average"])) == Decimal(
        "4"
    )
    one_third = await signup(client, "third@example.com", "Third")
    await rate(one_third, 1)  # 21/6 = 3.5
    body = (await rate(one_third, 2)).json()  # 22/6 = 3.666.. -> 3.67
    assert body["rating_count"] == 6 and Decimal(str(body["rating_average"])) == Decimal("3.67")
    assert_problem(await client.post(url, headers=raters[0].headers, json={"rating": 6}), 422)


async def test_own_templates_visibility_roles_and_edits(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    await seed_catalog(operator_db)
    owner = await signup(client, "tpl@example.com", "Maker")
    other = await signup(client, "tpl2@example.com", "Other")
    viewer = await signup(client, "tpl3@example.com", "Viewer")
    r = await client.post(
        f"/api/v1/organizations/{owner.org_id}/members", headers=owner.headers,
        json={"email": viewer.email, "role": "viewer"},
    )  # fmt: skip
    assert r.status_code == 201
    as_viewer = viewer.headers | {"X-Organization-Id": owner.org_id}
    assert_problem(await client.post("/api/v1/templates", headers=as_viewer, json=MINE), 403)
    r = await client.post("/api/v1/templates", headers=owner.headers, json=MINE)
    assert r.status_code == 201, r.text
    mine = r.json()
    assert not mine["is_public"] and not mine["is_official"] and mine["tags"] == ["intake"]
    assert (
        await client.get(f"/api/v1/templates/{mine['id']}", headers=as_viewer)
    ).status_code == 200
    assert_problem(await client.get(f"/api/v1/templates/{mine['id']}", headers=other.headers), 404)
    listed = (await client.get("/api/v1/templates?limit=100", headers=other.headers)).json()
    assert mine["id"] not in {t["id"] for t in listed["items"]}
    assert_problem(
        await client.post(
            f"/api/v1/templates/{mine['id']}/instantiate", headers=other.headers, json={}
        ),
        404,
    )
    r = await client.patch(
        f"/api/v1/templates/{mine['id']}", headers=owner.headers, json={"is_public": True}
    )
    assert r.json()["is_public"]
    assert (
        await client.get(f"/api/v1/templates/{mine['id']}", headers=other.headers)
    ).status_code == 200
    r = await client.post(
        f"/api/v1/templates/{mine['id']}/instantiate", headers=other.headers,
        json={"configuration": {"team": "sales"}},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    assert r.json()["workflow"]["organization_id"] == other.org_id
    assert r.json()["workflow"]["definition"]["vars"] == {"team": "sales"}
    assert_problem(
        await client.patch(
            f"/api/v1/templates/{mine['id']}", headers=other.headers, json={"name": "x"}
        ),
        404,
    )
    official = await _official(client, owner, "Web page summary")
    assert_problem(
        await client.patch(
            f"/api/v1/templates/{official['id']}", headers=owner.headers, json={"name": "x"}
        ),
        403,
    )
    mine_only = (await client.get("/api/v1/templates?mine=true", headers=owner.headers)).json()
    assert [t["id"] for t in mine_only["items"]] == [mine["id"]]
    r = await client.delete(f"/api/v1/templates/{mine['id']}", headers=owner.headers)
    assert r.status_code == 204
    assert_problem(await client.get(f"/api/v1/templates/{mine['id']}", headers=other.headers), 404)


async def test_invalid_template_data_names_the_field(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "badtpl@example.com")
    cases = [
        (MINE | {"template_data": {"definition": {"steps": [STEP, STEP]}}},
         "body.template_data.definition.steps.1.key"),
        (MINE | {"template_data": {"steps": [STEP]}}, "body.template_data.definition"),
        (MINE | {"type": "agent", "template_data": {"type": "llm", "config": {"temperature": 9}},
                 "configuration_schema": None},
         "body.template_data.config"),
        (MINE | {"type": "step", "template_data": {"step": {**STEP, "depends_on": ["x"]}},
                 "configuration_schema": None},
         "body.template_data.step.depends_on"),
        (MINE | {"configuration_schema": {"type": "object", "properties": {"ghost": {}}}},
         "body.configuration_schema.properties.ghost"),
        (MINE | {"required_integrations": ["carrier_pigeon"]}, "body.required_integrations"),
    ]  # fmt: skip
    for body, field in cases:
        r = await client.post("/api/v1/templates", headers=owner.headers, json=body)
        problem = assert_problem(r, 422)
        assert any(e["field"].startswith(field) for e in problem["errors"]), (field, problem)
