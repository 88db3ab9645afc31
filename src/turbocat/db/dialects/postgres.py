"""PostgreSQL specifics: the application role, the per-transaction tenant settings, full-text
search and advisory locks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import ColumnElement, Text, func, literal_column, text
from sqlalchemy import cast as cast_
from sqlalchemy.dialects.postgresql import ARRAY

from turbocat.db.dialects import postgres_driver

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

    from turbocat.db.engine import TenantContext

TENANT_SETTING = "turbocat.organization_id"
USER_SETTING = "turbocat.user_id"
API_KEY_HASH_SETTING = "turbocat.api_key_hash"
SYSTEM_SETTING = "turbocat.system"
TENANT_KEY = "turbocat_tenant"
"""Where a session remembers the tenant settings its transaction made."""


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def set_role(dbapi_conn: Any, role: str) -> None:
    """Act as the application role so RLS applies even when the URL names a superuser.
    Committed at once: the driver runs it inside a transaction, and had that transaction
    stayed open into the connection's first use, a rollback there would have undone it and
    left the connection acting as the URL's role (a superuser bypasses RLS) for good."""
    cursor = dbapi_conn.cursor()
    cursor.execute(f"SET ROLE {quote_ident(role)}")
    cursor.close()
    dbapi_conn.commit()


async def set_tenant(session: AsyncSession, context: TenantContext) -> None:
    """Transaction-local settings that the row-level security policies read (no round trip
    when this transaction already acts for ``context``; none of its own either when the
    transaction has not begun yet: they go out with its BEGIN, see ``postgres_driver``)."""
    info = session.sync_session.info
    if session.in_nested_transaction():  # a savepoint's rollback would undo the settings
        info.pop(TENANT_KEY, None)
    elif info.get(TENANT_KEY) == context:
        return
    else:
        info[TENANT_KEY] = context
    values = {
        TENANT_SETTING: str(context.organization_id or ""),
        USER_SETTING: str(context.user_id or ""),
        API_KEY_HASH_SETTING: context.api_key_hash or "",
        SYSTEM_SETTING: "on" if context.system else "",
    }
    adapter = await postgres_driver.adapter_of(session)
    if adapter is not None:
        sql = "SELECT " + ", ".join(
            f"set_config({postgres_driver.literal(k)}, {postgres_driver.literal(v)}, true)"
            for k, v in values.items()
        )
        if adapter.send_with_begin(sql):
            return
    await session.execute(
        text(
            "SELECT set_config(:t, :org, true), set_config(:u, :user, true),"
            " set_config(:k, :key, true), set_config(:s, :system, true)"
        ),
        {
            "t": TENANT_SETTING,
            "org": values[TENANT_SETTING],
            "u": USER_SETTING,
            "user": values[USER_SETTING],
            "k": API_KEY_HASH_SETTING,
            "key": values[API_KEY_HASH_SETTING],
            "s": SYSTEM_SETTING,
            "system": values[SYSTEM_SETTING],
        },
    )


def array_overlaps(column: Any, values: Sequence[str]) -> ColumnElement[bool]:
    """``tags && ARRAY[...]``: served by the GIN index on the column."""
    overlaps = column.op("&&", is_comparison=True)  # a boolean, so that it can be negated
    return cast(ColumnElement[bool], overlaps(cast_(list(values), ARRAY(Text()))))


def tsvector(columns: Sequence[Any]) -> ColumnElement[Any]:
    """The same expression the full-text GIN indexes are built on (english configuration)."""
    parts: list[Any] = [func.coalesce(c, "") for c in columns]
    document = parts[0]
    for part in parts[1:]:
        document = document.op("||")(" ").op("||")(part)
    return func.to_tsvector(literal_column("'english'::regconfig"), document)


def full_text_match(columns: Sequence[Any], query: str) -> ColumnElement[bool]:
    ts_query = func.websearch_to_tsquery(literal_column("'english'::regconfig"), query)
    return cast(ColumnElement[bool], tsvector(columns).op("@@")(ts_query))


async def try_advisory_lock(conn: AsyncConnection, key: int) -> bool:
    """Take the session-level advisory lock ``key`` if no other session holds it (it outlives
    the transaction: ``advisory_unlock`` or closing the connection releases it)."""
    got = await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})
    return bool(got.scalar_one())


async def advisory_unlock(conn: AsyncConnection, key: int) -> None:
    await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
