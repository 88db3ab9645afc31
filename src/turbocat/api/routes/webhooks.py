"""Webhooks of a workflow: create (the URL is shown once), list, change, rotate, delete.

The public side, ``POST /hooks/{token}``, is in ``routes/hooks.py``."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, Response, status

from turbocat.api.deps import ContextDep, MetaDep, NowDep, PrincipalDep, SessionDep, keyring_when
from turbocat.api.schemas.common import PROBLEM_RESPONSES
from turbocat.api.schemas.triggers import (
    WebhookCreate,
    WebhookIssued,
    WebhookRead,
    WebhookRotate,
    WebhookUpdate,
)
from turbocat.bootstrap import AppContext
from turbocat.db.models import WebhookRow
from turbocat.security.crypto import Keyring
from turbocat.services import webhooks

router = APIRouter(
    prefix="/workflows/{workflow_id}/webhooks", tags=["webhooks"], responses=PROBLEM_RESPONSES
)


def _read(row: WebhookRow, keyring: Keyring | None, ctx: AppContext) -> WebhookRead:
    signed = row.signing_secrets_encrypted is not None
    if signed and keyring is None:
        keyring = keyring_when(ctx, True)
    return WebhookRead.model_validate(row).model_copy(
        update={
            "signed": signed,
            "signing_secrets": webhooks.signing_secret_count(row, keyring, ctx.clock()),
        }
    )


def _issued(
    issued: webhooks.Issued, keyring: Keyring | None, ctx: AppContext, request: Request
) -> WebhookIssued:
    url = None
    if issued.token is not None:
        base = ctx.settings.api.public_url or str(request.base_url)
        url = f"{base.rstrip('/')}/hooks/{issued.token}"
    return WebhookIssued(
        **_read(issued.webhook, keyring, ctx).model_dump(),
        token=issued.token,
        url=url,
        signing_secret=issued.signing_secret,
    )


@router.post(
    "",
    name="webhooks-create",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookIssued,
    summary="Create a webhook (its URL and signing secret are shown once)",
)
async def create_webhook(
    workflow_id: uuid.UUID,
    body: WebhookCreate,
    request: Request,
    ctx: ContextDep,
    principal: PrincipalDep,
    session: SessionDep,
    now: NowDep,
    meta: MetaDep,
) -> WebhookIssued:
    """A secret URL that starts the latest version of this workflow: ``POST`` to it with a
    JSON body (the input). Keep the URL secret; rotate it if it leaks."""
    keyring = keyring_when(ctx, body.signed)
    issued = await webhooks.create(
        session, principal, workflow_id, name=body.name, signed=body.signed,
        wait_for_result=body.wait_for_result, wait_timeout_ms=body.wait_timeout_ms,
        content_types=body.allowed_content_types, keyring=keyring, now=now, meta=meta,
    )  # fmt: skip
    return _issued(issued, keyring, ctx, request)


@router.get("", name="webhooks-list", response_model=list[WebhookRead])
async def list_webhooks(
    workflow_id: uuid.UUID, ctx: ContextDep, principal: PrincipalDep, session: SessionDep
) -> list[WebhookRead]:
    rows = await webhooks.list_for(session, principal, workflow_id)
    return [_read(row, None, ctx) for row in rows]


@router.get("/{webhook_id}", name="webhooks-get", response_model=WebhookRead)
async def get_webhook(
    workflow_id: uuid.UUID,
    webhook_id: uuid.UUID,
    ctx: ContextDep,
    principal: PrincipalDep,
    session: SessionDep,
) -> WebhookRead:
    return _read(await webhooks.get(session, principal, workflow_id, webhook_id), None, ctx)


@router.patch("/{webhook_id}", name="webhooks-update", response_model=WebhookRead)
async def update_webhook(
    workflow_id: uuid.UUID,
    webhook_id: uuid.UUID,
    body: WebhookUpdate,
    ctx: ContextDep,
    principal: PrincipalDep,
    session: SessionDep,
    now: NowDep,
    meta: MetaDep,
) -> WebhookRead:
    """Enable or disable (a disabled webhook answers 404 like an unknown one), rename, or
    change waiting and the accepted content types."""
    row = await webhooks.update(
        session, principal, workflow_id, webhook_id,
        values=body.model_dump(exclude_unset=True), now=now, meta=meta,
    )  # fmt: skip
    return _read(row, None, ctx)


@router.post("/{webhook_id}/rotate", name="webhooks-rotate", response_model=WebhookIssued)
async def rotate_webhook(
    workflow_id: uuid.UUID,
    webhook_id: uuid.UUID,
    body: WebhookRotate,
    request: Request,
    ctx: ContextDep,
    principal: PrincipalDep,
    session: SessionDep,
    now: NowDep,
    meta: MetaDep,
) -> WebhookIssued:
    """A new token (the old URL answers 404 from now on) and/or a new signing secret (the
    previous secret keeps verifying for ``triggers.webhook_secret_grace_seconds``)."""
    keyring = keyring_when(ctx, body.signing_secret)
    issued = await webhooks.rotate(
        session, principal, workflow_id, webhook_id, token=body.token,
        signing_secret=body.signing_secret, keyring=keyring,
        grace_seconds=ctx.settings.triggers.webhook_secret_grace_seconds, now=now, meta=meta,
    )  # fmt: skip
    return _issued(issued, keyring, ctx, request)


@router.delete(
    "/{webhook_id}/signing-secrets",
    name="webhooks-unsign",
    response_model=WebhookRead,
    summary="Stop requiring signatures",
)
async def unsign_webhook(
    workflow_id: uuid.UUID,
    webhook_id: uuid.UUID,
    ctx: ContextDep,
    principal: PrincipalDep,
    session: SessionDep,
    now: NowDep,
    meta: MetaDep,
) -> WebhookRead:
    row = await webhooks.unsign(session, principal, workflow_id, webhook_id, now=now, meta=meta)
    return _read(row, None, ctx)


@router.delete("/{webhook_id}", name="webhooks-delete", status_code=status.HTTP_204_NO_CONTENT)
async def delete_webhook(
    workflow_id: uuid.UUID,
    webhook_id: uuid.UUID,
    principal: PrincipalDep,
    session: SessionDep,
    now: NowDep,
    meta: MetaDep,
) -> Response:
    await webhooks.delete(session, principal, workflow_id, webhook_id, now=now, meta=meta)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
