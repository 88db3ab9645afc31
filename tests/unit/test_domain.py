"""Pure domain rules: credential formats, access, redaction, cursors, slugs, rate limiting."""

from __future__ import annotations

import os
import uuid

import pytest

from turbocat.api.ratelimit import RateLimiter
from turbocat.domain import credentials
from turbocat.domain.access import ALL_SCOPES, Principal, assignable_roles, scope_grants
from turbocat.domain.enums import MemberRole
from turbocat.domain.errors import MissingScope, PermissionDenied, ValidationFailed
from turbocat.domain.pagination import Cursor
from turbocat.domain.redaction import REDACTED, redact
from turbocat.domain.slugs import slugify


def test_api_keys_have_prefix_entropy_and_checksum() -> None:
    keys = {credentials.make_api_key(os.urandom(24)) for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert key.startswith("tc_") and credentials.is_well_formed_api_key(key)
    key = next(iter(keys))
    typo = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert not credentials.is_well_formed_api_key(typo)
    assert not credentials.is_well_formed_api_key(key + "x")
    with pytest.raises(ValueError, match="24 random bytes"):
        credentials.make_api_key(os.urandom(15))


def test_session_tokens_are_distinct_from_keys() -> None:
    token = credentials.make_session_token(os.urandom(32))
    assert credentials.is_well_formed_session_token(token)
    assert not credentials.is_well_formed_api_key(token)
    assert credentials.secret_hash(token) != credentials.secret_hash(token + "x")


def test_scopes_write_implies_read_and_star_is_everything() -> None:
    assert scope_grants(frozenset({"workflows:write"}), "workflows:read")
    assert not scope_grants(frozenset({"workflows:read"}), "workflows:write")
    assert scope_grants(frozenset({"*"}), "audit_logs:read")
    assert "members:write" in ALL_SCOPES


def test_principal_requires_scope_then_role() -> None:
    viewer_key = Principal(
        uuid.uuid4(),
        uuid.uuid4(),
        MemberRole.VIEWER,
        api_key_id=uuid.uuid4(),
        scopes=frozenset({"*"}),
    )
    with pytest.raises(PermissionDenied, match="member role"):
        viewer_key.require("api_keys:write", MemberRole.MEMBER)
    narrow = Principal(
        uuid.uuid4(),
        uuid.uuid4(),
        MemberRole.OWNER,
        api_key_id=uuid.uuid4(),
        scopes=frozenset({"members:read"}),
    )
    with pytest.raises(MissingScope) as info:
        narrow.require("members:write", MemberRole.ADMIN)
    assert info.value.scope == "members:write"
    assert narrow.can_grant_scopes(["members:read", "*"]) == ["*"]
    session = Principal(uuid.uuid4(), uuid.uuid4(), MemberRole.ADMIN)
    assert session.can_grant_scopes(["*"]) == []


def test_role_assignment_rules() -> None:
    assert MemberRole.OWNER in assignable_roles(MemberRole.OWNER)
    assert MemberRole.OWNER not in assignable_roles(MemberRole.ADMIN)
    assert assignable_roles(MemberRole.MEMBER) == set()


def test_redaction_walks_nested_values() -> None:
    value = {
        "name": "x",
        "credentials": {"token": "t"},
        "list": [{"api_key": "k", "ok": 1}],
        "Authorization": "Bearer abc",
        "password": None,
    }
    out = redact(value)
    assert out["credentials"] == REDACTED and out["Authorization"] == REDACTED
    assert out["list"] == [{"api_key": REDACTED, "ok": 1}]
    assert out["name"] == "x" and out["password"] is None
    assert value["credentials"] == {"token": "t"}  # the input is not changed


def test_cursor_round_trip_and_garbage() -> None:
    ident = uuid.uuid4()
    cursor = Cursor("2026-01-01T00:00:00+00:00", ident)
    assert Cursor.decode(cursor.encode()) == cursor
    with pytest.raises(ValidationFailed) as info:
        Cursor.decode("!!!")
    assert info.value.errors[0].path == ("query", "cursor")


@pytest.mark.parametrize(
    ("name", "slug"),
    [("Acme Inc.", "acme-inc"), ("  Ünïcödé  Çorp ", "unicode-corp"), ("!!!", "org")],
)
def test_slugify(name: str, slug: str) -> None:
    assert slugify(name) == slug


def test_rate_limiter_allows_the_budget_then_says_when() -> None:
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    key = uuid.uuid4()
    assert [limiter.check(key, 6) for _ in range(6)] == [None] * 6
    wait = limiter.check(key, 6)
    assert wait is not None and 1 <= wait <= 10
    now[0] += 10.0  # one interval later, one more request fits
    assert limiter.check(key, 6) is None
    assert limiter.check(key, 6) is not None
    assert limiter.check(uuid.uuid4(), 6) is None  # keys are independent
