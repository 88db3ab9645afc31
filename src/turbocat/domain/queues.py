"""Task queues (seed 003): which queue row applies to a name, and what a queue row may hold.

An organization sees its own queues and the system queues (no organization). When both have a
queue of the same name, the organization's row applies to its executions and steps; the system
row still applies to every other organization.

- ``max_concurrent_workflows``: executions live at once (running, or waiting on a timer or a
  signal) whose workflow runs on the queue; extra ones wait as ``pending`` and start in order.
- ``max_concurrent_activities``: steps running at once on the queue, across every worker.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from typing import Protocol, TypeVar

from turbocat.domain.definitions.model import NAME_PATTERN
from turbocat.domain.errors import ValidationFailed

DEFAULT_MAX_CONCURRENT_WORKFLOWS = 100
DEFAULT_MAX_CONCURRENT_ACTIVITIES = 1000
MAX_LIMIT = 1_000_000
"""Upper bound accepted for either limit (a sanity bound, not a capacity promise)."""
LIMIT_FIELDS = ("max_concurrent_workflows", "max_concurrent_activities")

_NAME = re.compile(NAME_PATTERN)


class QueueLike(Protocol):
    """What picking a queue needs of a row."""

    @property
    def name(self) -> str: ...

    @property
    def organization_id(self) -> uuid.UUID | None: ...


Q = TypeVar("Q", bound=QueueLike)


def effective_queue(rows: Iterable[Q], organization_id: uuid.UUID, name: str) -> Q | None:
    """The queue named ``name`` that applies to ``organization_id``: its own row, else the
    system row, else None (nothing limits the queue). Rows of other organizations are ignored."""
    system: Q | None = None
    for row in rows:
        if row.name != name:
            continue
        if row.organization_id == organization_id:
            return row
        if row.organization_id is None:
            system = row
    return system


def effective_queues(rows: Iterable[Q], organization_id: uuid.UUID) -> dict[str, Q]:
    """Every queue that applies to ``organization_id``, by name (its own rows win)."""
    out: dict[str, Q] = {}
    for row in rows:
        if row.organization_id == organization_id:
            out[row.name] = row
        elif row.organization_id is None:
            out.setdefault(row.name, row)
    return out


def check_name(name: str) -> str:
    """The name, if it is a valid task queue name (as steps and workflows spell it)."""
    if not _NAME.fullmatch(name):
        raise ValidationFailed.field(
            ("body", "name"),
            "a task queue name starts with a letter and has up to 100 letters, digits, "
            "'_', '.' or '-'",
            "pattern_mismatch",
        )
    return name


def check_limit(field: str, value: object) -> int:
    """The value, if it is a valid ``max_concurrent_*`` limit (an integer, 1 to ``MAX_LIMIT``)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise ValidationFailed.field(
            ("body", field), f"must be an integer from 1 to {MAX_LIMIT}", "out_of_range"
        )
    return value
