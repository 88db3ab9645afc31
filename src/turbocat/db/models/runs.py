"""Runs: executions, the engine's durable step state, logs and per-component statistics."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    literal_column,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from turbocat.db.base import Base, IdMixin, TenantMixin, TimestampMixin
from turbocat.db.models._common import fk, partial_index
from turbocat.db.types import GUID, JSONDoc, UTCDateTime, enum_type, utc_now
from turbocat.domain.enums import (
    ExecutionResult,
    ExecutionStatus,
    LogLevel,
    StepStatus,
    StepType,
    TriggerType,
    WorkItemStatus,
)
from turbocat.domain.ids import new_id, new_id_at


def _id_of_created_at(context: Any) -> uuid.UUID:
    """An execution's id carries its ``created_at`` (when given) rather than the clock's time:
    on PostgreSQL the id picks the month partition, and lists filtered by creation time prune
    partitions by id (``db.partitions.created_window``)."""
    created = context.get_current_parameters().get("created_at")
    return new_id_at(created) if isinstance(created, dt.datetime) else new_id()


class ExecutionRow(IdMixin, TimestampMixin, TenantMixin, Base):
    """One run of one workflow version (all seeds).

    ``workflow_id`` pins the exact version row. The actor is a user, an API key, or neither
    (schedules, events). ``idempotency_key`` is unique per (organization, workflow) when given.
    """

    __tablename__ = "executions"
    __table_args__ = (
        CheckConstraint(
            "steps_total >= 0 AND steps_completed >= 0 AND steps_failed >= 0",
            name="step_counters_non_negative",
        ),
        CheckConstraint("duration_ms IS NULL OR duration_ms >= 0", name="duration_non_negative"),
        # Unique per (organization, workflow) when given. PostgreSQL partitions executions by
        # id (migration 0006) and cannot have this unique index there: the table
        # execution_idempotency_keys, filled by a trigger, holds the uniqueness instead.
        partial_index(
            "uq_executions_idempotency_key",
            "organization_id",
            "workflow_id",
            "idempotency_key",
            unique=True,
            where="idempotency_key IS NOT NULL",
        ).ddl_if(dialect="sqlite"),
        partial_index(
            "ix_executions_idempotency_key",
            "organization_id",
            "workflow_id",
            "idempotency_key",
            where="idempotency_key IS NOT NULL",
        ).ddl_if(dialect="postgresql"),
        Index("ix_executions_organization_id_created_at", "organization_id", "created_at"),
        Index("ix_executions_workflow_id_created_at", "workflow_id", "created_at"),
        Index("ix_executions_status", "status"),
        # Running executions of a workflow (its max_concurrent_executions, at every start).
        Index("ix_executions_workflow_id_status", "workflow_id", "status"),
        partial_index(
            "ix_executions_completed_at", "completed_at", where="completed_at IS NOT NULL"
        ),
        {"info": {"rls": "tenant"}},
    )

    id: Mapped[uuid.UUID] = mapped_column(
        GUID, primary_key=True, default=_id_of_created_at, sort_order=-100
    )
    workflow_id: Mapped[uuid.UUID] = mapped_column(GUID, fk("workflows.id", "CASCADE"))
    user_id: Mapped[uuid.UUID | None] = mapped_column(GUID, fk("users.id", "SET NULL"), index=True)
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(
        GUID, fk("api_keys.id", "SET NULL"), index=True
    )
    deployment_id: Mapped[uuid.UUID | None] = mapped_column(
        GUID, fk("deployments.id", "SET NULL"), index=True
    )
    parent_execution_id: Mapped[uuid.UUID | None] = mapped_column(
        GUID, fk("executions.id", "SET NULL"), index=True
    )
    """The execution whose workflow step started this one as a child."""
    parent_step_key: Mapped[str | None] = mapped_column(String(100))
    rerun_of_execution_id: Mapped[uuid.UUID | None] = mapped_column(
        GUID, fk("executions.id", "SET NULL"), index=True
    )
    """The failed execution this one re-runs from its failed step (completed outputs reused)."""
    status: Mapped[ExecutionStatus] = mapped_column(
        enum_type(ExecutionStatus, "execution_status"), default=ExecutionStatus.PENDING
    )
    result: Mapped[ExecutionResult] = mapped_column(
        enum_type(ExecutionResult, "execution_result"), default=ExecutionResult.PENDING
    )
    trigger_type: Mapped[TriggerType] = mapped_column(enum_type(TriggerType, "trigger_type"))
    trigger_data: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    input_data: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    output_data: Mapped[Any] = mapped_column(JSONDoc, default=dict)
    steps_total: Mapped[int] = mapped_column(Integer, default=0)
    steps_completed: Mapped[int] = mapped_column(Integer, default=0)
    steps_failed: Mapped[int] = mapped_column(Integer, default=0)
    error_message: Mapped[str | None] = mapped_column(Text)
    error_stack: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    task_queue: Mapped[str] = mapped_column(String(255), default="default")
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    timeout_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    """started_at + the workflow's execution timeout; past it the execution is ``timeout``."""
    cancel_requested_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class StepRunRow(IdMixin, TimestampMixin, TenantMixin, Base):
    """The engine's durable state: one row per step, frame and attempt.

    A *frame* is one instance of a graph: the top level (``scope`` ""), one iteration of a loop
    body (``/loop[3]``) or the branches of a parallel step (``/par[]``); nested frames
    concatenate (``/outer[1]/inner[4]``). ``parent_id`` is the loop or parallel run owning the
    frame. ``iteration`` is the innermost loop index (0 outside loops); ``attempt`` counts
    from 1.

    Leases: a worker claims a ``ready`` row by setting ``lease_owner``/``lease_expires_at`` and
    incrementing ``lease_epoch``; it renews by heartbeat and completes with an UPDATE that checks
    the epoch it claimed, so a worker that lost its lease cannot commit (fencing).
    """

    __tablename__ = "step_runs"
    __table_args__ = (
        # A named unique index rather than a constraint: the convention's generated name
        # would pass PostgreSQL's 63-character limit.
        Index(
            "uq_step_runs_execution_scope_step_attempt",
            "execution_id",
            "scope",
            "step_key",
            "attempt",
            unique=True,
        ),
        partial_index("ix_step_runs_parent_id", "parent_id", where="parent_id IS NOT NULL"),
        CheckConstraint("iteration >= 0", name="iteration_non_negative"),
        CheckConstraint("attempt >= 1", name="attempt_positive"),
        CheckConstraint("lease_epoch >= 0", name="lease_epoch_non_negative"),
        CheckConstraint("duration_ms IS NULL OR duration_ms >= 0", name="duration_non_negative"),
        # Claiming: WHERE status = 'ready' AND scheduled_for <= now ORDER BY scheduled_for.
        partial_index("ix_step_runs_claim", "status", "scheduled_for", where="status = 'ready'"),
        # Rescuing: running rows whose lease expired (including before the first heartbeat).
        partial_index("ix_step_runs_lease_expiry", "lease_expires_at", where="status = 'running'"),
        # Signal waits by timeout: the next one due (every worker tick), the due ones.
        partial_index("ix_step_runs_waiting", "scheduled_for", where="status = 'waiting'"),
        {"info": {"rls": "tenant"}},
    )

    execution_id: Mapped[uuid.UUID] = mapped_column(GUID, fk("executions.id", "CASCADE"))
    step_key: Mapped[str] = mapped_column(String(100))
    scope: Mapped[str] = mapped_column(String(1000), default="", server_default="")
    """The frame this run belongs to ("" at the top level)."""
    parent_id: Mapped[uuid.UUID | None] = mapped_column(GUID, fk("step_runs.id", "CASCADE"))
    """The loop or parallel step run whose body this run is part of."""
    step_type: Mapped[StepType] = mapped_column(enum_type(StepType, "step_type"))
    iteration: Mapped[int] = mapped_column(Integer, default=0)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[StepStatus] = mapped_column(
        enum_type(StepStatus, "step_status"), default=StepStatus.PENDING
    )
    agent_id: Mapped[uuid.UUID | None] = mapped_column(
        GUID, fk("agents.id", "SET NULL"), index=True
    )
    """The agent the step runs, for per-agent concurrency limits across workers."""
    queue: Mapped[str] = mapped_column(String(255), default="default")
    input: Mapped[Any | None] = mapped_column(JSONDoc)
    output: Mapped[Any | None] = mapped_column(JSONDoc)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    """``{"type", "message", "stack", ...}`` of a failed attempt, secrets redacted."""
    idempotency_key: Mapped[str] = mapped_column(String(255))
    """``execution_id:step_key:iteration`` (nested loops: ``i.j``), the same for every attempt
    (handed to the agent)."""
    scheduled_for: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    """When a ``ready`` row may be claimed (retry backoff, wait steps)."""
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    lease_epoch: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    duration_ms: Mapped[int | None] = mapped_column(Integer)


