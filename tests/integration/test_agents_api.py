"""Agents and projects over HTTP: typed configs, versions, lifecycle, sharing, finding."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.integration.conftest import Account, assert_problem, signup
from turbocat.db.engine import Database
from turbocat.db.models import AgentRow

LLM = {"provider": "openai", "model": "gpt-4o-mini", "system_prompt": "You triage tickets."}
CODE = {"source": "def main(input):\n    return {'n': input['n'] * 2}\n"}


async def make_agent(client: httpx.AsyncClient, who: Account, **body: object) -> dict:
    payload = {"name": "triage", "type": "llm", "config": LLM} | body
    r = await client.post("/api/v1/agents", headers=who.headers, json=payload)
    assert r.status_code == 201, r.text
    return r.json()


async def test_every_agent_type_saves_a_valid_config(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "types@example.com")
    configs = {
        "llm": LLM,
        "code": CODE,
        "api": {
            "method": "POST",
            "url": "https://api.example.com/{{ input.path }}",
            "body": {"a": 1},
        },
        "data": {"query": "items[?price > `10`].name"},
        "workflow": {"workflow": "nightly-report", "wait": False},
    }
    for agent_type, config in configs.items():
        body = await make_agent(
            client, owner, name=f"{agent_type} agent", type=agent_type, config=config
        )
        assert body["type"] == agent_type and body["version"] == 1 and body["status"] == "draft"
    schemas = (await client.get("/api/v1/agents/types", headers=owner.headers)).json()
    assert {s["type"] for s in schemas} == set(configs)
    assert "properties" in next(s for s in schemas if s["type"] == "llm")["config_schema"]


@pytest.mark.parametrize(
    ("agent_type", "config", "field"),
    [
        ("llm", {"provider": "openai"}, "body.config"),
        ("llm", {"model": "m", "temperature": 7}, "body.config.temperature"),
        ("llm", {"model": "m", "mystery": 1}, "body.config.mystery"),
        (
            "llm",
            {"model": "m", "response_schema": {"type": "nonsense"}},
            "body.config.response_schema.type",
        ),
        ("code", {"source": "def main(:\n  pass"}, "body.config.source"),
        ("code", {"source": "x = 1"}, "body.config.source"),
        ("api", {"url": "https://x", "max_redirects": 9}, "body.config.max_redirects"),
        ("data", {}, "body.config"),
        ("workflow", {}, "body.config.workflow"),
    ],
)
async def test_bad_configs_name_the_field_and_write_nothing(
    client: httpx.AsyncClient, operator_db: Database, agent_type: str, config: dict, field: str
) -> None:
    owner = await signup(client, "badcfg@example.com")
    r = await client.post(
        "/api/v1/agents",
        headers=owner.headers,
        json={"name": "x", "type": agent_type, "config": config},
    )
    body = assert_problem(r, 422, "validation_failed")
    assert field in [e["field"] for e in body["errors"]], body
    async with operator_db.transaction() as session:
        assert (await session.execute(AgentRow.__table__.select())).first() is None


async def test_code_is_parsed_never_run(client: httpx.AsyncClient, tmp_path) -> None:
    owner = await signup(client, "code@example.com")
    marker = tmp_path / "ran"
    source = f"open({str(marker)!r}, 'w').write('x')\ndef main(input):\n    return 1\n"
    await make_agent(client, owner, name="c", type="code", config={"source": source})
    assert not marker.exists()


async def test_versions_lifecycle_and_history(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    owner = await signup(client, "ver@example.com")
    agent = await make_agent(client, owner)
    url = f"/api/v1/agents/{agent['id']}"
    # never run: edits happen in place
    r = await client.patch(url, headers=owner.headers, json={"config": LLM | {"temperature": 0.2}})
    assert r.json()["id"] == agent["id"] and r.json()["version"] == 1
    # once it has run, a config change makes version 2 pointing at the first row
    async with operator_db.transaction() as session:
        row = await session.get(AgentRow, uuid.UUID(agent["id"]))
        assert row is not None
        row.total_executions = 3
    r = await client.patch(url, headers=owner.headers, json={"config": LLM | {"temperature": 0.9}})
    v2 = r.json()
    assert v2["version"] == 2 and v2["parent_id"] == agent["id"] and v2["id"] != agent["id"]
    assert (await client.get(url, headers=owner.headers)).json()["config"]["temperature"] == 0.2
    # non-versioned fields still edit in place; only the latest version is editable
    r = await client.patch(
        f"/api/v1/agents/{v2['id']}", headers=owner.headers, json={"description": "d"}
    )
    assert r.json()["id"] == v2["id"]
    assert_problem(await client.patch(url, headers=owner.headers, json={"description": "x"}), 422)
    history = (await client.get(f"{url}/versions", headers=owner.headers)).json()
    assert [h["version"] for h in history] == [2, 1]
    listed = (await client.get("/api/v1/agents", headers=owner.headers)).json()["items"]
    assert [a["id"] for a in listed] == [v2["id"]]
    assert (
        len(
            (
                await client.get(
                    "/api/v1/agents", headers=owner.headers, params={"all_versions": True}
                )
            ).json()["items"]
        )
        == 2
    )

    # lifecycle: only valid transitions
    v2url = f"/api/v1/agents/{v2['id']}"
    assert (await client.patch(v2url, headers=owner.headers, json={"status": "active"})).json()[
        "status"
    ] == "active"
    assert_problem(
        await client.patch(v2url, headers=owner.headers, json={"status": "draft"}),
        409,
        "invalid_transition",
    )
    assert (
        await client.patch(v2url, headers=owner.headers, json={"status": "archived"})
    ).status_code == 200


async def test_soft_delete_and_restore(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "del@example.com")
    agent = await make_agent(client, owner)
    url = f"/api/v1/agents/{agent['id']}"
    assert (await client.delete(url, headers=owner.headers)).status_code == 204
    assert_problem(await client.get(url, headers=owner.headers), 404)
    assert (await client.get("/api/v1/agents", headers=owner.headers)).json()["items"] == []
    r = await client.post(f"{url}/restore", headers=owner.headers)
    assert r.status_code == 200
    assert (await client.get(url, headers=owner.headers)).status_code == 200
    assert_problem(await client.post(f"{url}/restore", headers=owner.headers), 422)


async def test_sharing_and_tenancy(client: httpx.AsyncClient) -> None:
    a = await signup(client, "sa@example.com", "A")
    b = await signup(client, "sb@example.com", "B")
    private = await make_agent(client, a, name="private one")
    public = await make_agent(client, a, name="public one", is_public=True)
    assert_problem(await client.get(f"/api/v1/agents/{private['id']}", headers=b.headers), 404)
    assert (
        await client.get(f"/api/v1/agents/{public['id']}", headers=b.headers)
    ).status_code == 200
    assert_problem(
        await client.patch(
            f"/api/v1/agents/{public['id']}", headers=b.headers, json={"name": "mine"}
        ),
        404,
    )
    assert_problem(await client.delete(f"/api/v1/agents/{public['id']}", headers=b.headers), 404)
    shared = (
        await client.get("/api/v1/agents", headers=b.headers, params={"public": True})
    ).json()["items"]
    assert [s["id"] for s in shared] == [public["id"]]
    assert (await client.get("/api/v1/agents", headers=b.headers)).json()["items"] == []


async def test_viewers_read_but_cannot_write(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "vo@example.com", "Team")
    viewer = await signup(client, "vv@example.com", "Own")
    r = await client.post(
        f"/api/v1/organizations/{owner.org_id}/members", headers=owner.headers,
        json={"email": viewer.email, "role": "viewer"},
    )  # fmt: skip
    assert r.status_code == 201
    agent = await make_agent(client, owner)
    as_viewer = viewer.headers | {"X-Organization-Id": owner.org_id}
    assert (await client.get(f"/api/v1/agents/{agent['id']}", headers=as_viewer)).status_code == 200
    assert_problem(
        await client.post(
            "/api/v1/agents", headers=as_viewer, json={"name": "x", "type": "llm", "config": LLM}
        ),
        403,
    )
    assert_problem(
        await client.patch(f"/api/v1/agents/{agent['id']}", headers=as_viewer, json={"name": "y"}),
        403,
    )


async def test_find_by_type_status_tags_text_and_sort(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "find@example.com")
    await make_agent(
        client,
        owner,
        name="Invoice extractor",
        description="reads PDF invoices",
        tags=["finance", "ocr"],
    )
    await make_agent(
        client,
        owner,
        name="Lead scorer",
        description="scores inbound leads",
        tags=["sales"],
        type="code",
        config=CODE,
    )
    await make_agent(
        client,
        owner,
        name="Ticket triage",
        description="routes support tickets",
        tags=["support"],
        status="active",
    )

    async def names(**params: object) -> list[str]:
        r = await client.get("/api/v1/agents", headers=owner.headers, params=params)
        assert r.status_code == 200, r.text
        return [a["name"] for a in r.json()["items"]]

    assert await names(type="code") == ["Lead scorer"]
    assert await names(status="active") == ["Ticket triage"]
    assert sorted(await names(tags=["finance", "support"])) == [
        "Invoice extractor",
        "Ticket triage",
    ]
    assert await names(q="invoices") == ["Invoice extractor"]
    assert await names(q="support tickets") == ["Ticket triage"]
    assert await names(sort="name") == ["Invoice extractor", "Lead scorer", "Ticket triage"]
    assert await names(sort="-name", limit=2) == ["Ticket triage", "Lead scorer"]
    page = (
        await client.get(
            "/api/v1/agents", headers=owner.headers, params={"sort": "name", "limit": 2}
        )
    ).json()
    rest = (
        await client.get(
            "/api/v1/agents",
            headers=owner.headers,
            params={"sort": "name", "cursor": page["next_cursor"]},
        )
    ).json()
    assert [a["name"] for a in rest["items"]] == ["Ticket triage"] and rest["next_cursor"] is None
    assert_problem(
        await client.get("/api/v1/agents", headers=owner.headers, params={"sort": "size"}), 422
    )


async def test_projects_crud(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "proj@example.com")
    other = await signup(client, "proj2@example.com", "Other")
    r = await client.post("/api/v1/projects", headers=owner.headers, json={"name": "Marketing"})
    assert r.status_code == 201
    project = r.json()
    assert_problem(
        await client.post("/api/v1/projects", headers=owner.headers, json={"name": "Marketing"}),
        409,
    )
    assert (
        await client.post("/api/v1/projects", headers=other.headers, json={"name": "Marketing"})
    ).status_code == 201
    url = f"/api/v1/projects/{project['id']}"
    assert (
        await client.patch(url, headers=owner.headers, json={"description": "campaigns"})
    ).json()["description"] == "campaigns"
    assert_problem(await client.get(url, headers=other.headers), 404)
    assert [
        p["name"]
        for p in (await client.get("/api/v1/projects", headers=owner.headers)).json()["items"]
    ] == ["Marketing"]
    assert (await client.delete(url, headers=owner.headers)).status_code == 204
    assert_problem(await client.get(url, headers=owner.headers), 404)
