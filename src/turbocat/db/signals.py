"""Cross-process wake-ups: PostgreSQL NOTIFY inside the transaction (delivered on commit only,
never for rolled-back work) and a LISTEN connection per worker. SQLite has a single process
whose in-memory notifier is enough, so both are no-ops there."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db.dialects import postgres_driver
from turbocat.db.engine import Database

READY = "turbocat_ready"
"""Payload: a task queue that has new ready steps."""
CANCEL = "turbocat_cancel"
"""Payload: an execution whose running steps must stop."""

log = logging.getLogger("turbocat.db")


async def announce(session: AsyncSession, channel: str, payload: str) -> None:
    """Tell every listening process, once this transaction commits (sent with the COMMIT
    when the driver can: no round trip of its own, see ``dialects.postgres_driver``; not
    inside a savepoint, whose rollback must take the notification back with it)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    if not session.in_nested_transaction():
        adapter = await postgres_driver.adapter_of(session)
        literal = postgres_driver.literal
        sql = f"SELECT pg_notify({literal(channel)}, {literal(payload)})"
        if adapter is not None and adapter.send_with_commit(sql, once=True):
            return
    await session.execute(text("SELECT pg_notify(:c, :p)"), {"c": channel, "p": payload})


class Listener:
    """Calls ``on_message(channel, payload)`` for every notification; reconnects on failure."""

    def __init__(self, db: Database, channels: list[str], on_message: Callable[[str, str], None]):
        self.db = db
        self.channels = channels
        self.on_message = on_message
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.db.dialect == "postgresql" and self._task is None:
            self._task = asyncio.create_task(self._run(), name="pg-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        import asyncpg

        dsn = self.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while True:
            conn = None
            try:
                conn = await asyncpg.connect(dsn)
                closed = asyncio.Event()
                conn.add_termination_listener(lambda _c, done=closed: done.set())
                for channel in self.channels:
                    await conn.add_listener(channel, self._deliver)
                # A reconnect may have missed notifications: wake once to look for work.
                self.on_message(READY, "*")
                await closed.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database went away: retry, the worker keeps polling
                log.warning("LISTEN connection lost (%s); reconnecting", exc)
                await asyncio.sleep(1)
            finally:
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.close()

    def _deliver(self, _conn: object, _pid: int, channel: str, payload: str) -> None:
        self.on_message(channel, payload)
