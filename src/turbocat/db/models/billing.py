"""Metering and billing (seed 004): usage records, subscriptions, processed Stripe events."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, Index, Numeric, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from turbocat.db.base import Base, IdMixin, TenantMixin, TimestampMixin
from turbocat.db.models._common import partial_index
from turbocat.db.types import JSONDoc, UTCDateTime, enum_type
from turbocat.domain.enums import Plan, SubscriptionStatus, UsageMetric


class UsageRecordRow(IdMixin, TimestampMixin, TenantMixin, Base):
    """An organization's consumption of one metric over one period; one row per period."""

    __tablename__ = "usage_records"
    __table_args__ = (
        UniqueConstraint("organization_id", "metric", "period_start", "period_end"),
        CheckConstraint("period_end > period_start", name="period_ordered"),
        CheckConstraint("quantity >= 0", name="quantity_non_negative"),
        CheckConstraint("cost IS NULL OR cost >= 0", name="cost_non_negative"),
        Index("ix_usage_records_period_start_period_end", "period_start", "period_end"),
        {"info": {"rls": "tenant"}},
    )

    metric: Mapped[UsageMetric] = mapped_column(enum_type(UsageMetric, "usage_metric"))
    quantity: Mapped[Decimal] = mapped_column(Numeric(20, 4), default=Decimal(0))
    """Units of the metric (fractional for storage_gb)."""
    cost: Mapped[Decimal | None] = mapped_column(Numeric(12, 4))
    period_start: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    period_end: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    details: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)


class SubscriptionRow(IdMixin, TimestampMixin, TenantMixin, Base):
    """An organization's plan subscription, mirrored from Stripe when billing is enabled."""

    __tablename__ = "subscriptions"
    __table_args__ = (
        CheckConstraint("current_period_end > current_period_start", name="period_ordered"),
        Index("ix_subscriptions_status", "status"),
        {"info": {"rls": "tenant"}},
    )

    plan: Mapped[Plan] = mapped_column(enum_type(Plan, "plan"))
    status: Mapped[SubscriptionStatus] = mapped_column(
        enum_type(SubscriptionStatus, "subscription_status")
    )
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    stripe_price_id: Mapped[str | None] = mapped_column(String(255))
    current_period_start: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    current_period_end: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    trial_end: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    cancel_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False)


class BillingEventRow(IdMixin, TimestampMixin, Base):
    """A Stripe webhook event, recorded once (unique event id) so redeliveries are no-ops.

    Platform-level (no tenant): the event names a Stripe customer, which maps to an
    organization through ``organizations.stripe_customer_id`` when it is processed.
    """

    __tablename__ = "billing_events"
    __table_args__ = (
        partial_index("ix_billing_events_unprocessed", "created_at", where="processed_at IS NULL"),
    )

    stripe_event_id: Mapped[str] = mapped_column(String(255), unique=True)
    event_type: Mapped[str] = mapped_column(String(100))
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    processed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)
