"""Activity statistics as the API returns them."""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import Field

from turbocat.api.schemas.common import ReadModel


class ActivityStatisticsRead(ReadModel):
    component_id: uuid.UUID
    component_name: str
    workflow_id: uuid.UUID | None = Field(
        description="the workflow version; null when summed over workflows (overall=true)"
    )
    execution_count: int = Field(description="final outcomes of step runs")
    success_count: int
    failure_count: int
    avg_duration_ms: int = Field(description="running mean, rounded to whole milliseconds")
    min_duration_ms: int | None
    max_duration_ms: int | None
    last_executed_at: dt.datetime | None
