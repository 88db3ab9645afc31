"""PostgreSQL through asyncpg, with a transaction's tenant settings sent with its BEGIN and
its notifications with its COMMIT.

Every transaction that acts for a tenant (or for the platform) first sets the settings the
row-level security policies read (``postgres.set_tenant``), transaction-local on purpose: a
pooled connection must never carry one tenant's identity into its next use. Sent as a
statement of its own, that is one more round trip per transaction, about a tenth of what a
worker's transactions cost. SQLAlchemy's asyncpg adapter sends ``BEGIN`` lazily, just before
the transaction's first statement; this adapter lets ``set_tenant`` leave the settings with
the connection, and sends them in the same message as ``BEGIN`` (the simple query protocol
runs several statements in one round trip). The transaction is then ended with plain
``COMMIT`` / ``ROLLBACK``, as asyncpg's own transaction object would, and ``NOTIFY``s that
``signals.announce`` left with the connection go out in the same message as that ``COMMIT``
(PostgreSQL delivers notifications at commit anyway; a rolled-back transaction sends none).
So do the writes a transaction makes as it commits and whose results nobody reads (the log
lines, the component statistics: ``dialects.execute_at_commit``), their values written as
literals by ``render``.

The dialect is registered as ``postgresql+turbocat_asyncpg``; ``db.engine.async_url`` maps
``postgresql://`` URLs onto it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.dialects import registry
from sqlalchemy.dialects.postgresql.asyncpg import (
    AsyncAdapt_asyncpg_connection,
    AsyncAdapt_asyncpg_dbapi,
    PGDialect_asyncpg,
)
from sqlalchemy.util.concurrency import await_

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

DRIVER = "turbocat_asyncpg"


def literal(value: str) -> str:
    """A SQL string literal, read the same whatever ``standard_conforming_strings`` says (an
    escape string: only the backslash and the quote are special in it)."""
    if "\x00" in value:
        raise ValueError("a PostgreSQL string cannot hold a NUL character")
    return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


class NotRenderable(TypeError):
    """A value this module does not write as a literal (the caller sends it as a parameter)."""


def _literal_of(value: Any) -> str:
    if value is None:
        return "NULL"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return literal(value)
    if isinstance(value, uuid.UUID):
        return f"'{value}'"
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise NotRenderable("a naive datetime")
        return f"'{value.isoformat()}'"
    if isinstance(value, float | decimal.Decimal) and math.isfinite(value):
        return str(value)
    raise NotRenderable(type(value).__name__)


_PLACEHOLDER = re.compile(r"\$(\d+)")


@dataclass(frozen=True)
class _Template:
    stmt: Any  # held: the cache is keyed by its id
    compiled: Any
    text: list[str]
    """The compiled SQL around its placeholders (one more piece than ``slots``)."""
    slots: list[int]
    """For each placeholder, the index of its parameter in ``compiled.positiontup``."""


_TEMPLATES: dict[tuple[int, type], _Template] = {}


def _template(dialect: Any, stmt: Any) -> _Template:
    key = (id(stmt), type(dialect))
    found = _TEMPLATES.get(key)
    if found is None:
        compiled = stmt.compile(dialect=dialect)
        pieces = _PLACEHOLDER.split(compiled.string)
        found = _TEMPLATES[key] = _Template(
            stmt, compiled, pieces[0::2], [int(n) - 1 for n in pieces[1::2]]
        )
    return found


def render(dialect: Any, stmt: Any, rows: Sequence[Mapping[str, Any]]) -> str:
    """``stmt`` once per row of ``rows``, its parameters written as literals, to be sent
    where no parameters can go (with the COMMIT, see ``send_with_commit``). Each value goes
    through its column type's bind processing first, as a parameter would; the compiled
    statement keeps the casts of its placeholders (``$2::JSONB``), so each literal is read
    as the type a parameter would have had. Raises ``NotRenderable`` for a value it does not
    write (the caller then runs the statement itself)."""
    template = _template(dialect, stmt)
    compiled = template.compiled
    processors = compiled._bind_processors  # the types' bind processing, by parameter name
    statements = []
    for row in rows:
        values = compiled.construct_params(row)
        literals = []
        for name in compiled.positiontup:
            value = values[name]
            process = processors.get(name)
            literals.append(_literal_of(process(value) if process is not None else value))
        parts = [template.text[0]]
        for slot, after in zip(template.slots, template.text[1:], strict=True):
            parts += (literals[slot], after)
        statements.append("".join(parts))
    return "; ".join(statements)


class _Begun:
    """A transaction this adapter began itself: ended by plain statements, the commit with
    whatever was left to send with it."""

    __slots__ = ("_adapter", "_connection")

    def __init__(self, adapter: Connection, connection: Any) -> None:
        self._adapter = adapter
        self._connection = connection

    async def commit(self) -> None:
        postlude, self._adapter._postlude = self._adapter._postlude, []
        try:
            await self._connection.execute("; ".join([*postlude, "COMMIT"]))
        except BaseException:
            # A statement sent before the COMMIT failed: the server skipped the COMMIT and
            # the transaction is still open (aborted). End it, or the pool would hand out a
            # connection stuck in a failed transaction.
            if not self._connection.is_closed() and self._connection.is_in_transaction():
                with contextlib.suppress(Exception):
                    await self._connection.execute("ROLLBACK")
            raise

    async def rollback(self) -> None:
        self._adapter._postlude = []
        if not self._connection.is_closed():
            await self._connection.execute("ROLLBACK")


class Connection(AsyncAdapt_asyncpg_connection):
    __slots__ = ("_postlude", "_prelude")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._prelude: str | None = None
        self._postlude: list[str] = []

    def send_with_commit(self, sql: str, *, once: bool = False) -> bool:
        """Send ``sql`` (no parameters) in the same round trip as this transaction's COMMIT,
        after what was sent so before it (``once``: unless the same SQL already waits there);
        False when this adapter did not begin the transaction (the caller runs it itself)."""
        if not isinstance(self._transaction, _Begun):
            return False
        if not once or sql not in self._postlude:
            self._postlude.append(sql)
        return True

    def send_with_begin(self, sql: str) -> bool:
        """Send ``sql`` (no parameters) in the same round trip as this transaction's BEGIN;
        False when the transaction has already begun (the caller runs it itself)."""
        if self._transaction is not None or self.isolation_level == "autocommit":
            return False
        self._prelude = sql
        return True

    async def _start_transaction(self) -> None:
        prelude, self._prelude = self._prelude, None
        if prelude is None:
            await super()._start_transaction()  # type: ignore[no-untyped-call]
            return
        begin = ["BEGIN"]
        if self.isolation_level:
            begin.append("ISOLATION LEVEL " + self.isolation_level.replace("_", " ").upper())
        if self.readonly:
            begin.append("READ ONLY")
        if self.deferrable:
            begin.append("DEFERRABLE")
        connection: Any = self._connection  # asyncpg's Connection
        try:
            await connection.execute(" ".join(begin) + "; " + prelude)
        except Exception as error:
            if not connection.is_closed() and connection.is_in_transaction():
                await connection.execute("ROLLBACK")
            self._handle_exception(error)
        else:
            self._transaction = _Begun(self, connection)  # type: ignore[assignment]

    # A transaction that ended without a statement never sent its BEGIN: what it left for
    # the BEGIN must not go out with the next transaction's (the pool's reset on return is a
    # rollback, so a connection never goes back to the pool holding it).
    def rollback(self) -> None:
        self._prelude, self._postlude = None, []
        super().rollback()  # type: ignore[no-untyped-call]

    def commit(self) -> None:
        self._prelude = None
        super().commit()  # type: ignore[no-untyped-call]


async def adapter_of(session: AsyncSession) -> Connection | None:
    """This driver's connection under ``session`` (None with another driver)."""
    connection = await session.connection()
    adapter = (await connection.get_raw_connection()).dbapi_connection
    return adapter if isinstance(adapter, Connection) else None


class _DBAPI(AsyncAdapt_asyncpg_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> Connection:
        creator_fn = kw.pop("async_creator_fn", self.asyncpg.connect)
        cache_size = kw.pop("prepared_statement_cache_size", 100)
        name_func = kw.pop("prepared_statement_name_func", None)
        return await_(
            Connection.create(
                self,
                creator_fn(*arg, **kw),
                prepared_statement_cache_size=cache_size,
                prepared_statement_name_func=name_func,
            )
        )


class Dialect(PGDialect_asyncpg):
    driver = DRIVER
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> Any:
        return _DBAPI(__import__("asyncpg"))  # type: ignore[no-untyped-call]


registry.register(f"postgresql.{DRIVER}", __name__, "Dialect")
