"""Events: names, subscription patterns, filters and the depth that stops trigger loops (pure).

An event has a dotted name (``execution.completed``, ``invoice.paid``) and a JSON payload.
Names under the platform's prefixes are emitted by turbocat only; anything else may be published
through ``POST /api/v1/events``. A workflow subscribes in ``trigger_config.events`` with a
pattern (``*`` matches any run of characters, dots included) and an optional filter expression
over ``event`` (``event.name``, ``event.payload``, ``event.depth``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from turbocat.domain.expressions import ExpressionError, Template, compile_template

PLATFORM_PREFIXES = ("execution.", "deployment.", "schedule.", "webhook.", "turbocat.")
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")
FILTER_ROOTS = frozenset({"event"})

EXECUTION_ENDED = {
    "completed": "execution.completed",
    "failed": "execution.failed",
    "timeout": "execution.timeout",
    "cancelled": "execution.cancelled",
}
"""The event emitted when an execution ends, by its final status."""


def check_name(name: str) -> str | None:
    """Why ``name`` cannot be published by a user, or None."""
    if not NAME.match(name):
        return (
            "an event name is 1-100 characters of lower-case letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    if name.startswith(PLATFORM_PREFIXES):
        return f"names under {', '.join(PLATFORM_PREFIXES)} are reserved for platform events"
    return None


@lru_cache(maxsize=512)
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$")


def matches(pattern: str, name: str) -> bool:
    return _pattern(pattern).match(name) is not None


def compile_filter(expression: str) -> Template:
    """A filter is an expression over ``event``, with or without its ``{{ }}``."""
    text = expression if "{{" in expression else "{{ " + expression + " }}"
    return compile_template(text, roots=FILTER_ROOTS)


def passes(expression: str | None, event: Mapping[str, Any]) -> bool:
    """Whether the event passes the filter (truthy result); an error counts as no."""
    if not expression:
        return True
    try:
        return bool(compile_filter(expression).render({"event": dict(event)}))
    except ExpressionError:
        return False


def depth_of(payload: Mapping[str, Any], key: str = "depth") -> int:
    depth = payload.get(key, 0)
    return depth if isinstance(depth, int) and not isinstance(depth, bool) and depth >= 0 else 0


CHILD_CHAIN_KEY = "event_depth"
"""In a child execution's ``trigger_data``: the event chain depth of its parent (its ``depth``
there is how deeply it nests)."""


def chain_depth(trigger_data: Mapping[str, Any], *, child: bool) -> int:
    """The event chain depth an execution's ``execution.*`` events carry: its parent's for a
    child execution (a child is part of its parent's run, so a subscriber started by a child's
    end cannot reset the chain by starting that child again), else its own trigger's."""
    return depth_of(trigger_data, CHILD_CHAIN_KEY if child else "depth")
