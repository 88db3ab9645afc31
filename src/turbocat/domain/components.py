"""The built-in components (seed 003's registry): one per step kind and agent kind.

A component describes what a step can run: its ``config`` JSON Schema (taken from the agent
configuration models for agent kinds, and from the definition models for control-flow kinds), and
the JSON Schemas of what it takes and gives. Built-ins are served from this module and also
stored as rows without an organization (``services.components.sync_builtin_components``) so that
``workflow_steps.component_id`` and activity statistics can point at them.

User-registered components have kind ``custom``: a Python callable named by
``implementation_path`` (``package.module:function``), served by workers on a task queue. Workers
register the ones their entry points provide (``CustomComponent``, system-level rows); an
organization may register metadata too. The API only checks the path's shape; it never imports
or runs it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from turbocat.domain import agents
from turbocat.domain.definitions import ConditionStep, LoopStep, ParallelStep, WaitStep
from turbocat.domain.enums import AgentType, ComponentKind

BUILTIN_VERSION = "1.0.0"
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$")
"""Component names: a letter, then letters, digits, ``_``, ``.`` or ``-`` (at most 100)."""
IMPLEMENTATION_PATH = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
)
"""``package.module:function`` (or ``:Class.method``); checked, never imported by the API."""

ANY_OBJECT: dict[str, Any] = {"type": "object", "additionalProperties": True}


@dataclass(frozen=True)
class BuiltinComponent:
    name: str
    display_name: str
    description: str
    kind: ComponentKind
    config_schema: Mapping[str, Any]
    input_schema: Mapping[str, Any]
    output_schema: Mapping[str, Any]
    tags: tuple[str, ...]
    capabilities: tuple[str, ...]
    version: str = BUILTIN_VERSION


def _agent(
    kind: AgentType, display: str, description: str, output: Mapping[str, Any],
    tags: tuple[str, ...], capabilities: tuple[str, ...],
) -> BuiltinComponent:  # fmt: skip
    return BuiltinComponent(
        name=kind.value,
        display_name=display,
        description=description,
        kind=ComponentKind(kind.value),
        config_schema=agents.config_json_schema(kind),
        input_schema={**ANY_OBJECT, "description": "the step's inputs, by name"},
        output_schema=output,
        tags=("builtin", "agent", *tags),
        capabilities=capabilities,
    )


def _control(
    kind: ComponentKind, model: type[BaseModel], display: str, description: str,
    output: Mapping[str, Any], capabilities: tuple[str, ...],
) -> BuiltinComponent:  # fmt: skip
    return BuiltinComponent(
        name=kind.value,
        display_name=display,
        description=description,
        kind=kind,
        config_schema=model.model_json_schema(),
        input_schema={"type": "object", "description": "control-flow steps take no inputs"},
        output_schema=output,
        tags=("builtin", "control-flow"),
        capabilities=capabilities,
    )


def _build() -> tuple[BuiltinComponent, ...]:
    anything: dict[str, Any] = {"description": "any JSON value"}
    return (
        _agent(
            AgentType.LLM,
            "LLM",
            "Chat completion (OpenAI-compatible or Anthropic): prompt, "
            "structured output validated against a schema, tool calls.",
            {"description": "the reply text, or the object matching response_schema"},
            ("ai",),
            ("chat", "structured-output", "tools", "streaming"),
        ),
        _agent(
            AgentType.CODE,
            "Python code",
            "User Python (def main(input)) run in a separate, "
            "resource-limited process; JSON in and out.",
            {"description": "what main(input) returns (JSON)"},
            ("python",),
            ("sandboxed",),
        ),
        _agent(
            AgentType.API,
            "HTTP request",
            "An HTTP request with templated URL, headers, query "
            "and body; credentials from an integration; SSRF-protected.",
            {
                "type": "object",
                "properties": {
                    "status": {"type": "integer"},
                    "headers": {"type": "object"},
                    "body": anything,
                },
            },
            ("http",),
            ("http", "retry-on-status"),
        ),
        _agent(
            AgentType.DATA,
            "Data transform",
            "JSON transformation: a JMESPath query, a templated "
            "mapping, and filter/sort/group/aggregate operations.",
            anything,
            ("json",),
            ("jmespath", "mapping"),
        ),
        _agent(
            AgentType.WORKFLOW,
            "Child workflow",
            "Run another workflow as a child execution and return its output.",
            anything,
            ("composition",),
            ("child-workflow",),
        ),
        _control(
            ComponentKind.CONDITION,
            ConditionStep,
            "Condition",
            "Choose one branch label; dependents with a matching when run.",
            {
                "type": "object",
                "properties": {"label": {"type": ["string", "null"]}},
                "required": ["label"],
            },
            ("branching",),
        ),
        _control(
            ComponentKind.LOOP,
            LoopStep,
            "Loop",
            "Run a body once per item of a list, optionally concurrently.",
            {"type": "array", "description": "the body outputs in item order"},
            ("iteration", "concurrency"),
        ),
        _control(
            ComponentKind.PARALLEL,
            ParallelStep,
            "Parallel",
            "Run named branches concurrently.",
            {"type": "object", "description": "branch outputs by label"},
            ("concurrency",),
        ),
        _control(
            ComponentKind.WAIT,
            WaitStep,
            "Wait",
            "Pause for a duration, until an instant, for a signal (human approval), or for "
            "items of a work queue.",
            {
                "description": "the signal payload, the list of work queue items taken, or "
                "what a timed wait waited"
            },
            ("timer", "signal", "human-approval", "work-queue"),
        ),
    )


BUILTINS: tuple[BuiltinComponent, ...] = _build()
BUILTIN_NAMES = frozenset(c.name for c in BUILTINS)


def builtin(name: str) -> BuiltinComponent | None:
    return next((c for c in BUILTINS if c.name == name), None)


@dataclass(frozen=True)
class CustomComponent:
    """A custom component as a worker registers it (from the decorator and the package)."""

    name: str
    version: str
    task_queue: str
    description: str | None
    display_name: str | None
    tags: tuple[str, ...]
    input_schema: Mapping[str, Any]
    output_schema: Mapping[str, Any]
    implementation_path: str
    package: str | None
