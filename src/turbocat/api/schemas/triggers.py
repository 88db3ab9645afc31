"""Bodies for webhooks and events."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pydantic import Field

from turbocat.api.schemas.common import ReadModel, RequestModel


class WebhookCreate(RequestModel):
    name: str | None = Field(default=None, max_length=255)
    signed: bool = Field(
        default=False,
        description="require an HMAC-SHA256 signature; the signing secret is shown once",
    )
    wait_for_result: bool = Field(
        default=False,
        description="answer with the workflow's output instead of 202 with the execution id",
    )
    wait_timeout_ms: int | None = Field(
        default=None, gt=0, description="longest wait for the output (default: the server's)"
    )
    allowed_content_types: list[str] = Field(
        default_factory=lambda: ["application/json"],
        max_length=3,
        description="of application/json, application/x-www-form-urlencoded, text/plain",
    )


class WebhookUpdate(RequestModel):
    name: str | None = Field(default=None, max_length=255)
    enabled: bool | None = None
    wait_for_result: bool | None = None
    wait_timeout_ms: int | None = Field(default=None, gt=0)
    allowed_content_types: list[str] | None = Field(default=None, max_length=3)


class WebhookRotate(RequestModel):
    token: bool = Field(default=True, description="a new URL; the old one stops at once")
    signing_secret: bool = Field(
        default=False,
        description="a new signing secret; the previous one still verifies for a grace period",
    )


class WebhookRead(ReadModel):
    id: uuid.UUID
    workflow_id: uuid.UUID = Field(description="the workflow lineage (its latest version runs)")
    name: str | None
    token_prefix: str
    enabled: bool
    signed: bool = False
    signing_secrets: int = Field(default=0, description="secrets that verify now")
    allowed_content_types: list[str]
    wait_for_result: bool
    wait_timeout_ms: int | None
    trigger_count: int
    last_triggered_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime


class WebhookIssued(WebhookRead):
    """Shown once: the token (inside ``url``) and any new signing secret."""

    token: str | None = None
    url: str | None = None
    signing_secret: str | None = None


class WebhookAccepted(ReadModel):
    execution_id: uuid.UUID
    status: str
    duplicate: bool = Field(description="a delivery id seen before: the first execution")


class EventPublish(RequestModel):
    name: str = Field(min_length=1, max_length=100, examples=["invoice.paid"])
    payload: dict[str, Any] = Field(default_factory=dict)


class EventRead(ReadModel):
    id: uuid.UUID
    name: str
    payload: dict[str, Any]
    created_at: dt.datetime
    processed_at: dt.datetime | None
