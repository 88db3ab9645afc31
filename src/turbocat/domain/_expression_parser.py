"""Tokenizer and precedence-climbing parser of the expression language.

Private to :mod:`turbocat.domain.expressions`, which documents the grammar. The parser bounds its
own recursion (nesting depth) and the number of tokens, so hostile input fails with an
:class:`ExpressionError` long before Python's recursion limit.
"""

from __future__ import annotations

import math
import re

from turbocat.domain import _expression_ast as ast
from turbocat.domain._expression_ast import MAX_INT, ExpressionError, Node
from turbocat.domain._expression_functions import BINARY, FUNCTIONS

ROOTS = frozenset({"input", "steps", "item", "index", "vars", "execution", "signal", "event"})
"""Names an expression may start from."""

FUNCTION_NAMES = frozenset({*FUNCTIONS, "exists"})

MAX_DEPTH = 96
"""Deepest recursion of the parser (about three levels per pair of parentheses)."""
MAX_TOKENS = 2_000

_KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false", "null"})
_NUMBER = re.compile(r"\d+(\.\d+)?([eE][+-]?\d+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = ("//", "==", "!=", "<=", ">=", "&&", "||", "}}", *"+-*/%<>()[]{},:.?|!")
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n"}
_ESCAPES |= {"r": "\r", "t": "\t"}
_PRECEDENCE = {"or": 1, "||": 1, "and": 2, "&&": 2, "in": 4, "not in": 4}
_PRECEDENCE |= dict.fromkeys(("==", "!=", "<", "<=", ">", ">="), 4)
_PRECEDENCE |= {"+": 5, "-": 5, "*": 6, "/": 6, "//": 6, "%": 6}
_NOT_PRECEDENCE = 3
_UNARY_PRECEDENCE = 7

Token = tuple[str, str | int | float, int]  # kind (num, str, name, op, end), value, position


def parse_expression(
    text: str, start: int, *, max_length: int, roots: frozenset[str]
) -> tuple[Node, int]:
    """Parse the expression opening at ``start`` (just after ``{{``); return it and its end."""
    tokens, end = _tokenize(text, start, max_length)
    parser = _Parser(text, tokens, roots)
    node = parser.expr()
    tok = parser.peek()
    if tok[0] != "end":
        raise parser.error(f"unexpected {_show(tok)}", tok[2])
    return node, end


def _error(text: str, message: str, position: int, kind: str = "syntax") -> ExpressionError:
    return ExpressionError(message, expression=text, position=position, kind=kind)


def _tokenize(text: str, start: int, max_length: int) -> tuple[list[Token], int]:
    tokens: list[Token] = []
    i, depth, n = start, 0, len(text)
    while True:
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i - start > max_length:
            raise _error(text, f"expression longer than {max_length} characters", start, "limit")
        if i >= n:
            raise _error(text, "unterminated expression: missing '}}'", start - 2)
        if len(tokens) > MAX_TOKENS:
            raise _error(text, f"expression has more than {MAX_TOKENS} tokens", i, "limit")
        c = text[i]
        if c.isdigit():
            m = _NUMBER.match(text, i)
            assert m is not None
            tokens.append(("num", _number(text, m.group(), i), i))
            i = m.end()
        elif c in "\"'":
            value, j = _string(text, i)
            tokens.append(("str", value, i))
            i = j
        elif c.isascii() and (c.isalpha() or c == "_"):
            m = _NAME.match(text, i)
            assert m is not None
            tokens.append(("name", m.group(), i))
            i = m.end()
        else:
            op = next((o for o in _OPERATORS if text.startswith(o, i)), None)
            if op == "}}" and depth == 0:
                tokens.append(("end", "", i))
                if i + 2 - start > max_length + 2:
                    raise _error(
                        text, f"expression longer than {max_length} characters", start, "limit"
                    )
                return tokens, i + 2
            if op is None or op == "}}":
                op = c if c == "}" else None
            if op is None:
                hint = "; use == to compare" if c == "=" else ""
                raise _error(text, f"unexpected character {c!r}{hint}", i)
            depth += op == "{"
            depth -= op == "}" and depth > 0
            tokens.append(("op", op, i))
            i += len(op)


def _number(text: str, literal: str, pos: int) -> int | float:
    if len(literal) > 40:
        raise _error(text, "number literal too long", pos, "limit")
    if any(ch in literal for ch in ".eE"):
        value = float(literal)
        if not math.isfinite(value):
            raise _error(text, "number literal out of range", pos, "limit")
        return value
    number = int(literal)
    if number > MAX_INT:
        raise _error(text, "integer literal out of the 64-bit range", pos, "limit")
    return number


def _string(text: str, start: int) -> tuple[str, int]:
    quote, i = text[start], start + 1
    out: list[str] = []
    while i < len(text):
        c = text[i]
        if c == quote:
            return "".join(out), i + 1
        if c != "\\":
            out.append(c)
            i += 1
            continue
        esc = text[i + 1 : i + 2]
        if esc in _ESCAPES:
            out.append(_ESCAPES[esc])
            i += 2
        elif esc == "u":
            code, i = _unicode_escape(text, i)
            out.append(code)
        else:
            raise _error(text, f"unknown escape \\{esc}", i)
    raise _error(text, "unterminated string", start)


def _unicode_escape(text: str, i: int) -> tuple[str, int]:
    def hex4(at: int) -> int | None:
        digits = text[at : at + 4]
        ok = len(digits) == 4 and all(d in "0123456789abcdefABCDEF" for d in digits)
        return int(digits, 16) if ok else None

    code = hex4(i + 2)
    if code is None:
        raise _error(text, "\\u needs four hex digits", i)
    if 0xD800 <= code < 0xDC00 and text[i + 6 : i + 8] == "\\u":
        low = hex4(i + 8)
        if low is not None and 0xDC00 <= low < 0xE000:
            return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)), i + 12
    if 0xD800 <= code < 0xE000:
        raise _error(text, "unpaired surrogate in \\u escape", i)
    return chr(code), i + 6


