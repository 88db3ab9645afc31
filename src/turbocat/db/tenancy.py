"""Entering a tenant context mid-transaction (for example right after creating an organization)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db import dialects
from turbocat.db.engine import TenantContext


async def enter(session: AsyncSession, context: TenantContext) -> None:
    """Make the rest of this transaction act for ``context`` (RLS on PostgreSQL; SQLite: no-op)."""
    if session.get_bind().dialect.name == "postgresql":
        await dialects.postgres.set_tenant(session, context)
