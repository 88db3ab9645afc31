"""Webhooks: secret URLs that start a workflow (seed 002, SPEC sections 7 and 10).

The token is shown once, at creation or rotation; only its SHA-256 is stored and a request is
looked up by that hash (row-level security lets it find the row before the tenant is known).
Unknown, malformed and disabled tokens, and webhooks whose workflow is gone, paused or
archived, all get the same 404. A webhook may be signed (``domain.webhooks`` spells out the
scheme): its secrets are sealed with the keyring; rotating keeps the previous secret valid for
a grace period.

A webhook belongs to a workflow lineage and starts its latest version.
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.config import TriggerSettings
from turbocat.db import tenancy
from turbocat.db.engine import TenantContext
from turbocat.db.models import WebhookRow, WorkflowRow
from turbocat.domain import credentials
from turbocat.domain import webhooks as hooks
from turbocat.domain.access import Principal
from turbocat.domain.enums import TriggerType
from turbocat.domain.errors import (
    Conflict,
    IdempotencyMismatch,
    NotFound,
    SignatureRejected,
    ValidationFailed,
)
from turbocat.engine.plan import PlanCache
from turbocat.security.crypto import Keyring, row_aad
from turbocat.services import audit, executions, versions, workflows
from turbocat.services.executions import Started

_FIELDS = (
    "name", "workflow_id", "token_prefix", "enabled", "allowed_content_types",
    "wait_for_result", "wait_timeout_ms", "signing_key_id",
)  # fmt: skip
PREFIX_LEN = 12


@dataclass(frozen=True)
class Issued:
    """A webhook with the secrets shown this once."""

    webhook: WebhookRow
    token: str | None = None
    signing_secret: str | None = None


def _new_token() -> tuple[str, str, str]:
    token = hooks.make_token(secrets.token_bytes(32))
    return token, credentials.secret_hash(token), token[:PREFIX_LEN]


def _secrets(keyring: Keyring, row: WebhookRow) -> list[dict[str, Any]]:
    if row.signing_secrets_encrypted is None:
        return []
    doc = keyring.decrypt_json(row.signing_secrets_encrypted, row_aad(row.organization_id, row.id))
    return list(doc) if isinstance(doc, list) else []


def _seal(keyring: Keyring, row: WebhookRow, entries: list[dict[str, Any]]) -> None:
    if not entries:
        row.signing_secrets_encrypted = None
        row.signing_key_id = None
        return
    row.signing_secrets_encrypted = keyring.encrypt_json(
        entries, row_aad(row.organization_id, row.id)
    )
    row.signing_key_id = keyring.active_id


def _new_secret(now: dt.datetime) -> tuple[str, dict[str, Any]]:
    secret = hooks.make_secret(secrets.token_bytes(32))
    return secret, {"secret": secret, "created_at": now.isoformat(), "expires_at": None}


def _audit(
    session: AsyncSession,
    principal: Principal,
    action: str,
    row: WebhookRow,
    now: dt.datetime,
    meta: audit.RequestMeta,
    before: dict[str, Any] | None = None,
    after: bool = True,
) -> None:
    audit.record(
        session, organization_id=principal.organization_id, actor=audit.Actor.of(principal),
        action=action, resource_type="webhook", resource_id=row.id, now=now, meta=meta,
        before=before, after=audit.snapshot(row, _FIELDS) if after else None,
    )  # fmt: skip


async def _lineage(
    session: AsyncSession, principal: Principal, workflow_id: uuid.UUID
) -> uuid.UUID:
    workflow = await workflows.get(session, principal, workflow_id, for_write=True)
    return versions.lineage_id(workflow)


async def create(
    session: AsyncSession,
    principal: Principal,
    workflow_id: uuid.UUID,
    *,
    name: str | None,
    signed: bool,
    wait_for_result: bool,
    wait_timeout_ms: int | None,
    content_types: list[str],
    keyring: Keyring | None,
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> Issued:
    principal.require_access("webhooks", write=True)
    lineage = await _lineage(session, principal, workflow_id)
    token, digest, prefix = _new_token()
    row = WebhookRow(
        organization_id=principal.organization_id,
        workflow_id=lineage,
        name=(name or "").strip() or None,
        token_hash=digest,
        token_prefix=prefix,
        enabled=True,
        allowed_content_types=hooks.check_content_types(
            content_types, ("body", "allowed_content_types")
        ),
        wait_for_result=wait_for_result,
        wait_timeout_ms=wait_timeout_ms,
        created_by_id=principal.user_id,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    await session.flush()  # the id is part of the sealed secrets' associated data
    secret = None
    if signed:
        if keyring is None:
            raise Conflict("signed webhooks need the credential encryption keys")
        secret, entry = _new_secret(now)
        _seal(keyring, row, [entry])
    _audit(session, principal, "webhook.create", row, now, meta)
    return Issued(row, token, secret)


async def list_for(
    session: AsyncSession, principal: Principal, workflow_id: uuid.UUID
) -> list[WebhookRow]:
    principal.require_access("webhooks")
    workflow = await workflows.get(session, principal, workflow_id)
    stmt = (
        select(WebhookRow)
        .where(
            WebhookRow.organization_id == principal.organization_id,
            WebhookRow.workflow_id == versions.lineage_id(workflow),
        )
        .order_by(WebhookRow.created_at, WebhookRow.id)
    )
    return list((await session.execute(stmt)).scalars())


async def get(
    session: AsyncSession,
    principal: Principal,
    workflow_id: uuid.UUID,
    webhook_id: uuid.UUID,
    *,
    for_write: bool = False,
) -> WebhookRow:
    principal.require_access("webhooks", write=for_write)
    workflow = await workflows.get(session, principal, workflow_id, for_write=for_write)
    row = await session.get(WebhookRow, webhook_id)
    if (
        row is None
        or row.organization_id != principal.organization_id
        or row.workflow_id != versions.lineage_id(workflow)
    ):
        raise NotFound("webhook", webhook_id)
    return row


def signing_secret_count(row: WebhookRow, keyring: Keyring | None, now: dt.datetime) -> int:
    """Secrets that verify now (0: the webhook is not signed)."""
    if row.signing_secrets_encrypted is None or keyring is None:
        return 0
    return len(_live(_secrets(keyring, row), now))


def _live(entries: list[dict[str, Any]], now: dt.datetime) -> list[dict[str, Any]]:
    return [
        e
        for e in entries
        if e.get("expires_at") is None or dt.datetime.fromisoformat(e["expires_at"]) > now
    ]


async def update(
    session: AsyncSession,
    principal: Principal,
    workflow_id: uuid.UUID,
    webhook_id: uuid.UUID,
    *,
    values: Mapping[str, Any],
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> WebhookRow:
    """Change name, enabled, waiting or accepted content types."""
    row = await get(session, principal, workflow_id, webhook_id, for_write=True)
    before = audit.snapshot(row, _FIELDS)
    for key, value in values.items():
        if key == "allowed_content_types":
            value = hooks.check_content_types(value, ("body", key))
        elif key == "name":
            value = (value or "").strip() or None
        setattr(row, key, value)
    row.updated_at = now
    _audit(session, principal, "webhook.update", row, now, meta, before)
    return row


async def rotate(
    session: AsyncSession,
    principal: Principal,
    workflow_id: uuid.UUID,
    webhook_id: uuid.UUID,
    *,
    token: bool,
    signing_secret: bool,
    keyring: Keyring | None,
    grace_seconds: int,
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> Issued:
    """A new token (the old URL stops working at once) and/or a new signing secret (the
    previous one keeps verifying for ``grace_seconds``, so senders can switch over)."""
    if not token and not signing_secret:
        raise ValidationFailed.field(("body",), "rotate the token, the signing secret, or both")
    row = await get(session, principal, workflow_id, webhook_id, for_write=True)
    before = audit.snapshot(row, _FIELDS)
    issued_token = issued_secret = None
    if token:
        issued_token, row.token_hash, row.token_prefix = _new_token()
    if signing_secret:
        if keyring is None:
            raise Conflict("signed webhooks need the credential encryption keys")
        expiry = (now + dt.timedelta(seconds=grace_seconds)).isoformat()
        kept = [
            {**e, "expires_at": e.get("expires_at") or expiry}
            for e in _live(_secrets(keyring, row), now)
        ]
        issued_secret, entry = _new_secret(now)
        _seal(keyring, row, [entry, *kept][:5])
    row.updated_at = now
    _audit(session, principal, "webhook.rotate", row, now, meta, before)
    return Issued(row, issued_token, issued_secret)


async def unsign(
    session: AsyncSession,
    principal: Principal,
    workflow_id: uuid.UUID,
    webhook_id: uuid.UUID,
    *,
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> WebhookRow:
    """Drop every signing secret: the webhook accepts unsigned requests again."""
    row = await get(session, principal, workflow_id, webhook_id, for_write=True)
    before = audit.snapshot(row, _FIELDS)
    row.signing_secrets_encrypted = None
    row.signing_key_id = None
    row.updated_at = now
    _audit(session, principal, "webhook.unsign", row, now, meta, before)
    return row


async def delete(
    session: AsyncSession,
    principal: Principal,
    workflow_id: uuid.UUID,
    webhook_id: uuid.UUID,
    *,
    now: dt.datetime,
    meta: audit.RequestMeta,
) -> None:
    row = await get(session, principal, workflow_id, webhook_id, for_write=True)
    before = audit.snapshot(row, _FIELDS)
    _audit(session, principal, "webhook.delete", row, now, meta, before, after=False)
    await session.delete(row)


@dataclass(frozen=True)
class Incoming:
    """What a webhook request brought, as the route read it (the body within the limit)."""

    method: str
    headers: Mapping[str, str]
    query: dict[str, Any]
    body: bytes


@dataclass(frozen=True)
class Received:
    started: Started
    wait_seconds: float | None
    """How long the caller waits for the output (None: answer at once)."""
    response_status: int


UNKNOWN = NotFound("webhook")
"""The one answer for every token that does not start anything (never says why)."""


async def _find(session: AsyncSession, token: str) -> tuple[WebhookRow, WorkflowRow]:
    if not hooks.is_well_formed_token(token):
        raise UNKNOWN
    digest = credentials.secret_hash(token)
    await tenancy.enter(session, TenantContext(api_key_hash=digest))
    row = (
        await session.execute(select(WebhookRow).where(WebhookRow.token_hash == digest))
    ).scalar_one_or_none()
    if row is None or not secrets.compare_digest(row.token_hash, digest) or not row.enabled:
        raise UNKNOWN
    await tenancy.enter(session, TenantContext(organization_id=row.organization_id))
    workflow = (
        await session.execute(
            select(WorkflowRow).where(
                versions.lineage_of(WorkflowRow) == row.workflow_id,
                versions.is_latest(WorkflowRow),
            )
        )
    ).scalar_one_or_none()
    if (
        workflow is None
        or workflow.status not in executions.RUNNABLE
        or _config(workflow).get("enabled", True) is False
    ):
        raise UNKNOWN
    return row, workflow


def _config(workflow: WorkflowRow) -> dict[str, Any]:
    """The workflow's ``trigger_config.webhook`` (response status, waiting, enabled)."""
    config = (workflow.trigger_config or {}).get("webhook")
    return dict(config) if isinstance(config, dict) else {}


