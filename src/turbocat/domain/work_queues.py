"""Work queues (seed 003): what an item fed by a signal becomes, and the order items leave in.

A work queue belongs to one execution and is fed by the signal its definition names. Each item
gets a ``seq`` (arrival order within its execution and queue) and a ``priority``:

- ``fifo``: oldest first; ``lifo``: newest first;
- ``priority``: the item's numeric ``priority`` field, higher first (missing means 0; it must
  be a whole number), ties by arrival.

With ``deduplicate``, an item equal to one still pending (not yet taken) is dropped; equality is
that of canonical JSON (object keys sorted, ``1`` and ``1.0`` the same number), compared by its
SHA-256 (the ``dedupe_key``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import assert_never

from turbocat.domain import jsonschemas
from turbocat.domain.definitions.model import WorkQueueDef
from turbocat.domain.enums import WorkQueueOrder
from turbocat.domain.errors import Conflict, ValidationFailed
from turbocat.domain.expressions import JSONValue

PRIORITY_FIELD = "priority"
MAX_PRIORITY = 2**31 - 1
"""Priorities are stored as 32-bit integers."""


class QueueFull(Conflict):
    """The queue holds its ``max_size`` pending items."""

    code = "queue_full"

    def __init__(self, queue: str, max_size: int) -> None:
        super().__init__(
            f"work queue {queue!r} is full: it holds its maximum of {max_size} pending items; "
            "retry once steps have taken some"
        )
        self.queue = queue
        self.max_size = max_size


@dataclass(frozen=True)
class NewItem:
    """An item ready to be stored."""

    item: JSONValue
    priority: int
    dedupe_key: str | None
    """Set only when the queue deduplicates."""


def canonical_json(value: JSONValue) -> str:
    """One text per JSON value: keys sorted, no spaces, integral floats as integers."""
    return json.dumps(_normalized(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _normalized(value: JSONValue) -> JSONValue:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_normalized(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalized(v) for k, v in value.items()}
    return value


def dedupe_key(item: JSONValue) -> str:
    """The SHA-256 (hex) of the item's canonical JSON."""
    return hashlib.sha256(canonical_json(item).encode()).hexdigest()


def priority_of(item: JSONValue, path: tuple[str | int, ...] = ()) -> int:
    """The item's ``priority`` field (0 when absent or null); anything but a whole number within
    32 bits is refused, naming ``path + ("priority",)``."""
    raw = item.get(PRIORITY_FIELD) if isinstance(item, dict) else None
    if raw is None:
        return 0
    where = (*path, PRIORITY_FIELD)
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ValidationFailed.field(where, "priority must be a number", "type")
    if isinstance(raw, float) and not raw.is_integer():
        raise ValidationFailed.field(where, "priority must be a whole number", "type")
    if abs(raw) > MAX_PRIORITY:
        raise ValidationFailed.field(
            where, f"priority must be between -{MAX_PRIORITY} and {MAX_PRIORITY}", "range"
        )
    return int(raw)


def new_item(queue: WorkQueueDef, payload: JSONValue, path: tuple[str | int, ...]) -> NewItem:
    """Check ``payload`` against the queue's item schema (errors name ``path``) and derive its
    priority and dedupe key."""
    if queue.item_schema is not None:
        jsonschemas.validate_instance(payload, queue.item_schema, path)
    priority = priority_of(payload, path) if queue.order is WorkQueueOrder.PRIORITY else 0
    key = dedupe_key(payload) if queue.deduplicate else None
    return NewItem(payload, priority, key)


def check_room(queue: WorkQueueDef, pending: int) -> None:
    """Refuse a new item when ``pending`` items already fill the queue."""
    if queue.max_size is not None and pending >= queue.max_size:
        raise QueueFull(queue.name, queue.max_size)


Ordering = tuple[tuple[str, bool], ...]
"""``(field, descending)`` pairs over an item's ``priority`` and ``seq``."""


def ordering(order: WorkQueueOrder) -> Ordering:
    """The sort a queue's items leave in (the database sorts by the same fields)."""
    match order:
        case WorkQueueOrder.FIFO:
            return (("seq", False),)
        case WorkQueueOrder.LIFO:
            return (("seq", True),)
        case WorkQueueOrder.PRIORITY:
            return (("priority", True), ("seq", False))
        case _:
            assert_never(order)


def sort_key(order: WorkQueueOrder, priority: int, seq: int) -> tuple[int, ...]:
    """A key that sorts items of one queue in the order they leave (smallest first)."""
    fields = {"priority": priority, "seq": seq}
    return tuple(
        -fields[name] if descending else fields[name] for name, descending in ordering(order)
    )


__all__ = [
    "MAX_PRIORITY",
    "PRIORITY_FIELD",
    "NewItem",
    "Ordering",
    "QueueFull",
    "canonical_json",
    "check_room",
    "dedupe_key",
    "new_item",
    "ordering",
    "priority_of",
    "sort_key",
]
