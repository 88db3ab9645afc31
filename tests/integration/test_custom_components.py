"""Custom components in process: a package found through its entry point by the embedded worker
(``turbocat serve``'s), registered in the catalog, run with validated inputs and outputs."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.component_package import MODULE, write_package
from tests.integration.conftest import Account, assert_problem, signup
from tests.integration.test_engine import wait_done
from turbocat.config import Settings


@pytest.fixture
def acme_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The package on sys.path, as an installed distribution would be."""
    root = write_package(tmp_path / "site")
    monkeypatch.syspath_prepend(str(root))
    yield root
    sys.modules.pop(MODULE, None)


@pytest.fixture
def settings(database_url: str, tmp_path: Path, acme_path: Path) -> Settings:
    """The embedded worker serves the components' queue too."""
    return Settings(
        home=tmp_path / "home", database_url=database_url, engine={"queues": ["default", "acme"]}
    )


def custom(key: str, name: str, inputs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    component = {"kind": "custom", "name": name} | extra.pop("component", {})
    return {"key": key, "type": "agent", "component": component, "inputs": inputs} | extra


async def save(
    client: httpx.AsyncClient, who: Account, steps: list[dict[str, Any]]
) -> httpx.Response:
    body = {"name": f"wf {uuid.uuid4().hex[:6]}", "definition": {"steps": steps}}
    return await client.post("/api/v1/workflows", headers=who.headers, json=body)


async def start(client: httpx.AsyncClient, who: Account, steps: list[dict[str, Any]], payload: dict[str, Any]) -> str:  # fmt: skip
    r = await save(client, who, steps)
    assert r.status_code == 201, r.text
    r = await client.post(
        f"/api/v1/workflows/{r.json()['id']}/executions",
        headers=who.headers,
        json={"input": payload},
    )
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


async def run(client: httpx.AsyncClient, who: Account, steps: list[dict[str, Any]], payload: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    return await wait_done(client, who, await start(client, who, steps, payload))


async def test_a_component_from_an_entry_point_runs_on_its_queue(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "custom@example.com")
    # The embedded worker registered what it loaded: system-level, public, schemas derived.
    r = await client.get("/api/v1/components", headers=owner.headers, params={"q": "acme.enrich"})
    [row] = r.json()["items"]
    assert (row["kind"], row["version"], row["task_queue"]) == ("custom", "1.2.0", "acme")
    assert row["organization_id"] is None and row["builtin"] is False
    assert row["package"] == "acme-components"
    assert row["implementation_path"] == "acme_components:enrich"
    assert row["input_schema"]["required"] == ["email"]
    assert row["output_schema"]["properties"]["score"] == {"minimum": 0, "title": "Score", "type": "integer"}  # fmt: skip
    builtins = await client.get("/api/v1/components?builtin=true&limit=50", headers=owner.headers)
    assert "acme.enrich" not in {c["name"] for c in builtins.json()["items"]}

    steps = [
        custom("enrich", "acme.enrich", {"email": "{{ input.email }}", "score": "{{ input.n }}"},
               component={"version": "^1.2"}),
        custom("add", "acme.add", {"a": "{{ steps.enrich.output.score }}"}, depends_on=["enrich"]),
        {"key": "shape", "type": "agent", "depends_on": ["add"], "component": {"kind": "data",
         "config": {"mapping": {"d": "{{ steps.enrich.output.domain }}", "s": "{{ steps.add.output.sum }}"}}}},
    ]  # fmt: skip
    done = await run(client, owner, steps, {"email": "ann@acme.test", "n": 20})
    assert done["status"] == "completed", done
    by_key = {s["step_key"]: s for s in done["steps"]}
    assert by_key["enrich"]["output"]["domain"] == "acme.test"
    assert by_key["enrich"]["output"]["score"] == 40
    assert by_key["enrich"]["queue"] == "acme" and by_key["shape"]["queue"] == "default"
    assert by_key["shape"]["output"] == {"d": "acme.test", "s": 41}


async def test_inputs_and_outputs_are_validated_naming_the_field(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "types@example.com")
    done = await run(
        client, owner, [custom("e", "acme.enrich", {"email": ["not", "a", "string"]})], {}
    )
    assert done["status"] == "failed"
    error = done["steps"][0]["error"]
    assert error["type"] == "invalid_input" and not error["retryable"]
    assert "inputs.email" in error["message"]
    assert error["details"]["errors"][0]["field"] == "inputs.email"

    done = await run(client, owner, [custom("a", "acme.add", {"a": 1, "c": 2})], {})
    assert "inputs.c" in done["steps"][0]["error"]["message"]  # plain parameters forbid extras

    done = await run(client, owner, [custom("l", "acme.liar", {"n": 3})], {})
    error = done["steps"][0]["error"]
    assert error["type"] == "invalid_output" and "output.score" in error["message"]


async def test_an_exception_is_a_step_failure_that_retries(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "boom@example.com")
    step = custom("b", "acme.boom", {"message": "no stock"}, retry={"count": 1, "delay_ms": 0})
    done = await run(client, owner, [step], {})
    assert done["status"] == "failed"
    attempts = [s for s in done["steps"] if s["step_key"] == "b"]
    assert len(attempts) == 2
    error = attempts[-1]["error"]
    assert error["type"] == "component_error" and error["retryable"]
    assert "RuntimeError: no stock" in error["message"]
    assert "acme_components.py" in error["stack"]


async def test_a_sync_function_is_stopped_by_the_step_timeout(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "slow@example.com")
    steps = [
        # a margin: a loaded machine (CI) once took over 100 ms to run "a"
        custom("s", "acme.sleepy", {"seconds": 1.5}, timeout_ms=600),
        custom("a", "acme.add", {"a": 1}),  # runs meanwhile: the sleep is in a thread
    ]
    done = await run(client, owner, steps, {})
    by_key = {s["step_key"]: s for s in done["steps"]}
    assert by_key["s"]["error"]["type"] == "timeout"
    assert by_key["a"]["output"] == {"sum": 2}


async def test_unknown_components_and_versions_are_refused_on_save(
    client: httpx.AsyncClient,
) -> None:
    owner = await signup(client, "save@example.com")
    body = assert_problem(await save(client, owner, [custom("x", "acme.nothing", {})]), 422)
    assert body["errors"][0]["field"] == "body.definition.steps.0.component.name", body
    assert "acme.nothing" in body["errors"][0]["message"]
    body = assert_problem(
        await save(client, owner, [custom("x", "acme.enrich", {}, component={"version": "^2"})]),
        422,
    )
    assert "matching ^2" in body["detail"]
    assert_problem(
        await save(client, owner, [custom("x", "acme.enrich", {}, component={"version": "two"})]),
        422,
    )
    bad = {"key": "d", "type": "agent", "component": {"kind": "data", "version": "1.0.0"}}
    assert_problem(await save(client, owner, [bad]), 422)


async def test_a_step_no_live_worker_serves_waits_visibly(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "wait@example.com")
    # task_queue overrides the component's queue: nobody serves "gpu" here.
    execution_id = await start(
        client, owner, [custom("e", "acme.enrich", {"email": "a@b.c"}, task_queue="gpu")], {}
    )
    body = (await client.get(f"/api/v1/executions/{execution_id}", headers=owner.headers)).json()
    [step] = body["steps"]
    assert (body["status"], step["status"], step["queue"]) == ("running", "ready", "gpu")
    assert step["status_detail"] == "waiting for a worker serving queue gpu"
    assert body["waiting_for_workers"] == ["gpu"]


async def test_a_custom_step_in_a_loop_body_runs_per_item(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "loop@example.com")
    body = custom("add", "acme.add", {"a": "{{ item }}", "b": "{{ index }}"})
    loop = {"key": "each", "type": "loop", "over": "{{ input.items }}", "body": body,
            "max_concurrency": 3}  # fmt: skip
    done = await run(client, owner, [loop], {"items": [10, 20, 30, 40]})
    assert done["status"] == "completed", done
    each = next(s for s in done["steps"] if s["step_key"] == "each")
    assert each["output"] == [{"sum": 10}, {"sum": 21}, {"sum": 32}, {"sum": 43}]
    assert {s["queue"] for s in done["steps"] if s["step_key"] == "add"} == {"acme"}


async def test_another_tenants_public_component_does_not_reroute_steps(
    client: httpx.AsyncClient,
) -> None:
    owner = await signup(client, "mine@example.com")
    other = await signup(client, "theirs@example.com", "Other")
    r = await client.post(
        "/api/v1/components", headers=other.headers,
        json={"name": "acme.enrich", "version": "9.0.0", "task_queue": "theirs",
              "visibility": "public", "implementation_path": "evil:enrich"},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    done = await run(client, owner, [custom("e", "acme.enrich", {"email": "a@b.c"})], {})
    assert done["status"] == "completed" and done["steps"][0]["queue"] == "acme", done
    # Their own steps follow their registration (nobody serves "theirs" here).
    execution_id = await start(client, other, [custom("e", "acme.enrich", {"email": "a@b.c"})], {})
    body = (await client.get(f"/api/v1/executions/{execution_id}", headers=other.headers)).json()
    assert body["waiting_for_workers"] == ["theirs"]
