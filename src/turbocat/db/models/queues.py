"""Task queues and the live worker registry (seed 003)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, CheckConstraint, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from turbocat.db.base import Base, IdMixin, TimestampMixin
from turbocat.db.models._common import CreatedByMixin, OptionalTenantMixin, partial_index
from turbocat.db.types import StrList, UTCDateTime, enum_type
from turbocat.domain.enums import WorkerStatus


class TaskQueueRow(IdMixin, TimestampMixin, OptionalTenantMixin, CreatedByMixin, Base):
    """A named queue with concurrency limits. System queues (``default``, ...) have no
    organization and are shared; an organization's queue names are unique within it."""

    __tablename__ = "task_queues"
    __table_args__ = (
        UniqueConstraint("organization_id", "name"),
        partial_index(
            "uq_task_queues_system_name", "name", unique=True, where="organization_id IS NULL"
        ),
        CheckConstraint(
            "is_system_queue = (organization_id IS NULL)", name="system_queue_has_no_organization"
        ),
        CheckConstraint(
            "max_concurrent_workflows > 0 AND max_concurrent_activities > 0",
            name="limits_positive",
        ),
        {"info": {"rls": "tenant_or_public"}},
    )

    name: Mapped[str] = mapped_column(String(255))
    display_name: Mapped[str | None] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    max_concurrent_workflows: Mapped[int] = mapped_column(Integer, default=100)
    max_concurrent_activities: Mapped[int] = mapped_column(Integer, default=1000)
    """Steps running at once on this queue across all workers."""
    is_system_queue: Mapped[bool] = mapped_column(Boolean, default=False)


class WorkerRow(IdMixin, TimestampMixin, Base):
    """A worker process (platform-wide, not owned by a tenant): heartbeats and served queues."""

    __tablename__ = "workers"
    __table_args__ = (
        CheckConstraint("concurrency > 0", name="concurrency_positive"),
        Index("ix_workers_status", "status"),
        Index("ix_workers_last_heartbeat_at", "last_heartbeat_at"),
    )

    worker_id: Mapped[str] = mapped_column(String(255), unique=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    queues: Mapped[list[str]] = mapped_column(StrList, default=list)
    status: Mapped[WorkerStatus] = mapped_column(
        enum_type(WorkerStatus, "worker_status"), default=WorkerStatus.RUNNING
    )
    concurrency: Mapped[int] = mapped_column(Integer, default=1)
    version: Mapped[str | None] = mapped_column(String(50))
    """turbocat version the worker runs."""
    last_heartbeat_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    stopped_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    error_message: Mapped[str | None] = mapped_column(Text)
