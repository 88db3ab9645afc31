"""The expression language: syntax, semantics, sandboxing and bounds."""

from __future__ import annotations

import pytest

from turbocat.domain.errors import ValidationFailed
from turbocat.domain.expressions import (
    ExpressionError,
    ExpressionLimits,
    JSONValue,
    compile_template,
    references,
    render_value,
)

CONTEXT: dict[str, JSONValue] = {
    "input": {"name": "Ann", "n": 3, "xs": [3, 1, 2], "nested": {"a": {"b": None}}, "f": 2.5},
    "steps": {
        "fetch": {"output": {"items": ["a", "b"], "text": "{{ 1+1 }}"}, "status": "completed"},
        "evil": {"output": "{{ input.name }}", "error": None},
    },
    "vars": {"greeting": "Hello", "limit": 10},
    "execution": {"id": "e1", "started_at": "2030-01-01T00:00:00Z"},
    "item": {"id": 7},
    "index": 0,
}


def render(text: str, context: dict[str, JSONValue] | None = None, **limits: int) -> JSONValue:
    return compile_template(text).render(
        CONTEXT if context is None else context, ExpressionLimits(**limits)
    )


def fails(text: str, kind: str | None = None, **limits: int) -> ExpressionError:
    with pytest.raises(ExpressionError) as info:
        render(text, **limits)
    if kind is not None:
        assert info.value.kind == kind, info.value.detail
    return info.value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ 1 }}", 1),
        ("{{ -1.5 }}", -1.5),
        ("{{ 2.5e3 }}", 2500.0),
        ("{{ 'it\\'s' }}", "it's"),
        ('{{ "tab\\tnew\\nline \\u00e9 \\ud83d\\ude00" }}', "tab\tnew\nline é 😀"),
        ("{{ true }}", True),
        ("{{ null }}", None),
        ("{{ [1, 'a', [true]] }}", [1, "a", [True]]),
        ("{{ {a: 1, 'b c': [2]} }}", {"a": 1, "b c": [2]}),
        ("{{ {a: {b: 1}} }}", {"a": {"b": 1}}),
        ("{{ [1, 2,] }}", [1, 2]),
        ("{{ input.name }}", "Ann"),
        ("{{ input['name'] }}", "Ann"),
        ("{{ input.xs[0] }}", 3),
        ("{{ input.xs[-1] }}", 2),
        ("{{ input.xs[9] }}", None),
        ("{{ input.missing }}", None),
        ("{{ input.missing.deeper[0].still }}", None),
        ("{{ steps.fetch.output.items }}", ["a", "b"]),
        ("{{ steps.fetch.status }}", "completed"),
        ("{{ vars.limit * 2 }}", 20),
        ("{{ item.id }}", 7),
        ("{{ index + 1 }}", 1),
        ("{{ execution.started_at }}", "2030-01-01T00:00:00Z"),
        ("{{ signal }}", None),
        ("{{ 1 + 2 * 3 }}", 7),
        ("{{ (1 + 2) * 3 }}", 9),
        ("{{ 7 / 2 }}", 3.5),
        ("{{ 6 / 2 }}", 3),
        ("{{ 7 // 2 }}", 3),
        ("{{ -7 % 3 }}", 2),
        ("{{ 1.5 + 1 }}", 2.5),
        ("{{ 'a' + 'b' }}", "ab"),
        ("{{ [1] + [2] }}", [1, 2]),
        ("{{ 'ab' * 2 }}", "abab"),
        ("{{ 1 < 2 }}", True),
        ("{{ 'b' >= 'a' }}", True),
        ("{{ 1 == 1.0 }}", True),
        ("{{ true == 1 }}", False),
        ("{{ [1, 2] == [1, 2] }}", True),
        ("{{ 1 != 2 }}", True),
        ("{{ 'a' in ['a', 'b'] }}", True),
        ("{{ 'nx' in 'Ann' }}", False),
        ("{{ 'name' in input }}", True),
        ("{{ 5 not in input.xs }}", True),
        ("{{ not true }}", False),
        ("{{ !false }}", True),
        ("{{ not 1 == 2 }}", True),
        ("{{ true and 'x' }}", "x"),
        ("{{ null or 'fallback' }}", "fallback"),
        ("{{ 0 || 3 }}", 3),
        ("{{ 1 && 0 }}", 0),
        ("{{ input.n > 2 ? 'big' : 'small' }}", "big"),
        ("{{ input.n > 5 ? 'big' : input.n > 2 ? 'mid' : 'small' }}", "mid"),
        ("{{ input.name | upper }}", "ANN"),
        ("{{ input.missing | default('n/a') }}", "n/a"),
        ("{{ input.xs | sort | join('-') }}", "1-2-3"),
    ],
)
def test_expressions_evaluate(text: str, expected: JSONValue) -> None:
    result = render(text)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ len('héllo') }}", 5),
        ("{{ len(input.xs) }}", 3),
        ("{{ len(input) }}", 5),
        ("{{ lower('AbC') }}", "abc"),
        ("{{ trim('  x ') }}", "x"),
        ("{{ replace('a-b-c', '-', '+') }}", "a+b+c"),
        ("{{ split('a,b', ',') }}", ["a", "b"]),
        ("{{ split('a b') }}", ["a", "b"]),
        ("{{ join(['a', 1, null, true], ',') }}", "a,1,,true"),
        ("{{ contains('hello', 'ell') }}", True),
        ("{{ contains(input.xs, 2) }}", True),
        ("{{ startswith('hello', 'he') }}", True),
        ("{{ endswith('hello', 'lo') }}", True),
        ("{{ int('42') }}", 42),
        ("{{ int(3.9) }}", 3),
        ("{{ float('1.5') }}", 1.5),
        ("{{ str(12) }}", "12"),
        ("{{ str([1, 'a']) }}", '[1,"a"]'),
        ("{{ bool([]) }}", False),
        ("{{ round(2.567, 2) }}", 2.57),
        ("{{ round(2.5) }}", 2),
        ("{{ abs(-3) }}", 3),
        ("{{ min(input.xs) }}", 1),
        ("{{ max(4, 9, 2) }}", 9),
        ("{{ max([]) }}", None),
        ("{{ sum(input.xs) }}", 6),
        ("{{ keys({a: 1, b: 2}) }}", ["a", "b"]),
        ("{{ values({a: 1, b: 2}) }}", [1, 2]),
        ("{{ default(null, 3) }}", 3),
        ("{{ default(0, 3) }}", 0),
        ("{{ coalesce(null, input.missing, 'x', 'y') }}", "x"),
        ("{{ exists(input.name) }}", True),
        ("{{ exists(input.nested.a.b) }}", True),
        ("{{ exists(input.nested.a.c) }}", False),
        ("{{ exists(input.xs[5]) }}", False),
        ("{{ exists(signal) }}", False),
        ("{{ json({a: [1, true]}) }}", '{"a":[1,true]}'),
        ("{{ from_json('{\"a\": [1, 2]}').a[1] }}", 2),
        ("{{ first(input.xs) }}", 3),
        ("{{ last([]) }}", None),
        ("{{ slice(input.xs, 1) }}", [1, 2]),
        ("{{ slice('abcdef', 1, -1) }}", "bcde"),
        ("{{ range(3) }}", [0, 1, 2]),
        ("{{ range(5, 0, -2) }}", [5, 3, 1]),
        ("{{ sort(['b', 'a']) }}", ["a", "b"]),
        ("{{ sort([{n: 2}, {n: 1}, {}], 'n') }}", [{"n": 1}, {"n": 2}, {}]),
        ("{{ reverse([1, 2]) }}", [2, 1]),
        ("{{ unique([1, 1, true, '1', [1], [1]]) }}", [1, True, "1", [1]]),
        ("{{ type(input.xs) }}", "array"),
    ],
)
def test_functions(text: str, expected: JSONValue) -> None:
    assert render(text) == expected


