"""Webhook tokens, the signature scheme and what a webhook body may be (pure).

A webhook URL is ``/hooks/<token>``; the token reads ``whk_<43 base62 chars>`` (256 random
bits) and only its SHA-256 is stored. A signed webhook carries::

    X-Turbocat-Timestamp: <unix seconds>
    X-Turbocat-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>

Several ``v1=`` values may be sent, comma-separated (a sender rolling its secret); the request
passes when one of them matches one of the webhook's current secrets, and the timestamp is within
the tolerance of the server's clock (300 s by default), so a captured request cannot be replayed
later. Within the window, a repeated signature is refused too (see ``services.webhooks``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from turbocat.domain.errors import SignatureRejected, UnsupportedMediaType, ValidationFailed

TOKEN_PREFIX = "whk_"
SECRET_PREFIX = "whsec_"
TIMESTAMP_HEADER = "x-turbocat-timestamp"
SIGNATURE_HEADER = "x-turbocat-signature"
DELIVERY_HEADER = "x-turbocat-delivery"
"""A sender's id for one delivery: a retry with the same id returns the same execution."""
SCHEME = "v1"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_TOKEN_LEN = 43
MAX_SIGNATURES = 8

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
TEXT = "text/plain"
SUPPORTED_TYPES = (JSON, FORM, TEXT)
"""What a webhook body may be. Files (multipart) are never accepted: there is no upload whose
name or type a sender could choose (SPEC section 10)."""
DEFAULT_TYPES = (JSON,)

_HIDDEN_HEADERS = frozenset(
    {"authorization", "cookie", "proxy-authorization", SIGNATURE_HEADER, "x-api-key"}
)
"""Headers never copied into trigger_data (credentials a sender may add by habit)."""


def make_token(random_bytes: bytes) -> str:
    if len(random_bytes) < 32:
        raise ValueError("a webhook token needs at least 32 random bytes")
    number = int.from_bytes(random_bytes, "big")
    chars = []
    for _ in range(_TOKEN_LEN):
        number, digit = divmod(number, 62)
        chars.append(_ALPHABET[digit])
    return TOKEN_PREFIX + "".join(chars)


def is_well_formed_token(token: str) -> bool:
    rest = token[len(TOKEN_PREFIX) :]
    return (
        token.startswith(TOKEN_PREFIX)
        and len(rest) == _TOKEN_LEN
        and all(c in _ALPHABET for c in rest)
    )


def make_secret(random_bytes: bytes) -> str:
    if len(random_bytes) < 32:
        raise ValueError("a signing secret needs at least 32 random bytes")
    return SECRET_PREFIX + base64.urlsafe_b64encode(random_bytes).decode().rstrip("=")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``v1`` signature: hex HMAC-SHA256 of ``"<timestamp>." + body`` keyed by the secret."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    return f"{SCHEME}={sign(secret, timestamp, body)}"


@dataclass(frozen=True)
class Verified:
    timestamp: int
    signature: str
    """The matching signature (hex): the replay guard's key."""


def verify(
    secrets: Sequence[str],
    timestamp_header: str | None,
    signature_header_value: str | None,
    body: bytes,
    *,
    now: int,
    tolerance_seconds: int,
) -> Verified:
    """Check a signed request, or raise ``SignatureRejected`` saying what is wrong (never which
    secret was close: every candidate is compared in constant time)."""
    if not timestamp_header or not signature_header_value:
        raise SignatureRejected(
            f"this webhook is signed: send {TIMESTAMP_HEADER} and {SIGNATURE_HEADER}"
        )
    try:
        timestamp = int(timestamp_header.strip())
    except ValueError:
        raise SignatureRejected(f"{TIMESTAMP_HEADER} must be Unix seconds") from None
    if abs(now - timestamp) > tolerance_seconds:
        raise SignatureRejected(
            f"the timestamp is more than {tolerance_seconds} s away from the server's clock "
            "(stale or replayed request)"
        )
    offered = [
        value.strip()
        for scheme, _, value in (
            p.strip().partition("=") for p in signature_header_value.split(",")
        )
        if scheme == SCHEME and value.strip()
    ][:MAX_SIGNATURES]
    if not offered:
        raise SignatureRejected(f"{SIGNATURE_HEADER} must be '{SCHEME}=<hex>'")
    matched = None
    for secret in secrets:
        expected = sign(secret, timestamp, body)
        for candidate in offered:
            if hmac.compare_digest(expected, candidate.lower()):
                matched = expected
    if matched is None:
        raise SignatureRejected("the signature does not match the body and timestamp")
    return Verified(timestamp, matched)


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def check_content_types(types: Sequence[str], path: tuple[str | int, ...]) -> list[str]:
    chosen = sorted({media_type(t) for t in types}) or list(DEFAULT_TYPES)
    unknown = [t for t in chosen if t not in SUPPORTED_TYPES]
    if unknown:
        raise ValidationFailed.field(
            path,
            f"unsupported content types: {', '.join(unknown)} "
            f"(supported: {', '.join(SUPPORTED_TYPES)})",
        )
    return chosen


def parse_body(content_type: str | None, body: bytes, allowed: Sequence[str]) -> Any:
    """The body as data: JSON as parsed, a form as an object of strings (a repeated field
    becomes a list), text as a string. An empty body is null."""
    kind = media_type(content_type)
    if not body:
        return None
    if kind not in allowed:
        raise UnsupportedMediaType(
            f"this webhook accepts {', '.join(allowed)}; got {kind or 'no Content-Type'}"
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationFailed.field(("body",), "the body is not UTF-8 text") from None
    if kind == JSON:
        import json

        try:
            return json.loads(text)
        except ValueError as exc:
            raise ValidationFailed.field(("body",), f"the body is not valid JSON: {exc}") from None
    if kind == FORM:
        form: dict[str, Any] = {}
        for key, value in parse_qsl(text, keep_blank_values=True):
            if key in form:
                previous = form[key]
                form[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
            else:
                form[key] = value
        return form
    return text


def visible_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The request headers kept in trigger_data: credentials and the signature left out."""
    return {k.lower(): v for k, v in headers.items() if k.lower() not in _HIDDEN_HEADERS}


def input_of(body: Any) -> dict[str, Any]:
    """The execution's input: a JSON object body as is, anything else under ``body``."""
    if isinstance(body, dict):
        return body
    return {} if body is None else {"body": body}