def _show(tok: Token) -> str:
    if tok[0] == "end":
        return "end of expression"
    return repr(tok[1]) if tok[0] != "num" else str(tok[1])


class _Parser:
    def __init__(self, text: str, tokens: list[Token], roots: frozenset[str]) -> None:
        self.text = text
        self.tokens = tokens
        self.roots = roots
        self.i = 0
        self.depth = 0

    def error(self, message: str, pos: int, kind: str = "syntax") -> ExpressionError:
        return _error(self.text, message, pos, kind)

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        if tok[0] != "end":
            self.i += 1
        return tok

    def is_op(self, value: str) -> bool:
        tok = self.peek()
        return tok[0] == "op" and tok[1] == value

    def expect(self, value: str) -> Token:
        tok = self.take()
        if tok[0] != "op" or tok[1] != value:
            raise self.error(f"expected {value!r}, found {_show(tok)}", tok[2])
        return tok

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error("expression nested too deeply", self.peek()[2], "limit")

    def expr(self) -> Node:
        """Pipes: ``value | name`` or ``value | name(args)`` calls ``name(value, args...)``."""
        self.enter()
        node = self.ternary()
        while self.is_op("|"):
            self.take()
            tok = self.take()
            if tok[0] != "name" or not isinstance(tok[1], str):
                raise self.error(f"expected a function name after '|', found {_show(tok)}", tok[2])
            extra = self.args() if self.is_op("(") else []
            node = self.call(tok[1], [node, *extra], tok[2])
        self.depth -= 1
        return node

    def ternary(self) -> Node:
        self.enter()
        node = self.binary(1)
        if self.is_op("?"):
            pos = self.take()[2]
            then = self.ternary()
            self.expect(":")
            node = ast.Cond(node, then, self.ternary(), pos)
        self.depth -= 1
        return node

    def binary(self, min_prec: int) -> Node:
        self.enter()
        tok = self.peek()
        if tok[1] in ("not", "!") and tok[0] in ("name", "op"):
            self.take()
            left: Node = ast.Not(self.binary(_NOT_PRECEDENCE), tok[2])
        elif tok[0] == "op" and tok[1] == "-":
            self.take()
            operand = self.binary(_UNARY_PRECEDENCE)
            left = _negate(operand, tok[2])
        else:
            left = self.postfix()
        while True:
            op, width = self.binary_op()
            if op is None or _PRECEDENCE[op] < min_prec:
                break
            pos = self.peek()[2]
            self.i += width
            right = self.binary(_PRECEDENCE[op] + 1)
            if op in ("and", "&&", "or", "||"):
                left = ast.Logic(op in ("and", "&&"), left, right, pos)
            else:
                left = ast.Binary(op, BINARY[op], left, right, pos)
        self.depth -= 1
        return left

    def binary_op(self) -> tuple[str | None, int]:
        kind, value, _ = self.peek()
        if kind == "op" and isinstance(value, str) and value in _PRECEDENCE:
            return value, 1
        if kind == "name" and value in ("and", "or", "in"):
            return str(value), 1
        if kind == "name" and value == "not":
            nxt = self.peek(1)
            if nxt[0] == "name" and nxt[1] == "in":
                return "not in", 2
        return None, 0

    def postfix(self) -> Node:
        node = self.primary()
        while True:
            if self.is_op("."):
                self.take()
                tok = self.take()
                if tok[0] != "name" or not isinstance(tok[1], str):
                    raise self.error(f"expected a name after '.', found {_show(tok)}", tok[2])
                if tok[1].startswith("__"):
                    raise self.error("names starting with '__' are not allowed", tok[2])
                node = ast.Get(node, ast.Literal(tok[1], tok[2]), tok[2])
            elif self.is_op("["):
                pos = self.take()[2]
                key = self.expr()
                self.expect("]")
                node = ast.Get(node, key, pos)
            else:
                return node

    def primary(self) -> Node:
        kind, value, pos = self.take()
        if kind in ("num", "str"):
            return ast.Literal(value, pos)
        if kind == "name" and isinstance(value, str):
            return self.name(value, pos)
        if kind == "op" and value == "(":
            node = self.expr()
            self.expect(")")
            return node
        if kind == "op" and value == "[":
            return ast.ListLit(tuple(self.sequence("]")), pos)
        if kind == "op" and value == "{":
            return self.object(pos)
        raise self.error(f"unexpected {_show((kind, value, pos))}", pos)

    def name(self, name: str, pos: int) -> Node:
        if name in ("true", "false", "null"):
            return ast.Literal({"true": True, "false": False, "null": None}[name], pos)
        if self.is_op("("):
            if name not in FUNCTION_NAMES:
                raise self.error(f"unknown function {name!r}", pos)
            return self.call(name, self.args(), pos)
        if name in _KEYWORDS:
            raise self.error(f"unexpected {name!r}", pos)
        if name not in self.roots:
            allowed = ", ".join(sorted(self.roots))
            raise self.error(f"unknown name {name!r}; expressions start from {allowed}", pos)
        return ast.Root(name, pos)

    def args(self) -> list[Node]:
        self.expect("(")
        return self.sequence(")")

    def call(self, name: str, args: list[Node], pos: int) -> Node:
        if name == "exists":
            if len(args) != 1 or not isinstance(args[0], ast.Root | ast.Get):
                raise self.error("exists() takes one path, such as exists(input.name)", pos)
            return ast.Exists(args[0], pos)
        if name not in FUNCTIONS:
            raise self.error(f"unknown function {name!r}", pos)
        low, high, impl = FUNCTIONS[name]
        if not low <= len(args) <= high:
            want = str(low) if low == high else f"{low} to {high}"
            raise self.error(f"{name}() takes {want} arguments, not {len(args)}", pos)
        return ast.Call(name, impl, tuple(args), pos)

    def sequence(self, close: str) -> list[Node]:
        items: list[Node] = []
        while not self.is_op(close):
            items.append(self.expr())
            if not self.is_op(close):
                self.expect(",")
        self.take()
        return items

    def object(self, pos: int) -> Node:
        keys: list[str] = []
        values: list[Node] = []
        while not self.is_op("}"):
            kind, key, kpos = self.take()
            if kind not in ("name", "str") or not isinstance(key, str):
                raise self.error(f"expected an object key, found {_show((kind, key, kpos))}", kpos)
            self.expect(":")
            keys.append(key)
            values.append(self.expr())
            if not self.is_op("}"):
                self.expect(",")
        self.take()
        return ast.ObjectLit(tuple(keys), tuple(values), pos)


def _negate(operand: Node, pos: int) -> Node:
    value = operand.value if isinstance(operand, ast.Literal) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return ast.Literal(-value, pos)
    return ast.Neg(operand, pos)
