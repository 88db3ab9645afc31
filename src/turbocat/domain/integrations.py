"""Integrations: what credentials and settings each provider takes, and when they expire.

Pure: the services validate with these tables and store the credentials encrypted; the API
publishes them as JSON Schemas for the forms (``GET /integrations/providers``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, assert_never

from turbocat.domain.enums import IntegrationProvider, IntegrationStatus
from turbocat.domain.errors import Conflict, FieldError, ValidationFailed

MAX_VALUE_LENGTH = 16_384
"""Longest credential or setting value accepted (a JWT or a PEM fits)."""


class AuthKind(StrEnum):
    API_KEY = "api_key"
    BEARER = "bearer"
    BASIC = "basic"
    OAUTH = "oauth"


FieldType = Literal["string", "url", "datetime", "choice"]


@dataclass(frozen=True)
class FieldSpec:
    """One input of a credential or settings form."""

    name: str
    description: str
    required: bool = True
    type: FieldType = "string"
    choices: tuple[str, ...] = ()
    secret: bool = False
    """Shown masked in forms; credentials are encrypted whatever this says."""
    default: str | None = None


CREDENTIAL_FIELDS: dict[AuthKind, tuple[FieldSpec, ...]] = {
    AuthKind.API_KEY: (FieldSpec("api_key", "The API key", secret=True),),
    AuthKind.BEARER: (FieldSpec("token", "The access token sent as a Bearer token", secret=True),),
    AuthKind.BASIC: (
        FieldSpec("username", "User name (or client id)"),
        FieldSpec("password", "Password (or client secret)", secret=True),
    ),
    AuthKind.OAUTH: (
        FieldSpec("access_token", "OAuth 2 access token", secret=True),
        FieldSpec("refresh_token", "OAuth 2 refresh token", required=False, secret=True),
        FieldSpec(
            "expires_at",
            "When the access token expires (RFC 3339 with a timezone)",
            required=False,
            type="datetime",
        ),
        FieldSpec("token_type", "Token type, usually 'Bearer'", required=False),
        FieldSpec("scope", "Granted scopes, space separated", required=False),
    ),
}


def _url(name: str, description: str, *, required: bool = False) -> FieldSpec:
    return FieldSpec(name, description, required=required, type="url")


def _text(name: str, description: str, *, required: bool = False) -> FieldSpec:
    return FieldSpec(name, description, required=required)


def _choice(name: str, description: str, choices: tuple[str, ...], default: str) -> FieldSpec:
    return FieldSpec(
        name, description, required=False, type="choice", choices=choices, default=default
    )


_BASE_URL = _url("base_url", "API base URL, to use a proxy or a compatible server")
_ENVIRONMENT = _choice("environment", "Which environment", ("production", "sandbox"), "production")
_FROM_EMAIL = _text("from_email", "Default sender address")
_TENANT_ID = _text("tenant_id", "Microsoft Entra tenant id")


@dataclass(frozen=True)
class ProviderSpec:
    provider: IntegrationProvider
    label: str
    category: str
    auth_kinds: tuple[AuthKind, ...]
    """Accepted auth kinds; the first is the default."""
    settings: tuple[FieldSpec, ...] = ()

    @property
    def default_auth_kind(self) -> AuthKind:
        return self.auth_kinds[0]


_K, _B, _BA, _O = AuthKind.API_KEY, AuthKind.BEARER, AuthKind.BASIC, AuthKind.OAUTH
P = IntegrationProvider

_SPECS: tuple[ProviderSpec, ...] = (
    ProviderSpec(
        P.OPENAI, "OpenAI (and compatible servers)", "ai", (_K,),
        (_BASE_URL, _text("organization", "OpenAI organization id"),
         _text("project", "OpenAI project id")),
    ),
    ProviderSpec(
        P.ANTHROPIC, "Anthropic", "ai", (_K,),
        (_BASE_URL, _text("anthropic_version", "Value of the anthropic-version header")),
    ),
    ProviderSpec(P.GOOGLE_GEMINI, "Google Gemini", "ai", (_K,), (_BASE_URL,)),
    ProviderSpec(P.COHERE, "Cohere", "ai", (_K,), (_BASE_URL,)),
    ProviderSpec(
        P.SLACK, "Slack", "communication", (_O, _B),
        (_text("team_id", "Workspace id"), _text("default_channel", "Default channel")),
    ),
    ProviderSpec(P.MICROSOFT_TEAMS, "Microsoft Teams", "communication", (_O,), (_TENANT_ID,)),
    ProviderSpec(
        P.DISCORD, "Discord", "communication", (_B,),
        (_text("guild_id", "Server (guild) id"),
         _text("default_channel_id", "Default channel id")),
    ),
    ProviderSpec(P.GMAIL, "Gmail", "email", (_O,), (_FROM_EMAIL,)),
    ProviderSpec(P.OUTLOOK, "Outlook", "email", (_O,), (_TENANT_ID, _FROM_EMAIL)),
    ProviderSpec(P.SENDGRID, "SendGrid", "email", (_K,), (_FROM_EMAIL,)),
    ProviderSpec(P.RESEND, "Resend", "email", (_K,), (_FROM_EMAIL,)),
    ProviderSpec(P.HUBSPOT, "HubSpot", "crm", (_O, _B), (_text("portal_id", "Hub id"),)),
    ProviderSpec(
        P.SALESFORCE, "Salesforce", "crm", (_O,),
        (_url("instance_url", "Your Salesforce instance URL", required=True),),
    ),
    ProviderSpec(
        P.PIPEDRIVE, "Pipedrive", "crm", (_K, _O),
        (_text("company_domain", "Company subdomain"),),
    ),
    ProviderSpec(P.TRELLO, "Trello", "productivity", (_K, _O)),
    ProviderSpec(
        P.ASANA, "Asana", "productivity", (_B, _O), (_text("workspace_id", "Workspace id"),)
    ),
    ProviderSpec(P.MONDAY, "monday.com", "productivity", (_K, _O)),
    ProviderSpec(P.NOTION, "Notion", "productivity", (_B, _O)),
    ProviderSpec(P.LINEAR, "Linear", "productivity", (_K, _O)),
    ProviderSpec(
        P.SHOPIFY, "Shopify", "commerce", (_B, _O),
        (_text("shop_domain", "Shop domain, e.g. example.myshopify.com", required=True),),
    ),
    ProviderSpec(
        P.WOO_COMMERCE, "WooCommerce", "commerce", (_BA,),
        (_url("store_url", "Store URL", required=True),),
    ),
    ProviderSpec(P.SQUARE, "Square", "commerce", (_B, _O), (_ENVIRONMENT,)),
    ProviderSpec(
        P.MAILCHIMP, "Mailchimp", "marketing", (_K, _O),
        (_text("server_prefix", "Data center prefix, e.g. us21"),),
    ),
    ProviderSpec(P.CONVERTKIT, "ConvertKit", "marketing", (_K,)),
    ProviderSpec(
        P.ACTIVECAMPAIGN, "ActiveCampaign", "marketing", (_K,),
        (_url("account_url", "Account API URL", required=True),),
    ),
    ProviderSpec(P.STRIPE, "Stripe", "payments", (_K,)),
    ProviderSpec(P.PAYPAL, "PayPal", "payments", (_BA, _O), (_ENVIRONMENT,)),
    ProviderSpec(P.CALENDLY, "Calendly", "scheduling", (_B, _O)),
    ProviderSpec(P.ACUITY, "Acuity Scheduling", "scheduling", (_BA,)),
    ProviderSpec(P.ZAPIER, "Zapier", "automation", (_K,)),
    ProviderSpec(P.MAKE, "Make", "automation", (_K,), (_text("zone", "Zone, e.g. eu1.make.com"),)),
    ProviderSpec(
        P.GOOGLE_SHEETS, "Google Sheets", "data", (_O,),
        (_text("spreadsheet_id", "Default spreadsheet id"),),
    ),
    ProviderSpec(
        P.AIRTABLE, "Airtable", "data", (_B, _O), (_text("base_id", "Default base id"),)
    ),
    ProviderSpec(
        P.HTTP, "Any HTTP service", "generic", (_K, _B, _BA),
        (
            _url("base_url", "Base URL requests are made against"),
            FieldSpec(
                "header_name",
                "Header carrying the API key (api_key auth)",
                required=False,
                default="X-API-Key",
            ),
        ),
    ),
)  # fmt: skip

PROVIDERS: dict[IntegrationProvider, ProviderSpec] = {s.provider: s for s in _SPECS}


def spec(provider: IntegrationProvider) -> ProviderSpec:
    return PROVIDERS[provider]


class IntegrationUnavailable(Conflict):
    """An integration cannot be used right now (disabled, expired, unreadable credentials)."""

    title = "Integration unavailable"
    code = "integration_unavailable"

    def __init__(self, detail: str, *, status: IntegrationStatus) -> None:
        super().__init__(detail)
        self.status = status


# --- validation ----------------------------------------------------------------------------


def _check_value(
    field: FieldSpec, value: object, path: tuple[str | int, ...]
) -> tuple[str | None, FieldError | None]:
    """The normalized value, or an error (messages never repeat the value: it may be secret)."""
    if not isinstance(value, str):
        return None, FieldError(path, "must be a string", "type")
    if not value.strip():
        return None, FieldError(path, "must not be blank", "blank")
    if len(value) > MAX_VALUE_LENGTH:
        return None, FieldError(path, f"must be at most {MAX_VALUE_LENGTH} characters", "length")
    match field.type:
        case "string":
            return value, None
        case "url":
            if not value.startswith(("http://", "https://")) or len(value.split("//", 1)[1]) < 1:
                return None, FieldError(path, "must be an http:// or https:// URL", "url")
            return value.rstrip("/"), None
        case "datetime":
            try:
                moment = dt.datetime.fromisoformat(value)
            except ValueError:
                return None, FieldError(path, "must be an RFC 3339 date-time", "datetime")
            if moment.tzinfo is None:
                return None, FieldError(path, "must carry a timezone (e.g. Z)", "datetime")
            return moment.astimezone(dt.UTC).isoformat(), None
        case "choice":
            if value not in field.choices:
                return None, FieldError(path, f"must be one of: {', '.join(field.choices)}", "enum")
            return value, None
        case _ as unreachable:
            assert_never(unreachable)


def _check_form(
    fields: tuple[FieldSpec, ...], values: Mapping[str, object], base: tuple[str | int, ...]
) -> tuple[dict[str, str], list[FieldError]]:
    known = {f.name: f for f in fields}
    out: dict[str, str] = {}
    errors = [
        FieldError((*base, name), "is not a field of this form", "unknown_field")
        for name in values
        if name not in known
    ]
    for field in fields:
        value = values.get(field.name)
        path = (*base, field.name)
        if value is None:
            if field.required:
                errors.append(FieldError(path, "is required", "missing"))
            continue
        normalized, error = _check_value(field, value, path)
        if error is not None:
            errors.append(error)
        elif normalized is not None:
            out[field.name] = normalized
    return out, errors


def resolve_auth_kind(provider: IntegrationProvider, auth_kind: str | None) -> AuthKind:
    """The requested auth kind if the provider accepts it; its default when none is given."""
    provider_spec = spec(provider)
    if auth_kind is None:
        return provider_spec.default_auth_kind
    allowed = ", ".join(k.value for k in provider_spec.auth_kinds)
    if auth_kind not in provider_spec.auth_kinds:
        raise ValidationFailed.field(
            ("body", "auth_kind"),
            f"{provider.value} accepts these auth kinds: {allowed}",
            "enum",
        )
    return AuthKind(auth_kind)


def validate_credentials(auth_kind: AuthKind, credentials: Mapping[str, object]) -> dict[str, str]:
    """Normalized credentials, or ``ValidationFailed`` naming each bad field."""
    values, errors = _check_form(CREDENTIAL_FIELDS[auth_kind], credentials, ("body", "credentials"))
    if errors:
        raise ValidationFailed(f"the credentials are not valid for {auth_kind.value}", errors)
    return values


def validate_settings(
    provider: IntegrationProvider, settings: Mapping[str, object]
) -> dict[str, str]:
    values, errors = _check_form(spec(provider).settings, settings, ("body", "settings"))
    if errors:
        raise ValidationFailed(f"the settings are not valid for {provider.value}", errors)
    return values


def credentials_expiry(auth_kind: AuthKind, credentials: Mapping[str, str]) -> dt.datetime | None:
    """When validated credentials stop working (OAuth ``expires_at``), if known."""
    if auth_kind is not AuthKind.OAUTH or "expires_at" not in credentials:
        return None
    return dt.datetime.fromisoformat(credentials["expires_at"])


def credential_status(expires_at: dt.datetime | None, now: dt.datetime) -> IntegrationStatus:
    """Status the credentials alone imply: expired once the token's expiry has passed."""
    if expires_at is not None and expires_at <= now:
        return IntegrationStatus.EXPIRED
    return IntegrationStatus.ACTIVE


