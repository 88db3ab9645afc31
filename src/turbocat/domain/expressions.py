"""The ``{{ ... }}`` expression language: a small, sandboxed language over JSON values.

Templates are parsed once (:func:`compile_template`) into our own AST and evaluated by walking it
against an allow-list; nothing is ever handed to ``eval``, ``compile`` or Python's ``ast``, and the
evaluator never touches Python attributes: ``a.b`` is a dictionary key lookup, ``a[0]`` a list
index. Values read from the context are data and are never parsed again, so a step output that
contains ``"{{ 1+1 }}"`` renders as that literal text.

Grammar, loosest binding first::

    expr     := ternary ("|" NAME ["(" args ")"])*     x | upper, x | default("n/a")
    ternary  := or ["?" ternary ":" ternary]           cond ? then : else
    or       := and (("or" | "||") and)*
    and      := not (("and" | "&&") not)*
    not      := ("not" | "!") not | compare
    compare  := sum (("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not in") sum)*
    sum      := product (("+" | "-") product)*
    product  := unary (("*" | "/" | "//" | "%") unary)*
    unary    := "-" unary | postfix
    postfix  := primary ("." NAME | "[" expr "]")*
    primary  := NUMBER | STRING | true | false | null | ROOT | FUNC "(" args ")"
              | "(" expr ")" | "[" items "]" | "{" (NAME | STRING) ":" expr, ... "}"

Semantics:

- Roots: ``input``, ``steps`` (``steps.<key>.output|status|error``), ``item`` and ``index``
  (inside loops), ``vars``, ``execution``, ``signal``, ``event``; any other name is refused at
  compile time. There is no clock: time comes from the context (``execution.started_at``).
- Missing keys, out-of-range indexes and lookups on ``null`` give ``null``; use
  ``default(x, d)``, ``coalesce(...)`` or ``exists(path)`` (true when the key is present, even
  with a null value). Looking up a key in a number, or a name in a list, is an error.
- ``and``/``or`` return one of their operands (``a or "fallback"``); truthiness is Python's
  (null, false, 0, "", [], {} are false). ``!`` is ``not``, ``&&``/``||`` are ``and``/``or``.
- ``+`` adds numbers, concatenates two strings or two lists; ``*`` also repeats a string or list
  (bounded). ``/`` gives an integer when both sides are integers and it divides exactly, else a
  float. Booleans are not numbers, and ``true == 1`` is false. Integers are bounded to 64 bits and
  floats must stay finite. There is no ``**``.
- A template that is exactly one ``{{ expr }}`` renders to the expression's JSON value; mixed text
  renders to a string where strings are inserted as-is, ``null`` as nothing and other values as
  compact JSON. To write a literal ``{{`` use ``{{ "{{" }}``.
- Bounds: expression length and nesting depth at compile time; evaluation steps (a counter, so
  limits are deterministic), string length and list/object size at run time. Violations raise
  :class:`ExpressionError`, which names the expression and the offending position.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import JsonValue as JSONValue

from turbocat.domain import _expression_ast as ast
from turbocat.domain._expression_ast import (
    DEFAULT_LIMITS,
    ExpressionError,
    ExpressionLimits,
    Fail,
    Node,
    Runtime,
    to_text,
)
from turbocat.domain._expression_parser import FUNCTION_NAMES, ROOTS, parse_expression

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_LENGTH",
    "FUNCTION_NAMES",
    "ROOTS",
    "ExpressionError",
    "ExpressionLimits",
    "JSONValue",
    "Template",
    "compile_template",
    "has_template",
    "references",
    "render_value",
]

DEFAULT_MAX_LENGTH = 4096
"""Longest accepted source of one ``{{ ... }}`` expression, in characters."""


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: literal text and expressions, ready to render many times."""

    text: str
    parts: tuple[str | Node, ...]

    @property
    def is_constant(self) -> bool:
        return all(isinstance(p, str) for p in self.parts)

    def render(
        self, context: Mapping[str, JSONValue], limits: ExpressionLimits = DEFAULT_LIMITS
    ) -> JSONValue:
        """Evaluate against ``context``; exactly one expression keeps its JSON type."""
        return self._render(Runtime(context, limits))

    def _render(self, rt: Runtime) -> JSONValue:
        parts = self.parts
        try:
            if len(parts) == 1:
                only = parts[0]
                return only if isinstance(only, str) else only.eval(rt)
            chunks: list[str] = []
            size = 0
            for part in parts:
                chunk = part if isinstance(part, str) else to_text(part.eval(rt), null="")
                size += len(chunk)
                if size > rt.limits.max_string_length:
                    raise Fail(
                        f"rendered text is longer than {rt.limits.max_string_length} characters",
                        0,
                        "limit",
                    )
                chunks.append(chunk)
            return "".join(chunks)
        except Fail as exc:
            raise ExpressionError(
                exc.message, expression=self.text, position=exc.position, kind=exc.kind
            ) from None
        except RecursionError:
            # Only context data can be this deep (the AST is bounded); e.g. comparing two values.
            raise ExpressionError(
                "value nested too deeply", expression=self.text, position=0, kind="limit"
            ) from None


def has_template(text: str) -> bool:
    """Whether ``text`` contains an expression (cheap; no parsing)."""
    return "{{" in text


def compile_template(
    text: str, *, max_length: int = DEFAULT_MAX_LENGTH, roots: frozenset[str] = ROOTS
) -> Template:
    """Parse ``text`` once; a string without ``{{`` is a constant template."""
    if "{{" not in text:
        return Template(text, (text,))
    parts: list[str | Node] = []
    i = 0
    while True:
        start = text.find("{{", i)
        if start < 0:
            if i < len(text):
                parts.append(text[i:])
            break
        if start > i:
            parts.append(text[i:start])
        node, i = parse_expression(text, start + 2, max_length=max_length, roots=roots)
        parts.append(node)
    return Template(text, tuple(parts))


def render_value(
    value: JSONValue,
    context: Mapping[str, JSONValue],
    limits: ExpressionLimits = DEFAULT_LIMITS,
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> JSONValue:
    """Render every string inside ``value`` (dict values and list items, never dict keys).

    One step budget covers the whole value.
    """
    return _render_into(value, Runtime(context, limits), max_length)


def _render_into(value: JSONValue, rt: Runtime, max_length: int) -> JSONValue:
    if isinstance(value, str):
        if "{{" not in value:
            return value
        return compile_template(value, max_length=max_length)._render(rt)
    if isinstance(value, dict):
        return {k: _render_into(v, rt, max_length) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_into(v, rt, max_length) for v in value]
    return value


def references(template: Template) -> set[tuple[str, ...]]:
    """Root paths a template reads: ``("steps", "fetch")``, ``("input", "x")``, ``("item",)``.

    A path carries its root and, when it is a constant, the first key after it; ``("steps",)``
    alone means the step key is computed at run time.
    """
    out: set[tuple[str, ...]] = set()
    for part in template.parts:
        if not isinstance(part, str):
            ast.collect_references(part, out)
    return out
