"""Bodies for executions, their step runs and logs."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

from pydantic import Field

from turbocat.api.schemas.common import ReadModel, RequestModel
from turbocat.domain.enums import (
    ExecutionResult,
    ExecutionStatus,
    LogLevel,
    StepStatus,
    StepType,
    TriggerType,
)


class ExecutionCreate(RequestModel):
    input: dict[str, Any] = Field(
        default_factory=dict, description="validated against the definition's inputs schema"
    )
    trigger_type: Literal[TriggerType.API, TriggerType.MANUAL] = Field(
        default=TriggerType.API, description="manual: started by a person (UI, CLI)"
    )


class ExecutionRead(ReadModel):
    id: uuid.UUID
    workflow_id: uuid.UUID
    status: ExecutionStatus
    result: ExecutionResult
    trigger_type: TriggerType
    input_data: dict[str, Any]
    output_data: Any
    steps_total: int
    steps_completed: int
    steps_failed: int
    error_message: str | None
    started_at: dt.datetime | None
    completed_at: dt.datetime | None
    duration_ms: int | None
    user_id: uuid.UUID | None
    api_key_id: uuid.UUID | None
    rerun_of_execution_id: uuid.UUID | None
    parent_execution_id: uuid.UUID | None = Field(
        description="the execution whose workflow step started this one as a child"
    )
    parent_step_key: str | None = Field(description="that workflow step's key")
    deployment_id: uuid.UUID | None = Field(
        description="the deployment whose endpoint started this execution"
    )
    created_at: dt.datetime


class StepRunRead(ReadModel):
    id: uuid.UUID
    step_key: str
    step_type: StepType
    scope: str = Field(
        description='where the run sits: "" at the top level, "/loop[3]" for item 3 of step '
        'loop, "/par[]" inside parallel step par; nested frames concatenate'
    )
    parent_id: uuid.UUID | None = Field(description="the loop or parallel step run it belongs to")
    iteration: int = Field(description="index of the innermost loop item (0 outside loops)")
    attempt: int
    status: StepStatus
    queue: str = Field(description="the task queue whose workers run it")
    status_detail: str | None = Field(
        default=None,
        description="why a ready step has not started: no live worker serves its queue",
    )
    input: Any
    output: Any
    error: dict[str, Any] | None
    idempotency_key: str
    scheduled_for: dt.datetime | None
    started_at: dt.datetime | None
    completed_at: dt.datetime | None
    duration_ms: int | None


class ExecutionDetail(ExecutionRead):
    steps: list[StepRunRead]
    waiting_for_workers: list[str] = Field(
        default_factory=list,
        description="task queues with ready steps of this execution that no live worker serves",
    )


class ExecutionLogRead(ReadModel):
    id: uuid.UUID
    level: LogLevel
    message: str
    metadata: dict[str, Any] = Field(validation_alias="metadata_")
    step_key: str | None
    step_status: StepStatus | None
    step_duration_ms: int | None
    created_at: dt.datetime


class SignalSend(RequestModel):
    payload: Any = Field(default=None, description="checked against the signal's schema")


class SignalDelivered(ReadModel):
    signal: str
    delivered_to: int = Field(description="how many waiting steps received it")
    queued: bool = Field(
        default=False, description="the payload was added to the work queue the signal feeds"
    )
    duplicate: bool = Field(
        default=False,
        description="the payload was dropped: the deduplicating work queue holds an equal item",
    )