def step_status_is(status: StepStatus) -> Any:
    """``step_runs.status = '<status>'`` with the value written into the SQL, not bound, for
    the queries the partial indexes serve (``ix_step_runs_claim``, ``_lease_expiry``,
    ``_waiting``): with a bound status only a custom plan can use them (a generic plan for
    asyncpg's prepared statement cannot prove ``status = $1`` matches the index), so the plan
    would rest on PostgreSQL's choice between the two."""
    return _STATUS_IS[StepStatus(status)]


_STATUS_IS = {s: StepRunRow.status == literal_column(f"'{s.value}'") for s in StepStatus}


class ExecutionLogRow(IdMixin, TenantMixin, Base):
    """A log line of an execution (seeds 000/001/004); append-only."""

    __tablename__ = "execution_logs"
    __table_args__ = (
        CheckConstraint(
            "step_duration_ms IS NULL OR step_duration_ms >= 0", name="step_duration_non_negative"
        ),
        Index("ix_execution_logs_execution_id_created_at", "execution_id", "created_at"),
        partial_index("ix_execution_logs_level", "level", where="level IN ('error', 'fatal')"),
        Index("ix_execution_logs_created_at", "created_at"),
        {"info": {"rls": "tenant"}},
    )

    execution_id: Mapped[uuid.UUID] = mapped_column(GUID, fk("executions.id", "CASCADE"))
    step_run_id: Mapped[uuid.UUID | None] = mapped_column(
        GUID, fk("step_runs.id", "SET NULL"), index=True
    )
    step_run: Mapped[StepRunRow | None] = relationship(lazy="raise")
    """Set instead of ``step_run_id`` when the run is new in the same flush: the unit of work
    then inserts the run first."""
    workflow_step_id: Mapped[uuid.UUID | None] = mapped_column(
        GUID, fk("workflow_steps.id", "SET NULL"), index=True
    )
    level: Mapped[LogLevel] = mapped_column(enum_type(LogLevel, "log_level"), default=LogLevel.INFO)
    message: Mapped[str] = mapped_column(Text)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONDoc, default=dict)
    step_key: Mapped[str | None] = mapped_column(String(100))
    step_status: Mapped[StepStatus | None] = mapped_column(enum_type(StepStatus, "step_status"))
    step_started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    step_completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    step_duration_ms: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utc_now)


