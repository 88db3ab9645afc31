"""Engines and transactions: the only place that knows which driver serves which URL.

Users give plain ``postgresql://`` or ``sqlite:///`` URLs; the driver is ours to choose
(asyncpg, aiosqlite). On PostgreSQL every pooled connection switches to the application role
(``SET ROLE``) so row-level security applies, and each transaction states its tenant.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import ORMExecuteState, Session, with_loader_criteria

from turbocat.config import Settings
from turbocat.db import dialects
from turbocat.db.base import SoftDeleteMixin


class TurbocatSession(Session):
    """Hides soft-deleted rows unless a statement asks ``include_deleted=True``."""


@event.listens_for(TurbocatSession, "do_orm_execute")
def _hide_soft_deleted(state: ORMExecuteState) -> None:
    if (
        state.is_select
        and not state.is_column_load
        and not state.is_relationship_load
        and not state.execution_options.get("include_deleted", False)
    ):
        state.statement = state.statement.options(
            with_loader_criteria(
                SoftDeleteMixin,
                lambda cls: cls.deleted_at.is_(None),
                include_aliases=True,
            )
        )


def async_url(url: str) -> URL:
    """Map a user's URL onto the async driver turbocat uses for it."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    raise ValueError(
        f"unsupported database URL scheme {parsed.drivername!r}: use postgresql:// or sqlite:///"
    )


def create_engine(settings: Settings, *, app_role: bool = True) -> AsyncEngine:
    """An engine for the application (``app_role=True``) or for migrations (the URL's own role)."""
    url = async_url(settings.resolved_database_url)
    kwargs: dict[str, Any] = {"echo": settings.database.echo}
    if url.get_backend_name() == "sqlite":
        dialects.sqlite.prepare_path(url)
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs.update(
            pool_size=settings.database.pool_size,
            max_overflow=settings.database.max_overflow,
            pool_pre_ping=True,
        )
    engine = create_async_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", dialects.sqlite.on_connect)
        event.listen(engine.sync_engine, "begin", dialects.sqlite.on_begin)
    elif app_role:
        role = settings.database.app_role
        event.listen(
            engine.sync_engine,
            "connect",
            lambda dbapi_conn, _rec: dialects.postgres.set_role(dbapi_conn, role),
        )
    return engine


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

    @classmethod
    def from_settings(cls, settings: Settings, *, app_role: bool = True) -> Database:
        """``app_role=False`` is for operator tools (CLI admin verbs), acting as the URL's role."""
        return cls(create_engine(settings, app_role=app_role))

    @asynccontextmanager
    async def transaction(
        self, context: TenantContext | None = None
    ) -> AsyncIterator[AsyncSession]:
        """One use case, one transaction: commits on success, rolls back on any error."""
        async with self._sessions() as session, session.begin():
            if context is not None and self.dialect == "postgresql":
                await dialects.postgres.set_tenant(session, context)
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()


def after_commit(session: AsyncSession, callback: Callable[[], None]) -> None:
    """Run ``callback`` once this session's transaction has committed (never on rollback):
    for side effects that must follow durable state, such as waking workers."""
    event.listen(session.sync_session, "after_commit", lambda _s: callback(), once=True)
