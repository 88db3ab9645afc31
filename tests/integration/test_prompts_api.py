"""Agent prompts over HTTP: versions, visibility, and sandboxed rendering."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.integration.conftest import Account, assert_problem, signup
from turbocat.db.engine import Database
from turbocat.services.catalog import seed_catalog

GREETING = {
    "name": "greeter",
    "display_name": "Greeter",
    "role": "support agent",
    "model_provider": "openai",
    "model_name": "gpt-4o-mini",
    "parameters": {"temperature": 0.2},
    "recommended_models": ["gpt-4o-mini"],
    "prompt_content": "Hello {{ vars.customer_name }}, you wrote about {{ vars.topic | default('your order') }}. {{ vars.count * 2 }}",
    "prompt_variables": {
        "customer_name": {"type": "string", "required": True},
        "topic": {"type": "string", "description": "what it is about"},
        "count": {"type": "integer", "default": 1},
    },
    "tags": ["Support"],
}


async def make_prompt(client: httpx.AsyncClient, who: Account, **body: Any) -> dict[str, Any]:
    r = await client.post("/api/v1/prompts", headers=who.headers, json=GREETING | body)
    assert r.status_code == 201, r.text
    return r.json()


async def test_render_substitutes_and_checks_variables(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "pr@example.com")
    prompt = await make_prompt(client, owner)
    assert prompt["version"] == "1.0.0" and prompt["tags"] == ["support"]
    url = f"/api/v1/prompts/{prompt['id']}/render"
    r = await client.post(url, headers=owner.headers, json={"variables": {"customer_name": "Ada"}})
    assert r.status_code == 200, r.text
    assert r.json()["text"] == "Hello Ada, you wrote about your order. 2"
    r = await client.post(
        url, headers=owner.headers,
        json={"variables": {"customer_name": "Ada", "topic": "a refund", "count": 4}},
    )  # fmt: skip
    assert r.json()["text"] == "Hello Ada, you wrote about a refund. 8"
    missing = assert_problem(await client.post(url, headers=owner.headers, json={}), 422)
    assert [e["field"] for e in missing["errors"]] == ["body.variables.customer_name"]
    assert "customer_name" in missing["detail"]
    unknown = assert_problem(
        await client.post(
            url, headers=owner.headers,
            json={"variables": {"customer_name": "Ada", "evil": "{{ 1 + 1 }}"}},
        ),
        422,
    )  # fmt: skip
    assert [e["field"] for e in unknown["errors"]] == ["body.variables.evil"]
    wrong = assert_problem(
        await client.post(
            url, headers=owner.headers, json={"variables": {"customer_name": 5, "count": "x"}}
        ),
        422,
    )
    assert {e["field"] for e in wrong["errors"]} == {
        "body.variables.customer_name", "body.variables.count",
    }  # fmt: skip
    # values are data: an expression inside a value is never evaluated
    r = await client.post(
        url, headers=owner.headers, json={"variables": {"customer_name": "{{ vars.count }}"}}
    )
    assert r.json()["text"].startswith("Hello {{ vars.count }},")


@pytest.mark.parametrize(
    "content",
    [
        "{{ __import__('os').system('id') }}",
        "{{ input.secret }}",
        "{{ steps.x.output }}",
        "{{ vars.customer_name.__class__.__mro__ }} {{ eval('1') }}",
        "{{ vars.undeclared }}",
        "{{ vars.customer_name ",
    ],
)
async def test_hostile_or_broken_prompts_are_refused_on_save(
    client: httpx.AsyncClient, content: str
) -> None:
    owner = await signup(client, "hostile@example.com")
    r = await client.post(
        "/api/v1/prompts", headers=owner.headers, json=GREETING | {"prompt_content": content}
    )
    problem = assert_problem(r, 422)
    assert problem["errors"][0]["field"] == "body.prompt_content"


async def test_runaway_rendering_is_bounded(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "bomb@example.com")
    prompt = await make_prompt(
        client, owner, name="bomb",
        prompt_content="{{ vars.customer_name * 100000000 }}",
    )  # fmt: skip
    r = await client.post(
        f"/api/v1/prompts/{prompt['id']}/render", headers=owner.headers,
        json={"variables": {"customer_name": "abcdefgh"}},
    )  # fmt: skip
    assert_problem(r, 422)


async def test_versions_must_increase_and_are_unique(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "ver@example.com")
    v1 = await make_prompt(client, owner)
    url = f"/api/v1/prompts/{v1['id']}/versions"
    r = await client.post(
        url, headers=owner.headers,
        json={"version": "1.1.0", "prompt_content": "Hi {{ vars.customer_name }}!"},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    v2 = r.json()
    assert v2["name"] == "greeter" and v2["role"] == "support agent"  # copied
    assert v2["prompt_variables"] == v1["prompt_variables"]
    assert_problem(await client.post(url, headers=owner.headers, json={"version": "1.1.0"}), 409)
    lower = assert_problem(
        await client.post(url, headers=owner.headers, json={"version": "1.0.5"}), 422
    )
    assert lower["errors"][0]["field"] == "body.version"
    assert_problem(await client.post(url, headers=owner.headers, json={"version": "2"}), 422)
    r = await client.post(
        url,
        headers=owner.headers,
        json={"version": "2.0.0-rc.1", "prompt_content": "{{ vars.nope }}"},
    )
    assert_problem(r, 422)
    r = await client.post(
        "/api/v1/prompts", headers=owner.headers, json=GREETING | {"version": "1.0.0"}
    )
    assert_problem(r, 409)
    versions = (await client.get(url, headers=owner.headers)).json()
    assert [v["version"] for v in versions] == ["1.1.0", "1.0.0"]
    r = await client.post(f"/api/v1/prompts/{v1['id']}/deprecate", headers=owner.headers)
    assert r.json()["deprecated"] is True
    r = await client.get(
        "/api/v1/prompts?name=greeter&include_deprecated=false", headers=owner.headers
    )
    assert [p["version"] for p in r.json()["items"]] == ["1.1.0"]
    r = await client.patch(
        f"/api/v1/prompts/{v2['id']}", headers=owner.headers, json={"prompt_content": "x"}
    )
    assert_problem(r, 422)
    r = await client.delete(f"/api/v1/prompts/{v1['id']}", headers=owner.headers)
    assert r.status_code == 204
    assert_problem(await client.get(f"/api/v1/prompts/{v1['id']}", headers=owner.headers), 404)


async def test_visibility_builtins_and_roles(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    await seed_catalog(operator_db)
    owner = await signup(client, "pv@example.com", "Owner")
    other = await signup(client, "pv2@example.com", "Other")
    viewer = await signup(client, "pv3@example.com", "Viewer")
    r = await client.post(
        f"/api/v1/organizations/{owner.org_id}/members", headers=owner.headers,
        json={"email": viewer.email, "role": "viewer"},
    )  # fmt: skip
    assert r.status_code == 201
    as_viewer = viewer.headers | {"X-Organization-Id": owner.org_id}
    shared = await make_prompt(client, owner)
    public = await make_prompt(client, owner, name="public-greeter", visibility="public")
    assert_problem(await client.get(f"/api/v1/prompts/{shared['id']}", headers=other.headers), 404)
    assert (
        await client.get(f"/api/v1/prompts/{public['id']}", headers=other.headers)
    ).status_code == 200
    assert_problem(
        await client.post(
            f"/api/v1/prompts/{public['id']}/versions", headers=other.headers,
            json={"version": "9.0.0"},
        ),
        404,
    )  # fmt: skip
    assert (
        await client.get(f"/api/v1/prompts/{shared['id']}", headers=as_viewer)
    ).status_code == 200
    assert_problem(await client.post("/api/v1/prompts", headers=as_viewer, json=GREETING), 403)
    builtins = (await client.get("/api/v1/prompts?builtin=true", headers=other.headers)).json()[
        "items"
    ]
    names = {p["name"] for p in builtins}
    assert {"summarizer", "classifier", "support-reply-writer"} <= names
    classifier = next(p for p in builtins if p["name"] == "classifier")
    r = await client.post(
        f"/api/v1/prompts/{classifier['id']}/render", headers=other.headers,
        json={"variables": {"labels": ["billing", "bug"]}},
    )  # fmt: skip
    assert "billing, bug" in r.json()["text"]
    assert_problem(
        await client.delete(f"/api/v1/prompts/{classifier['id']}", headers=other.headers), 403
    )