class ActivityStatisticsRow(IdMixin, TimestampMixin, TenantMixin, Base):
    """Per component (and per workflow, or all workflows when ``workflow_id`` is NULL) run
    statistics of one organization (seed 003).

    Seed 003's unique (component_id, workflow_id) becomes two partial unique indexes so the
    "all workflows" row (NULL workflow) is unique too, on both databases.
    """

    __tablename__ = "activity_statistics"
    __table_args__ = (
        partial_index(
            "uq_activity_statistics_per_workflow",
            "organization_id",
            "component_id",
            "workflow_id",
            unique=True,
            where="workflow_id IS NOT NULL",
        ),
        partial_index(
            "uq_activity_statistics_overall",
            "organization_id",
            "component_id",
            unique=True,
            where="workflow_id IS NULL",
        ),
        CheckConstraint(
            "execution_count >= 0 AND success_count >= 0 AND failure_count >= 0"
            " AND avg_duration_ms >= 0",
            name="counters_non_negative",
        ),
        Index("ix_activity_statistics_last_executed_at", "last_executed_at"),
        {"info": {"rls": "tenant"}},
    )

    component_id: Mapped[uuid.UUID] = mapped_column(
        GUID, fk("components.id", "CASCADE"), index=True
    )
    workflow_id: Mapped[uuid.UUID | None] = mapped_column(
        GUID, fk("workflows.id", "CASCADE"), index=True
    )
    execution_count: Mapped[int] = mapped_column(BigInteger, default=0)
    success_count: Mapped[int] = mapped_column(BigInteger, default=0)
    failure_count: Mapped[int] = mapped_column(BigInteger, default=0)
    avg_duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    min_duration_ms: Mapped[int | None] = mapped_column(Integer)
    max_duration_ms: Mapped[int | None] = mapped_column(Integer)
    last_executed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class WorkItemRow(IdMixin, TenantMixin, Base):
    """An item of an execution's work queue (seed 003), added by the queue's signal and taken
    by a wait step on the queue.

    ``seq`` counts arrivals per execution and queue (from 1); ``priority`` is the item's
    ``priority`` field for priority queues (else 0). ``dedupe_key`` (SHA-256 of the item's
    canonical JSON) is set when the queue deduplicates: two pending items of a queue never
    share one, an item taken frees its key.
    """

    __tablename__ = "work_items"
    __table_args__ = (
        UniqueConstraint("execution_id", "queue_name", "seq"),
        partial_index(
            "uq_work_items_pending_dedupe_key",
            "execution_id",
            "queue_name",
            "dedupe_key",
            unique=True,
            where="status = 'pending' AND dedupe_key IS NOT NULL",
        ),
        # Taking in priority order, and counting what is pending.
        partial_index(
            "ix_work_items_pending",
            "execution_id",
            "queue_name",
            "priority",
            "seq",
            where="status = 'pending'",
        ),
        partial_index("ix_work_items_taken_by", "taken_by", where="taken_by IS NOT NULL"),
        CheckConstraint("seq >= 1", name="seq_positive"),
        CheckConstraint("status = 'pending' OR taken_at IS NOT NULL", name="taken_has_time"),
        {"info": {"rls": "tenant"}},
    )

    execution_id: Mapped[uuid.UUID] = mapped_column(GUID, fk("executions.id", "CASCADE"))
    queue_name: Mapped[str] = mapped_column(String(100))
    item: Mapped[Any] = mapped_column(JSONDoc, nullable=True)
    """The signal payload as sent (any JSON value, null included)."""
    priority: Mapped[int] = mapped_column(Integer, default=0)
    seq: Mapped[int] = mapped_column(Integer)
    dedupe_key: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[WorkItemStatus] = mapped_column(
        enum_type(WorkItemStatus, "work_item_status"), default=WorkItemStatus.PENDING
    )
    taken_by: Mapped[uuid.UUID | None] = mapped_column(GUID, fk("step_runs.id", "SET NULL"))
    """The wait step run that took the item."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utc_now)
    taken_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
