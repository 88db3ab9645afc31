"""Bodies for schedules."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pydantic import Field

from turbocat.api.schemas.common import ReadModel, RequestModel
from turbocat.domain.enums import MisfirePolicy

_CRON = (
    "5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first; "
    "wall-clock times in `timezone`"
)
_TZ = "an IANA time zone, e.g. Europe/Berlin"
_MISFIRE = (
    "what a slot missed by more than the grace period (the scheduler was down), or falling "
    "in a spring-forward gap, does: skip it, or run once for all missed slots"
)


class ScheduleCreate(RequestModel):
    workflow_id: uuid.UUID = Field(description="any version; each slot runs the latest one")
    cron_expression: str = Field(max_length=100, description=_CRON, examples=["30 2 * * *"])
    timezone: str = Field(default="UTC", max_length=64, description=_TZ)
    name: str | None = Field(default=None, max_length=255)
    input: dict[str, Any] = Field(
        default_factory=dict, description="the input of every run (checked against the inputs)"
    )
    enabled: bool = True
    start_immediately: bool = Field(
        default=False, description="run once now, then on the cron slots"
    )
    max_runs: int | None = Field(default=None, ge=1, description="stop after this many runs")
    misfire_policy: MisfirePolicy = Field(default=MisfirePolicy.SKIP, description=_MISFIRE)


class ScheduleUpdate(RequestModel):
    cron_expression: str | None = Field(default=None, max_length=100, description=_CRON)
    timezone: str | None = Field(default=None, max_length=64, description=_TZ)
    name: str | None = Field(default=None, max_length=255)
    input: dict[str, Any] | None = None
    start_immediately: bool | None = None
    max_runs: int | None = Field(default=None, ge=1)
    misfire_policy: MisfirePolicy | None = None


class ScheduleRead(ReadModel):
    id: uuid.UUID
    workflow_id: uuid.UUID = Field(description="the first version of the workflow (its lineage)")
    name: str | None
    cron_expression: str
    timezone: str
    input: dict[str, Any]
    enabled: bool
    start_immediately: bool
    max_runs: int | None
    run_count: int
    misfire_policy: MisfirePolicy
    next_fire_at: dt.datetime | None = Field(description="null when disabled or exhausted")
    last_fired_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
