"""PostgreSQL specifics: the application role and the per-transaction tenant settings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import text

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from turbocat.db.engine import TenantContext

TENANT_SETTING = "turbocat.organization_id"
USER_SETTING = "turbocat.user_id"
API_KEY_HASH_SETTING = "turbocat.api_key_hash"
SYSTEM_SETTING = "turbocat.system"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def set_role(dbapi_conn: Any, role: str) -> None:
    """Act as the application role so RLS applies even when the URL names a superuser."""
    cursor = dbapi_conn.cursor()
    cursor.execute(f"SET ROLE {quote_ident(role)}")
    cursor.close()


async def set_tenant(session: AsyncSession, context: TenantContext) -> None:
    """Transaction-local settings that the row-level security policies read."""
    await session.execute(
        text(
            "SELECT set_config(:t, :org, true), set_config(:u, :user, true),"
            " set_config(:k, :key, true), set_config(:s, :system, true)"
        ),
        {
            "t": TENANT_SETTING,
            "org": str(context.organization_id or ""),
            "u": USER_SETTING,
            "user": str(context.user_id or ""),
            "k": API_KEY_HASH_SETTING,
            "key": context.api_key_hash or "",
            "s": SYSTEM_SETTING,
            "system": "on" if context.system else "",
        },
    )
