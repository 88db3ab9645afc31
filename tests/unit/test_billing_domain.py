"""Stripe's signature scheme, the subscription mapping, monthly quota periods and the plan
settings merge (pure)."""

from __future__ import annotations

import datetime as dt

import pytest

from turbocat.config import Settings
from turbocat.domain import billing, plans
from turbocat.domain.enums import Plan, SubscriptionStatus
from turbocat.domain.errors import QuotaExceeded, SignatureRejected, ValidationFailed

BODY = b'{"id":"evt_1"}'
NOW = 1_767_000_000


def check(header: str | None, secrets: list[str] | None = None, now: int = NOW) -> None:
    billing.verify_signature(header, BODY, secrets or ["whsec_a"], now=now, tolerance_seconds=300)


def test_signature_scheme() -> None:
    good = billing.signature_header("whsec_a", NOW, BODY)
    check(good)
    # Stripe sends several v1 values while it rolls the secret; any match passes
    t, v1 = good.split(",")
    check(f"{t},v1={'0' * 64},{v1},v0=ignored")
    check(good, ["whsec_old", "whsec_a"])
    check(good, now=NOW + 300)
    for bad in (None, "", v1, t, f"{t},v1=", f"t=abc,{v1}"):
        with pytest.raises(SignatureRejected):
            check(bad)
    with pytest.raises(SignatureRejected, match="300 s"):
        check(good, now=NOW + 301)
    with pytest.raises(SignatureRejected, match="does not match"):
        check(good, ["whsec_b"])
    with pytest.raises(SignatureRejected, match="not configured"):
        billing.verify_signature(good, BODY, [], now=NOW, tolerance_seconds=300)
    with pytest.raises(SignatureRejected):
        billing.verify_signature(good, BODY + b" ", ["whsec_a"], now=NOW, tolerance_seconds=300)


def sub(**fields: object) -> dict[str, object]:
    return {"id": "sub_1", "status": "active", "current_period_start": 100,
            "current_period_end": 200} | fields  # fmt: skip


def test_subscription_mapping() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    prices = {"price_pro": Plan.PROFESSIONAL, "plan_old": Plan.ENTERPRISE}
    read = billing.read_subscription(
        "customer.subscription.updated",
        sub(items={"data": [{"price": {"id": "price_pro"}}]}, trial_end=150,
            cancel_at_period_end=True, metadata={"organization_id": "o-1"}),
        prices, now,
    )  # fmt: skip
    assert (read.plan, read.price_id, read.status) == (
        Plan.PROFESSIONAL, "price_pro", SubscriptionStatus.ACTIVE)  # fmt: skip
    assert read.period_start == dt.datetime.fromtimestamp(100, dt.UTC)
    assert read.trial_end == dt.datetime.fromtimestamp(150, dt.UTC)
    assert read.cancel_at_period_end and read.organization_hint == "o-1"
    legacy = billing.read_subscription("x", sub(plan={"id": "plan_old"}), prices, now)
    assert legacy.plan == Plan.ENTERPRISE
    unknown = billing.read_subscription("x", sub(items={"data": [{"price": {"id": "p"}}]}),
                                        prices, now)  # fmt: skip
    assert unknown.plan is None and unknown.price_id == "p"
    deleted = billing.read_subscription("customer.subscription.deleted", sub(), prices, now)
    assert deleted.status == SubscriptionStatus.CANCELLED
    for stripe, ours in (("canceled", "cancelled"), ("incomplete_expired", "cancelled"),
                         ("paused", "unpaid"), ("past_due", "past_due")):  # fmt: skip
        assert billing.read_subscription("x", sub(status=stripe), prices, now).status == ours
    with pytest.raises(ValidationFailed):
        billing.read_subscription("x", sub(status="weird"), prices, now)
    no_period = billing.read_subscription("x", {"id": "s", "status": "active"}, prices, now)
    assert no_period.period_end > no_period.period_start == now
    assert billing.plan_for(SubscriptionStatus.PAST_DUE, Plan.PROFESSIONAL) == Plan.PROFESSIONAL
    for status in (SubscriptionStatus.UNPAID, SubscriptionStatus.CANCELLED,
                   SubscriptionStatus.INCOMPLETE):  # fmt: skip
        assert billing.plan_for(status, Plan.ENTERPRISE) == Plan.STARTER
    assert billing.invoice_subscription({"subscription": "sub_9"}) == "sub_9"
    assert billing.invoice_subscription(
        {"parent": {"subscription_details": {"subscription": "sub_8"}}}) == "sub_8"  # fmt: skip
    with pytest.raises(ValidationFailed):
        billing.parse_event({"id": "evt", "type": "invoice.paid"})


def test_monthly_quota_periods() -> None:
    assert plans.month_of(dt.datetime(2026, 12, 31, 23, 59, tzinfo=dt.UTC)) == (
        dt.datetime(2026, 12, 1, tzinfo=dt.UTC), dt.datetime(2027, 1, 1, tzinfo=dt.UTC))  # fmt: skip
    tz = dt.timezone(dt.timedelta(hours=-5))  # 20:00 on Jan 31 there is February in UTC
    assert plans.month_of(dt.datetime(2026, 1, 31, 20, tzinfo=tz))[0].month == 2
    limits = plans.PlanLimits(workflows=None, integrations=None, executions_per_month=10)
    now = dt.datetime(2026, 2, 14, tzinfo=dt.UTC)
    plans.check_monthly(Plan.STARTER, limits, "executions_per_month", 9, now)
    with pytest.raises(QuotaExceeded) as refused:
        plans.check_monthly(Plan.STARTER, limits, "executions_per_month", 10, now)
    assert refused.value.resets_at == "2026-03-01T00:00:00+00:00"
    assert refused.value.limit == "executions_per_month" and refused.value.plan == "starter"
    plans.check_monthly(Plan.STARTER, limits, "ai_tokens_per_month", 10**9, now)  # unlimited


def test_plan_settings_keep_the_defaults_left_out() -> None:
    settings = Settings(plans={"starter": {"executions_per_month": 3, "workflows": None}})
    starter = settings.plan_limits(Plan.STARTER)
    assert (starter.workflows, starter.integrations, starter.executions_per_month) == (None, 3, 3)
    assert settings.plan_limits(Plan.PROFESSIONAL).workflows == 25
    assert settings.quotas().executions and not settings.quotas().tokens
    assert not Settings().quotas().executions
