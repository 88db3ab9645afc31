"""A request whose transaction lost a deadlock runs again, body and all; nothing else does."""

from __future__ import annotations

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from turbocat.api.middleware import ConflictRetryMiddleware


class Deadlock(Exception):
    sqlstate = "40P01"


class Plain(Exception):
    pass


def app_failing(times: int, error: type[Exception], seen: list[bytes]) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        seen.append(message.get("body", b""))
        if len(seen) <= times:
            raise error("aborted")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


@pytest.mark.anyio
async def test_a_deadlock_victim_is_replayed_with_its_body() -> None:
    seen: list[bytes] = []
    app = ConflictRetryMiddleware(app_failing(2, Deadlock, seen))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        response = await c.post("/", content=b"payload")
    assert response.status_code == 200
    assert seen == [b"payload"] * 3


@pytest.mark.anyio
async def test_other_errors_and_endless_conflicts_are_not_hidden() -> None:
    seen: list[bytes] = []
    app = ConflictRetryMiddleware(app_failing(1, Plain, seen))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        with pytest.raises(Plain):
            await c.post("/", content=b"x")
    assert len(seen) == 1
    seen.clear()
    app = ConflictRetryMiddleware(app_failing(99, Deadlock, seen), attempts=3)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        with pytest.raises(Deadlock):
            await c.post("/", content=b"x")
    assert len(seen) == 3
