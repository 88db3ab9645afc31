"""Engines and transactions: the only place that knows which driver serves which URL.

Users give plain ``postgresql://`` or ``sqlite:///`` URLs; the driver is ours to choose
(asyncpg, aiosqlite). On PostgreSQL every pooled connection switches to the application role
(``SET ROLE``) so row-level security applies, and each transaction states its tenant.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, ExceptionContext, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction, with_loader_criteria
from sqlalchemy.sql import util as sql_util

from turbocat.config import Settings
from turbocat.db import dialects
from turbocat.db.base import Base, SoftDeleteMixin


class TurbocatSession(Session):
    """Hides soft-deleted rows unless a statement asks ``include_deleted=True``."""


_HIDE_DELETED = with_loader_criteria(
    SoftDeleteMixin, lambda cls: cls.deleted_at.is_(None), include_aliases=True
)


@event.listens_for(TurbocatSession, "do_orm_execute")
def _hide_soft_deleted(state: ORMExecuteState) -> None:
    if (
        state.is_select
        and not state.is_column_load
        and not state.is_relationship_load
        and not state.execution_options.get("include_deleted", False)
        and _reads_soft_deleted(state.statement)
    ):
        state.statement = state.statement.options(_HIDE_DELETED)


_SOFT_DELETED_TABLES: frozenset[str] = frozenset()
_READS_SOFT_DELETED: dict[Any, bool] = {}


def _reads_soft_deleted(statement: Any) -> bool:
    """Whether a table with soft-deleted rows appears anywhere in ``statement`` (columns,
    joins, aliases, subqueries), remembered per statement shape (its cache key, which SQLAlchemy
    computes once per statement object anyway). The criteria option costs about as much as the
    rest of a prebuilt statement's execution, and most engine statements read none of these
    tables. Unknown shapes (no cache key) always get it."""
    global _SOFT_DELETED_TABLES
    key = statement._generate_cache_key()
    if key is None:
        return True
    known = _READS_SOFT_DELETED.get(key.key)
    if known is None:
        if not _SOFT_DELETED_TABLES:
            _SOFT_DELETED_TABLES = frozenset(
                str(getattr(m.local_table, "name", ""))
                for m in Base.registry.mappers
                if issubclass(m.class_, SoftDeleteMixin)
            )
        tables = sql_util.find_tables(
            statement, check_columns=True, include_aliases=True, include_joins=True
        )
        names = {getattr(t, "name", None) for t in tables}
        known = bool(names & _SOFT_DELETED_TABLES)
        if len(_READS_SOFT_DELETED) > 4096:  # shapes are few; bound it anyway
            _READS_SOFT_DELETED.clear()
        _READS_SOFT_DELETED[key.key] = known
    return known


def async_url(url: str) -> URL:
    """Map a user's URL onto the async driver turbocat uses for it."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername=f"postgresql+{dialects.postgres_driver.DRIVER}")
    if backend == "sqlite":
        return parsed.set(drivername=f"sqlite+{dialects.sqlite_driver.DRIVER}")
    raise ValueError(
        f"unsupported database URL scheme {parsed.drivername!r}: use postgresql:// or sqlite:///"
    )


def create_engine(settings: Settings, *, app_role: bool = True) -> AsyncEngine:
    """An engine for the application (``app_role=True``) or for migrations (the URL's own role)."""
    url = async_url(settings.resolved_database_url)
    kwargs: dict[str, Any] = {"echo": settings.database.echo}
    if url.get_backend_name() == "sqlite":
        dialects.sqlite.prepare_path(url)
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
    else:
        kwargs.update(
            pool_size=settings.database.pool_size,
            max_overflow=settings.database.max_overflow,
        )
    engine = create_async_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", dialects.sqlite.on_connect)
        event.listen(engine.sync_engine, "begin", dialects.sqlite.on_begin)
    else:
        event.listen(engine.sync_engine, "handle_error", _flag_lost_connection)
        _ping_when_idle(engine)
        if app_role:
            role = settings.database.app_role
            event.listen(
                engine.sync_engine,
                "connect",
                lambda dbapi_conn, _rec: dialects.postgres.set_role(dbapi_conn, role),
            )
    return engine


