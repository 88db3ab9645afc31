"""Stripe webhook events onto subscriptions and organization plans; an organization's
subscription as its owners see it.

An event is verified (``domain.billing``) before any transaction opens, then recorded once in
``billing_events`` (unique Stripe event id): a redelivery of a processed event changes nothing.
An event that could not be matched to an organization is kept with its ``error`` and no
``processed_at``; a redelivery of it is tried again. The transaction runs as the platform
(``TenantContext(system=True)``): the endpoint's signing secret is the platform's, and the
event names a Stripe customer, not a tenant.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db.dialects import upsert
from turbocat.db.models import BillingEventRow, OrganizationRow, SubscriptionRow
from turbocat.domain import billing
from turbocat.domain.access import Principal
from turbocat.domain.enums import MemberRole, Plan, SubscriptionStatus
from turbocat.domain.errors import ValidationFailed
from turbocat.domain.ids import new_id
from turbocat.services import audit


@dataclass(frozen=True)
class Verified:
    event: billing.Event
    document: dict[str, Any]


def verify(
    body: bytes,
    signature: str | None,
    *,
    secrets: list[str],
    tolerance_seconds: int,
    now: dt.datetime,
) -> Verified:
    """The event in ``body`` if ``signature`` (``Stripe-Signature``) proves Stripe sent it
    within the tolerance; ``SignatureRejected`` (401) otherwise, 422 when it is no event."""
    billing.verify_signature(
        signature, body, secrets, now=int(now.timestamp()), tolerance_seconds=tolerance_seconds
    )
    try:
        document = json.loads(body)
    except ValueError:
        raise ValidationFailed.field(("body",), "the event is not JSON") from None
    return Verified(billing.parse_event(document), document)


@dataclass(frozen=True)
class Received:
    event_id: str
    duplicate: bool
    """A redelivery of an event already processed: nothing was done."""
    processed: bool
    organization_id: uuid.UUID | None = None
    note: str | None = None


class _Unmatched(Exception):
    """The event cannot be applied (yet): kept with this message, tried again on redelivery."""


async def receive(
    session: AsyncSession, verified: Verified, *, price_plans: Mapping[str, Plan], now: dt.datetime
) -> Received:
    """Record the event once and apply it to the subscription and the organization's plan."""
    event = verified.event
    table = BillingEventRow.__table__
    insert = upsert(session.get_bind().dialect.name, table).values(
        id=new_id(), stripe_event_id=event.id, event_type=event.type,
        stripe_customer_id=event.customer, payload=verified.document, created_at=now,
        updated_at=now,
    )  # fmt: skip
    inserted = (
        await session.execute(
            insert.on_conflict_do_nothing(index_elements=["stripe_event_id"]).returning(table.c.id)
        )
    ).scalar_one_or_none()
    row = (
        await session.execute(
            select(BillingEventRow).where(BillingEventRow.stripe_event_id == event.id)
        )
    ).scalar_one()
    if inserted is None and row.processed_at is not None:
        return Received(event.id, duplicate=True, processed=True)
    if event.type not in billing.HANDLED_EVENTS:
        row.processed_at = row.updated_at = now
        return Received(event.id, duplicate=False, processed=True, note="ignored event type")
    if await _superseded(session, event):
        row.processed_at = row.updated_at = now
        row.error = None
        note = "older than an event already applied to this subscription; not applied"
        return Received(event.id, duplicate=False, processed=True, note=note)
    try:
        if event.type in billing.SUBSCRIPTION_EVENTS:
            org = await _subscription_event(session, event, price_plans, now)
        else:
            org = await _invoice_event(session, event, now)
    except _Unmatched as exc:
        row.error, row.updated_at = str(exc), now
        return Received(event.id, duplicate=False, processed=False, note=str(exc))
    row.processed_at = row.updated_at = now
    row.error = None
    return Received(event.id, duplicate=False, processed=True, organization_id=org.id)


async def _superseded(session: AsyncSession, event: billing.Event) -> bool:
    """Whether a newer event of the same subscription was already applied (Stripe does not
    promise order). The customer's processed events are few: they are compared here."""
    if event.customer is None or event.created is None or event.subscription_id is None:
        return False
    payloads = await session.execute(
        select(BillingEventRow.payload).where(
            BillingEventRow.stripe_customer_id == event.customer,
            BillingEventRow.processed_at.is_not(None),
            BillingEventRow.event_type.in_(sorted(billing.HANDLED_EVENTS)),
            BillingEventRow.stripe_event_id != event.id,
        )
    )
    for (payload,) in payloads:
        try:
            applied = billing.parse_event(payload)
        except ValidationFailed:
            continue
        if billing.supersedes(applied, event):
            return True
    return False


