"""Formats of the secrets turbocat hands out: API keys and login tokens.

An API key reads ``tc_<32 base62 chars><6 base62 checksum chars>``: a recognizable prefix for
secret scanners, 190 random bits, and a CRC32 checksum so that a mistyped key is refused without
a database lookup. Only the SHA-256 of a secret is stored; ``key_prefix`` (the first 12
characters) identifies it in listings.
"""

from __future__ import annotations

import hashlib
import zlib

API_KEY_PREFIX = "tc_"
SESSION_PREFIX = "tcs_"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BODY_LEN = 32
_CHECK_LEN = 6
DISPLAY_PREFIX_LEN = 12


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECK_LEN)


def make_api_key(random_bytes: bytes) -> str:
    """Build a key from at least 24 random bytes (the caller supplies the randomness)."""
    if len(random_bytes) < 24:
        raise ValueError("an API key needs at least 24 random bytes")
    body = _base62(int.from_bytes(random_bytes, "big"), _BODY_LEN)
    return f"{API_KEY_PREFIX}{body}{_checksum(body)}"


def is_well_formed_api_key(key: str) -> bool:
    if not key.startswith(API_KEY_PREFIX):
        return False
    rest = key[len(API_KEY_PREFIX) :]
    if len(rest) != _BODY_LEN + _CHECK_LEN or any(c not in _ALPHABET for c in rest):
        return False
    return _checksum(rest[:_BODY_LEN]) == rest[_BODY_LEN:]


def make_session_token(random_bytes: bytes) -> str:
    if len(random_bytes) < 24:
        raise ValueError("a session token needs at least 24 random bytes")
    return SESSION_PREFIX + _base62(int.from_bytes(random_bytes, "big"), 43)


def is_well_formed_session_token(token: str) -> bool:
    rest = token[len(SESSION_PREFIX) :]
    return (
        token.startswith(SESSION_PREFIX) and len(rest) == 43 and all(c in _ALPHABET for c in rest)
    )


def display_prefix(secret: str) -> str:
    return secret[:DISPLAY_PREFIX_LEN]


def secret_hash(secret: str) -> str:
    """SHA-256 hex: what is stored and looked up (secrets have 190 bits, no salt needed)."""
    return hashlib.sha256(secret.encode()).hexdigest()
