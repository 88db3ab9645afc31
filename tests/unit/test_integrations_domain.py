"""Integration providers: credential and settings forms, auth kinds, expiry."""

from __future__ import annotations

import datetime as dt

import pytest

from turbocat.domain import integrations
from turbocat.domain.enums import IntegrationProvider, IntegrationStatus
from turbocat.domain.errors import ValidationFailed


def test_every_provider_has_a_spec_with_valid_schemas() -> None:
    assert set(integrations.PROVIDERS) == set(IntegrationProvider)
    for spec in integrations.PROVIDERS.values():
        assert spec.auth_kinds
        schema = integrations.settings_schema(spec.provider)
        assert schema["additionalProperties"] is False
    schema = integrations.credentials_schema(integrations.AuthKind.OAUTH)
    assert schema["required"] == ["access_token"]
    assert schema["properties"]["access_token"]["writeOnly"] is True


def test_credentials_validation_names_fields_without_echoing_values() -> None:
    with pytest.raises(ValidationFailed) as info:
        integrations.validate_credentials(
            integrations.AuthKind.BASIC, {"username": "", "extra": "sekrit-value", "password": 3}
        )
    paths = {e.path for e in info.value.errors}
    assert paths == {
        ("body", "credentials", "username"),
        ("body", "credentials", "extra"),
        ("body", "credentials", "password"),
    }
    assert "sekrit-value" not in repr(info.value.errors)
    oauth = integrations.validate_credentials(
        integrations.AuthKind.OAUTH,
        {"access_token": "t", "expires_at": "2030-01-01T02:00:00+02:00"},
    )
    assert oauth["expires_at"] == "2030-01-01T00:00:00+00:00"
    with pytest.raises(ValidationFailed):
        integrations.validate_credentials(
            integrations.AuthKind.OAUTH, {"access_token": "t", "expires_at": "2030-01-01T00:00"}
        )


def test_auth_kinds_per_provider() -> None:
    assert integrations.resolve_auth_kind(IntegrationProvider.SLACK, None) == "oauth"
    assert integrations.resolve_auth_kind(IntegrationProvider.SLACK, "bearer") == "bearer"
    with pytest.raises(ValidationFailed) as info:
        integrations.resolve_auth_kind(IntegrationProvider.ANTHROPIC, "basic")
    assert info.value.errors[0].path == ("body", "auth_kind")


def test_status_follows_expiry() -> None:
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    past, future = now - dt.timedelta(seconds=1), now + dt.timedelta(hours=1)
    assert integrations.credential_status(None, now) is IntegrationStatus.ACTIVE
    assert integrations.credential_status(past, now) is IntegrationStatus.EXPIRED
    assert integrations.credential_status(future, now) is IntegrationStatus.ACTIVE
    S = IntegrationStatus
    assert integrations.effective_status(S.ACTIVE, past, now) is S.EXPIRED
    assert integrations.effective_status(S.EXPIRED, future, now) is S.ACTIVE
    assert integrations.effective_status(S.DISABLED, past, now) is S.DISABLED
