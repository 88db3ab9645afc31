"""Redaction of secrets before anything is written to a log, an audit row or an error."""

from __future__ import annotations

import re
from typing import Any

REDACTED = "[redacted]"
_SECRET_KEY = re.compile(
    r"(pass(word|wd)?|secret|token|api[_-]?key|credential|authorization|private[_-]?key|"
    r"cookie|session|key_hash|password_hash|signing)",
    re.IGNORECASE,
)
_MAX_DEPTH = 32


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def redact(value: Any, depth: int = 0) -> Any:
    """A copy of ``value`` with every value under a secret-looking key replaced."""
    if depth > _MAX_DEPTH:
        return REDACTED
    if isinstance(value, dict):
        return {
            k: (
                REDACTED
                if isinstance(k, str) and is_secret_key(k) and v is not None
                else redact(v, depth + 1)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v, depth + 1) for v in value]
    return value
