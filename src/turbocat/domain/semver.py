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


_RANGE = r"\*|[~^]?(0|[1-9]\d*)(\.(0|[1-9]\d*)){0,2}"
REQUIREMENT_PATTERN = rf"^({_RANGE}|={_SEMVER.pattern[1:-1]}|{_SEMVER.pattern[1:-1]})$"
"""What a step may ask of a component's version: ``*`` (any), ``1.2.0`` or ``=1.2.0`` (exactly),
``^1.2`` (compatible: ``>=1.2.0 <2.0.0``; ``^0.3`` is ``<0.4.0``) or ``~1.2`` (``>=1.2.0
<1.3.0``)."""
_REQUIREMENT = re.compile(REQUIREMENT_PATTERN)


def is_requirement(text: str) -> bool:
    return len(text) <= MAX_LENGTH and _REQUIREMENT.match(text) is not None


def satisfies(version: str, requirement: str | None) -> bool:
    """Whether ``version`` meets ``requirement`` (None or ``*``: any release). Ranges (``^``,
    ``~``) match releases only, never pre-releases; an exact requirement matches itself."""
    if not is_semver(version):
        return False
    if requirement is None or requirement == "*":
        return sort_key(version)[3] == 1
    if requirement[0] not in "^~":
        wanted = requirement.removeprefix("=")
        return is_semver(wanted) and sort_key(version)[:4] == sort_key(wanted)[:4]
    key = sort_key(version)
    if key[3] == 0:
        return False
    given = [int(part) for part in requirement[1:].split(".")]
    low = (*given, 0, 0)[:3]
    if requirement[0] == "~":
        bump = min(len(given), 2) - 1 if len(given) > 1 else 0
    else:  # the left-most non-zero part given (or the last one given when all are zero)
        bump = next((i for i, part in enumerate(given) if part), len(given) - 1)
    high = [*low[:bump], low[bump] + 1, 0, 0][:3]
    return tuple(low) <= key[:3] < tuple(high)
