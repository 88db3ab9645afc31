"""AST nodes of the expression language and their evaluation over JSON values.

Private to :mod:`turbocat.domain.expressions`. Every node knows its source position, counts one
evaluation step, and only ever reads dicts and lists by key or index: there is no attribute access
on Python objects anywhere in this module.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pydantic import JsonValue as JSONValue

from turbocat.domain.errors import FieldError, ValidationFailed

MAX_INT = 2**63 - 1


@dataclass(frozen=True)
class ExpressionLimits:
    """Run-time bounds on evaluation; deterministic (a step counter, never a clock)."""

    max_steps: int = 10_000
    """Evaluation steps per render: one per node visited plus one per element a function reads."""
    max_string_length: int = 1_000_000
    """Longest string an expression may build (concatenation, join, json, rendered text...)."""
    max_items: int = 10_000
    """Most items in a list or object an expression may build (literals, split, range...)."""


DEFAULT_LIMITS = ExpressionLimits()


class ExpressionError(ValidationFailed):
    """A template that does not parse or does not evaluate; names the expression and position.

    ``kind`` is ``syntax`` (refused at compile time), ``limit`` (a bound was exceeded) or
    ``eval`` (a type error or similar at run time).
    """

    def __init__(self, message: str, *, expression: str, position: int, kind: str) -> None:
        shown = expression if len(expression) <= 120 else expression[:117] + "..."
        detail = f"{message} (at position {position} in {shown!r})"
        super().__init__(detail, [FieldError((), detail, f"expression_{kind}")])
        self.message = message
        self.expression = expression
        self.position = position
        self.kind = kind


class Fail(Exception):
    """Raised inside evaluation; the template turns it into an :class:`ExpressionError`."""

    def __init__(self, message: str, position: int, kind: str = "eval") -> None:
        super().__init__(message)
        self.message = message
        self.position = position
        self.kind = kind


class Runtime:
    """The state of one render: the context, the limits and the step counter."""

    __slots__ = ("context", "limits", "steps")

    def __init__(self, context: Mapping[str, JSONValue], limits: ExpressionLimits) -> None:
        self.context = context
        self.limits = limits
        self.steps = 0

    def tick(self, pos: int, n: int = 1) -> None:
        self.steps += n
        if self.steps > self.limits.max_steps:
            raise Fail(f"evaluation exceeded {self.limits.max_steps} steps", pos, "limit")

    def check_str(self, length: int, pos: int) -> None:
        if length > self.limits.max_string_length:
            raise Fail(
                f"string longer than {self.limits.max_string_length} characters", pos, "limit"
            )

    def check_items(self, count: int, pos: int) -> None:
        if count > self.limits.max_items:
            raise Fail(f"more than {self.limits.max_items} items", pos, "limit")


# -- value helpers ---------------------------------------------------------------------------


def is_num(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def type_name(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return "unsupported value"


def truthy(v: JSONValue) -> bool:
    return bool(v)


def to_text(v: JSONValue, *, null: str = "null") -> str:
    """Text of a value: strings as they are, ``null`` as given, anything else as compact JSON."""
    if isinstance(v, str):
        return v
    if v is None:
        return null
    return dumps(v, 0)


def dumps(v: JSONValue, pos: int) -> str:
    try:
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise Fail(f"value cannot be written as JSON: {exc}", pos) from None


def number(v: int | float, pos: int) -> int | float:
    if isinstance(v, int):
        if -MAX_INT <= v <= MAX_INT:
            return v
        raise Fail("integer out of the 64-bit range", pos, "limit")
    if math.isfinite(v):
        return v
    raise Fail("number is not finite", pos, "limit")


def json_equal(a: JSONValue, b: JSONValue) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def index_into(obj: JSONValue, key: JSONValue, pos: int) -> JSONValue:
    if obj is None:
        return None
    if isinstance(obj, dict):
        if not isinstance(key, str):
            raise Fail(f"an object key must be a string, not {type_name(key)}", pos)
        return obj.get(key)
    if isinstance(obj, list | str):
        if isinstance(key, bool) or not isinstance(key, int):
            shown = repr(key) if isinstance(key, str) else type_name(key)
            raise Fail(f"cannot look up {shown} in {type_name(obj)}; use a number index", pos)
        if -len(obj) <= key < len(obj):
            return obj[key]
        return None
    raise Fail(f"cannot look up a key in {type_name(obj)}", pos)


# -- nodes -----------------------------------------------------------------------------------


class Node:
    __slots__ = ("pos",)

    def __init__(self, pos: int) -> None:
        self.pos = pos

    def eval(self, rt: Runtime) -> JSONValue:
        raise NotImplementedError

    def children(self) -> Sequence[Node]:
        return ()


class Literal(Node):
    __slots__ = ("value",)

    def __init__(self, value: JSONValue, pos: int) -> None:
        super().__init__(pos)
        self.value = value

    def eval(self, rt: Runtime) -> JSONValue:
        rt.tick(self.pos)
        return self.value


class ListLit(Node):
    __slots__ = ("items",)

    def __init__(self, items: tuple[Node, ...], pos: int) -> None:
        super().__init__(pos)
        self.items = items

    def eval(self, rt: Runtime) -> JSONValue:
        rt.tick(self.pos)
        return [item.eval(rt) for item in self.items]

    def children(self) -> Sequence[Node]:
        return self.items


class ObjectLit(Node):
    __slots__ = ("keys", "values")

    def __init__(self, keys: tuple[str, ...], values: tuple[Node, ...], pos: int) -> None:
        super().__init__(pos)
        self.keys = keys
        self.values = values

    def eval(self, rt: Runtime) -> JSONValue:
        rt.tick(self.pos)
        return {k: v.eval(rt) for k, v in zip(self.keys, self.values, strict=True)}

    def children(self) -> Sequence[Node]:
        return self.values


class Root(Node):
    __slots__ = ("name",)

    def __init__(self, name: str, pos: int) -> None:
        super().__init__(pos)
        self.name = name

    def eval(self, rt: Runtime) -> JSONValue:
        rt.tick(self.pos)
        return rt.context.get(self.name)


class Get(Node):
    __slots__ = ("key", "obj")

    def __init__(self, obj: Node, key: Node, pos: int) -> None:
        super().__init__(pos)
        self.obj = obj
        self.key = key

    def eval(self, rt: Runtime) -> JSONValue:
        rt.tick(self.pos)
        return index_into(self.obj.eval(rt), self.key.eval(rt), self.pos)

    def children(self) -> Sequence[Node]:
        return (self.obj, self.key)


class Not(Node):
    __slots__ = ("operand",)

    def __init__(self, operand: Node, pos: int) -> None:
        super().__init__(pos)
        self.operand = operand

    def eval(self, rt: Runtime) -> JSONValue:
        rt.tick(self.pos)
        return not truthy(self.operand.eval(rt))

    def children(self) -> Sequence[Node]:
        return (self.operand,)


class Neg(Node):
    __slots__ = ("operand",)

    def __init__(self, operand: Node, pos: int) -> None:
        super().__init__(pos)
        self.operand = operand

    def eval(self, rt: Runtime) -> JSONValue:
        rt.tick(self.pos)
        v = self.operand.eval(rt)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise Fail(f"cannot negate {type_name(v)}", self.pos)
        return -v

    def children(self) -> Sequence[Node]:
        return (self.operand,)


class Logic(Node):
    """``and`` / ``or``: short-circuit, returning an operand."""

    __slots__ = ("is_and", "left", "right")

    def __init__(self, is_and: bool, left: Node, right: Node, pos: int) -> None:
        super().__init__(pos)
        self.is_and = is_and
        self.left = left
        self.right = right

    def eval(self, rt: Runtime) -> JSONValue:
        rt.tick(self.pos)
        left = self.left.eval(rt)
        if truthy(left) != self.is_and:
            return left
        return self.right.eval(rt)

    def children(self) -> Sequence[Node]:
        return (self.left, self.right)


class Cond(Node):
    __slots__ = ("else_", "test", "then")

    def __init__(self, test: Node, then: Node, else_: Node, pos: int) -> None:
        super().__init__(pos)
        self.test = test
        self.then = then
        self.else_ = else_

    def eval(self, rt: Runtime) -> JSONValue:
        rt.tick(self.pos)
        return (self.then if truthy(self.test.eval(rt)) else self.else_).eval(rt)

    def children(self) -> Sequence[Node]:
        return (self.test, self.then, self.else_)


BinaryFn = Callable[[JSONValue, JSONValue, Runtime, int], JSONValue]


class Binary(Node):
    __slots__ = ("fn", "left", "op", "right")

    def __init__(self, op: str, fn: BinaryFn, left: Node, right: Node, pos: int) -> None:
        super().__init__(pos)
        self.op = op
        self.fn = fn
        self.left = left
        self.right = right

    def eval(self, rt: Runtime) -> JSONValue:
        rt.tick(self.pos)
        return self.fn(self.left.eval(rt), self.right.eval(rt), rt, self.pos)

    def children(self) -> Sequence[Node]:
        return (self.left, self.right)


FunctionImpl = Callable[[list[JSONValue], Runtime, int], JSONValue]


class Call(Node):
    __slots__ = ("args", "fn", "name")

    def __init__(self, name: str, fn: FunctionImpl, args: tuple[Node, ...], pos: int) -> None:
        super().__init__(pos)
        self.name = name
        self.fn = fn
        self.args = args

    def eval(self, rt: Runtime) -> JSONValue:
        rt.tick(self.pos)
        return self.fn([a.eval(rt) for a in self.args], rt, self.pos)

    def children(self) -> Sequence[Node]:
        return self.args


_MISSING = object()


class Exists(Node):
    """``exists(path)``: whether every key along a path is present (a null value counts)."""

    __slots__ = ("path",)

    def __init__(self, path: Node, pos: int) -> None:
        super().__init__(pos)
        self.path = path

    def eval(self, rt: Runtime) -> JSONValue:
        rt.tick(self.pos)
        return _lookup(self.path, rt) is not _MISSING

    def children(self) -> Sequence[Node]:
        return (self.path,)


def _lookup(node: Node, rt: Runtime) -> object:
    if isinstance(node, Root):
        return rt.context.get(node.name, _MISSING)
    if not isinstance(node, Get):
        return node.eval(rt)
    obj = _lookup(node.obj, rt)
    rt.tick(node.pos)
    key = node.key.eval(rt)
    if isinstance(obj, dict):
        return obj[key] if isinstance(key, str) and key in obj else _MISSING
    if isinstance(obj, list) and isinstance(key, int) and not isinstance(key, bool):
        return obj[key] if -len(obj) <= key < len(obj) else _MISSING
    return _MISSING


def collect_references(node: Node, out: set[tuple[str, ...]]) -> None:
    """Add the root paths ``node`` reads to ``out`` (see ``expressions.references``)."""
    chain: list[Node] = []
    base = node
    while isinstance(base, Get):
        chain.append(base.key)
        base = base.obj
    if isinstance(base, Root):
        chain.reverse()
        first = chain[0] if chain else None
        if isinstance(first, Literal) and isinstance(first.value, str):
            out.add((base.name, first.value))
        else:
            out.add((base.name,))
        for key in chain:
            collect_references(key, out)
        return
    for child in node.children():
        collect_references(child, out)
