"""Bodies for task queues."""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import Field

from turbocat.api.schemas.common import ReadModel, RequestModel
from turbocat.domain import queues
from turbocat.domain.definitions.model import NAME_PATTERN

_WORKFLOWS = (
    "executions live at once (running, or waiting on a timer or signal) whose workflow runs on "
    "this queue; extra ones wait as pending and start in order"
)
_ACTIVITIES = "steps running at once on this queue, across every worker"
_DISPLAY = "a label for people"


class TaskQueueCreate(RequestModel):
    name: str = Field(
        pattern=NAME_PATTERN,
        description="what workflows and steps name in `task_queue`; unique in the organization "
        "and fixed once created",
        examples=["gpu-high"],
    )
    display_name: str | None = Field(default=None, max_length=255, description=_DISPLAY)
    description: str | None = Field(default=None, max_length=10_000)
    max_concurrent_workflows: int = Field(
        default=queues.DEFAULT_MAX_CONCURRENT_WORKFLOWS, ge=1, le=queues.MAX_LIMIT,
        description=_WORKFLOWS,
    )  # fmt: skip
    max_concurrent_activities: int = Field(
        default=queues.DEFAULT_MAX_CONCURRENT_ACTIVITIES, ge=1, le=queues.MAX_LIMIT,
        description=_ACTIVITIES,
    )  # fmt: skip
    system: bool = Field(
        default=False,
        description="create a system queue shared by every organization (system "
        "administrators only; through an API key, one with the '*' scope)",
    )


class TaskQueueUpdate(RequestModel):
    display_name: str | None = Field(default=None, max_length=255, description=_DISPLAY)
    description: str | None = Field(default=None, max_length=10_000)
    max_concurrent_workflows: int | None = Field(
        default=None, ge=1, le=queues.MAX_LIMIT, description=_WORKFLOWS
    )
    max_concurrent_activities: int | None = Field(
        default=None, ge=1, le=queues.MAX_LIMIT, description=_ACTIVITIES
    )


class TaskQueueRead(ReadModel):
    id: uuid.UUID
    organization_id: uuid.UUID | None = Field(description="null for a system queue")
    name: str
    display_name: str | None
    description: str | None
    max_concurrent_workflows: int = Field(description=_WORKFLOWS)
    max_concurrent_activities: int = Field(description=_ACTIVITIES)
    is_system_queue: bool = Field(
        description="shared by every organization; an organization's own queue of the same "
        "name overrides it for that organization"
    )
    created_by_id: uuid.UUID | None
    created_at: dt.datetime
    updated_at: dt.datetime
