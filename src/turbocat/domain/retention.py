"""Retention policies (SPEC section 8): how long each kind of row is kept, and the cutoffs.

A policy gives, per kind, a number of days or ``None`` ("keep forever"). The operator's
defaults come from settings (``[retention]``); an organization may override any kind in its
``settings["retention"]`` object, where ``null`` means keep forever and a missing key means the
default. Pure: the caller passes ``now``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from turbocat.domain.errors import FieldError, ValidationFailed


class Kind(StrEnum):
    LOGS = "logs"
    """Execution log lines, by ``created_at``, even when their execution is kept."""
    SUCCESSFUL_EXECUTIONS = "successful_executions"
    """Executions with status ``completed``, by ``completed_at`` (with steps, logs, items)."""
    FAILED_EXECUTIONS = "failed_executions"
    """Executions with status ``failed``, ``timeout`` or ``cancelled``, by ``completed_at``."""
    SOFT_DELETED = "soft_deleted"
    """Rows hidden by a soft delete, purged for real by ``deleted_at``."""
    AUDIT_LOGS = "audit_logs"
    """Audit log entries, by ``created_at``."""
    USAGE_RECORDS = "usage_records"
    """Usage records, by ``period_end``."""


DEFAULT_DAYS: Mapping[Kind, int | None] = {
    Kind.LOGS: 30,
    Kind.SUCCESSFUL_EXECUTIONS: 90,
    Kind.FAILED_EXECUTIONS: 180,
    Kind.SOFT_DELETED: 90,
    Kind.AUDIT_LOGS: 365,
    Kind.USAGE_RECORDS: 730,
}

SETTINGS_KEY = "retention"
"""The key of an organization's ``settings`` object holding its overrides."""

MAX_DAYS = 36_500


@dataclass(frozen=True)
class Policy:
    """Days kept per kind; ``None`` keeps that kind forever."""

    days: Mapping[Kind, int | None] = field(default_factory=lambda: dict(DEFAULT_DAYS))

    def cutoff(self, kind: Kind, now: dt.datetime) -> dt.datetime | None:
        """Rows of ``kind`` strictly older than this are removed (None: nothing is)."""
        days = self.days.get(kind, DEFAULT_DAYS[kind])
        return None if days is None else now - dt.timedelta(days=days)

    def with_overrides(self, overrides: Mapping[Kind, int | None]) -> Policy:
        return Policy({**self.days, **overrides})

    def as_json(self) -> dict[str, int | None]:
        return {kind.value: self.days.get(kind, DEFAULT_DAYS[kind]) for kind in Kind}


def parse_overrides(
    raw: object, path: tuple[str | int, ...] = ("settings", SETTINGS_KEY)
) -> dict[Kind, int | None]:
    """An organization's overrides, validated: ``{"logs": 60, "audit_logs": null}``."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValidationFailed.field(path, "must be an object of kind -> days (or null)")
    errors: list[FieldError] = []
    overrides: dict[Kind, int | None] = {}
    for key, value in raw.items():
        where = (*path, str(key))
        try:
            kind = Kind(key)
        except ValueError:
            known = ", ".join(k.value for k in Kind)
            errors.append(FieldError(where, f"unknown retention kind (one of {known})"))
            continue
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DAYS
        ):
            errors.append(FieldError(where, f"must be days from 1 to {MAX_DAYS}, or null"))
            continue
        overrides[kind] = value
    if errors:
        raise ValidationFailed("invalid retention overrides", errors)
    return overrides


def parse_days(text: str) -> int | None:
    """A CLI value: a number of days, or ``forever`` (keep forever)."""
    if text.strip().lower() in ("forever", "null", "none"):
        return None
    try:
        days = int(text)
    except ValueError:
        days = 0
    if not 1 <= days <= MAX_DAYS:
        raise ValidationFailed(f"{text!r}: give days from 1 to {MAX_DAYS}, or 'forever'")
    return days


__all__ = [
    "DEFAULT_DAYS",
    "SETTINGS_KEY",
    "Kind",
    "Policy",
    "parse_days",
    "parse_overrides",
]
