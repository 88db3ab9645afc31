"""Maintenance jobs that must not run twice at once (retention), however many schedulers and
operators start them."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from turbocat.db import dialects
from turbocat.db.engine import Database


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``name`` (PostgreSQL advisory locks take a bigint)."""
    digest = hashlib.sha256(f"turbocat.job.{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@asynccontextmanager
async def exclusive(db: Database, name: str) -> AsyncIterator[bool]:
    """Hold the job lock ``name`` for the block; yields False (and holds nothing) when another
    process holds it. On PostgreSQL a session-level advisory lock on a connection kept for the
    block, so the job's own short transactions can come and go. On SQLite only one scheduler
    serves a database (separate scheduler processes need PostgreSQL), so there is nothing to
    take: a concurrent operator run only deletes by primary key what is already expired."""
    if db.dialect != "postgresql":
        yield True
        return
    key = lock_key(name)
    async with db.engine.connect() as conn:
        held = await dialects.postgres.try_advisory_lock(conn, key)
        await conn.commit()  # the lock is the session's: end the transaction, keep the lock
        try:
            yield held
        finally:
            if held:
                await dialects.postgres.advisory_unlock(conn, key)
                await conn.commit()
