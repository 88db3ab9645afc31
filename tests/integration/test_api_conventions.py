"""Conventions every endpoint shares: health, OpenAPI, problem+json, request ids."""

from __future__ import annotations

import httpx

from tests.integration.conftest import assert_problem


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    r = await client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"]["database"] == "ok"


async def test_openapi_and_docs(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    operation_ids = {
        op["operationId"]
        for path in spec["paths"].values()
        for op in path.values()
        if "operationId" in op
    }
    assert {
        "auth-signup",
        "auth-login",
        "users-me",
        "api-keys-create",
        "audit-logs-list",
        "members-add",
    } <= operation_ids
    assert "/api/v1/auth/signup" in spec["paths"]
    assert (await client.get("/docs")).status_code == 200


async def test_unknown_route_and_method_are_problems(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/api/v1/nope"), 404, "not_found")
    assert_problem(await client.get("/api/v1/auth/signup"), 405, "method_not_allowed")


async def test_request_id_is_echoed_or_made(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert len((await client.get("/healthz")).headers["x-request-id"]) == 32