async def _organization(
    session: AsyncSession, customer: str | None, hint: str | None
) -> OrganizationRow:
    """The organization of a Stripe customer: the one linked to it, else the one named by the
    subscription's ``metadata.organization_id`` (which links it)."""
    if customer is not None:
        found = (
            await session.execute(
                select(OrganizationRow).where(OrganizationRow.stripe_customer_id == customer)
            )
        ).scalar_one_or_none()
        if found is not None:
            return found
    try:
        ident = uuid.UUID(hint) if hint else None
    except ValueError:
        ident = None
    org = await session.get(OrganizationRow, ident) if ident is not None else None
    if org is None:
        raise _Unmatched(
            f"no organization has Stripe customer {customer!r}: set the subscription's "
            "metadata.organization_id (or organizations.stripe_customer_id)"
        )
    if org.stripe_customer_id not in (None, customer):
        raise _Unmatched(
            f"organization {org.id} is linked to another Stripe customer; not relinking it"
        )
    org.stripe_customer_id = customer
    return org


async def _subscription_event(
    session: AsyncSession, event: billing.Event, price_plans: Mapping[str, Plan], now: dt.datetime
) -> OrganizationRow:
    state = billing.read_subscription(event.type, event.obj, price_plans, now)
    sub = (
        await session.execute(
            select(SubscriptionRow).where(SubscriptionRow.stripe_subscription_id == state.stripe_id)
        )
    ).scalar_one_or_none()
    if sub is not None:
        org = await session.get(OrganizationRow, sub.organization_id)
        assert org is not None  # the foreign key
    else:
        org = await _organization(session, event.customer, state.organization_hint)
    subscribed = state.plan or (sub.plan if sub is not None else None) or org.plan
    if sub is None:
        sub = SubscriptionRow(
            organization_id=org.id, stripe_subscription_id=state.stripe_id, created_at=now
        )
        session.add(sub)
    sub.plan, sub.status, sub.stripe_price_id = subscribed, state.status, state.price_id
    sub.current_period_start, sub.current_period_end = state.period_start, state.period_end
    sub.trial_end, sub.cancel_at = state.trial_end, state.cancel_at
    sub.cancel_at_period_end = state.cancel_at_period_end
    sub.updated_at = now
    org.trial_ends_at = state.trial_end if state.status == SubscriptionStatus.TRIALING else None
    _set_plan(session, org, billing.plan_for(state.status, subscribed), event, state.status, now)
    await session.flush()
    return org


async def _invoice_event(
    session: AsyncSession, event: billing.Event, now: dt.datetime
) -> OrganizationRow:
    stripe_id = billing.invoice_subscription(event.obj)
    sub = (
        (
            await session.execute(
                select(SubscriptionRow).where(SubscriptionRow.stripe_subscription_id == stripe_id)
            )
        ).scalar_one_or_none()
        if stripe_id is not None
        else None
    )
    if sub is None:
        raise _Unmatched(f"invoice for unknown subscription {stripe_id!r}")
    org = await session.get(OrganizationRow, sub.organization_id)
    assert org is not None
    if sub.status != SubscriptionStatus.CANCELLED:  # an ended subscription stays ended
        paid = event.type == "invoice.paid"
        sub.status = SubscriptionStatus.ACTIVE if paid else SubscriptionStatus.PAST_DUE
        sub.updated_at = now
        if paid:
            org.trial_ends_at = None
    _set_plan(session, org, billing.plan_for(sub.status, sub.plan), event, sub.status, now)
    return org


def _set_plan(
    session: AsyncSession,
    org: OrganizationRow,
    plan: Plan,
    event: billing.Event,
    status: SubscriptionStatus,
    now: dt.datetime,
) -> None:
    if org.plan == plan:
        return
    before = org.plan
    org.plan, org.updated_at = plan, now
    audit.record(
        session, organization_id=org.id, actor=audit.SYSTEM, action="organization.plan_changed",
        resource_type="organization", resource_id=org.id, now=now,
        before={"plan": before.value}, after={"plan": plan.value},
        extra={"stripe_event_id": event.id, "event_type": event.type,
               "subscription_status": status.value},
    )  # fmt: skip


@dataclass(frozen=True)
class Overview:
    organization: OrganizationRow
    subscription: SubscriptionRow | None


async def overview(session: AsyncSession, principal: Principal) -> Overview:
    """The organization's plan and its newest subscription (owners and admins)."""
    principal.require("organizations:read", MemberRole.ADMIN)
    org = await session.get(OrganizationRow, principal.organization_id)
    assert org is not None
    sub = (
        await session.execute(
            select(SubscriptionRow)
            .where(SubscriptionRow.organization_id == principal.organization_id)
            .order_by(SubscriptionRow.updated_at.desc(), SubscriptionRow.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    return Overview(org, sub)