def test_single_expression_keeps_its_type_and_mixed_text_is_a_string() -> None:
    assert render("{{ input.xs }}") == [3, 1, 2]
    assert render("xs={{ input.xs }} n={{ input.n }} b={{ true }}") == "xs=[3,1,2] n=3 b=true"
    assert render("[{{ input.missing }}]") == "[]"
    assert render(" {{ input.n }}") == " 3"
    assert render("{{ vars.greeting }}, {{ input.name }}!") == "Hello, Ann!"
    assert render("no template here") == "no template here"
    assert compile_template("plain").is_constant
    assert render('{{ "}}" }}') == "}}"
    assert render('literal {{ "{{" }} braces') == "literal {{ braces"
    assert render("a }} b") == "a }} b"


def test_context_values_are_data_and_never_evaluated_again() -> None:
    assert render("{{ steps.fetch.output.text }}") == "{{ 1+1 }}"
    assert render("{{ steps.evil.output }}") == "{{ input.name }}"
    assert render("x {{ steps.evil.output }}") == "x {{ input.name }}"
    value = {"a": "{{ steps.evil.output }}", "b": ["{{ input.n }}", 5], "{{ key }}": "k"}
    assert render_value(value, CONTEXT) == {
        "a": "{{ input.name }}",
        "b": [3, 5],
        "{{ key }}": "k",
    }


