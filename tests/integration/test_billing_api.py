"""The Stripe billing webhook through HTTP on both databases: events signed here with Stripe's
scheme (no call leaves the machine) move the subscription and the organization's plan; bad
signatures, stale timestamps and replays change nothing."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.integration.conftest import Account, Clock, assert_problem, signup
from turbocat.config import Settings
from turbocat.db.engine import Database
from turbocat.db.models import AuditLogRow, BillingEventRow, OrganizationRow, SubscriptionRow
from turbocat.domain.billing import signature_header

SECRET = "whsec_test_current"
OLD_SECRET = "whsec_test_previous"
URL = "/api/v1/billing/webhook"
PERIOD = (1_764_547_200, 1_767_225_600)  # 2025-12-01 .. 2026-01-01


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path / "home",
        database_url=database_url,
        billing={
            "webhook_secrets": [SECRET, OLD_SECRET],
            "price_plans": {"price_pro": "professional", "price_ent": "enterprise"},
        },
    )


def subscription(
    org: Account | None, *, status: str = "active", price: str = "price_pro", **extra: Any
) -> dict[str, Any]:
    return {
        "id": "sub_1", "object": "subscription", "customer": "cus_1", "status": status,
        "current_period_start": PERIOD[0], "current_period_end": PERIOD[1],
        "trial_end": None, "cancel_at": None, "cancel_at_period_end": False,
        "items": {"data": [{"price": {"id": price}}]},
        "metadata": {"organization_id": org.org_id} if org else {},
    } | extra  # fmt: skip


def event(kind: str, obj: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {"id": event_id or f"evt_{uuid.uuid4().hex}", "object": "event", "type": kind,
            "created": int(time.time()), "data": {"object": obj}}  # fmt: skip


async def send(
    client: httpx.AsyncClient,
    doc: dict[str, Any],
    *,
    secret: str = SECRET,
    at: int | None = None,
    header: str | None = None,
) -> httpx.Response:
    body = json.dumps(doc).encode()
    signed = header or signature_header(secret, at or int(time.time()), body)
    return await client.post(
        URL, content=body, headers={"Stripe-Signature": signed, "Content-Type": "application/json"}
    )


async def state(db: Database, org: Account) -> tuple[str, SubscriptionRow | None]:
    async with db.transaction() as session:
        row = await session.get(OrganizationRow, uuid.UUID(org.org_id))
        sub = (await session.execute(select(SubscriptionRow))).scalar_one_or_none()
        assert row is not None
        return row.plan.value, sub


async def test_subscription_lifecycle_moves_the_plan(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    owner = await signup(client, "billing@example.com")
    assert (await state(operator_db, owner))[0] == "starter"

    trial_end = PERIOD[0] + 14 * 86400
    created = event("customer.subscription.created",
                    subscription(owner, status="trialing", trial_end=trial_end))  # fmt: skip
    r = await send(client, created)
    assert r.status_code == 200, r.text
    assert r.json() == {"received": True, "event_id": created["id"], "duplicate": False,
                        "processed": True, "note": None}  # fmt: skip
    plan, sub = await state(operator_db, owner)
    assert plan == "professional" and sub is not None
    assert (sub.status.value, sub.plan.value, sub.stripe_price_id) == (
        "trialing",
        "professional",
        "price_pro",
    )
    assert int(sub.current_period_start.timestamp()) == PERIOD[0]
    assert int(sub.current_period_end.timestamp()) == PERIOD[1]
    assert sub.trial_end is not None and int(sub.trial_end.timestamp()) == trial_end
    async with operator_db.transaction() as session:
        org = await session.get(OrganizationRow, uuid.UUID(owner.org_id))
        assert org is not None and org.stripe_customer_id == "cus_1"  # linked by metadata
        assert org.trial_ends_at is not None

    # the owner sees it
    overview = (await client.get("/api/v1/subscription", headers=owner.headers)).json()
    assert overview["plan"] == "professional"
    assert overview["subscription"]["status"] == "trialing"
    assert overview["limits"]["workflows"] == 25

    # a replay (same event id) answers 200 and does nothing, even when the body changed
    replay = created | {"data": {"object": subscription(owner, status="unpaid")}}
    r = await send(client, replay)
    assert r.status_code == 200 and r.json()["duplicate"] is True
    assert (await state(operator_db, owner))[1].status.value == "trialing"  # type: ignore[union-attr]

    # upgraded, set to cancel at the period's end; found by customer id (no metadata)
    r = await send(client, event("customer.subscription.updated", subscription(
        None, price="price_ent", cancel_at_period_end=True, cancel_at=PERIOD[1])))  # fmt: skip
    assert r.status_code == 200, r.text
    plan, sub = await state(operator_db, owner)
    assert plan == "enterprise" and sub is not None
    assert sub.status.value == "active" and sub.cancel_at_period_end is True
    assert sub.cancel_at is not None

    # a failed payment: past_due keeps the plan while Stripe retries; paid: active again
    invoice = {"id": "in_1", "object": "invoice", "customer": "cus_1", "subscription": "sub_1"}
    await send(client, event("invoice.payment_failed", invoice))
    plan, sub = await state(operator_db, owner)
    assert (plan, sub.status.value) == ("enterprise", "past_due")  # type: ignore[union-attr]
    await send(client, event("invoice.paid", invoice))
    plan, sub = await state(operator_db, owner)
    assert (plan, sub.status.value) == ("enterprise", "active")  # type: ignore[union-attr]

    # unpaid falls back to starter; active again restores the plan
    await send(client, event("customer.subscription.updated",
                             subscription(None, status="unpaid", price="price_ent")))  # fmt: skip
    assert (await state(operator_db, owner))[0] == "starter"
    await send(client, event("customer.subscription.updated",
                             subscription(None, price="price_ent")))  # fmt: skip
    assert (await state(operator_db, owner))[0] == "enterprise"

    # deleted: cancelled, starter; an invoice after that does not revive it
    await send(client, event("customer.subscription.deleted",
                             subscription(None, status="canceled", price="price_ent")))  # fmt: skip
    plan, sub = await state(operator_db, owner)
    assert (plan, sub.status.value) == ("starter", "cancelled")  # type: ignore[union-attr]
    await send(client, event("invoice.paid", invoice))
    plan, sub = await state(operator_db, owner)
    assert (plan, sub.status.value) == ("starter", "cancelled")  # type: ignore[union-attr]

    # every plan change is audited
    async with operator_db.transaction() as session:
        changes = (await session.execute(
            select(AuditLogRow).where(AuditLogRow.action == "organization.plan_changed")
            .order_by(AuditLogRow.created_at, AuditLogRow.id)
        )).scalars().all()  # fmt: skip
    assert [(c.changes["before"]["plan"], c.changes["after"]["plan"]) for c in changes] == [
        ("starter", "professional"), ("professional", "enterprise"), ("enterprise", "starter"),
        ("starter", "enterprise"), ("enterprise", "starter"),
    ]  # fmt: skip
    assert all(c.user_id is None and c.metadata_["stripe_event_id"] for c in changes)


async def test_signatures_are_checked(
    client: httpx.AsyncClient, operator_db: Database, clock: Clock
) -> None:
    owner = await signup(client, "sig@example.com")
    doc = event("customer.subscription.created", subscription(owner))
    now = int(clock.now.timestamp())  # the server's clock

    assert_problem(await send(client, doc, secret="whsec_wrong"), 401, "invalid_signature")
    body = assert_problem(await send(client, doc, at=now - 301), 401, "invalid_signature")
    assert "300 s" in body["detail"]
    assert_problem(await send(client, doc, at=now + 301), 401, "invalid_signature")
    assert_problem(await send(client, doc, header="v1=abc"), 401, "invalid_signature")
    r = await client.post(URL, json=doc)  # no header at all
    assert_problem(r, 401, "invalid_signature")
    # a signature over another body does not verify this one
    other = json.dumps(doc | {"type": "invoice.paid"}).encode()
    forged = signature_header(SECRET, now, other)
    assert_problem(await send(client, doc, header=forged), 401, "invalid_signature")
    async with operator_db.transaction() as session:
        assert (await session.execute(select(BillingEventRow))).first() is None
    assert (await state(operator_db, owner))[0] == "starter"

    # the previous secret still verifies during a rotation; a timestamp within 300 s is fine
    r = await send(client, doc, secret=OLD_SECRET, at=now - 200)
    assert r.status_code == 200, r.text
    assert (await state(operator_db, owner))[0] == "professional"


async def test_unmatched_and_other_events(client: httpx.AsyncClient, operator_db: Database) -> None:
    owner = await signup(client, "other-events@example.com")
    # unknown customer, no metadata: kept with the error, not applied
    lost = event("customer.subscription.created", subscription(None))
    r = await send(client, lost)
    assert r.status_code == 200 and r.json()["processed"] is False
    assert "no organization has Stripe customer 'cus_1'" in r.json()["note"]
    async with operator_db.transaction() as session:
        (row,) = (await session.execute(select(BillingEventRow))).scalars().all()
        assert row.processed_at is None and row.error
    # ... and tried again when redelivered once the link exists (checkout metadata here)
    async with operator_db.transaction() as session:
        org = await session.get(OrganizationRow, uuid.UUID(owner.org_id))
        assert org is not None
        org.stripe_customer_id = "cus_1"
    r = await send(client, lost)
    assert r.json()["processed"] is True and r.json()["duplicate"] is False
    assert (await state(operator_db, owner))[0] == "professional"

    # an event type turbocat does not use is acknowledged and recorded
    r = await send(client, event("customer.created", {"id": "cus_2"}))
    assert r.status_code == 200 and r.json()["note"] == "ignored event type"
    # a body that is no event: 422
    bad = await send(client, {"id": "evt_x", "type": "invoice.paid"})
    assert_problem(bad, 422, "validation_failed")
    # a price not in billing.price_plans keeps the organization's plan
    await send(client, event("customer.subscription.updated", subscription(None, price="p_x")))
    plan, sub = await state(operator_db, owner)
    assert plan == "professional" and sub is not None and sub.stripe_price_id == "p_x"


async def test_subscription_is_for_owners_and_admins(client: httpx.AsyncClient) -> None:
    owner = await signup(client, "subs@example.com")
    body = (await client.get("/api/v1/subscription", headers=owner.headers)).json()
    assert body["plan"] == "starter" and body["subscription"] is None
    assert body["limits"] == {"workflows": 5, "integrations": 3, "executions_per_month": None,
                              "ai_tokens_per_month": None}  # fmt: skip


async def test_a_late_older_event_does_not_overwrite_a_newer_one(
    client: httpx.AsyncClient, operator_db: Database
) -> None:
    owner = await signup(client, "order@example.com")
    t = int(time.time())
    newer = event("customer.subscription.updated", subscription(owner, price="price_ent"))
    older = event("customer.subscription.updated", subscription(owner, status="unpaid"))
    r = await send(client, newer | {"created": t})
    assert r.json()["processed"] is True
    r = await send(client, older | {"created": t - 5})  # Stripe made it first; it came last
    assert r.status_code == 200 and r.json()["processed"] is True
    assert "older than an event already applied" in r.json()["note"]
    plan, sub = await state(operator_db, owner)
    assert (plan, sub.status.value) == ("enterprise", "active")  # type: ignore[union-attr]
    # a late invoice event is older too
    invoice = {"id": "in_1", "customer": "cus_1", "subscription": "sub_1"}
    r = await send(client, event("invoice.payment_failed", invoice) | {"created": t - 1})
    assert "older" in r.json()["note"]
    # a newer one applies
    r = await send(client, event("invoice.payment_failed", invoice) | {"created": t + 1})
    assert r.json()["note"] is None
    assert (await state(operator_db, owner))[1].status.value == "past_due"  # type: ignore[union-attr]
