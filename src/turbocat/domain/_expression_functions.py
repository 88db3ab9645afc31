"""Operators and the fixed set of pure functions of the expression language.

Private to :mod:`turbocat.domain.expressions`. Every function takes evaluated JSON values, checks
their types, charges the step budget for the elements it reads and checks the size of what it
builds before building it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence

from pydantic import JsonValue as JSONValue

from turbocat.domain._expression_ast import (
    BinaryFn,
    Fail,
    FunctionImpl,
    Runtime,
    dumps,
    is_num,
    json_equal,
    number,
    to_text,
    truthy,
    type_name,
)

# -- operators -------------------------------------------------------------------------------


def _nums(op: str, a: JSONValue, b: JSONValue, pos: int) -> tuple[int | float, int | float]:
    if isinstance(a, int | float) and isinstance(b, int | float) and is_num(a) and is_num(b):
        return a, b
    raise Fail(f"operator {op} needs numbers, not {type_name(a)} and {type_name(b)}", pos)


def _add(a: JSONValue, b: JSONValue, rt: Runtime, pos: int) -> JSONValue:
    if isinstance(a, str) and isinstance(b, str):
        rt.check_str(len(a) + len(b), pos)
        return a + b
    if isinstance(a, list) and isinstance(b, list):
        rt.check_items(len(a) + len(b), pos)
        rt.tick(pos, len(a) + len(b))
        return a + b
    x, y = _nums("+", a, b, pos)
    return number(x + y, pos)


def _sub(a: JSONValue, b: JSONValue, rt: Runtime, pos: int) -> JSONValue:
    x, y = _nums("-", a, b, pos)
    return number(x - y, pos)


def _mul(a: JSONValue, b: JSONValue, rt: Runtime, pos: int) -> JSONValue:
    if isinstance(b, str | list) and is_num(a):
        a, b = b, a
    if isinstance(a, str | list) and isinstance(b, int) and not isinstance(b, bool):
        times = max(b, 0)
        if isinstance(a, str):
            rt.check_str(len(a) * times, pos)
            return a * times
        rt.check_items(len(a) * times, pos)
        rt.tick(pos, len(a) * times)
        return a * times
    x, y = _nums("*", a, b, pos)
    return number(x * y, pos)


def _div(a: JSONValue, b: JSONValue, rt: Runtime, pos: int) -> JSONValue:
    x, y = _nums("/", a, b, pos)
    if y == 0:
        raise Fail("division by zero", pos)
    if isinstance(x, int) and isinstance(y, int) and x % y == 0:
        return number(x // y, pos)
    return number(x / y, pos)


def _floordiv(a: JSONValue, b: JSONValue, rt: Runtime, pos: int) -> JSONValue:
    x, y = _nums("//", a, b, pos)
    if y == 0:
        raise Fail("division by zero", pos)
    return number(x // y, pos)


def _mod(a: JSONValue, b: JSONValue, rt: Runtime, pos: int) -> JSONValue:
    x, y = _nums("%", a, b, pos)
    if y == 0:
        raise Fail("modulo by zero", pos)
    return number(x % y, pos)


def _order(op: str, a: JSONValue, b: JSONValue, pos: int) -> int:
    if (is_num(a) and is_num(b)) or (isinstance(a, str) and isinstance(b, str)):
        return (a > b) - (a < b)  # type: ignore[operator]
    raise Fail(f"cannot compare {type_name(a)} {op} {type_name(b)}", pos)


def _contains(container: JSONValue, item: JSONValue, rt: Runtime, pos: int) -> bool:
    if isinstance(container, str):
        if not isinstance(item, str):
            raise Fail(f"'in' a string needs a string, not {type_name(item)}", pos)
        rt.tick(pos, 1 + len(container) // 256)
        return item in container
    if isinstance(container, list):
        rt.tick(pos, len(container))
        return any(json_equal(item, x) for x in container)
    if isinstance(container, dict):
        return isinstance(item, str) and item in container
    if container is None:
        return False
    raise Fail(f"'in' needs a string, array or object, not {type_name(container)}", pos)


BINARY: dict[str, BinaryFn] = {
    "+": _add,
    "-": _sub,
    "*": _mul,
    "/": _div,
    "//": _floordiv,
    "%": _mod,
    "==": lambda a, b, rt, pos: json_equal(a, b),
    "!=": lambda a, b, rt, pos: not json_equal(a, b),
    "<": lambda a, b, rt, pos: _order("<", a, b, pos) < 0,
    "<=": lambda a, b, rt, pos: _order("<=", a, b, pos) <= 0,
    ">": lambda a, b, rt, pos: _order(">", a, b, pos) > 0,
    ">=": lambda a, b, rt, pos: _order(">=", a, b, pos) >= 0,
    "in": lambda a, b, rt, pos: _contains(b, a, rt, pos),
    "not in": lambda a, b, rt, pos: not _contains(b, a, rt, pos),
}

# -- argument checks -------------------------------------------------------------------------


def _str(fn: str, v: JSONValue, pos: int) -> str:
    if isinstance(v, str):
        return v
    raise Fail(f"{fn}() needs a string, not {type_name(v)}", pos)


def _list(fn: str, v: JSONValue, pos: int) -> list[JSONValue]:
    if isinstance(v, list):
        return v
    raise Fail(f"{fn}() needs an array, not {type_name(v)}", pos)


def _int(fn: str, v: JSONValue, pos: int) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    raise Fail(f"{fn}() needs an integer, not {type_name(v)}", pos)


def _num(fn: str, v: JSONValue, pos: int) -> int | float:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return v
    raise Fail(f"{fn}() needs a number, not {type_name(v)}", pos)


def _obj(fn: str, v: JSONValue, pos: int) -> dict[str, JSONValue]:
    if isinstance(v, dict):
        return v
    raise Fail(f"{fn}() needs an object, not {type_name(v)}", pos)


def _str_cost(rt: Runtime, pos: int, *texts: str) -> None:
    rt.tick(pos, 1 + sum(len(t) for t in texts) // 256)


# -- functions -------------------------------------------------------------------------------


def _len(a: list[JSONValue], rt: Runtime, pos: int) -> JSONValue:
    v = a[0]
    if isinstance(v, str | list | dict):
        return len(v)
    raise Fail(f"len() needs a string, array or object, not {type_name(v)}", pos)


def _text_fn(name: str, op: Callable[[str], str]) -> FunctionImpl:
    def impl(a: list[JSONValue], rt: Runtime, pos: int) -> JSONValue:
        s = _str(name, a[0], pos)
        _str_cost(rt, pos, s)
        return op(s)

    return impl


def _replace(a: list[JSONValue], rt: Runtime, pos: int) -> JSONValue:
    s, old, new = (_str("replace", v, pos) for v in a)
    hits = s.count(old) if old else len(s) + 1
    rt.check_str(len(s) + hits * (len(new) - len(old)), pos)
    _str_cost(rt, pos, s, new)
    return s.replace(old, new)


def _split(a: list[JSONValue], rt: Runtime, pos: int) -> JSONValue:
    s = _str("split", a[0], pos)
    sep = _str("split", a[1], pos) if len(a) > 1 else " "
    if not sep:
        raise Fail("split() needs a non-empty separator", pos)
    rt.check_items(s.count(sep) + 1, pos)
    _str_cost(rt, pos, s)
    return list(s.split(sep))


def _join(a: list[JSONValue], rt: Runtime, pos: int) -> JSONValue:
    items = _list("join", a[0], pos)
    sep = _str("join", a[1], pos) if len(a) > 1 else ""
    rt.tick(pos, len(items))
    texts = [to_text(x, null="") for x in items]
    rt.check_str(sum(len(t) for t in texts) + len(sep) * max(len(texts) - 1, 0), pos)
    return sep.join(texts)


def _contains_fn(a: list[JSONValue], rt: Runtime, pos: int) -> JSONValue:
    return _contains(a[0], a[1], rt, pos)


def _affix(name: str, start: bool) -> FunctionImpl:
    def impl(a: list[JSONValue], rt: Runtime, pos: int) -> JSONValue:
        s, affix = _str(name, a[0], pos), _str(name, a[1], pos)
        return s.startswith(affix) if start else s.endswith(affix)

    return impl


def _to_int(a: list[JSONValue], rt: Runtime, pos: int) -> JSONValue:
    v = a[0]
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int | float):
        if not math.isfinite(v):
            raise Fail("int() of a non-finite number", pos)
        return number(int(v), pos)
    if isinstance(v, str):
        try:
            return number(int(v.strip()), pos)
        except ValueError:
            raise Fail(f"int() cannot read {v[:40]!r}", pos) from None
    raise Fail(f"int() needs a number, string or boolean, not {type_name(v)}", pos)


def _to_float(a: list[JSONValue], rt: Runtime, pos: int) -> JSONValue:
    v = a[0]
    if isinstance(v, int | float):
        return number(float(v), pos)
    if isinstance(v, str) and len(v) <= 400:
        try:
            return number(float(v.strip()), pos)
        except ValueError:
            pass
    raise Fail(f"float() cannot read {to_text(v)[:40]!r}", pos)


def _to_str(a: list[JSONValue], rt: Runtime, pos: int) -> JSONValue:
    text = to_text(a[0])
    rt.check_str(len(text), pos)
    return text


def _round(a: list[JSONValue], rt: Runtime, pos: int) -> JSONValue:
    x = _num("round", a[0], pos)
    if len(a) == 1:
        return number(round(x), pos) if math.isfinite(x) else number(x, pos)
    digits = _int("round", a[1], pos)
    return float(round(x, max(min(digits, 15), -15)))


def _extreme(name: str, pick: Callable[[list[JSONValue]], JSONValue]) -> FunctionImpl:
    def impl(a: list[JSONValue], rt: Runtime, pos: int) -> JSONValue:
        items = _list(name, a[0], pos) if len(a) == 1 else a
        rt.tick(pos, len(items))
        if not items:
            return None
        _same_kind(name, items, pos)
        return pick(items)

    return impl


def _same_kind(name: str, items: Sequence[JSONValue], pos: int) -> None:
    if all(is_num(x) for x in items) or all(isinstance(x, str) for x in items):
        return
    raise Fail(f"{name}() needs all numbers or all strings", pos)


def _sum(a: list[JSONValue], rt: Runtime, pos: int) -> JSONValue:
    items = _list("sum", a[0], pos)
    rt.tick(pos, len(items))
    total: int | float = 0
    for x in items:
        total = number(total + _num("sum", x, pos), pos)
    return total


def _keys(a: list[JSONValue], rt: Runtime, pos: int) -> JSONValue:
    obj = _obj("keys", a[0], pos)
    rt.tick(pos, len(obj))
    return list(obj)


def _values(a: list[JSONValue], rt: Runtime, pos: int) -> JSONValue:
    obj = _obj("values", a[0], pos)
    rt.tick(pos, len(obj))
    return list(obj.values())


def _coalesce(a: list[JSONValue], rt: Runtime, pos: int) -> JSONValue:
    return next((x for x in a if x is not None), None)


def _to_json(a: list[JSONValue], rt: Runtime, pos: int) -> JSONValue:
    text = dumps(a[0], pos)
    rt.tick(pos, 1 + len(text) // 256)
    rt.check_str(len(text), pos)
    return text


def _reject_constant(name: str) -> JSONValue:
    raise ValueError(f"{name} is not JSON")


def _from_json(a: list[JSONValue], rt: Runtime, pos: int) -> JSONValue:
    text = _str("from_json", a[0], pos)
    _str_cost(rt, pos, text)
    try:
        value: JSONValue = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise Fail(f"from_json() cannot parse its input: {str(exc)[:80]}", pos) from None
    return value


def _first_last(name: str, index: int) -> FunctionImpl:
    def impl(a: list[JSONValue], rt: Runtime, pos: int) -> JSONValue:
        v = a[0]
        if not isinstance(v, list | str):
            raise Fail(f"{name}() needs an array or string, not {type_name(v)}", pos)
        return v[index] if v else None

    return impl


def _slice(a: list[JSONValue], rt: Runtime, pos: int) -> JSONValue:
    v = a[0]
    if not isinstance(v, list | str):
        raise Fail(f"slice() needs an array or string, not {type_name(v)}", pos)
    start = _int("slice", a[1], pos)
    stop = None if len(a) < 3 or a[2] is None else _int("slice", a[2], pos)
    part = v[start:stop]
    rt.tick(pos, 1 + len(part) // 16)
    return part


def _range(a: list[JSONValue], rt: Runtime, pos: int) -> JSONValue:
    bounds = [_int("range", x, pos) for x in a]
    if len(bounds) == 1:
        bounds.insert(0, 0)
    step = bounds[2] if len(bounds) > 2 else 1
    if step == 0:
        raise Fail("range() step cannot be zero", pos)
    r = range(bounds[0], bounds[1], step)
    rt.check_items(len(r), pos)
    rt.tick(pos, len(r))
    return list(r)


def _sort(a: list[JSONValue], rt: Runtime, pos: int) -> JSONValue:
    items = _list("sort", a[0], pos)
    rt.tick(pos, len(items) * max(1, len(items).bit_length()))
    if len(a) == 1:
        _same_kind("sort", items, pos)
        return sorted(items, key=_sort_key)
    field = _str("sort", a[1], pos)
    keys = [_obj("sort", x, pos).get(field) for x in items]
    present = [k for k in keys if k is not None]
    _same_kind("sort", present, pos)
    order = sorted(range(len(items)), key=lambda i: (keys[i] is None, _sort_key(keys[i])))
    return [items[i] for i in order]


def _sort_key(v: JSONValue) -> str | int | float:
    # Callers check that the values are all strings or all numbers.
    return v if isinstance(v, str | int | float) else 0


def _reverse(a: list[JSONValue], rt: Runtime, pos: int) -> JSONValue:
    v = a[0]
    if not isinstance(v, list | str):
        raise Fail(f"reverse() needs an array or string, not {type_name(v)}", pos)
    rt.tick(pos, 1 + len(v) // 16)
    return v[::-1]


def _unique(a: list[JSONValue], rt: Runtime, pos: int) -> JSONValue:
    items = _list("unique", a[0], pos)
    rt.tick(pos, len(items))
    seen: set[str] = set()
    out: list[JSONValue] = []
    for x in items:
        marker = dumps(x, pos) if isinstance(x, dict | list) else f"{type_name(x)}:{x!r}"
        if marker not in seen:
            seen.add(marker)
            out.append(x)
    return out


FUNCTIONS: dict[str, tuple[int, int, FunctionImpl]] = {
    # name: (min args, max args, implementation); ``exists`` is parsed as a special form.
    "len": (1, 1, _len),
    "lower": (1, 1, _text_fn("lower", str.lower)),
    "upper": (1, 1, _text_fn("upper", str.upper)),
    "trim": (1, 1, _text_fn("trim", str.strip)),
    "replace": (3, 3, _replace),
    "split": (1, 2, _split),
    "join": (1, 2, _join),
    "contains": (2, 2, _contains_fn),
    "startswith": (2, 2, _affix("startswith", True)),
    "endswith": (2, 2, _affix("endswith", False)),
    "int": (1, 1, _to_int),
    "float": (1, 1, _to_float),
    "str": (1, 1, _to_str),
    "bool": (1, 1, lambda a, rt, pos: truthy(a[0])),
    "round": (1, 2, _round),
    "abs": (1, 1, lambda a, rt, pos: abs(_num("abs", a[0], pos))),
    "min": (1, 50, _extreme("min", lambda xs: min(xs, key=_sort_key))),
    "max": (1, 50, _extreme("max", lambda xs: max(xs, key=_sort_key))),
    "sum": (1, 1, _sum),
    "keys": (1, 1, _keys),
    "values": (1, 1, _values),
    "default": (2, 2, lambda a, rt, pos: a[1] if a[0] is None else a[0]),
    "coalesce": (1, 50, _coalesce),
    "json": (1, 1, _to_json),
    "from_json": (1, 1, _from_json),
    "first": (1, 1, _first_last("first", 0)),
    "last": (1, 1, _first_last("last", -1)),
    "slice": (2, 3, _slice),
    "range": (1, 3, _range),
    "sort": (1, 2, _sort),
    "reverse": (1, 1, _reverse),
    "unique": (1, 1, _unique),
    "type": (1, 1, lambda a, rt, pos: type_name(a[0])),
}