def test_references_name_roots_and_first_key() -> None:
    template = compile_template(
        "{{ steps.fetch.output[input.k] }} {{ steps['b'].status }} {{ item }} "
        "{{ len(vars.x) }} {{ exists(steps.c.output) }} {{ steps[input.which] }}"
    )
    assert references(template) == {
        ("steps", "fetch"),
        ("input", "k"),
        ("steps", "b"),
        ("item",),
        ("vars", "x"),
        ("steps", "c"),
        ("input", "which"),
        ("steps",),
    }
    assert references(compile_template("plain")) == set()


@pytest.mark.parametrize(
    "text",
    [
        "{{ ().__class__ }}",
        "{{ ''.__class__.__mro__ }}",
        "{{ input.__class__ }}",
        "{{ input.__dict__ }}",
        "{{ __globals__ }}",
        "{{ __import__('os') }}",
        "{{ input.name.__class__.__bases__ }}",
        "{{ lower.__globals__ }}",
        "{{ input.name.upper() }}",
        "{{ getattr(input, 'x') }}",
        "{{ eval('1') }}",
        "{{ open('/etc/passwd') }}",
        "{{ lambda: 1 }}",
        "{{ [x for x in input.xs] }}",
        "{{ 9**9**9 }}",
        "{{ x = 1 }}",
        "{{ input; 1 }}",
        "{{ self }}",
        "{{ os }}",
        "{{ now() }}",
    ],
)
def test_hostile_syntax_is_refused_at_compile_time(text: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_template(text)
    assert info.value.kind == "syntax"
    assert isinstance(info.value, ValidationFailed)


def test_dunder_keys_are_only_dictionary_lookups() -> None:
    context: dict[str, JSONValue] = {"input": {"__class__": "just data"}}
    assert render("{{ input['__class__'] }}", context) == "just data"
    assert render("{{ input['__dict__'] }}", context) is None
    with pytest.raises(ExpressionError, match="cannot look up '__base__' in string"):
        render("{{ input['__class__']['__base__'] }}", context)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{ 'abc }}", "unterminated string"),
        ("{{ 1 + }}", "unexpected end"),
        ("{{ input.name", "unterminated expression"),
        ("{{ }}", "unexpected end"),
        ("{{ (1 }}", "expected ')'"),
        ("{{ [1 2] }}", "expected ','"),
        ("{{ {1: 2} }}", "object key"),
        ("{{ 'a\\q' }}", "unknown escape"),
        ("{{ '\\ud800' }}", "unpaired surrogate"),
        ("{{ café }}", "unexpected character"),
        ("{{ nope(1) }}", "unknown function"),
        ("{{ len() }}", "takes 1 arguments"),
        ("{{ exists(1) }}", "one path"),
        ("{{ input | }}", "function name"),
        ("{{ input. }}", "name after"),
        ("{{ 1 ? 2 }}", "expected ':'"),
        ("{{ unknown.root }}", "unknown name"),
    ],
)
def test_syntax_errors_name_the_problem_and_position(text: str, message: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_template(text)
    assert message in info.value.message
    assert info.value.expression == text
    assert 0 <= info.value.position <= len(text)
    assert f"at position {info.value.position}" in info.value.detail
    assert info.value.errors[0].code == "expression_syntax"


def test_error_position_points_at_the_offender() -> None:
    with pytest.raises(ExpressionError) as info:
        compile_template("Hi {{ input.name + }} there")
    assert info.value.position == 19
    error = fails("{{ input.n + 'x' }}", "eval")
    assert error.position == 11
    assert "needs numbers" in error.message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{ 1 / 0 }}", "division by zero"),
        ("{{ 1 % 0 }}", "modulo by zero"),
        ("{{ 'a' - 1 }}", "needs numbers"),
        ("{{ true + 1 }}", "needs numbers"),
        ("{{ [1] < [2] }}", "cannot compare"),
        ("{{ 1 < 'a' }}", "cannot compare"),
        ("{{ input.n.x }}", "cannot look up"),
        ("{{ input.xs.length }}", "cannot look up"),
        ("{{ input[0] }}", "must be a string"),
        ("{{ -'a' }}", "cannot negate"),
        ("{{ upper(1) }}", "needs a string"),
        ("{{ int('x') }}", "cannot read"),
        ("{{ from_json('{bad') }}", "cannot parse"),
        ("{{ from_json('NaN') }}", "cannot parse"),
        ("{{ split('a', '') }}", "non-empty separator"),
        ("{{ range(1, 2, 0) }}", "step cannot be zero"),
        ("{{ sort([1, 'a']) }}", "all numbers or all strings"),
        ("{{ 9223372036854775807 + 1 }}", "64-bit"),
        ("{{ 1e308 * 10 }}", "not finite"),
    ],
)
def test_runtime_errors(text: str, message: str) -> None:
    error = fails(text)
    assert message in error.message


