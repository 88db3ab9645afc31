"""Scopes: the names of the frames a step run can sit in.

A frame is one instance of a graph: the top level (``""``), one loop iteration (``/each[3]``)
or the branches of one parallel step (``/fan[]``); nested frames concatenate
(``/each[3]/fan[]``). Step keys cannot hold ``/`` or ``[``, so a scope parses unambiguously and
every frame under one loop or parallel step starts with ``<scope>/<key>[``.
"""

from __future__ import annotations

import re

_SEGMENT = re.compile(r"/([a-z][a-z0-9_]*)\[(\d*)\]")


def loop_scope(scope: str, key: str, index: int) -> str:
    return f"{scope}/{key}[{index}]"


def parallel_scope(scope: str, key: str) -> str:
    return f"{scope}/{key}[]"


def ancestors(scope: str) -> list[str]:
    """The scopes from the top level down to ``scope`` itself."""
    out = [""]
    for match in _SEGMENT.finditer(scope):
        out.append(scope[: match.end()])
    return out


def loop_indices(scope: str) -> list[int]:
    return [int(m.group(2)) for m in _SEGMENT.finditer(scope) if m.group(2)]


def innermost_loop(scope: str) -> tuple[str, str, int] | None:
    """(scope of the loop step, its key, the index) of the innermost loop iteration."""
    for match in reversed(list(_SEGMENT.finditer(scope))):
        if match.group(2):
            return scope[: match.start()], match.group(1), int(match.group(2))
    return None
