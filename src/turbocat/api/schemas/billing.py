"""Usage, subscription and billing webhook bodies."""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import BaseModel, Field

from turbocat.api.schemas.common import ReadModel
from turbocat.domain.enums import Plan, SubscriptionStatus, UsageMetric


class UsagePointRead(BaseModel):
    metric: UsageMetric
    period_start: dt.datetime
    period_end: dt.datetime
    quantity: float = Field(description="units of the metric (storage_gb is fractional)")


class UsageRead(BaseModel):
    """Usage of the organization over [from, to) (UTC days)."""

    organization_id: uuid.UUID
    from_: dt.date = Field(alias="from", serialization_alias="from")
    to: dt.date
    granularity: str = Field(description="day or month")
    totals: dict[UsageMetric, float] = Field(
        description="each metric over the range: counters summed, gauges at their peak"
    )
    data: list[UsagePointRead]


class PlanLimitsRead(BaseModel):
    """The plan's limits; null means unlimited."""

    workflows: int | None
    integrations: int | None
    executions_per_month: int | None
    ai_tokens_per_month: int | None


class SubscriptionRead(ReadModel):
    id: uuid.UUID
    plan: Plan
    status: SubscriptionStatus
    stripe_subscription_id: str | None
    stripe_price_id: str | None
    current_period_start: dt.datetime
    current_period_end: dt.datetime
    trial_end: dt.datetime | None
    cancel_at: dt.datetime | None
    cancel_at_period_end: bool
    created_at: dt.datetime
    updated_at: dt.datetime


class SubscriptionOverview(BaseModel):
    organization_id: uuid.UUID
    plan: Plan
    trial_ends_at: dt.datetime | None
    limits: PlanLimitsRead
    this_month: dict[str, int] = Field(
        description="workflow_executions and ai_tokens_used so far this UTC month"
    )
    quota_resets_at: dt.datetime
    subscription: SubscriptionRead | None = Field(description="null when there is none")


class BillingWebhookAck(BaseModel):
    received: bool = True
    event_id: str
    duplicate: bool = Field(description="an event already processed: nothing was done")
    processed: bool
    note: str | None = None