@pytest.mark.parametrize(
    "text",
    [
        "{{ 'a' * 1000000000 }}",
        "{{ [1] * 1000000000 }}",
        "{{ range(1000000000) }}",
        "{{ replace('aaaa', '', 'xxxxxxxxxxxxxxxxxxxx') * 100000 }}",
        "{{ split('" + "," * 20_000 + "', ',') }}",
        "{{ 99999999999999999999 }}",
        "{{ 1" + "0" * 400 + " }}",
    ],
)
def test_size_bombs_hit_limits(text: str) -> None:
    with pytest.raises(ExpressionError) as info:
        render(text)
    assert info.value.kind == "limit"


def test_string_growth_is_bounded_by_the_limit() -> None:
    assert render("{{ 'ab' * 5 }}", max_string_length=10) == "ababababab"
    fails("{{ 'ab' * 6 }}", "limit", max_string_length=10)
    fails("{{ 'abcdef' + 'ghijk' }}", "limit", max_string_length=10)
    fails("{{ json(range(100)) }}", "limit", max_string_length=10)
    fails("x {{ input.name }} {{ input.name }} {{ input.name }}", "limit", max_string_length=10)
    fails("{{ range(11) }}", "limit", max_items=10)


def test_evaluation_steps_are_bounded_deterministically() -> None:
    text = "{{ " + " + ".join(["1"] * 200) + " }}"
    assert render(text) == 200
    error = fails(text, "limit", max_steps=100)
    assert "100 steps" in error.message
    fails("{{ sum(range(5000)) }}", "limit", max_steps=1000)
    fails("{{ sort(range(1000)) }}", "limit", max_steps=1000)
    # One budget covers a whole value.
    value: JSONValue = ["{{ sum(range(400)) }}"] * 5
    with pytest.raises(ExpressionError):
        render_value(value, CONTEXT, ExpressionLimits(max_steps=1000))


def test_depth_bombs_fail_cleanly() -> None:
    for bomb in (
        "{{ " + "(" * 200 + "1" + ")" * 200 + " }}",
        "{{ " + "[" * 200 + "]" * 200 + " }}",
        "{{ " + "not " * 200 + "1 }}",
        "{{ " + "- " * 200 + "1 }}",
        "{{ " + "1 ? " * 200 + "1" + " : 1" * 200 + " }}",
        "{{ " + "len(" * 200 + "1" + ")" * 200 + " }}",
        "{{ " + "{a: " * 200 + "1" + "}" * 200 + " }}",
        "{{ input" + "[input" * 200 + "]" * 200 + " }}",
    ):
        with pytest.raises(ExpressionError) as info:
            compile_template(bomb)
        assert info.value.kind == "limit"
    assert render("{{ " + "(" * 20 + "1" + ")" * 20 + " }}") == 1


def test_length_and_token_limits() -> None:
    long_expr = "{{ " + "1 + " * 2000 + "1 }}"
    with pytest.raises(ExpressionError) as info:
        compile_template(long_expr, max_length=100)
    assert info.value.kind == "limit"
    assert "longer than 100" in info.value.message
    with pytest.raises(ExpressionError):
        compile_template(long_expr)
    assert compile_template("x" * 10_000, max_length=10).render({}) == "x" * 10_000


def test_deeply_nested_data_from_json_is_refused() -> None:
    nested = "[" * 100_000 + "]" * 100_000
    context: dict[str, JSONValue] = {"input": {"s": nested}}
    with pytest.raises(ExpressionError):
        render("{{ from_json(input.s) }}", context, max_steps=10_000_000, max_string_length=10**6)


def test_unicode_passes_through() -> None:
    context: dict[str, JSONValue] = {"input": {"名前": "日本", "emoji": "😀"}}
    assert render("{{ input['名前'] }} {{ input.emoji | upper }}", context) == "日本 😀"
    assert render("{{ len('😀') }}") == 1
    assert render("{{ json('é') }}") == '"é"'


def test_compiled_templates_render_many_times() -> None:
    template = compile_template("{{ item.n * 2 }}")
    assert [template.render({"item": {"n": n}}) for n in range(5)] == [0, 2, 4, 6, 8]
