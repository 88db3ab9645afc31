"""Stripe's webhook signature scheme and how a Stripe subscription maps onto ours (pure).

Stripe signs an event with ``Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]`` where
each ``v1`` is HMAC-SHA256 over ``"<t>." + raw body`` keyed by the endpoint's signing secret
(``whsec_...``, used as-is): the same construction as turbocat's own webhooks, so the check is
``domain.webhooks.verify`` (constant-time compare, timestamp tolerance, several secrets).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from turbocat.domain import webhooks
from turbocat.domain.enums import Plan, SubscriptionStatus
from turbocat.domain.errors import SignatureRejected, ValidationFailed

SIGNATURE_HEADER = "stripe-signature"

SUBSCRIPTION_EVENTS = frozenset(
    {
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
    }
)
INVOICE_EVENTS = frozenset({"invoice.payment_failed", "invoice.paid"})
HANDLED_EVENTS = SUBSCRIPTION_EVENTS | INVOICE_EVENTS

STATUSES: Mapping[str, SubscriptionStatus] = {
    "active": SubscriptionStatus.ACTIVE,
    "trialing": SubscriptionStatus.TRIALING,
    "past_due": SubscriptionStatus.PAST_DUE,
    "canceled": SubscriptionStatus.CANCELLED,
    "cancelled": SubscriptionStatus.CANCELLED,
    "unpaid": SubscriptionStatus.UNPAID,
    "incomplete": SubscriptionStatus.INCOMPLETE,
    "incomplete_expired": SubscriptionStatus.CANCELLED,
    "paused": SubscriptionStatus.UNPAID,
}
"""Stripe's subscription statuses onto ours (``incomplete_expired`` never became paid and
ended; a ``paused`` subscription is not being paid)."""

PAID_STATUSES = frozenset(
    {SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING, SubscriptionStatus.PAST_DUE}
)
"""Statuses in which the organization keeps the subscribed plan. ``past_due`` keeps it while
Stripe retries the payment; ``unpaid``, ``cancelled`` and ``incomplete`` fall back to starter."""

FALLBACK_PLAN = Plan.STARTER


def verify_signature(
    header: str | None,
    body: bytes,
    secrets: Sequence[str],
    *,
    now: int,
    tolerance_seconds: int,
) -> None:
    """Check ``Stripe-Signature`` against the raw body, or raise ``SignatureRejected``."""
    if not secrets:
        raise SignatureRejected("billing webhooks are not configured (billing.webhook_secrets)")
    if not header:
        raise SignatureRejected("send the Stripe-Signature header")
    timestamp: str | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == webhooks.SCHEME:
            signatures.append(f"{key}={value}")
    if timestamp is None or not signatures:
        raise SignatureRejected("Stripe-Signature must read 't=<unix seconds>,v1=<hex>'")
    webhooks.verify(
        secrets, timestamp, ",".join(signatures), body, now=now, tolerance_seconds=tolerance_seconds
    )


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    """A ``Stripe-Signature`` value, as Stripe would send it (tests, docs)."""
    return f"t={timestamp},{webhooks.SCHEME}={webhooks.sign(secret, timestamp, body)}"


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    obj: Mapping[str, Any]
    """``data.object``: a subscription or an invoice."""
    created: int | None = None
    """When Stripe made the event (Unix seconds): orders events that arrive out of order."""

    @property
    def customer(self) -> str | None:
        customer = self.obj.get("customer")
        if isinstance(customer, Mapping):  # an expanded customer object
            customer = customer.get("id")
        return customer if isinstance(customer, str) else None

    @property
    def subscription_id(self) -> str | None:
        """The subscription the event is about (the object itself, or the one an invoice
        bills)."""
        if self.type in SUBSCRIPTION_EVENTS:
            ident = self.obj.get("id")
            return ident if isinstance(ident, str) and ident else None
        return invoice_subscription(self.obj)


def supersedes(applied: Event, incoming: Event) -> bool:
    """Whether ``applied`` (already processed) is about the same subscription as ``incoming``
    and strictly newer, so that ``incoming`` arrived late and must not overwrite it. Events
    of the same second are applied in the order they arrive."""
    return (
        incoming.subscription_id is not None
        and applied.subscription_id == incoming.subscription_id
        and applied.created is not None
        and incoming.created is not None
        and applied.created > incoming.created
    )


def parse_event(document: Any) -> Event:
    """The parts of a Stripe event turbocat reads; a malformed one is a 422."""
    if not isinstance(document, Mapping):
        raise ValidationFailed.field(("body",), "a Stripe event is a JSON object", "invalid")
    event_id, event_type = document.get("id"), document.get("type")
    data = document.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    if not isinstance(event_id, str) or not event_id or len(event_id) > 255:
        raise ValidationFailed.field(("body", "id"), "the event id is missing", "missing")
    if not isinstance(event_type, str) or not event_type:
        raise ValidationFailed.field(("body", "type"), "the event type is missing", "missing")
    if not isinstance(obj, Mapping):
        raise ValidationFailed.field(
            ("body", "data", "object"), "the event has no data.object", "missing"
        )
    created = document.get("created")
    if isinstance(created, bool) or not isinstance(created, int):
        created = None
    return Event(event_id, event_type[:100], obj, created)


@dataclass(frozen=True)
class SubscriptionState:
    """A Stripe subscription object, read."""

    stripe_id: str
    status: SubscriptionStatus
    price_id: str | None
    plan: Plan | None
    """The plan its price maps to (``billing.price_plans``); None when the price is unknown."""
    period_start: dt.datetime
    period_end: dt.datetime
    trial_end: dt.datetime | None
    cancel_at: dt.datetime | None
    cancel_at_period_end: bool
    organization_hint: str | None
    """``metadata.organization_id``, when the checkout put it there."""


def _time(value: Any) -> dt.datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return dt.datetime.fromtimestamp(value, dt.UTC)


def _price_of(obj: Mapping[str, Any]) -> str | None:
    items = obj.get("items")
    data = items.get("data") if isinstance(items, Mapping) else None
    if isinstance(data, list):
        for item in data:
            price = item.get("price") if isinstance(item, Mapping) else None
            if isinstance(price, Mapping) and isinstance(price.get("id"), str):
                return str(price["id"])
            plan = item.get("plan") if isinstance(item, Mapping) else None
            if isinstance(plan, Mapping) and isinstance(plan.get("id"), str):
                return str(plan["id"])
    plan = obj.get("plan")  # the legacy single-plan field
    if isinstance(plan, Mapping) and isinstance(plan.get("id"), str):
        return str(plan["id"])
    return None


def read_subscription(
    event_type: str, obj: Mapping[str, Any], price_plans: Mapping[str, Plan], now: dt.datetime
) -> SubscriptionState:
    """Our view of a Stripe subscription object (a ``deleted`` event is always cancelled)."""
    stripe_id = obj.get("id")
    if not isinstance(stripe_id, str) or not stripe_id:
        raise ValidationFailed.field(
            ("body", "data", "object", "id"), "the subscription has no id", "missing"
        )
    raw_status = obj.get("status")
    status = STATUSES.get(raw_status) if isinstance(raw_status, str) else None
    if event_type == "customer.subscription.deleted":
        status = SubscriptionStatus.CANCELLED
    if status is None:
        raise ValidationFailed.field(
            ("body", "data", "object", "status"),
            f"unknown subscription status {raw_status!r}",
            "invalid",
        )
    price = _price_of(obj)
    start = _time(obj.get("current_period_start")) or now
    end = _time(obj.get("current_period_end"))
    if end is None or end <= start:
        end = start + dt.timedelta(days=30)  # the table wants an ordered period
    metadata = obj.get("metadata")
    hint = metadata.get("organization_id") if isinstance(metadata, Mapping) else None
    return SubscriptionState(
        stripe_id=stripe_id, status=status, price_id=price,
        plan=price_plans.get(price) if price is not None else None,
        period_start=start, period_end=end, trial_end=_time(obj.get("trial_end")),
        cancel_at=_time(obj.get("cancel_at")),
        cancel_at_period_end=bool(obj.get("cancel_at_period_end", False)),
        organization_hint=hint if isinstance(hint, str) else None,
    )  # fmt: skip


def plan_for(status: SubscriptionStatus, subscribed: Plan) -> Plan:
    """The plan an organization is on while its subscription is in ``status``."""
    return subscribed if status in PAID_STATUSES else FALLBACK_PLAN


def invoice_subscription(obj: Mapping[str, Any]) -> str | None:
    """The subscription an invoice bills (``subscription``, or the newer ``parent`` shape)."""
    sub = obj.get("subscription")
    if isinstance(sub, Mapping):
        sub = sub.get("id")
    if isinstance(sub, str) and sub:
        return sub
    parent = obj.get("parent")
    details = parent.get("subscription_details") if isinstance(parent, Mapping) else None
    nested = details.get("subscription") if isinstance(details, Mapping) else None
    return nested if isinstance(nested, str) and nested else None