async def receive(
    session: AsyncSession,
    token: str,
    incoming: Incoming,
    *,
    keyring: Callable[[], Keyring],
    settings: TriggerSettings,
    plans: PlanCache,
    notify: Callable[[], None],
    now: dt.datetime,
) -> Received:
    """Check and start: 404 (unknown), 401 (signature), 415 (content type), 422 (body or
    input schema), 409 (a delivery id reused with another body); nothing is written unless an
    execution starts. A repeated delivery id returns the first execution."""
    row, workflow = await _find(session, token)
    signature = None
    if row.signing_secrets_encrypted is not None:  # before the body is even parsed
        live = [str(e["secret"]) for e in _live(_secrets(keyring(), row), now)]
        signature = hooks.verify(
            live, incoming.headers.get(hooks.TIMESTAMP_HEADER),
            incoming.headers.get(hooks.SIGNATURE_HEADER), incoming.body,
            now=int(now.timestamp()), tolerance_seconds=settings.webhook_tolerance_seconds,
        )  # fmt: skip
    allowed = row.allowed_content_types or list(hooks.DEFAULT_TYPES)
    body = hooks.parse_body(incoming.headers.get("content-type"), incoming.body, allowed)
    delivery = (incoming.headers.get(hooks.DELIVERY_HEADER) or "").strip()[:200] or None
    key = (
        f"delivery:{delivery}" if delivery else f"sig:{signature.signature}" if signature else None
    )
    trigger = {
        "webhook_id": str(row.id),
        "method": incoming.method,
        "headers": hooks.visible_headers(incoming.headers),
        "query": incoming.query,
        "content_type": hooks.media_type(incoming.headers.get("content-type")) or None,
        "body": body,
        "delivery_id": delivery,
        "signed": signature is not None,
        "received_at": now.isoformat(),
    }
    try:
        started = await executions.launch(
            session, workflow, input_data=hooks.input_of(body), trigger_type=TriggerType.WEBHOOK,
            trigger_data=trigger, plans=plans, notify=notify, now=now, idempotency_key=key,
            input_path=("body",),
        )  # fmt: skip
    except IdempotencyMismatch:
        if delivery is None:
            raise SignatureRejected("this signed request was already received (replay)") from None
        raise IdempotencyMismatch(
            f"delivery {delivery!r} was already received with a different body"
        ) from None
    if not started.created and delivery is None:
        raise SignatureRejected("this signed request was already received (replay)")
    if started.created:
        row.trigger_count += 1
        row.last_triggered_at = now
    config = _config(workflow)
    wait = row.wait_for_result or bool(config.get("wait_for_result", False))
    limit = settings.max_wait_seconds
    seconds = min(limit, row.wait_timeout_ms / 1000) if row.wait_timeout_ms else limit
    return Received(started, seconds if wait else None, int(config.get("response_status", 200)))
