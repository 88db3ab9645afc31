"""Bodies for integrations: credentials go in, never come out."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pydantic import Field

from turbocat.api.schemas.common import ReadModel, RequestModel
from turbocat.domain import integrations as domain
from turbocat.domain.enums import IntegrationProvider, IntegrationStatus
from turbocat.domain.integrations import AuthKind

_CREDENTIALS = (
    "Secret values for the auth kind (see GET /integrations/providers for each form); "
    "encrypted at rest and never returned."
)


class IntegrationCreate(RequestModel):
    name: str = Field(min_length=1, max_length=255)
    provider: IntegrationProvider
    auth_kind: AuthKind | None = Field(
        default=None, description="default: the provider's first accepted kind"
    )
    credentials: dict[str, Any] = Field(description=_CREDENTIALS)
    settings: dict[str, Any] = Field(default_factory=dict, description="non-secret options")


class IntegrationUpdate(RequestModel):
    name: str | None = Field(default=None, min_length=1, max_length=255)
    settings: dict[str, Any] | None = Field(default=None, description="replaces all settings")
    auth_kind: AuthKind | None = Field(
        default=None, description="changing it requires new credentials"
    )
    credentials: dict[str, Any] | None = Field(
        default=None, description="replaces the credentials. " + _CREDENTIALS
    )
    status: IntegrationStatus | None = Field(
        default=None, description="'active' to enable, 'disabled' to disable"
    )


class IntegrationRead(ReadModel):
    id: uuid.UUID
    organization_id: uuid.UUID
    name: str
    provider: IntegrationProvider
    auth_kind: AuthKind
    settings: dict[str, Any]
    status: IntegrationStatus
    credentials_set: bool = Field(description="whether credentials are stored (never shown)")
    expires_at: dt.datetime | None = Field(description="when an OAuth access token expires")
    last_used_at: dt.datetime | None
    last_error: str | None
    created_by_id: uuid.UUID | None
    created_at: dt.datetime
    updated_at: dt.datetime


class AuthKindRead(ReadModel):
    kind: AuthKind
    credentials_schema: dict[str, Any] = Field(description="JSON Schema of the credentials form")


class ProviderRead(ReadModel):
    provider: IntegrationProvider
    label: str
    category: str
    default_auth_kind: AuthKind
    auth_kinds: list[AuthKindRead]
    settings_schema: dict[str, Any] = Field(description="JSON Schema of the settings form")

    @classmethod
    def of(cls, spec: domain.ProviderSpec) -> ProviderRead:
        return cls(
            provider=spec.provider,
            label=spec.label,
            category=spec.category,
            default_auth_kind=spec.default_auth_kind,
            auth_kinds=[
                AuthKindRead(kind=k, credentials_schema=domain.credentials_schema(k))
                for k in spec.auth_kinds
            ],
            settings_schema=domain.settings_schema(spec.provider),
        )
