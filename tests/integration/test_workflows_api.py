"""Workflows over HTTP: validation with paths, versions, lifecycle, views, plans, import/export."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import update

from tests.integration.conftest import Account, assert_problem, signup
from turbocat.db.engine import Database
from turbocat.db.models import OrganizationRow, WorkflowRow
from turbocat.domain.enums import Plan

FETCH = {
    "key": "fetch",
    "type": "agent",
    "component": {"kind": "api", "config": {"url": "https://x.example/{{ input.id }}"}},
}
SHAPE = {
    "key": "shape",
    "type": "agent",
    "depends_on": ["fetch"],
    "component": {"kind": "data", "config": {"query": "items"}},
    "inputs": {"doc": "{{ steps.fetch.output }}"},
}
DEFINITION: dict[str, Any] = {
    "inputs": {"type": "object", "properties": {"id": {"type": "string"}}},
    "outputs": {"result": "{{ steps.shape.output }}"},
    "steps": [FETCH, SHAPE],
}


async def make_workflow(client: httpx.AsyncClient, who: Account, **body: Any) -> dict:
    payload = {"name": "Fetch and shape", "definition": DEFINITION} | body
    r = await client.post("/api/v1/workflows", headers=who.headers, json=payload)
    assert r.status_code == 201, r.text
    return r.json()


async def test_create_materializes_steps_and_derives_kebab(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "wf@example.com")
    wf = await make_workflow(client, owner, tags=["Ops", "ops", "daily"], category="operations")
    assert wf["kebab_name"] == "fetch-and-shape" and wf["version"] == 1 and wf["status"] == "draft"
    assert wf["tags"] == ["daily", "ops"]
    steps = (await client.get(f"/api/v1/workflows/{wf['id']}/steps", headers=owner.headers)).json()
    assert [(s["step_key"], s["position"], s["depends_on"]) for s in steps] == [
        ("fetch", 0, []),
        ("shape", 1, ["fetch"]),
    ]
    by_name = await client.get("/api/v1/workflows/by-name/fetch-and-shape", headers=owner.headers)
    assert by_name.json()["id"] == wf["id"]
    schema = (await client.get("/api/v1/workflows/schema")).json()
    assert schema["$id"] == "urn:turbocat:workflow-definition:v1"


@pytest.mark.parametrize(
    ("steps", "field"),
    [
        ([FETCH, FETCH], "body.definition.steps.1.key"),
        ([FETCH, {**SHAPE, "depends_on": ["nope"]}], "body.definition.steps.1.depends_on.0"),
        ([{**FETCH, "depends_on": ["shape"]}, SHAPE], "body.definition.steps"),
        (
            [FETCH, {**SHAPE, "inputs": {"doc": "{{ steps.fetch.output ++ }}"}}],
            "body.definition.steps.1.inputs.doc",
        ),
        ([FETCH, {**SHAPE, "when": "yes"}], "body.definition.steps.1.when"),
        ([FETCH, {**SHAPE, "colour": "red"}], "body.definition.steps.1"),
        (
            [{"key": "a", "type": "agent", "agent": "no-such-agent"}],
            "body.definition.steps.0.agent",
        ),
    ],
)
async def test_invalid_definitions_name_the_step_and_field(
    client: httpx.AsyncClient, operator_db: Database, steps: list[dict], field: str
) -> None:
    owner = await signup(client, "bad@example.com")
    r = await client.post(
        "/api/v1/workflows",
        headers=owner.headers,
        json={"name": "bad", "definition": {"steps": steps}},
    )
    body = assert_problem(r, 422, "validation_failed")
    fields = [e["field"] for e in body["errors"]]
    assert any(f.startswith(field) for f in fields), body
    async with operator_db.transaction() as session:
        assert (await session.execute(WorkflowRow.__table__.select())).first() is None


async def test_bad_trigger_config_and_limits(client: httpx.AsyncClient, app_context) -> None:
    owner = await signup(client, "trig@example.com")
    r = await client.post(
        "/api/v1/workflows", headers=owner.headers,
        json={"name": "t", "definition": DEFINITION, "trigger_config": {"schedules": [{"cron": "99 * * * *"}]}},
    )  # fmt: skip
    assert assert_problem(r, 422)["errors"][0]["field"] == "body.trigger_config.schedules.0.cron"
    r = await client.post(
        "/api/v1/workflows", headers=owner.headers,
        json={"name": "t", "definition": DEFINITION, "trigger_config": {"schedules": [{"cron": "0 9 * * 1-5", "timezone": "Nowhere/City"}]}},
    )  # fmt: skip
    assert (
        assert_problem(r, 422)["errors"][0]["field"] == "body.trigger_config.schedules.0.timezone"
    )
    app_context.settings.definitions.max_steps = 1
    r = await client.post(
        "/api/v1/workflows", headers=owner.headers, json={"name": "big", "definition": DEFINITION}
    )
    assert "1" in assert_problem(r, 422)["detail"]


async def test_agent_references_resolve_by_name(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "ref@example.com")
    r = await client.post(
        "/api/v1/agents", headers=owner.headers,
        json={"name": "summarizer", "type": "llm", "config": {"model": "m", "system_prompt": "Summarize."}},
    )  # fmt: skip
    agent_id = r.json()["id"]
    definition = {
        "steps": [
            {"key": "s", "type": "agent", "agent": "summarizer"},
            {"key": "t", "type": "agent", "agent": agent_id, "depends_on": ["s"]},
        ]
    }
    wf = await make_workflow(client, owner, name="uses agents", definition=definition)
    steps = (await client.get(f"/api/v1/workflows/{wf['id']}/steps", headers=owner.headers)).json()
    assert [s["agent_id"] for s in steps] == [agent_id, agent_id]
    other = await signup(client, "ref2@example.com", "Other")
    r = await client.post(
        "/api/v1/workflows", headers=other.headers, json={"name": "x", "definition": definition}
    )
    assert_problem(r, 422)  # another organization's agents are unknown


async def test_versions_once_run_and_immutable_kebab(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    owner = await signup(client, "ver@example.com")
    wf = await make_workflow(client, owner)
    url = f"/api/v1/workflows/{wf['id']}"
    new_def = {**DEFINITION, "outputs": {"result": "{{ steps.fetch.output }}"}}
    r = await client.patch(url, headers=owner.headers, json={"definition": new_def})
    assert r.json()["id"] == wf["id"] and r.json()["version"] == 1  # never ran: in place
    assert_problem(
        await client.patch(url, headers=owner.headers, json={"kebab_name": "renamed"}), 422
    )

    async with operator_db.transaction() as session:
        await session.execute(
            update(WorkflowRow)
            .where(WorkflowRow.id == uuid.UUID(wf["id"]))
            .values(total_executions=1)
        )
    r = await client.patch(
        url, headers=owner.headers, json={"definition": DEFINITION, "description": "v2"}
    )
    v2 = r.json()
    assert (
        v2["version"] == 2 and v2["parent_id"] == wf["id"] and v2["kebab_name"] == wf["kebab_name"]
    )
    v1 = (await client.get(url, headers=owner.headers)).json()
    assert (
        v1["definition"]["outputs"] == {"result": "{{ steps.fetch.output }}"}
        and v1["description"] is None
    )
    assert (
        len((await client.get(f"/api/v1/workflows/{v2['id']}/steps", headers=owner.headers)).json())
        == 2
    )
    # a description-only edit of v2 (which has not run) happens in place
    r = await client.patch(
        f"/api/v1/workflows/{v2['id']}", headers=owner.headers, json={"name": "Renamed"}
    )
    assert r.json()["id"] == v2["id"] and r.json()["kebab_name"] == wf["kebab_name"]
    assert [
        v["version"] for v in (await client.get(f"{url}/versions", headers=owner.headers)).json()
    ] == [2, 1]
    listed = (await client.get("/api/v1/workflows", headers=owner.headers)).json()["items"]
    assert [w["id"] for w in listed] == [v2["id"]]
    assert_problem(await client.patch(url, headers=owner.headers, json={"name": "old"}), 422)


async def test_null_limits_mean_no_limit_and_survive_new_versions(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    owner = await signup(client, "limits@example.com")
    default = await make_workflow(client, owner, name="Default limits")
    assert default["max_concurrent_executions"] == 10
    assert default["execution_timeout_seconds"] == 3600
    wf = await make_workflow(
        client, owner, max_concurrent_executions=None, execution_timeout_seconds=None
    )
    assert wf["max_concurrent_executions"] is None and wf["execution_timeout_seconds"] is None
    async with operator_db.transaction() as session:  # it ran: the next edit makes version 2
        await session.execute(
            update(WorkflowRow)
            .where(WorkflowRow.id == uuid.UUID(wf["id"]))
            .values(total_executions=1)
        )
    new_def = {**DEFINITION, "outputs": {"result": "{{ steps.fetch.output }}"}}
    r = await client.patch(
        f"/api/v1/workflows/{wf['id']}", headers=owner.headers, json={"definition": new_def}
    )
    v2 = r.json()
    assert v2["version"] == 2, r.text
    assert v2["max_concurrent_executions"] is None and v2["execution_timeout_seconds"] is None


async def test_status_lifecycle(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "life@example.com")
    url = f"/api/v1/workflows/{(await make_workflow(client, owner))['id']}"

    async def move(target: str) -> httpx.Response:
        return await client.patch(url, headers=owner.headers, json={"status": target})

    assert (await move("active")).json()["status"] == "active"
    assert (await move("paused")).json()["status"] == "paused"
    assert_problem(await move("draft"), 409, "invalid_transition")
    assert (await move("archived")).json()["status"] == "archived"
    assert_problem(await client.patch(url, headers=owner.headers, json={"description": "x"}), 409)
    assert (await move("draft")).json()["status"] == "draft"
    assert_problem(await move("bogus"), 422)


async def test_canvas_and_yaml_views_round_trip(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "canvas@example.com")
    wf = await make_workflow(client, owner)
    url = f"/api/v1/workflows/{wf['id']}"
    canvas = (
        await client.get(f"{url}/definition", headers=owner.headers, params={"view": "canvas"})
    ).json()
    assert {n["id"] for n in canvas["nodes"]} == {"fetch", "shape"}
    assert [(e["source"], e["target"]) for e in canvas["edges"]] == [("fetch", "shape")]
    # the canvas form is accepted on create and stored canonically
    again = await make_workflow(client, owner, name="From canvas", definition=canvas)
    assert again["definition"] == wf["definition"]

    as_yaml = await client.get(
        f"{url}/definition", headers=owner.headers | {"Accept": "application/yaml"}
    )
    assert as_yaml.headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(as_yaml.text) == wf["definition"]
    body = yaml.safe_dump({"name": "From YAML", "definition": wf["definition"]})
    r = await client.post(
        "/api/v1/workflows",
        headers=owner.headers | {"Content-Type": "application/yaml"},
        content=body,
    )
    assert r.status_code == 201, r.text
    r = await client.post(
        "/api/v1/workflows",
        headers=owner.headers | {"Content-Type": "application/yaml"},
        content="a: [1, 2",
    )
    assert_problem(r, 400, "malformed_yaml")


async def test_export_import_round_trip(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "io@example.com")
    wf = await make_workflow(client, owner, tags=["x"])
    exported = (
        await client.get(f"/api/v1/workflows/{wf['id']}/export", headers=owner.headers)
    ).json()
    assert exported["format"] == "turbocat/workflow@1" and "id" not in exported
    other = await signup(client, "io2@example.com", "Elsewhere")
    r = await client.post("/api/v1/workflows/import", headers=other.headers, json=exported)
    assert (
        r.status_code == 201
        and r.json()["kebab_name"] == wf["kebab_name"]
        and r.json()["tags"] == ["x"]
    )
    assert_problem(
        await client.post("/api/v1/workflows/import", headers=other.headers, json=exported), 409
    )
    r = await client.post(
        "/api/v1/workflows/import",
        headers=other.headers,
        json=exported | {"description": "new"},
        params={"update": True},
    )
    assert r.status_code == 201 and r.json()["description"] == "new"
    r = await client.post(
        "/api/v1/workflows/import", headers=other.headers, json={"format": "other"}
    )
    assert assert_problem(r, 422)["errors"][0]["field"] == "file.format"


async def test_plan_limit_counts_lineages_and_is_configurable(
    client: httpx.AsyncClient, operator_db: Database, app_context
) -> None:
    owner = await signup(client, "plan@example.com")
    first = await make_workflow(client, owner, name="w0")
    for i in range(1, 5):
        await make_workflow(client, owner, name=f"w{i}")
    r = await client.post(
        "/api/v1/workflows", headers=owner.headers, json={"name": "w5", "definition": DEFINITION}
    )
    body = assert_problem(r, 403, "quota_exceeded")
    assert body["limit"] == "workflows" and body["plan"] == "starter" and "5" in body["detail"]
    # new versions do not count; deleting frees a slot; restoring needs one
    await client.delete(f"/api/v1/workflows/{first['id']}", headers=owner.headers)
    await make_workflow(client, owner, name="w5")
    assert_problem(
        await client.post(f"/api/v1/workflows/{first['id']}/restore", headers=owner.headers), 403
    )
    async with operator_db.transaction() as session:
        await session.execute(update(OrganizationRow).values(plan=Plan.PROFESSIONAL))
    assert (
        await client.post(f"/api/v1/workflows/{first['id']}/restore", headers=owner.headers)
    ).status_code == 200
    app_context.settings.plans[Plan.PROFESSIONAL].workflows = 6
    assert_problem(
        await client.post(
            "/api/v1/workflows",
            headers=owner.headers,
            json={"name": "w7", "definition": DEFINITION},
        ),
        403,
    )


async def test_tenancy_sharing_and_search(client: httpx.AsyncClient) -> None:
    a = await signup(client, "ta@example.com", "A")
    b = await signup(client, "tb@example.com", "B")
    private = await make_workflow(
        client, a, name="Invoice pipeline", description="extracts invoice totals"
    )
    public = await make_workflow(client, a, name="Daily report", is_public=True, tags=["reports"])
    assert_problem(await client.get(f"/api/v1/workflows/{private['id']}", headers=b.headers), 404)
    assert (
        await client.get(f"/api/v1/workflows/{public['id']}", headers=b.headers)
    ).status_code == 200
    assert_problem(
        await client.patch(
            f"/api/v1/workflows/{public['id']}", headers=b.headers, json={"name": "x"}
        ),
        404,
    )
    assert_problem(
        await client.delete(f"/api/v1/workflows/{private['id']}", headers=b.headers), 404
    )
    shared = (
        await client.get("/api/v1/workflows", headers=b.headers, params={"public": True})
    ).json()["items"]
    assert [w["id"] for w in shared] == [public["id"]]

    async def names(**params: Any) -> list[str]:
        return [
            w["name"]
            for w in (
                await client.get("/api/v1/workflows", headers=a.headers, params=params)
            ).json()["items"]
        ]

    assert await names(q="invoices") == ["Invoice pipeline"]
    assert await names(tags=["reports"]) == ["Daily report"]
    assert await names(sort="name") == ["Daily report", "Invoice pipeline"]
