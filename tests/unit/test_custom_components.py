"""The authoring API of custom components: schemas derived from the types, validation that
names the field, sync and async functions, and the version requirements steps may state."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import types
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from turbocat.components import (
    Component,
    ComponentDefinitionError,
    InvalidValue,
    component,
    components_of,
)
from turbocat.domain import semver
from turbocat.domain.definitions import validate_definition
from turbocat.domain.errors import ValidationFailed


class Order(BaseModel):
    id: str
    total: float = Field(ge=0)
    placed: dt.date


class Verdict(BaseModel):
    ok: bool
    reasons: list[str] = []


def only(func: object) -> Component:
    [found] = components_of(func)
    return found


def test_a_model_parameter_is_the_whole_input() -> None:
    @component(name="shop.check", version="2.0.1", queue="shop", tags=["risk"])
    def check(order: Order) -> Verdict:
        """Is the order fine?"""
        return Verdict(ok=order.total < 100)

    c = only(check)
    assert (c.name, c.version, c.queue, c.tags) == ("shop.check", "2.0.1", "shop", ("risk",))
    assert c.description == "Is the order fine?"
    assert c.implementation_path.endswith(
        ":test_a_model_parameter_is_the_whole_input.<locals>.check"
    )
    assert c.input_schema["required"] == ["id", "total", "placed"]
    assert c.input_schema["properties"]["placed"] == {"format": "date", "title": "Placed", "type": "string"}  # fmt: skip
    assert c.input_schema["properties"]["total"]["minimum"] == 0
    assert c.output_schema["properties"]["reasons"]["items"] == {"type": "string"}
    assert check(Order(id="a", total=1, placed=dt.date(2026, 1, 1))).ok  # still a function
    out = asyncio.run(c.call({"id": "a", "total": 150, "placed": "2026-12-01"}))
    assert out == {"ok": False, "reasons": []}


def test_plain_parameters_make_an_object_schema_without_extras() -> None:
    @component(name="math.scale")
    async def scale(values: list[float], factor: float = 2.0, unit: Literal["m", "km"] = "m") -> dict[str, list[float]]:  # fmt: skip
        return {unit: [v * factor for v in values]}

    c = only(scale)
    assert (c.version, c.queue, c.is_async) == ("1.0.0", "default", True)
    schema = c.input_schema
    assert schema["required"] == ["values"] and schema["additionalProperties"] is False
    assert schema["properties"]["factor"]["default"] == 2.0
    assert schema["properties"]["unit"]["enum"] == ["m", "km"]
    assert c.output_schema["additionalProperties"] == {"items": {"type": "number"}, "type": "array"}
    assert asyncio.run(c.call({"values": [1, 2.5], "unit": "km"})) == {"km": [2.0, 5.0]}


def test_validation_errors_name_every_field() -> None:
    @component(name="math.add")
    def add(a: int, b: int) -> int:
        return a + b

    c = only(add)
    with pytest.raises(InvalidValue) as caught:
        asyncio.run(c.call({"a": "one", "c": 3}))
    fields = [e["field"] for e in caught.value.errors]
    assert fields == ["inputs.a", "inputs.b", "inputs.c"]
    assert caught.value.side == "inputs" and "inputs.a:" in str(caught.value)

    @component(name="shop.bad")
    def bad(order: Order) -> Verdict:
        return {"ok": "perhaps", "reasons": [1]}  # type: ignore[return-value]

    with pytest.raises(InvalidValue) as caught:
        asyncio.run(only(bad).call({"id": "a", "total": 1, "placed": "2026-01-01"}))
    assert [e["field"] for e in caught.value.errors] == ["output.ok", "output.reasons.0"]
    with pytest.raises(
        InvalidValue, match=r"inputs\.total: Input should be greater than or equal to 0"
    ):
        asyncio.run(only(bad).call({"id": "a", "total": -1, "placed": "2026-01-01"}))


def test_a_sync_function_runs_in_a_thread() -> None:
    seen: list[str] = []

    @component(name="t.where")
    def where() -> None:
        seen.append(threading.current_thread().name)

    assert asyncio.run(only(where).call({})) is None
    assert seen and seen[0] != threading.main_thread().name


def test_an_unannotated_return_is_any_json() -> None:
    @component(name="t.free")
    def free(x):  # type: ignore[no-untyped-def]
        return {"x": x}

    c = only(free)
    assert c.output_schema == {} and c.input_schema["properties"]["x"] == {"title": "X"}
    assert asyncio.run(c.call({"x": [1]})) == {"x": [1]}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "9lives"}, "name must be"),
        ({"name": "ok", "version": "1.0"}, "not a semantic version"),
        ({"name": "ok", "queue": "no spaces"}, "not a valid queue"),
    ],
)
def test_bad_declarations_fail_at_import(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ComponentDefinitionError, match=message):
        component(**kwargs)(lambda: None)


def test_star_args_are_refused() -> None:
    def many(*values: int) -> int:
        return sum(values)

    with pytest.raises(ComponentDefinitionError, match="named parameters"):
        component(name="t.many")(many)


def test_a_module_entry_point_gives_the_components_defined_in_it() -> None:
    module = types.ModuleType("vendor_pkg")

    def own(a: int) -> int:
        return a

    own.__module__ = "vendor_pkg"
    module.own = component(name="vendor.own")(own)  # type: ignore[attr-defined]

    @component(name="elsewhere.imported")
    def imported() -> None: ...

    module.imported = imported  # type: ignore[attr-defined]  # imported from another module
    module.helper = len  # type: ignore[attr-defined]
    assert [c.name for c in components_of(module)] == ["vendor.own"]
    assert [c.name for c in components_of([own, imported])] == ["vendor.own", "elsewhere.imported"]
    with pytest.raises(ComponentDefinitionError):
        components_of(42)


@pytest.mark.parametrize(
    ("version", "requirement", "expected"),
    [
        ("1.2.0", "^1.2", True), ("1.9.3", "^1.2", True), ("2.0.0", "^1.2", False),
        ("1.1.9", "^1.2", False), ("0.3.9", "^0.3", True), ("0.4.0", "^0.3", False),
        ("1.2.7", "~1.2", True), ("1.3.0", "~1.2", False), ("1.2.0", "1.2.0", True),
        ("1.2.1", "=1.2.0", False), ("1.3.0-rc.1", "^1.2", False), ("1.3.0-rc.1", "1.3.0-rc.1", True),
        ("7.0.0", None, True), ("7.0.0", "*", True), ("7.0.0-beta", None, False),
    ],
)  # fmt: skip
def test_version_requirements(version: str, requirement: str | None, expected: bool) -> None:
    assert semver.satisfies(version, requirement) is expected


def test_the_definition_takes_a_version_requirement_for_custom_kinds_only() -> None:
    step = {"key": "e", "type": "agent", "component": {"kind": "custom", "name": "acme.enrich"}}
    step["component"]["version"] = "^1.2"  # type: ignore[index]
    validate_definition({"steps": [step]})
    for bad in ("1.x", ">=1.0", "^"):
        step["component"]["version"] = bad  # type: ignore[index]
        with pytest.raises(ValidationFailed):
            validate_definition({"steps": [step]})
    data = {"key": "d", "type": "agent", "component": {"kind": "data", "version": "1.0.0"}}
    with pytest.raises(ValidationFailed, match="only a custom component takes a version"):
        validate_definition({"steps": [data]})
    with pytest.raises(ValidationFailed) as caught:
        validate_definition(
            {"steps": [{**step, "component": {"kind": "custom", "name": "acme.x"}}]},
            resolve_component=lambda name, version: False,
        )
    assert caught.value.errors[0].path[-2:] == ("component", "name")
