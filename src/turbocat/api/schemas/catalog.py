"""Bodies for projects and agents."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pydantic import Field

from turbocat.api.schemas.common import ReadModel, RequestModel
from turbocat.domain.enums import AgentStatus, AgentType

Tags = list[str]


class ProjectCreate(RequestModel):
    name: str = Field(min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=10_000)
    task_queue: str | None = Field(default=None, max_length=255)


class ProjectUpdate(RequestModel):
    name: str | None = Field(default=None, min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=10_000)
    task_queue: str | None = Field(default=None, max_length=255)
    is_active: bool | None = None


class ProjectRead(ReadModel):
    id: uuid.UUID
    name: str
    description: str | None
    task_queue: str | None
    is_active: bool
    total_workflow_executions: int
    last_execution_at: dt.datetime | None
    created_by_id: uuid.UUID | None
    created_at: dt.datetime
    updated_at: dt.datetime


class _AgentFields(RequestModel):
    description: str | None = Field(default=None, max_length=10_000)
    config: dict[str, Any] | None = Field(
        default=None, description="per-type configuration: GET /api/v1/agents/types for schemas"
    )
    parameters: dict[str, Any] | None = Field(default=None, description="JSON Schema of inputs")
    capabilities: list[str] | None = Field(default=None, max_length=100)
    agent_prompt_id: uuid.UUID | None = None
    max_execution_time: int | None = Field(default=None, ge=1, le=86_400, description="seconds")
    max_memory_mb: int | None = Field(default=None, ge=16, le=65_536)
    max_concurrent_executions: int | None = Field(default=None, ge=1, le=10_000)
    tags: Tags | None = Field(default=None, max_length=50)
    is_public: bool | None = None
    is_template: bool | None = None


class AgentCreate(_AgentFields):
    name: str = Field(min_length=1, max_length=255)
    type: AgentType
    status: AgentStatus = AgentStatus.DRAFT


class AgentUpdate(_AgentFields):
    name: str | None = Field(default=None, min_length=1, max_length=255)
    status: AgentStatus | None = None


class AgentRead(ReadModel):
    id: uuid.UUID
    organization_id: uuid.UUID
    name: str
    description: str | None
    type: AgentType
    status: AgentStatus
    version: int
    parent_id: uuid.UUID | None
    agent_prompt_id: uuid.UUID | None
    config: dict[str, Any]
    parameters: dict[str, Any]
    capabilities: list[Any]
    max_execution_time: int | None
    max_memory_mb: int | None
    max_concurrent_executions: int | None
    total_executions: int
    successful_executions: int
    failed_executions: int
    avg_execution_time_ms: int
    tags: list[str]
    is_public: bool
    is_template: bool
    created_by_id: uuid.UUID | None
    created_at: dt.datetime
    updated_at: dt.datetime


class AgentTypeRead(ReadModel):
    type: AgentType
    config_schema: dict[str, Any]
