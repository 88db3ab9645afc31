"""Bodies for deployments and their invocations."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pydantic import Field

from turbocat.api.schemas.common import ReadModel, RequestModel
from turbocat.domain.enums import DeploymentStatus, Environment, ExecutionStatus, HealthStatus

_VARS = (
    "environment variables, stored encrypted and never shown again; the steps of the "
    "deployment's executions read them as `vars` (over the definition's own vars)"
)


class DeploymentCreate(RequestModel):
    name: str = Field(min_length=1, max_length=255)
    workflow_id: uuid.UUID | None = Field(default=None, description="a workflow version")
    agent_id: uuid.UUID | None = Field(default=None, description="or an agent version")
    environment: Environment = Environment.PRODUCTION
    description: str | None = Field(default=None, max_length=10_000)
    config: dict[str, Any] = Field(default_factory=dict)
    environment_vars: dict[str, str] = Field(default_factory=dict, description=_VARS)
    allocated_memory_mb: int = Field(default=512, ge=1, le=1_048_576)
    allocated_cpu_shares: int = Field(default=1024, ge=1, le=1_048_576)


class DeploymentUpdate(RequestModel):
    name: str | None = Field(default=None, min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=10_000)
    config: dict[str, Any] | None = None
    environment_vars: dict[str, str] | None = Field(
        default=None, description="replaces every variable; {} removes them"
    )
    allocated_memory_mb: int | None = Field(default=None, ge=1, le=1_048_576)
    allocated_cpu_shares: int | None = Field(default=None, ge=1, le=1_048_576)


class DeploymentRead(ReadModel):
    id: uuid.UUID
    name: str
    slug: str
    description: str | None
    workflow_id: uuid.UUID | None
    agent_id: uuid.UUID | None
    environment: Environment
    status: DeploymentStatus
    config: dict[str, Any]
    endpoint_url: str | None = Field(description="POST here with the deployment key")
    api_key_prefix: str | None
    allocated_memory_mb: int
    allocated_cpu_shares: int
    deployed_at: dt.datetime | None
    health_status: HealthStatus
    last_health_check_at: dt.datetime | None
    total_requests: int
    total_errors: int
    avg_response_time_ms: int
    created_at: dt.datetime
    updated_at: dt.datetime


class DeploymentCreated(DeploymentRead):
    api_key: str = Field(description="the endpoint key: shown this once, stored hashed")


class InvokeRequest(RequestModel):
    input: dict[str, Any] = Field(
        default_factory=dict, description="validated against the workflow's inputs schema"
    )
    wait: bool = Field(
        default=True,
        description="answer with the output once the execution ends (up to `timeout_seconds`; "
        "202 with the execution id if it is still running then); false: answer 202 at once",
    )
    timeout_seconds: float = Field(default=30.0, gt=0, le=300)


class InvokeResult(ReadModel):
    execution_id: uuid.UUID
    deployment_id: uuid.UUID
    status: ExecutionStatus
    output: Any = None
    error: str | None = None
    duration_ms: int | None = None
