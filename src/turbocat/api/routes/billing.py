"""Usage, the organization's subscription, and Stripe's webhook endpoint."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from turbocat.api.deps import ContextDep, NowDep, PrincipalDep, SessionDep
from turbocat.api.schemas.billing import (
    BillingWebhookAck,
    PlanLimitsRead,
    SubscriptionOverview,
    SubscriptionRead,
    UsagePointRead,
    UsageRead,
)
from turbocat.api.schemas.common import PROBLEM_RESPONSES
from turbocat.db.engine import TenantContext
from turbocat.domain.billing import SIGNATURE_HEADER
from turbocat.domain.enums import UsageMetric
from turbocat.domain.plans import month_of
from turbocat.services import billing, metering, usage

router = APIRouter(tags=["billing"], responses=PROBLEM_RESPONSES)
PLATFORM = TenantContext(system=True)


@router.get("/usage", name="usage-get", response_model=UsageRead, response_model_by_alias=True,
            summary="Usage of the organization (owners, admins)")  # fmt: skip
async def get_usage(
    principal: PrincipalDep,
    session: SessionDep,
    now: NowDep,
    from_: Annotated[
        dt.date | None,
        Query(alias="from", description="first UTC day (default: the 1st of this month)"),
    ] = None,
    to: Annotated[
        dt.date | None, Query(description="the UTC day after the last (default: tomorrow)")
    ] = None,
    metric: Annotated[
        list[UsageMetric] | None, Query(description="metrics to include (repeat; default all)")
    ] = None,
    granularity: Literal["day", "month"] = "day",
) -> UsageRead:
    """Daily usage records, or calendar months derived from them: counters
    (workflow_executions, ai_tokens_used, api_calls_made) are summed, gauges (storage_gb,
    active_users, active_workflows) take their largest daily value. api_calls_made is written
    behind, within ``auth.api_key_usage_flush_seconds``."""
    start = from_ or month_of(now)[0].date()
    end = to or (now.astimezone(dt.UTC).date() + dt.timedelta(days=1))
    metrics = list(dict.fromkeys(metric)) if metric else list(UsageMetric)
    points = await usage.report(
        session, principal, start=start, end=end, metrics=metrics, granularity=granularity
    )
    return UsageRead.model_validate({
        "organization_id": principal.organization_id, "from": start, "to": end,
        "granularity": granularity,
        "totals": {m: float(q) for m, q in usage.totals(points, metrics).items()},
        "data": [UsagePointRead(metric=p.metric, period_start=p.period_start,
                                period_end=p.period_end, quantity=float(p.quantity))
                 for p in points],
    })  # fmt: skip


@router.get("/subscription", name="subscription-get", response_model=SubscriptionOverview,
            summary="Plan, limits and subscription (owners, admins)")  # fmt: skip
async def get_subscription(
    principal: PrincipalDep, session: SessionDep, ctx: ContextDep, now: NowDep
) -> SubscriptionOverview:
    """The plan, its limits (``[plans.*]`` settings), this month's use of the monthly quotas
    and the subscription mirrored from Stripe (null when there is none)."""
    seen = await billing.overview(session, principal)
    org = seen.organization
    this_month = {
        m.value: await metering.month_total(session, org.id, m, now)
        for m in (UsageMetric.WORKFLOW_EXECUTIONS, UsageMetric.AI_TOKENS_USED)
    }
    return SubscriptionOverview(
        organization_id=org.id, plan=org.plan, trial_ends_at=org.trial_ends_at,
        limits=PlanLimitsRead(**dataclasses.asdict(ctx.settings.plan_limits(org.plan))),
        this_month=this_month, quota_resets_at=month_of(now)[1],
        subscription=SubscriptionRead.model_validate(seen.subscription)
        if seen.subscription is not None else None,
    )  # fmt: skip


@router.post("/billing/webhook", name="billing-webhook", response_model=BillingWebhookAck,
             summary="Stripe webhook events (signed with Stripe-Signature)")  # fmt: skip
async def billing_webhook(request: Request, ctx: ContextDep) -> BillingWebhookAck:
    """Takes customer.subscription.created/updated/deleted, invoice.payment_failed and
    invoice.paid (others are acknowledged and ignored). No user authentication: the
    ``Stripe-Signature`` header must carry an HMAC-SHA256 of ``<t>.<body>`` under one of
    ``billing.webhook_secrets``, with ``t`` within ``billing.tolerance_seconds`` (401
    otherwise). Each event id is applied once; a redelivery answers 200 with ``duplicate``."""
    settings = ctx.settings.billing
    body = await request.body()
    now = ctx.clock()
    verified = billing.verify(
        body, request.headers.get(SIGNATURE_HEADER), secrets=list(settings.webhook_secrets),
        tolerance_seconds=settings.tolerance_seconds, now=now,
    )  # fmt: skip
    async with ctx.db.transaction(PLATFORM) as session:
        received = await billing.receive(
            session, verified, price_plans=settings.price_plans, now=now
        )
    return BillingWebhookAck(
        event_id=received.event_id, duplicate=received.duplicate, processed=received.processed,
        note=received.note,
    )  # fmt: skip
