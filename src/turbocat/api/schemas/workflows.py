"""Bodies for workflows."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pydantic import Field

from turbocat.api.schemas.common import ReadModel, RequestModel
from turbocat.domain.enums import OnError, StepType, WorkflowCategory, WorkflowStatus

DEFINITION_HELP = (
    "the workflow definition: the canonical document (schema at GET /api/v1/workflows/schema) "
    "or the canvas form with nodes and edges"
)


class _WorkflowFields(RequestModel):
    description: str | None = Field(default=None, max_length=10_000)
    category: WorkflowCategory | None = None
    trigger_config: dict[str, Any] | None = Field(
        default=None, description="schedules, webhook and event subscriptions"
    )
    tags: list[str] | None = Field(default=None, max_length=50)
    is_public: bool | None = None
    project_id: uuid.UUID | None = None
    task_queue: str | None = Field(default=None, min_length=1, max_length=255)
    max_concurrent_executions: int | None = Field(default=None, ge=1, le=100_000)
    execution_timeout_seconds: int | None = Field(default=None, ge=1, le=30 * 86_400)


class WorkflowCreate(_WorkflowFields):
    name: str = Field(min_length=1, max_length=255)
    kebab_name: str | None = Field(
        default=None, max_length=100, description="immutable; default: derived from name"
    )
    status: WorkflowStatus | None = None
    definition: dict[str, Any] = Field(description=DEFINITION_HELP)


class WorkflowUpdate(_WorkflowFields):
    name: str | None = Field(default=None, min_length=1, max_length=255)
    kebab_name: str | None = Field(default=None, description="cannot change; accepted if equal")
    status: WorkflowStatus | None = None
    definition: dict[str, Any] | None = Field(default=None, description=DEFINITION_HELP)


class WorkflowRead(ReadModel):
    id: uuid.UUID
    organization_id: uuid.UUID
    name: str
    kebab_name: str
    description: str | None
    category: WorkflowCategory
    status: WorkflowStatus
    version: int
    parent_id: uuid.UUID | None
    project_id: uuid.UUID | None
    definition: dict[str, Any]
    trigger_config: dict[str, Any]
    task_queue: str
    max_concurrent_executions: int | None
    execution_timeout_seconds: int | None
    total_executions: int
    successful_executions: int
    failed_executions: int
    avg_execution_time_ms: int
    last_execution_at: dt.datetime | None
    tags: list[str]
    is_public: bool
    created_by_id: uuid.UUID | None
    created_at: dt.datetime
    updated_at: dt.datetime


class WorkflowSummary(ReadModel):
    """A list entry: everything but the definition."""

    id: uuid.UUID
    name: str
    kebab_name: str
    description: str | None
    category: WorkflowCategory
    status: WorkflowStatus
    version: int
    parent_id: uuid.UUID | None
    project_id: uuid.UUID | None
    tags: list[str]
    is_public: bool
    total_executions: int
    last_execution_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime


class WorkflowStepRead(ReadModel):
    id: uuid.UUID
    step_key: str
    step_name: str
    step_type: StepType
    position: int
    canvas_position: dict[str, Any] | None
    agent_id: uuid.UUID | None
    config: dict[str, Any]
    inputs: dict[str, Any] | str
    depends_on: list[str]
    when_label: str | None
    join_mode: str
    retry_count: int
    retry_delay_ms: int
    retry_max_delay_ms: int | None
    timeout_ms: int | None
    on_error: OnError
    parent_key: str | None
    parent_branch: str | None