IDLE_PING_SECONDS = 1.0
"""A pooled connection unused for this long is pinged before it is handed out."""


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Pre-ping, but only connections that sat idle: a busy process reuses its connections
    within milliseconds, and a ping per transaction was a round trip per transaction. A
    connection that the server dropped while it was in steady use fails its next statement
    instead; that error marks it lost (``_flag_lost_connection``), the pool is recycled, and
    the caller's retry gets a fresh connection (workers retry by themselves; the API answers
    503 with Retry-After, as it does while the database is down)."""
    sync_engine = engine.sync_engine
    dialect = sync_engine.dialect

    def connected(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    def checked_in(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    def checked_out(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("idle_since", 0.0) < IDLE_PING_SECONDS:
            return
        try:
            dialect.do_ping(dbapi_conn)
        except Exception as exc:
            raise DisconnectionError(f"a pooled connection was lost: {exc}") from exc

    event.listen(sync_engine, "connect", connected)
    event.listen(sync_engine, "checkin", checked_in)
    event.listen(sync_engine, "checkout", checked_out)


_NETWORK_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT}
)
_SERVER_GOING_AWAY = frozenset({"57P01", "57P02", "57P03", "53300"})
"""admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections."""


def is_disconnect(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an error behind it, says the database cannot be reached or the
    connection to it was lost (a restart, a failover, a network cut): try again later, it is
    not a bug."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return True
        if isinstance(exc, ConnectionError) or (
            isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS
        ):
            return True
        sqlstate = getattr(exc, "sqlstate", None)  # asyncpg's server errors
        if isinstance(sqlstate, str) and (
            sqlstate.startswith("08")  # connection_exception, incl. "connection was closed"
            or sqlstate in _SERVER_GOING_AWAY
            or (sqlstate == "55000" and "not currently accepting connections" in str(exc))
        ):
            return True
        if type(exc).__name__ == "InternalClientError" and type(exc).__module__.startswith(
            "asyncpg"
        ):
            # The server's "terminating connection" arrived on an idle connection and asyncpg's
            # protocol is stuck waiting for a reply that will never come: the socket is dying.
            return True
        exc = exc.__cause__ or exc.__context__
    return False


_CONFLICTS = frozenset({"40P01", "40001"})
"""deadlock_detected, serialization_failure: the server aborted this transaction so that
another could go on, and asks for the whole transaction to be tried again."""


def is_conflict(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an error behind it, is a transaction the database aborted to break
    a deadlock or a serialization conflict: running the same transaction again is correct."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if getattr(exc, "sqlstate", None) in _CONFLICTS:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _flag_lost_connection(context: ExceptionContext) -> None:
    """Let the pool drop connections asyncpg has lost but not yet noticed (SQLAlchemy only asks
    ``is_closed()``), so the pre-ping reconnects instead of failing the checkout, and so the
    error reaching the caller says ``connection_invalidated``."""
    if not context.is_disconnect and is_disconnect(context.original_exception):
        context.is_disconnect = True


@dataclass(frozen=True)
class TenantContext:
    """Who a transaction acts for; RLS policies read these values on PostgreSQL."""

    organization_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    api_key_hash: str | None = None
    """SHA-256 of a presented secret (API key, webhook token, deployment key) being looked up."""
    system: bool = False
    """Platform work across tenants (workers, scheduler, maintenance); never set for a request."""


class Database:
    """An engine plus a session factory, opened once per process and passed down."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._sessions = async_sessionmaker(
            engine, expire_on_commit=False, autoflush=True, sync_session_class=TurbocatSession
        )
        self._readers = async_sessionmaker(
            engine.execution_options(turbocat_readonly=True),
            expire_on_commit=False,
            autoflush=True,
            sync_session_class=TurbocatSession,
        )
        self._offloaded = async_sessionmaker(
            engine.execution_options(turbocat_offload=True),
            expire_on_commit=False,
            autoflush=True,
            sync_session_class=TurbocatSession,
        )
        self._write_lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    def _writers_queue(self) -> asyncio.Lock | None:
        """SQLite has one writer at a time. Writers of this process wait their turn here, in
        order, instead of in SQLite's busy handler, which sleeps in steps of up to 100 ms and
        so made every contended transaction tens of milliseconds late."""
        if self.dialect != "sqlite":
            return None
        loop = asyncio.get_running_loop()
        if self._write_lock is None or self._write_lock[0] is not loop:
            self._write_lock = (loop, asyncio.Lock())
        return self._write_lock[1]

    @classmethod
    def from_settings(cls, settings: Settings, *, app_role: bool = True) -> Database:
        """``app_role=False`` is for operator tools (CLI admin verbs), acting as the URL's role."""
        return cls(create_engine(settings, app_role=app_role))

    @asynccontextmanager
    async def transaction(
        self,
        context: TenantContext | None = None,
        *,
        readonly: bool = False,
        offload: bool = False,
    ) -> AsyncIterator[AsyncSession]:
        """One use case, one transaction: commits on success, rolls back on any error.
        ``readonly`` transactions that only read do not take SQLite's write lock up front, so
        they never wait behind (or hold up) a writer. ``offload`` is for bulk writes whose
        statements take long: on SQLite they run off the event loop's thread (short writes run
        on it, see ``dialects.sqlite_driver``)."""
        sessions = self._readers if readonly else self._offloaded if offload else self._sessions
        queue = None if readonly else self._writers_queue()
        async with contextlib.AsyncExitStack() as stack:
            if queue is not None:
                await stack.enter_async_context(queue)
            session = await stack.enter_async_context(sessions())
            await stack.enter_async_context(session.begin())
            if context is not None and self.dialect == "postgresql":
                await dialects.postgres.set_tenant(session, context)
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()


