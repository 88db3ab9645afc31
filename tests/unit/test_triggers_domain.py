"""Webhook signatures and tokens, event names, patterns, filters and depth (pure)."""

from __future__ import annotations

import hashlib
import hmac
import logging

import pytest

from turbocat.domain import events
from turbocat.domain import webhooks as hooks
from turbocat.domain.errors import SignatureRejected, UnsupportedMediaType, ValidationFailed

SECRET = "whsec_test"
BODY = b'{"n": 1}'


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert hooks.sign(SECRET, 1700000000, BODY) == expected
    assert hooks.signature_header(SECRET, 1700000000, BODY) == f"v1={expected}"


def verify(secrets: list[str], ts: str | None, sig: str | None, *, now: int = 1000) -> str:
    return hooks.verify(secrets, ts, sig, BODY, now=now, tolerance_seconds=300).signature


def test_verify_accepts_any_current_secret_and_any_offered_signature() -> None:
    good = hooks.sign("new", 1000, BODY)
    assert verify(["old", "new"], "1000", f"v1=deadbeef, v1={good}") == good
    assert verify(["new"], "1000", f"v0=zz,v1={good.upper()}") == good
    assert verify(["new"], "700", f"v1={hooks.sign('new', 700, BODY)}") is not None


@pytest.mark.parametrize(
    ("ts", "sig", "words"),
    [
        (None, "v1=00", "send"),
        ("1000", None, "send"),
        ("soon", "v1=00", "Unix seconds"),
        ("699", "v1=" + hooks.sign("s", 699, BODY), "300 s"),
        ("1301", "v1=" + hooks.sign("s", 1301, BODY), "300 s"),
        ("1000", "sha256=00", "v1=<hex>"),
        ("1000", "v1=" + hooks.sign("other", 1000, BODY), "does not match"),
        ("1000", "v1=" + hooks.sign("s", 1001, BODY), "does not match"),
    ],
)
def test_verify_refuses(ts: str | None, sig: str | None, words: str) -> None:
    with pytest.raises(SignatureRejected, match=words):
        verify(["s"], ts, sig)


def test_tokens_and_secrets() -> None:
    token = hooks.make_token(bytes(range(32)))
    assert token.startswith("whk_") and len(token) == 47 and hooks.is_well_formed_token(token)
    assert not hooks.is_well_formed_token(token[:-1]) and not hooks.is_well_formed_token("x")
    assert hooks.make_secret(b"\x01" * 32).startswith("whsec_")
    with pytest.raises(ValueError, match="32 random bytes"):
        hooks.make_token(b"short")


def test_bodies_by_content_type() -> None:
    allowed = [hooks.JSON, hooks.FORM, hooks.TEXT]
    assert hooks.parse_body("application/json; charset=utf-8", b'{"a": 1}', allowed) == {"a": 1}
    assert hooks.parse_body(hooks.FORM, b"a=1&b=2&a=3", allowed) == {"a": ["1", "3"], "b": "2"}
    assert hooks.parse_body("text/plain", b"hi", allowed) == "hi"
    assert hooks.parse_body(None, b"", allowed) is None
    with pytest.raises(UnsupportedMediaType):
        hooks.parse_body("multipart/form-data; boundary=x", b"--x", allowed)
    with pytest.raises(UnsupportedMediaType):
        hooks.parse_body(hooks.TEXT, b"hi", [hooks.JSON])
    with pytest.raises(ValidationFailed):
        hooks.parse_body(hooks.JSON, b"{", allowed)
    with pytest.raises(ValidationFailed):
        hooks.check_content_types(["image/png"], ("body",))
    assert hooks.input_of([1]) == {"body": [1]} and hooks.input_of({"a": 1}) == {"a": 1}
    headers = hooks.visible_headers({"X-A": "1", "Authorization": "x", "X-Turbocat-Signature": "s"})
    assert headers == {"x-a": "1"}


def test_event_names_patterns_filters_and_depth() -> None:
    assert events.check_name("invoice.paid") is None
    assert "reserved" in (events.check_name("execution.completed") or "")
    assert events.check_name("Invoice Paid") is not None
    assert events.matches("execution.*", "execution.failed")
    assert events.matches("*", "anything.at.all") and events.matches("a*c", "a.b.c")
    assert not events.matches("invoice.paid", "invoice.paid.late")
    assert not events.matches("a.b", "aXb")  # dots are literal
    event = {"name": "invoice.paid", "payload": {"amount": 150}, "depth": 0}
    assert events.passes(None, event) and events.passes("event.payload.amount > 100", event)
    assert not events.passes("{{ event.payload.amount > 200 }}", event)
    assert not events.passes("event.payload.amount.x > 1", event)  # an error is a no
    assert events.depth_of({"depth": 3}) == 3
    assert events.depth_of({"depth": True}) == 0 and events.depth_of({}) == 0


def test_access_log_lines_hide_webhook_tokens() -> None:
    from turbocat.api.routes.hooks import hide_tokens_in_access_log

    hide_tokens_in_access_log()
    hide_tokens_in_access_log()  # once per process, however often apps are made
    access = logging.getLogger("uvicorn.access")
    assert len([f for f in access.filters if type(f).__name__ == "_HideTokens"]) == 1
    token = hooks.make_token(bytes(range(32)))
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "POST", f"/hooks/{token}?a=1", "1.1", 202), None,
    )  # fmt: skip
    assert access.filter(record)
    line = record.getMessage()
    assert token not in line and f"/hooks/{token[:12]}...?a=1" in line
