"""Semantic versions (https://semver.org) for components and prompts: parsing and ordering."""

from __future__ import annotations

import re
from collections.abc import Sequence

from turbocat.domain.errors import ValidationFailed

_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)
MAX_LENGTH = 50

SortKey = tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]


def is_semver(text: str) -> bool:
    return len(text) <= MAX_LENGTH and _SEMVER.match(text) is not None


def check(text: str, path: Sequence[str | int]) -> str:
    """``text`` if it is a semantic version such as ``1.2.0``, else ValidationFailed at ``path``."""
    if not is_semver(text):
        raise ValidationFailed.field(
            path, f"{text!r} is not a semantic version such as 1.0.0 or 2.1.0-beta.1", "semver"
        )
    return text


def sort_key(text: str) -> SortKey:
    """Orders versions by precedence: 1.0.0-alpha < 1.0.0-alpha.1 < 1.0.0 < 1.0.1 < 1.1.0.

    Build metadata (``+...``) does not affect precedence.
    """
    match = _SEMVER.match(text)
    if match is None:
        raise ValueError(f"not a semantic version: {text!r}")
    major, minor, patch, pre, _build = match.groups()
    if pre is None:
        return (int(major), int(minor), int(patch), 1, ())
    idents = tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in pre.split(".")
    )
    return (int(major), int(minor), int(patch), 0, idents)