def at_commit(session: AsyncSession, key: str, work: Callable[[Session], object]) -> None:
    """Run ``work`` (synchronous, given the sync session) as this transaction commits, after
    everything else it did; several run in ``key`` order. For writes to rows that many
    transactions share (counters): their row locks are then held for the commit only, not
    for the rest of the transaction, and always taken in the same order (no deadlocks between
    them). A rollback drops them with everything else, a savepoint's rollback those registered
    inside it."""
    sync = session.sync_session
    scope = sync.get_nested_transaction() or sync.get_transaction()
    sync.info.setdefault("at_commit", []).append((key, work, scope))


@event.listens_for(TurbocatSession, "before_commit")
def _run_at_commit(session: Session) -> None:
    if session.get_nested_transaction() is not None:
        return  # a savepoint is released (SQLAlchemy signals that as a commit too): not yet
    pending = session.info.pop("at_commit", None)
    if pending:
        for _key, work, _scope in sorted(pending, key=lambda item: item[0]):
            work(session)


_AFTER_COMMIT = "after_commit"
"""The session's info key of ``after_commit``'s callbacks (with the transaction or savepoint
each was registered in)."""


@event.listens_for(TurbocatSession, "after_soft_rollback")
def _drop_rolled_back(session: Session, previous_transaction: SessionTransaction) -> None:
    """A savepoint (or the whole transaction) rolled back: so did the work registered in it."""
    pending = session.info.get("at_commit")
    if pending:
        session.info["at_commit"] = [
            entry for entry in pending if not _inside(entry[2], previous_transaction)
        ]
    waiting = session.info.get(_AFTER_COMMIT)
    if waiting:
        session.info[_AFTER_COMMIT] = [
            entry for entry in waiting if not _inside(entry[1], previous_transaction)
        ]


def _inside(scope: SessionTransaction | None, ended: SessionTransaction) -> bool:
    while scope is not None:
        if scope is ended:
            return True
        scope = scope.parent
    return False


@event.listens_for(TurbocatSession, "after_rollback")
def _forget_tenant_on_rollback(session: Session) -> None:
    """Also after a savepoint's rollback, which may have undone settings made inside it."""
    session.info.pop(dialects.postgres.TENANT_KEY, None)


@event.listens_for(TurbocatSession, "after_commit")
def _after_outer_commit(session: Session) -> None:
    """Transaction-local settings end with the transaction; what waited for the commit runs."""
    if session.get_nested_transaction() is not None:
        return  # a savepoint was released (SQLAlchemy signals that as a commit too): not yet
    session.info.pop(dialects.postgres.TENANT_KEY, None)
    for callback, _scope in session.info.pop(_AFTER_COMMIT, ()):
        callback()


def after_commit(session: AsyncSession, callback: Callable[[], None]) -> None:
    """Run ``callback`` once this session's transaction has committed (never on rollback,
    nor when the savepoint it was registered in rolls back): for side effects that must
    follow durable state, such as waking workers. (Kept in the session's info rather than
    as a listener of its own: registering a listener cost ~0.1 ms per call.)"""
    sync = session.sync_session
    scope = sync.get_nested_transaction() or sync.get_transaction()
    sync.info.setdefault(_AFTER_COMMIT, []).append((callback, scope))
