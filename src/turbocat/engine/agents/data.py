"""The ``data`` kind: deterministic JSON transformations, no I/O.

The subject is the step input ``data`` (or the whole input when there is no ``data``). In order:
``query`` (JMESPath) selects from it and ``operations`` transform a list; their ``where``/``by``
are bare expressions in which ``item`` is the element (and the workflow context is visible). A
``mapping`` is rendered over the workflow context like any step input, and replaces the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError
from pydantic import ValidationError

from turbocat.domain.agents import DataConfig, DataOperation
from turbocat.domain.expressions import JSONValue, compile_template, render_value
from turbocat.engine.agents.base import AgentError, Invocation


class DataStepError(Exception):
    """The transformation could not be applied to this input (a user-facing message)."""


def _eval(expression: str, context: Mapping[str, JSONValue], item: JSONValue) -> JSONValue:
    return compile_template("{{ " + expression + " }}").render({**context, "item": item})


def _sort_key(value: JSONValue) -> tuple[int, Any]:
    # nulls first, then numbers, then strings, then anything else as JSON text
    if value is None:
        return (0, 0)
    if isinstance(value, bool | int | float):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    return (3, repr(value))


def _apply(op: DataOperation, value: JSONValue, context: Mapping[str, JSONValue]) -> JSONValue:
    if not isinstance(value, list):
        raise DataStepError(f"operation {op.op!r} needs a list, got {type(value).__name__}")
    match op.op:
        case "filter":
            return [x for x in value if op.where and _eval(op.where, context, x)]
        case "sort":
            by = op.by
            return sorted(
                value, key=lambda x: _sort_key(_eval(by, context, x) if by else x), reverse=op.desc
            )
        case "group":
            groups: dict[str, list[JSONValue]] = {}
            for x in value:
                groups.setdefault(str(_eval(op.by or "item", context, x)), []).append(x)
            return dict(groups)
        case "map":
            return [_eval(op.by or "item", context, x) for x in value]
        case "limit":
            return value[: op.count or 0]
        case "unique":
            seen: set[str] = set()
            out: list[JSONValue] = []
            for x in value:
                marker = repr(_eval(op.by, context, x) if op.by else x)
                if marker not in seen:
                    seen.add(marker)
                    out.append(x)
            return out
        case "aggregate":
            numbers: list[float] = []
            for x in value:
                n = _eval(op.by or "item", context, x)
                if not isinstance(n, int | float) or isinstance(n, bool):
                    raise DataStepError(f"aggregate needs numbers, got {n!r}")
                numbers.append(n)
            total = sum(numbers)
            return {
                "count": len(numbers),
                "sum": total,
                "avg": total / len(numbers) if numbers else None,
                "min": min(numbers, default=None),
                "max": max(numbers, default=None),
            }
    raise DataStepError(f"unknown operation {op.op!r}")  # pragma: no cover - the model refuses it


def run(
    config: Mapping[str, Any], inputs: Mapping[str, JSONValue], context: Mapping[str, JSONValue]
) -> JSONValue:
    spec = DataConfig.model_validate(dict(config))
    value: JSONValue = inputs["data"] if "data" in inputs else dict(inputs)
    if spec.query:
        try:
            value = jmespath.search(spec.query, value)
        except JMESPathError as exc:
            raise DataStepError(f"JMESPath query failed: {exc}") from None
    for op in spec.operations:
        value = _apply(op, value, context)
    if spec.mapping is not None:
        value = render_value(spec.mapping, context)
    return value


async def invoke(call: Invocation) -> JSONValue:
    """The runtime entry point (see agents/base.py)."""
    try:
        return run(call.config, call.inputs, call.context)
    except DataStepError as exc:
        raise AgentError("data_error", str(exc)) from None
    except ValidationError as exc:  # an inline config that does not fit: retrying cannot help
        where = ".".join(str(p) for p in exc.errors()[0]["loc"]) if exc.errors() else "config"
        raise AgentError(
            "invalid_config", f"the data config is invalid at {where}: {exc.errors()[0]['msg']}"
        ) from None
