"""Custom components: typed Python functions that a package registers and workers serve.

::

    from pydantic import BaseModel
    from turbocat.components import component

    class EnrichInput(BaseModel):
        email: str

    class EnrichOutput(BaseModel):
        domain: str

    @component(name="acme.enrich", version="1.2.0", queue="acme")
    def enrich(inp: EnrichInput) -> EnrichOutput:
        return EnrichOutput(domain=inp.email.partition("@")[2])

A function takes either one pydantic model (the step's inputs validated as that model) or plain
typed parameters (one per input name); its return annotation types the output. The input and
output JSON Schemas are derived from those types. A package exposes its components through the
entry point group ``turbocat.components`` (a decorated function, or a module whose decorated
functions are all taken); ``turbocat worker`` loads them, registers them in the catalog and runs
the steps that use them. The API never imports them (docs/components.md).

This module imports only the standard library and pydantic, so a component package can depend on
turbocat without pulling in the server.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, create_model

__all__ = [
    "ENTRY_POINT_GROUP",
    "Component",
    "ComponentDefinitionError",
    "Discovered",
    "InvalidValue",
    "component",
    "components_of",
    "discover",
]

ENTRY_POINT_GROUP = "turbocat.components"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$")
_VERSION = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$"
)
_ATTRIBUTE = "__turbocat_component__"
_F = TypeVar("_F", bound=Callable[..., Any])


class ComponentDefinitionError(TypeError):
    """The decorator was used on something it cannot serve (raised at import time)."""


class InvalidValue(ValueError):
    """Inputs or output that do not match the component's types; ``errors`` name the fields."""

    def __init__(self, side: str, errors: list[dict[str, str]]) -> None:
        self.side = side
        """``inputs`` or ``output``."""
        self.errors = errors
        """``[{"field": "inputs.email", "message": "Field required"}, ...]``"""
        shown = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        super().__init__(f"invalid {side}: {shown}{more}")


def _errors(side: str, exc: ValidationError) -> InvalidValue:
    found = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        found.append({"field": f"{side}.{where}" if where else side, "message": error["msg"]})
    return InvalidValue(side, found)


