"""Answers that wait for an execution to end (``?wait=`` and waiting webhooks).

The request's transaction must commit before anyone can run the execution, and it commits when
the endpoint returns (see ``api/deps.py``). So the endpoint returns a ``WaitForExecution``
response, and the waiting happens when that response is sent: after the commit, holding no
transaction, polling the execution row (a worker in this or any other process runs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from turbocat.db.engine import Database, TenantContext
from turbocat.db.models import ExecutionRow
from turbocat.domain.runs import EXECUTION_TERMINAL
from turbocat.services import executions

FIRST_POLL_SECONDS = 0.005
MAX_POLL_SECONDS = 0.2


async def wait_for_end(
    db: Database, organization_id: uuid.UUID, execution_id: uuid.UUID, seconds: float
) -> tuple[ExecutionRow | None, bool]:
    """The execution once it has ended (True), or as it is when ``seconds`` ran out (False).
    Polls often at first (most waited-for runs are short), backing off to every 200 ms."""
    deadline = time.monotonic() + seconds
    interval = FIRST_POLL_SECONDS
    context = TenantContext(organization_id=organization_id)
    while True:
        async with db.transaction(context, readonly=True) as session:
            row = await executions.find(session, organization_id, execution_id)
        if row is None or row.status in EXECUTION_TERMINAL:
            return row, row is not None
        left = deadline - time.monotonic()
        if left <= 0:
            return row, False
        await asyncio.sleep(min(interval, left))
        interval = min(interval * 1.5, MAX_POLL_SECONDS)


class WaitForExecution(Response):
    """Sent after the request's transaction committed: waits up to ``seconds`` for the
    execution, then sends what ``answer(row, ended)`` makes of it."""

    def __init__(
        self,
        db: Database,
        organization_id: uuid.UUID,
        execution_id: uuid.UUID,
        seconds: float,
        render: Callable[[ExecutionRow | None, bool], Response],
    ) -> None:
        super().__init__(status_code=202)
        self.db = db
        self.organization_id = organization_id
        self.execution_id = execution_id
        self.seconds = seconds
        self.answer = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        waiting = asyncio.ensure_future(
            wait_for_end(self.db, self.organization_id, self.execution_id, self.seconds)
        )
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait({waiting, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not waiting.done():  # the caller hung up: stop polling for nobody
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
            return
        row, ended = waiting.result()
        await self.answer(row, ended)(scope, receive, send)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