def effective_status(
    stored: IntegrationStatus, expires_at: dt.datetime | None, now: dt.datetime
) -> IntegrationStatus:
    """The status to report: disabled and error stay; active and expired follow the expiry."""
    match stored:
        case IntegrationStatus.DISABLED | IntegrationStatus.ERROR:
            return stored
        case IntegrationStatus.ACTIVE | IntegrationStatus.EXPIRED:
            return credential_status(expires_at, now)
        case _ as unreachable:
            assert_never(unreachable)


# --- JSON Schemas for forms ----------------------------------------------------------------


def _field_schema(field: FieldSpec) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "description": field.description}
    match field.type:
        case "string":
            schema["minLength"] = 1
        case "url":
            schema["format"] = "uri"
            schema["pattern"] = "^https?://"
        case "datetime":
            schema["format"] = "date-time"
        case "choice":
            schema["enum"] = list(field.choices)
        case _ as unreachable:
            assert_never(unreachable)
    schema["maxLength"] = MAX_VALUE_LENGTH
    if field.secret:
        schema["writeOnly"] = True
        schema["format"] = schema.get("format", "password")
    if field.default is not None:
        schema["default"] = field.default
    return schema


def form_schema(fields: tuple[FieldSpec, ...], title: str) -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) for one credentials or settings form."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "type": "object",
        "properties": {f.name: _field_schema(f) for f in fields},
        "required": [f.name for f in fields if f.required],
        "additionalProperties": False,
    }


def credentials_schema(auth_kind: AuthKind) -> dict[str, Any]:
    return form_schema(CREDENTIAL_FIELDS[auth_kind], f"{auth_kind.value} credentials")


def settings_schema(provider: IntegrationProvider) -> dict[str, Any]:
    provider_spec = spec(provider)
    return form_schema(provider_spec.settings, f"{provider_spec.label} settings")
