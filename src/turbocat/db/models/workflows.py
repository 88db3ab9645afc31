"""Projects, workflows and the views of their definition (steps, signals, queries, work queues,
child workflows). The definition JSON is the source of truth (SPEC section 9); the other tables
are materialized from it when a version is saved, for queries.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.expression import true

from turbocat.db.base import Base, IdMixin, SoftDeleteMixin, TenantMixin, TimestampMixin
from turbocat.db.models._common import CreatedByMixin, fk, fts_index, gin_index, partial_index
from turbocat.db.types import GUID, JSONDoc, StrList, UTCDateTime, enum_type
from turbocat.domain.enums import (
    OnError,
    ParentClosePolicy,
    StepType,
    WorkflowCategory,
    WorkflowStatus,
    WorkQueueOrder,
)


class ProjectRow(IdMixin, TimestampMixin, TenantMixin, CreatedByMixin, Base):
    """An optional grouping of workflows inside an organization (seed 003)."""

    __tablename__ = "projects"
    __table_args__ = (
        UniqueConstraint("organization_id", "name"),
        CheckConstraint(
            "total_workflow_executions >= 0 AND total_activity_executions >= 0"
            " AND avg_execution_duration_ms >= 0",
            name="counters_non_negative",
        ),
        Index("ix_projects_is_active", "is_active"),
        {"info": {"rls": "tenant"}},
    )

    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    task_queue: Mapped[str | None] = mapped_column(String(255))
    """Default task queue of the project's workflows (seed 003's task_queue_name)."""
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    total_workflow_executions: Mapped[int] = mapped_column(BigInteger, default=0)
    total_activity_executions: Mapped[int] = mapped_column(BigInteger, default=0)
    avg_execution_duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    last_execution_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class WorkflowRow(IdMixin, TimestampMixin, SoftDeleteMixin, TenantMixin, CreatedByMixin, Base):
    """One version of a workflow.

    Versions of a workflow are rows sharing ``kebab_name`` (immutable, the lineage's stable
    name) linked by ``parent_id``; ``version`` counts up within the lineage. The uniqueness is
    (organization_id, kebab_name, version), deliberately *not* partial on ``deleted_at``: a
    soft-deleted lineage keeps its name reserved until it is purged, so a restore can never
    collide and an execution's pinned version is never ambiguous.
    """

    __tablename__ = "workflows"
    __table_args__ = (
        UniqueConstraint("organization_id", "kebab_name", "version"),
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint(
            "max_concurrent_executions IS NULL OR max_concurrent_executions > 0",
            name="max_concurrent_executions_positive",
        ),
        CheckConstraint(
            "execution_timeout_seconds IS NULL OR execution_timeout_seconds > 0",
            name="execution_timeout_positive",
        ),
        CheckConstraint(
            "total_executions >= 0 AND successful_executions >= 0 AND failed_executions >= 0"
            " AND avg_execution_time_ms >= 0",
            name="counters_non_negative",
        ),
        partial_index("ix_workflows_status", "status", where="deleted_at IS NULL"),
        Index("ix_workflows_category", "category"),
        partial_index(
            "ix_workflows_is_public", "is_public", where="deleted_at IS NULL AND is_public"
        ),
        Index("ix_workflows_organization_id_created_at", "organization_id", "created_at"),
        gin_index("workflows", "tags"),
        fts_index("workflows"),
        {"info": {"rls": "tenant_or_public"}},
    )

    name: Mapped[str] = mapped_column(String(255))
    kebab_name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    category: Mapped[WorkflowCategory] = mapped_column(
        enum_type(WorkflowCategory, "workflow_category"), default=WorkflowCategory.CUSTOM
    )
    status: Mapped[WorkflowStatus] = mapped_column(
        enum_type(WorkflowStatus, "workflow_status"), default=WorkflowStatus.DRAFT
    )
    version: Mapped[int] = mapped_column(Integer, default=1)
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        GUID, fk("workflows.id", "SET NULL"), index=True
    )
    project_id: Mapped[uuid.UUID | None] = mapped_column(
        GUID, fk("projects.id", "SET NULL"), index=True
    )
    definition: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    trigger_config: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    task_queue: Mapped[str] = mapped_column(String(255), default="default")
    # No column defaults: None (no limit) is a value a user may choose, and the ORM would
    # replace an explicit None with a default. ``services.workflows`` applies seed 003's.
    max_concurrent_executions: Mapped[int | None] = mapped_column(Integer)
    execution_timeout_seconds: Mapped[int | None] = mapped_column(Integer)
    total_executions: Mapped[int] = mapped_column(Integer, default=0)
    successful_executions: Mapped[int] = mapped_column(Integer, default=0)
    failed_executions: Mapped[int] = mapped_column(Integer, default=0)
    avg_execution_time_ms: Mapped[int] = mapped_column(Integer, default=0)
    last_execution_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    tags: Mapped[list[str]] = mapped_column(StrList, default=list)
    is_public: Mapped[bool] = mapped_column(Boolean, default=False)


class WorkflowStepRow(IdMixin, TimestampMixin, TenantMixin, Base):
    """A step of one workflow version, materialized from its definition (seeds 000/001/003)."""

    __tablename__ = "workflow_steps"
    __table_args__ = (
        UniqueConstraint("workflow_id", "step_key"),
        CheckConstraint("position >= 0", name="position_non_negative"),
        CheckConstraint(
            "retry_count >= 0 AND retry_delay_ms >= 0"
            " AND (retry_max_delay_ms IS NULL OR retry_max_delay_ms >= 0)",
            name="retry_non_negative",
        ),
        CheckConstraint("retry_backoff >= 1", name="retry_backoff_at_least_one"),
        CheckConstraint("timeout_ms IS NULL OR timeout_ms > 0", name="timeout_positive"),
        Index("ix_workflow_steps_workflow_id_position", "workflow_id", "position"),
        {"info": {"rls": "tenant"}},
    )

    workflow_id: Mapped[uuid.UUID] = mapped_column(GUID, fk("workflows.id", "CASCADE"))
    agent_id: Mapped[uuid.UUID | None] = mapped_column(
        GUID, fk("agents.id", "SET NULL"), index=True
    )
    component_id: Mapped[uuid.UUID | None] = mapped_column(
        GUID, fk("components.id", "SET NULL"), index=True
    )
    step_key: Mapped[str] = mapped_column(String(100))
    step_name: Mapped[str] = mapped_column(String(255))
    step_type: Mapped[StepType] = mapped_column(enum_type(StepType, "step_type"))
    position: Mapped[int] = mapped_column(Integer)
    """Order of the step in the definition (topological, for listings)."""
    canvas_position: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    """``{"x": ..., "y": ...}`` on the canvas (seeds 002/003 nodes)."""
    config: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    inputs: Mapped[dict[str, Any] | str] = mapped_column(JSONDoc, default=dict)
    """Inputs by name, or the one template yielding them (``"{{ input }}"``)."""
    outputs: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    depends_on: Mapped[list[str]] = mapped_column(StrList, default=list)
    when_label: Mapped[str | None] = mapped_column(String(100))
    """Branch label of the condition this step depends on (the definition's ``when``)."""
    retry_count: Mapped[int] = mapped_column(Integer, default=0)
    retry_delay_ms: Mapped[int] = mapped_column(Integer, default=1000)
    retry_backoff: Mapped[float] = mapped_column(Float, default=2.0)
    """Multiplier of the delay after each attempt (1 = constant delay)."""
    retry_max_delay_ms: Mapped[int | None] = mapped_column(Integer)
    timeout_ms: Mapped[int | None] = mapped_column(Integer, default=30000)
    on_error: Mapped[OnError] = mapped_column(enum_type(OnError, "on_error"), default=OnError.FAIL)
    description: Mapped[str | None] = mapped_column(Text)
    join_mode: Mapped[str] = mapped_column(String(8), default="all", server_default="all")
    """``all`` or ``any``: how the step joins its dependencies (definition ``join``)."""
    retry_jitter: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    task_queue: Mapped[str | None] = mapped_column(String(255))
    parent_key: Mapped[str | None] = mapped_column(String(100))
    """The loop or parallel step whose body holds this step (none at the top level)."""
    parent_branch: Mapped[str | None] = mapped_column(String(100))


class WorkflowWorkQueueRow(IdMixin, TimestampMixin, TenantMixin, CreatedByMixin, Base):
    """A work queue declared by a workflow, fed by a signal and read by a query (seed 003)."""

    __tablename__ = "workflow_work_queues"
    __table_args__ = (
        UniqueConstraint("workflow_id", "queue_name"),
        UniqueConstraint("workflow_id", "signal_name"),
        UniqueConstraint("workflow_id", "query_name"),
        CheckConstraint("max_size IS NULL OR max_size > 0", name="max_size_positive"),
        Index("ix_workflow_work_queues_priority", "priority"),
        {"info": {"rls": "tenant"}},
    )

    workflow_id: Mapped[uuid.UUID] = mapped_column(GUID, fk("workflows.id", "CASCADE"))
    queue_name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    signal_name: Mapped[str] = mapped_column(String(100))
    query_name: Mapped[str] = mapped_column(String(100))
    max_size: Mapped[int | None] = mapped_column(Integer)
    """NULL: unlimited."""
    priority: Mapped[WorkQueueOrder] = mapped_column(
        enum_type(WorkQueueOrder, "work_queue_order"), default=WorkQueueOrder.FIFO
    )
    """Ordering of the queue: fifo, lifo or priority (seed 003's name for it)."""
    deduplicate: Mapped[bool] = mapped_column(Boolean, default=False)
    work_item_schema: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)