@dataclass(frozen=True)
class Component:
    """A registered function with what the catalog stores about it."""

    name: str
    version: str
    queue: str
    func: Callable[..., Any]
    description: str | None
    display_name: str | None
    tags: tuple[str, ...]
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    _input: TypeAdapter[Any] = field(repr=False)
    _output: TypeAdapter[Any] = field(repr=False)
    _single: bool = field(repr=False)
    """The function takes one model (the whole inputs) rather than one parameter per input."""

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.func)

    @property
    def implementation_path(self) -> str:
        return f"{self.func.__module__}:{self.func.__qualname__}"

    def parse_inputs(self, inputs: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """Positional and keyword arguments for the function; InvalidValue if they do not fit."""
        try:
            value = self._input.validate_python(dict(inputs))
        except ValidationError as exc:
            raise _errors("inputs", exc) from None
        if self._single:
            return [value], {}
        assert isinstance(value, BaseModel)
        return [], {name: getattr(value, name) for name in type(value).model_fields}

    def dump_output(self, value: Any) -> Any:
        """The output as JSON data, checked against the return type."""
        try:
            checked = self._output.validate_python(value)
        except ValidationError as exc:
            raise _errors("output", exc) from None
        return self._output.dump_python(checked, mode="json")

    async def call(self, inputs: Mapping[str, Any]) -> Any:
        """Validate ``inputs``, run the function (a sync one in a thread, so the event loop
        goes on) and return its output as checked JSON data."""
        args, kwargs = self.parse_inputs(inputs)
        if self.is_async:
            result = await self.func(*args, **kwargs)
        else:
            result = await asyncio.to_thread(self.func, *args, **kwargs)
        return self.dump_output(result)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _build(
    func: Callable[..., Any], name: str, version: str, queue: str, description: str | None,
    display_name: str | None, tags: Iterable[str],
) -> Component:  # fmt: skip
    where = f"component {name!r} ({getattr(func, '__qualname__', func)!r})"
    if not _NAME.match(name):
        raise ComponentDefinitionError(f"{where}: name must be a letter, then letters, digits, "
                                       "'_', '.' or '-' (at most 100 characters)")  # fmt: skip
    if not _VERSION.match(version):
        raise ComponentDefinitionError(f"{where}: version {version!r} is not a semantic version")
    if not _NAME.match(queue):
        raise ComponentDefinitionError(f"{where}: queue {queue!r} is not a valid queue name")
    if not callable(func) or inspect.isclass(func):
        raise ComponentDefinitionError(f"{where}: decorate a function")
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception as exc:  # names used in annotations must resolve
        raise ComponentDefinitionError(f"{where}: cannot read the type hints: {exc}") from exc
    params = list(inspect.signature(func).parameters.values())
    for param in params:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise ComponentDefinitionError(
                f"{where}: parameter {param.name!r}: use named parameters (no *args, **kwargs "
                "or positional-only ones): they are the step's input names"
            )
    single = len(params) == 1 and _is_model(hints.get(params[0].name))
    input_adapter: TypeAdapter[Any]
    if single:
        input_adapter = TypeAdapter(hints[params[0].name])
    else:
        fields: dict[str, Any] = {
            p.name: (hints.get(p.name, Any), ... if p.default is p.empty else p.default)
            for p in params
        }
        model = create_model(
            f"{re.sub(r'[^A-Za-z0-9]', '_', name)}_inputs",
            __config__=ConfigDict(extra="forbid"),
            **fields,
        )
        input_adapter = TypeAdapter(model)
    returns = hints.get("return", Any)
    output_adapter: TypeAdapter[Any] = TypeAdapter(type(None) if returns is None else returns)
    try:
        input_schema = input_adapter.json_schema()
        output_schema = output_adapter.json_schema(mode="serialization")
    except Exception as exc:  # a type pydantic cannot describe
        raise ComponentDefinitionError(f"{where}: no JSON Schema for its types: {exc}") from exc
    doc = inspect.getdoc(func)
    return Component(
        name=name, version=version, queue=queue, func=func,
        description=description if description is not None else doc, display_name=display_name,
        tags=tuple(tags), input_schema=input_schema, output_schema=output_schema,
        _input=input_adapter, _output=output_adapter, _single=single,
    )  # fmt: skip


def component(
    *,
    name: str,
    version: str = "1.0.0",
    queue: str = "default",
    description: str | None = None,
    display_name: str | None = None,
    tags: Iterable[str] = (),
) -> Callable[[_F], _F]:
    """Make ``func`` a component: ``name`` (unique platform-wide; dots group a vendor's
    components), a semantic ``version``, and the task ``queue`` whose workers run it. The
    function itself is returned unchanged (call it directly in your tests)."""

    def decorate(func: _F) -> _F:
        built = _build(func, name, version, queue, description, display_name, tags)
        setattr(func, _ATTRIBUTE, built)
        return func

    return decorate


def components_of(obj: Any) -> list[Component]:
    """The components in what an entry point loads: a decorated function, a ``Component``, a
    module (each decorated function defined in it), or a list of those."""
    if isinstance(obj, Component):
        return [obj]
    found = getattr(obj, _ATTRIBUTE, None)
    if isinstance(found, Component):
        return [found]
    if isinstance(obj, types.ModuleType):
        members = [
            v for v in vars(obj).values() if isinstance(getattr(v, _ATTRIBUTE, None), Component)
        ]
        return [
            getattr(v, _ATTRIBUTE)
            for v in members
            if getattr(v, "__module__", None) == obj.__name__
        ]
    if isinstance(obj, list | tuple):
        return [c for item in obj for c in components_of(item)]
    raise ComponentDefinitionError(f"{obj!r} is not a component, a module of them or a list")


@dataclass(frozen=True)
class Discovered:
    components: list[Component]
    errors: list[str]
    """One line per entry point that could not be loaded (the others still are)."""
    packages: dict[str, str]
    """Component name -> the distribution that provides it."""


def discover(group: str = ENTRY_POINT_GROUP) -> Discovered:
    """Import every entry point of ``group`` (installed distributions and ``sys.path``). Runs
    the packages' code: call it in a worker process only."""
    found: list[Component] = []
    errors: list[str] = []
    packages: dict[str, str] = {}
    for point in importlib.metadata.entry_points(group=group):
        dist = point.dist.name if point.dist is not None else point.module
        try:
            loaded = components_of(point.load())
        except Exception as exc:  # one broken package must not stop the others
            errors.append(
                f"entry point {point.name!r} ({point.value}): {type(exc).__name__}: {exc}"
            )
            continue
        for item in loaded:
            found.append(item)
            packages[item.name] = dist
    return Discovered(found, errors, packages)
