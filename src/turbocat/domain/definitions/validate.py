"""Validating a definition document on save: every problem found, each with its full path.

Two phases: the document's shape (pydantic, after the size limits), then, once the shape is right,
the meaning: keys, dependencies, cycles, branch labels, expressions and what they reference,
signals and queues, agents and limits. All errors of the phase that failed are raised together in
one :class:`ValidationFailed`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError

from turbocat.domain.definitions import _checks
from turbocat.domain.definitions.graph import Path, all_steps, walk_graphs
from turbocat.domain.definitions.model import (
    AgentStep,
    AnyStep,
    ConditionStep,
    LoopStep,
    WaitStep,
    WorkflowDefinition,
)
from turbocat.domain.errors import FieldError, ValidationFailed
from turbocat.domain.expressions import ROOTS, JSONValue, has_template

_STEP_TYPES = frozenset({"agent", "condition", "loop", "parallel", "wait"})
_MAX_JSON_DEPTH = 96


@dataclass(frozen=True)
class DefinitionLimits:
    """Bounds on a definition, checked on save."""

    max_steps: int = 500
    """Steps in the whole definition, nested bodies included."""
    max_nesting: int = 8
    """Bodies inside bodies (a loop in a parallel branch is 2)."""
    max_bytes: int = 512 * 1024
    """Size of the document serialized as compact UTF-8 JSON."""
    max_expression_length: int = 4096
    """Characters in one {{ ... }} expression."""


DEFAULT_DEFINITION_LIMITS = DefinitionLimits()


def validate_definition(
    doc: Mapping[str, object],
    *,
    limits: DefinitionLimits = DEFAULT_DEFINITION_LIMITS,
    resolve_agent: Callable[[str], bool] | None = None,
    path_prefix: tuple[str | int, ...] = ("body", "definition"),
    resolve_component: Callable[[str, str | None], bool] | None = None,
) -> WorkflowDefinition:
    """Parse and check ``doc``; raise one ValidationFailed listing every problem found.

    ``resolve_agent`` answers whether an agent reference (id or name) exists for the caller;
    without it agent references are not checked. ``resolve_component`` answers the same for a
    custom component's (name, version requirement).
    """
    text = _serialize(doc, limits, path_prefix)
    try:
        defn = WorkflowDefinition.model_validate_json(text)
    except ValidationError as exc:
        raw = json.loads(text)
        errors = [_from_pydantic(e, raw, path_prefix) for e in exc.errors(include_url=False)]
        _raise(_prune(errors, raw, path_prefix))
    errors = _Checker(defn, limits, resolve_agent, path_prefix, resolve_component).run()
    if errors:
        _raise(errors)
    return defn


def _raise(errors: list[FieldError]) -> None:
    count = len(errors)
    first = errors[0].message
    more = f" (and {count - 1} more problem{'s' if count > 2 else ''})" if count > 1 else ""
    raise ValidationFailed(f"invalid workflow definition: {first}{more}", errors)


def _serialize(doc: Mapping[str, object], limits: DefinitionLimits, prefix: Path) -> str:
    if not isinstance(doc, Mapping):
        raise ValidationFailed.field(prefix, "a workflow definition must be a JSON object")
    if _json_depth(doc) > _MAX_JSON_DEPTH:
        raise ValidationFailed.field(
            prefix, f"the definition is nested more than {_MAX_JSON_DEPTH} levels deep", "limit"
        )
    try:
        text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationFailed.field(prefix, f"the definition is not plain JSON: {exc}") from None
    size = len(text.encode())
    if size > limits.max_bytes:
        raise ValidationFailed.field(
            prefix,
            f"the definition is {size} bytes; the limit is {limits.max_bytes}",
            "limit",
        )
    return text


def _json_depth(doc: object) -> int:
    deepest = 0
    stack: list[tuple[object, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, Mapping):
            children: list[object] = list(node.values())
        elif isinstance(node, list | tuple):
            children = list(node)
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > _MAX_JSON_DEPTH:
            return deepest
        stack.extend((c, depth + 1) for c in children)
    return deepest


def _from_pydantic(err: Mapping[str, object], raw: JSONValue, prefix: Path) -> FieldError:
    loc = err.get("loc", ())
    assert isinstance(loc, tuple)
    path: list[str | int] = []
    cur: JSONValue = raw
    step_key: str | None = None
    tag_skipped = False
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(cur, dict):
            if cur.get("type") in _STEP_TYPES and part == cur["type"] and not tag_skipped:
                tag_skipped = True
                continue
            if isinstance(part, str) and part in cur:
                path.append(part)
                cur, tag_skipped = cur[part], False
            elif last and isinstance(part, str) and part not in ("step", "graph"):
                path.append(part)
            else:
                continue
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            path.append(part)
            cur, tag_skipped = cur[part], False
        else:
            continue
        if isinstance(cur, dict) and isinstance(cur.get("key"), str) and "type" in cur:
            step_key = str(cur["key"])
    kind = str(err.get("type", "invalid"))
    message = str(err.get("msg", "invalid"))
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        path.append("type")
        message = "type must be one of agent, condition, loop, parallel, wait"
    elif kind == "extra_forbidden":
        message = f"unknown field {path[-1]!r}" if path else "unknown field"
    elif kind == "missing":
        message = f"{path[-1]!r} is required" if path else "a field is required"
    message = message.removeprefix("Value error, ")
    if step_key is not None:
        message = f"step {step_key!r}: {message}"
    return FieldError((*prefix, *path), message, kind)


def _prune(errors: list[FieldError], raw: JSONValue, prefix: Path) -> list[FieldError]:
    """Drop duplicates and the "too short" echoes pydantic adds when items inside failed."""
    out: list[FieldError] = []
    seen: set[tuple[Path, str]] = set()
    for e in errors:
        if e.code == "too_short" and any(
            o.path[: len(e.path)] == e.path and o.path != e.path for o in errors
        ):
            continue
        if (e.path, e.message) not in seen:
            seen.add((e.path, e.message))
            out.append(e)
    return out


class _Checker:
    def __init__(
        self,
        defn: WorkflowDefinition,
        limits: DefinitionLimits,
        resolve_agent: Callable[[str], bool] | None,
        prefix: Path,
        resolve_component: Callable[[str, str | None], bool] | None = None,
    ) -> None:
        self.defn = defn
        self.limits = limits
        self.resolve_agent = resolve_agent
        self.resolve_component = resolve_component
        self.prefix = prefix
        self.errors: list[FieldError] = []
        self.key_paths: dict[str, Path] = {}
        self.owner: dict[str, str | None] = {}
        self.visible: dict[str, frozenset[str]] = {}
        """Step keys whose outputs each step may read (its upstream plus enclosing scopes)."""

    def add(self, path: Path, message: str, code: str = "invalid") -> None:
        self.errors.append(FieldError((*self.prefix, *path), message, code))

    def run(self) -> list[FieldError]:
        self.check_keys_and_limits()
        top_keys = frozenset(s.key for s in self.defn.steps)
        for graph in walk_graphs(self.defn):
            _checks.check_graph(self, graph)
        for name, template in self.defn.outputs.items():
            self.check_template(template, ("outputs", name), None, top_keys, False)
        self.check_declarations(top_keys)
        self.check_agents()
        self.check_components()
        return self.errors

    def check_keys_and_limits(self) -> None:
        count = 0
        for step, path, graph in all_steps(self.defn):
            count += 1
            if step.key in self.key_paths:
                where = _show_path(self.key_paths[step.key])
                self.add((*path, "key"), f"duplicate step key {step.key!r} (also at {where})")
            else:
                self.key_paths[step.key] = path
                self.owner[step.key] = graph.parent
            if graph.depth == self.limits.max_nesting + 1 and graph.paths[0] == path:
                self.add(
                    path,
                    f"step {step.key!r} is nested {graph.depth} bodies deep; "
                    f"the limit is {self.limits.max_nesting}",
                    "limit",
                )
            self.check_step_fields(step, path)
        if count > self.limits.max_steps:
            self.add(
                ("steps",),
                f"the definition has {count} steps (nested included); "
                f"the limit is {self.limits.max_steps}",
                "limit",
            )

    def check_step_fields(self, step: AnyStep, path: Path) -> None:
        retry = step.retry
        if retry and retry.max_delay_ms is not None and retry.max_delay_ms < retry.delay_ms:
            self.add(
                (*path, "retry", "max_delay_ms"),
                f"step {step.key!r}: max_delay_ms ({retry.max_delay_ms}) is less than "
                f"delay_ms ({retry.delay_ms})",
            )
        if step.on_error == "retry" and (retry is None or retry.count < 1):
            self.add(
                (*path, "on_error"),
                f"step {step.key!r}: on_error retry needs a retry policy with count >= 1",
            )
        if isinstance(step, ConditionStep):
            labels = [b.label for b in step.branches]
            for i, label in enumerate(labels):
                if label in labels[:i]:
                    self.add(
                        (*path, "branches", i, "label"),
                        f"step {step.key!r}: duplicate branch label {label!r}",
                    )
        until = step.until if isinstance(step, WaitStep) else None
        if until and not has_template(until) and not _is_instant(until):
            self.add(
                (*path, "until"),
                f"step {step.key!r}: until must be an ISO 8601 instant with a UTC offset "
                "(such as 2030-01-01T09:00:00Z) or an expression",
            )
        if isinstance(step, LoopStep) and step.max_concurrency > step.max_items:
            self.add(
                (*path, "max_concurrency"),
                f"step {step.key!r}: max_concurrency exceeds max_items",
            )

    def check_template(
        self,
        template: str,
        path: Path,
        step_key: str | None,
        visible: frozenset[str],
        in_loop: bool,
        roots: frozenset[str] = ROOTS,
    ) -> None:
        _checks.check_template(self, template, path, step_key, visible, in_loop, roots)

    def check_json_templates(
        self,
        value: JSONValue,
        path: Path,
        step_key: str,
        visible: frozenset[str],
        in_loop: bool,
        roots: frozenset[str] = ROOTS,
    ) -> None:
        if isinstance(value, str):
            if has_template(value):
                self.check_template(value, path, step_key, visible, in_loop, roots)
        elif isinstance(value, dict):
            for k, v in value.items():
                self.check_json_templates(v, (*path, k), step_key, visible, in_loop, roots)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                self.check_json_templates(v, (*path, i), step_key, visible, in_loop, roots)

    def check_declarations(self, top_keys: frozenset[str]) -> None:
        _checks.check_declarations(self, top_keys)

    def check_agents(self) -> None:
        if self.resolve_agent is None:
            return
        known: dict[str, bool] = {}
        for step, path, _ in all_steps(self.defn):
            if isinstance(step, AgentStep) and step.agent is not None:
                if step.agent not in known:
                    known[step.agent] = self.resolve_agent(step.agent)
                if not known[step.agent]:
                    self.add(
                        (*path, "agent"),
                        f"step {step.key!r}: unknown agent {step.agent!r}",
                        "unknown_agent",
                    )

    def check_components(self) -> None:
        if self.resolve_component is None:
            return
        for step, path, _ in all_steps(self.defn):
            spec = step.component if isinstance(step, AgentStep) else None
            if spec is None or spec.kind.value != "custom" or spec.name is None:
                continue
            if not self.resolve_component(spec.name, spec.version):
                wanted = f" matching {spec.version}" if spec.version else ""
                self.add(
                    (*path, "component", "name"),
                    f"step {step.key!r}: no registered custom component {spec.name!r}{wanted} "
                    "(a worker registers its components when it starts)",
                    "unknown_component",
                )


def _is_instant(text: str) -> bool:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return False
    return moment.tzinfo is not None


def _show_path(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out.lstrip(".")
