"""Pure ASGI middleware: request ids and the request body size limit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from turbocat.api.errors import PROBLEM_JSON
from turbocat.db.engine import is_conflict
from turbocat.logging import request_id_var


class RequestIdMiddleware:
    """Takes X-Request-ID from the client (or makes one), logs with it, and echoes it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if 0 < len(given) <= 128 and given.isprintable() else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


class _TooLarge(Exception):
    pass


class BodySizeLimitMiddleware:
    """Refuses bodies over ``max_bytes`` with 413, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._reject(scope, send)
            return
        received = 0
        responded = False

        async def limited_receive() -> Message:
            nonlocal received, responded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    if not responded:
                        responded = True
                        await self._reject(scope, send)
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal responded
            if message["type"] == "http.response.start":
                if responded:  # the app's own answer to the aborted body is dropped
                    return
                responded = True
            elif message["type"] == "http.response.body" and received > self.max_bytes:
                return
            await send(message)

        with contextlib.suppress(_TooLarge):  # the 413 has already been sent
            await self.app(scope, limited_receive, guarded_send)

    async def _reject(self, scope: Scope, send: Send) -> None:
        body: dict[str, Any] = {
            "type": "urn:turbocat:problem:payload_too_large",
            "title": "Payload too large",
            "status": 413,
            "detail": f"the request body exceeds the limit of {self.max_bytes} bytes",
            "code": "payload_too_large",
            "instance": scope.get("path"),
        }
        raw = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", PROBLEM_JSON.encode()),
                    (b"content-length", str(len(raw)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": raw})


class ConflictRetryMiddleware:
    """Runs a request again when the database aborted its transaction to break a deadlock or a
    serialization conflict (PostgreSQL asks for such a transaction to be retried).

    Safe because a request is one transaction, rolled back whole on error, and it commits
    before anything is sent: a request is only run again while no response has started. Sits
    inside the body size limit, so the body it keeps for a replay is already bounded.
    """

    def __init__(self, app: ASGIApp, attempts: int = 4) -> None:
        self.app = app
        self.attempts = attempts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body: list[Message] = []
        while True:
            message = await receive()
            body.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        for attempt in range(1, self.attempts + 1):
            try:
                await self._run(scope, list(body), receive, send)
            except _Aborted as aborted:
                if aborted.started or attempt == self.attempts or not is_conflict(aborted.error):
                    raise aborted.error from None
            else:
                return
            await asyncio.sleep(random.uniform(0.002, 0.02) * attempt)  # noqa: S311 - backoff

    async def _run(self, scope: Scope, body: list[Message], receive: Receive, send: Send) -> None:
        started = False
        replay = iter(body)

        async def replay_receive() -> Message:
            # The body again, then the client's own messages (a disconnect, for streams).
            return next(replay, None) or await receive()

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, replay_receive, tracking_send)
        except Exception as exc:
            raise _Aborted(exc, started) from exc


class _Aborted(Exception):
    def __init__(self, error: Exception, started: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.started = started
