"""What starts executions besides a direct call: schedules, webhooks, and the events outbox."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from turbocat.db.base import Base, IdMixin, TenantMixin, TimestampMixin
from turbocat.db.models._common import CreatedByMixin, fk, partial_index
from turbocat.db.types import GUID, JSONDoc, StrList, UTCDateTime, enum_type, utc_now
from turbocat.domain.enums import MisfirePolicy


class ScheduleRow(IdMixin, TimestampMixin, TenantMixin, CreatedByMixin, Base):
    """A cron schedule of a workflow (seed 003; seed 000's workflow.schedule_* map here)."""

    __tablename__ = "schedules"
    __table_args__ = (
        CheckConstraint("max_runs IS NULL OR max_runs > 0", name="max_runs_positive"),
        CheckConstraint("run_count >= 0", name="run_count_non_negative"),
        partial_index("ix_schedules_next_fire_at", "next_fire_at", where="enabled"),
        {"info": {"rls": "tenant"}},
    )

    workflow_id: Mapped[uuid.UUID] = mapped_column(GUID, fk("workflows.id", "CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(String(255))
    cron_expression: Mapped[str] = mapped_column(String(100))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    input: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    start_immediately: Mapped[bool] = mapped_column(Boolean, default=False)
    max_runs: Mapped[int | None] = mapped_column(Integer)
    """NULL: unlimited."""
    run_count: Mapped[int] = mapped_column(Integer, default=0)
    misfire_policy: Mapped[MisfirePolicy] = mapped_column(
        enum_type(MisfirePolicy, "misfire_policy"), default=MisfirePolicy.SKIP
    )
    next_fire_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_fired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    work_queue_id: Mapped[uuid.UUID | None] = mapped_column(
        GUID, fk("workflow_work_queues.id", "SET NULL"), index=True
    )


class WebhookRow(IdMixin, TimestampMixin, TenantMixin, CreatedByMixin, Base):
    """A secret URL that starts a workflow (seed 002).

    Only the SHA-256 of the token is stored (``token_hash``); ``token_prefix`` identifies it in
    listings. ``signing_secrets_encrypted`` holds the HMAC secrets (several during rotation),
    sealed like integration credentials. Row-level security lets a request that presents the
    token find the row before any tenant is known (policy kind "credential").
    """

    __tablename__ = "webhooks"
    __table_args__ = (
        CheckConstraint("trigger_count >= 0", name="trigger_count_non_negative"),
        CheckConstraint(
            "wait_timeout_ms IS NULL OR wait_timeout_ms > 0", name="wait_timeout_positive"
        ),
        {"info": {"rls": "credential", "credential_column": "token_hash"}},
    )

    workflow_id: Mapped[uuid.UUID] = mapped_column(GUID, fk("workflows.id", "CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(String(255))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_prefix: Mapped[str] = mapped_column(String(20))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    signing_secrets_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    signing_key_id: Mapped[str | None] = mapped_column(String(64))
    allowed_content_types: Mapped[list[str]] = mapped_column(StrList, default=list)
    wait_for_result: Mapped[bool] = mapped_column(Boolean, default=False)
    wait_timeout_ms: Mapped[int | None] = mapped_column(Integer)
    last_triggered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    trigger_count: Mapped[int] = mapped_column(Integer, default=0)


class EventRow(IdMixin, TenantMixin, Base):
    """The outbox: platform events written in the transaction that caused them
    (``execution.completed``, ...), dispatched to subscribers after commit."""

    __tablename__ = "events"
    __table_args__ = (
        partial_index("ix_events_unprocessed", "created_at", where="processed_at IS NULL"),
        Index("ix_events_organization_id_name_created_at", "organization_id", "name", "created_at"),
        CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        {"info": {"rls": "tenant"}},
    )

    name: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utc_now)
    processed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
