"""The canvas view of a definition: nodes and edges (seeds 002/003), and back.

A node is ``{"id": key, "type": step type, "data": {...the other step fields...}, "position":
{"x", "y"}}``; an edge is ``{"id": "source->target", "source", "target", "label"?}`` with one edge
per ``depends_on`` entry, labelled with the dependent's ``when`` on the edge leaving its condition.
Top-level fields other than ``steps`` (inputs, outputs, signals...) sit beside ``nodes`` and
``edges``. Loop and parallel bodies stay inside their node's ``data`` (a UI draws them as a
sub-flow). ``from_canvas(to_canvas(d)) == canonical_document(d)`` for every valid definition.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, cast

from turbocat.domain.definitions.graph import Path, order_steps
from turbocat.domain.definitions.model import (
    ConditionStep,
    WorkflowDefinition,
    canonical_document,
)
from turbocat.domain.errors import FieldError, ValidationFailed
from turbocat.domain.expressions import JSONValue

_NODE_FIELDS = frozenset({"id", "type", "data", "position"})
_EDGE_FIELDS = frozenset({"id", "source", "target", "label"})
# Presentation-only properties a canvas library (React Flow) adds; accepted and dropped.
_NODE_UI = frozenset(
    {"width", "height", "selected", "dragging", "measured", "positionAbsolute", "zIndex"}
    | {"sourcePosition", "targetPosition", "style", "className", "hidden", "draggable"}
)
_EDGE_UI = frozenset(
    {"type", "animated", "sourceHandle", "targetHandle", "style", "markerEnd", "markerStart"}
    | {"selected", "labelStyle", "className", "zIndex", "hidden"}
)
_NOT_IN_DATA = ("key", "type", "position", "depends_on", "when")
LAYOUT_X = 260
LAYOUT_Y = 120


def to_canvas(defn: WorkflowDefinition, *, auto_layout: bool = False) -> dict[str, JSONValue]:
    """Nodes and edges for ``defn``.

    With ``auto_layout`` a step without a position gets one (columns by dependency depth); the
    round trip then adds those positions to the definition.
    """
    doc = canonical_document(defn)
    raw_steps = doc.pop("steps")
    assert isinstance(raw_steps, list)
    conditions = {s.key for s in defn.steps if isinstance(s, ConditionStep)}
    layout = _layout(defn) if auto_layout else {}
    nodes: list[JSONValue] = []
    edges: list[JSONValue] = []
    for raw in raw_steps:
        assert isinstance(raw, dict)
        data = dict(raw)
        key = str(data.pop("key"))
        node: dict[str, JSONValue] = {"id": key, "type": data.pop("type")}
        position = data.pop("position", None) or layout.get(key)
        deps = data.pop("depends_on", [])
        when = data.pop("when", None)
        node["data"] = data
        if position is not None:
            node["position"] = position
        nodes.append(node)
        assert isinstance(deps, list)
        for dep in deps:
            edge: dict[str, JSONValue] = {"id": f"{dep}->{key}", "source": dep, "target": key}
            if when is not None and dep in conditions:
                edge["label"] = when
            edges.append(edge)
    return {**doc, "nodes": nodes, "edges": edges}


def _layout(defn: WorkflowDefinition) -> dict[str, JSONValue]:
    column: dict[str, int] = {}
    rows: dict[int, int] = {}
    out: dict[str, JSONValue] = {}
    for step in order_steps(defn.steps):
        col = max((column.get(d, -1) + 1 for d in step.depends_on), default=0)
        column[step.key] = col
        row = rows.get(col, 0)
        rows[col] = row + 1
        out[step.key] = {"x": float(col * LAYOUT_X), "y": float(row * LAYOUT_Y)}
    return out


def from_canvas(
    doc: Mapping[str, object], *, path_prefix: Path = ("body",)
) -> dict[str, JSONValue]:
    """The definition document for a canvas document; structural errors name nodes and edges.

    The result still needs :func:`validate_definition`.
    """
    errors: list[FieldError] = []

    def fail(path: Path, message: str, code: str = "invalid") -> None:
        errors.append(FieldError((*path_prefix, *path), message, code))

    if not isinstance(doc, Mapping):
        raise ValidationFailed.field(path_prefix, "a canvas document must be a JSON object")
    nodes, edges = doc.get("nodes"), doc.get("edges", [])
    # Values are passed through as they are; validate_definition checks them.
    rest = {k: cast(JSONValue, v) for k, v in doc.items() if k not in ("nodes", "edges")}
    if "steps" in rest:
        fail(("steps",), "a canvas document has nodes and edges, not steps")
    if not isinstance(nodes, list):
        fail(("nodes",), "nodes must be a list")
        nodes = []
    if not isinstance(edges, list):
        fail(("edges",), "edges must be a list")
        edges = []
    steps: dict[str, dict[str, JSONValue]] = {}
    for i, node in enumerate(nodes):
        step = _node_step(node, ("nodes", i), fail)
        if step is None:
            continue
        key = str(step["key"])
        if key in steps:
            fail(("nodes", i, "id"), f"duplicate node id {key!r}")
        else:
            steps[key] = step
    for j, edge in enumerate(edges):
        _apply_edge(edge, ("edges", j), steps, fail)
    if errors:
        raise ValidationFailed(f"invalid canvas: {errors[0].message}", errors)
    return {**rest, "steps": list(steps.values())}


def _node_step(node: object, path: Path, fail: _Fail) -> dict[str, JSONValue] | None:
    if not isinstance(node, dict):
        fail(path, "a node must be an object")
        return None
    for field in sorted(set(node) - _NODE_FIELDS - _NODE_UI):
        fail((*path, field), f"unknown node field {field!r}")
    key, kind, data = node.get("id"), node.get("type"), node.get("data", {})
    if not isinstance(key, str) or not isinstance(kind, str):
        fail(path, "a node needs a string id and type")
        return None
    if not isinstance(data, dict):
        fail((*path, "data"), f"node {key!r}: data must be an object")
        return None
    for field in _NOT_IN_DATA:
        if field in data:
            fail((*path, "data", field), f"node {key!r}: {field} belongs on the node or edges")
    step: dict[str, JSONValue] = {"key": key, "type": kind, **data}
    if node.get("position") is not None:
        step["position"] = node["position"]
    return step


def _apply_edge(
    edge: object, path: Path, steps: dict[str, dict[str, JSONValue]], fail: _Fail
) -> None:
    if not isinstance(edge, dict):
        fail(path, "an edge must be an object")
        return
    for field in sorted(set(edge) - _EDGE_FIELDS - _EDGE_UI):
        fail((*path, field), f"unknown edge field {field!r}")
    source, target, label = edge.get("source"), edge.get("target"), edge.get("label")
    for name, end in (("source", source), ("target", target)):
        if not isinstance(end, str) or end not in steps:
            fail((*path, name), f"edge {name} {end!r} is not a node id")
            return
    assert isinstance(source, str)
    assert isinstance(target, str)
    step = steps[target]
    deps = step.setdefault("depends_on", [])
    assert isinstance(deps, list)
    if source in deps:
        fail(path, f"duplicate edge {source!r} -> {target!r}")
        return
    deps.append(source)
    if label is None:
        return
    if steps[source].get("type") != "condition":
        message = f"edge {source!r} -> {target!r}: only edges leaving a condition carry a label"
        fail((*path, "label"), message)
    elif step.get("when", label) != label:
        fail((*path, "label"), f"node {target!r} has edges with different labels")
    else:
        step["when"] = label


class _Fail(Protocol):
    def __call__(self, path: Path, message: str, code: str = ...) -> None: ...