class WorkflowSignalRow(IdMixin, TimestampMixin, TenantMixin, CreatedByMixin, Base):
    """A signal a workflow accepts while running (seed 003)."""

    __tablename__ = "workflow_signals"
    __table_args__ = (
        UniqueConstraint("workflow_id", "signal_name"),
        Index("ix_workflow_signals_auto_generated", "auto_generated"),
        {"info": {"rls": "tenant"}},
    )

    workflow_id: Mapped[uuid.UUID] = mapped_column(GUID, fk("workflows.id", "CASCADE"))
    signal_name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    """JSON Schema of the signal payload."""
    auto_generated: Mapped[bool] = mapped_column(Boolean, default=False)
    work_queue_id: Mapped[uuid.UUID | None] = mapped_column(
        GUID, fk("workflow_work_queues.id", "SET NULL"), index=True
    )


class WorkflowQueryRow(IdMixin, TimestampMixin, TenantMixin, CreatedByMixin, Base):
    """A read-only query a running workflow answers (seed 003)."""

    __tablename__ = "workflow_queries"
    __table_args__ = (
        UniqueConstraint("workflow_id", "query_name"),
        Index("ix_workflow_queries_auto_generated", "auto_generated"),
        {"info": {"rls": "tenant"}},
    )

    workflow_id: Mapped[uuid.UUID] = mapped_column(GUID, fk("workflows.id", "CASCADE"))
    query_name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    return_type: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    """JSON Schema of the answer."""
    auto_generated: Mapped[bool] = mapped_column(Boolean, default=False)
    work_queue_id: Mapped[uuid.UUID | None] = mapped_column(
        GUID, fk("workflow_work_queues.id", "SET NULL"), index=True
    )


class WorkflowChildWorkflowRow(IdMixin, TimestampMixin, TenantMixin, CreatedByMixin, Base):
    """A child workflow a workflow starts, and how the two are bound (seed 003)."""

    __tablename__ = "workflow_child_workflows"
    __table_args__ = ({"info": {"rls": "tenant"}},)

    parent_workflow_id: Mapped[uuid.UUID] = mapped_column(
        GUID, fk("workflows.id", "CASCADE"), index=True
    )
    child_workflow_id: Mapped[uuid.UUID | None] = mapped_column(
        GUID, fk("workflows.id", "SET NULL"), index=True
    )
    child_workflow_name: Mapped[str] = mapped_column(String(255))
    """kebab_name of the child lineage (the latest active version is started)."""
    step_key: Mapped[str | None] = mapped_column(String(100))
    """The parent's step that starts the child."""
    parent_close_policy: Mapped[ParentClosePolicy] = mapped_column(
        enum_type(ParentClosePolicy, "parent_close_policy"), default=ParentClosePolicy.TERMINATE
    )
    can_signal_parent: Mapped[bool] = mapped_column(Boolean, default=False)
    can_query_parent: Mapped[bool] = mapped_column(Boolean, default=False)
    block_until: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
