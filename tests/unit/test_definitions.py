"""Workflow definitions: the model, validation on save, canvas and workflow_steps views, schema."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from turbocat.domain.definitions import (
    DefinitionLimits,
    WorkflowDefinition,
    agent_refs,
    canonical_document,
    definition_json_schema,
    definition_json_schema_text,
    from_canvas,
    materialize_steps,
    to_canvas,
    topological_order,
    validate_definition,
)
from turbocat.domain.errors import FieldError, ValidationFailed

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schemas" / "workflow-definition.schema.json"
P = ("body", "definition")


def full_definition() -> dict[str, Any]:
    """Every feature once; the same document as in docs/workflow-definitions.md."""
    return {
        "inputs": {
            "type": "object",
            "properties": {"ticket_id": {"type": "string"}, "urgent": {"type": "boolean"}},
            "required": ["ticket_id"],
        },
        "outputs": {
            "reply": "{{ steps.draft.output.text }}",
            "summaries": "{{ steps.summarize.output }}",
        },
        "vars": {"team": "support"},
        "steps": [
            {
                "key": "fetch",
                "type": "agent",
                "name": "Fetch ticket",
                "component": {
                    "kind": "api",
                    "config": {
                        "method": "GET",
                        "url": "https://tickets.example.com/{{ input.ticket_id }}",
                    },
                },
                "retry": {"count": 3, "delay_ms": 500, "max_delay_ms": 5000},
                "timeout_ms": 10000,
                "position": {"x": 0.0, "y": 0.0},
            },
            {
                "key": "triage",
                "type": "condition",
                "depends_on": ["fetch"],
                "branches": [
                    {
                        "label": "urgent",
                        "when": "{{ input.urgent or steps.fetch.output.priority == 'high' }}",
                    }
                ],
                "default": "normal",
                "position": {"x": 260.0, "y": 0.0},
            },
            {
                "key": "approve",
                "type": "wait",
                "depends_on": ["triage"],
                "when": "urgent",
                "signal": {"name": "approval", "timeout_ms": 3600000},
            },
            {
                "key": "summarize",
                "type": "loop",
                "depends_on": ["triage"],
                "when": "normal",
                "over": "{{ steps.fetch.output.messages }}",
                "max_concurrency": 4,
                "body": {
                    "key": "summarize_one",
                    "type": "agent",
                    "agent": "summarizer",
                    "inputs": {"text": "{{ item.body }}", "n": "{{ index }}"},
                },
            },
            {
                "key": "draft",
                "type": "agent",
                "depends_on": ["approve", "summarize"],
                "join": "any",
                "agent": "reply-writer",
                "inputs": {
                    "ticket": "{{ steps.fetch.output }}",
                    "team": "{{ vars.team }}",
                    "approved_by": "{{ steps.approve.output.user | default('nobody') }}",
                },
                "on_error": "continue",
            },
        ],
        "signals": [
            {
                "name": "approval",
                "description": "A human approves the reply",
                "schema": {"type": "object", "properties": {"user": {"type": "string"}}},
            },
            {"name": "add_note"},
        ],
        "queries": [{"name": "progress", "expression": "{{ steps.fetch.status }}"}],
        "work_queues": [
            {"name": "notes", "signal": "add_note", "query": "progress", "order": "lifo"}
        ],
        "child_workflows": [{"name": "escalate", "workflow": "escalation-flow"}],
        "timeout_seconds": 3600,
    }


def parallel_definition() -> dict[str, Any]:
    return {
        "steps": [
            {"key": "start", "type": "wait", "duration_ms": 1000},
            {
                "key": "fan",
                "type": "parallel",
                "depends_on": ["start"],
                "branches": {
                    "left": {"key": "left_one", "type": "agent", "agent": "a"},
                    "right": {
                        "steps": [
                            {"key": "r1", "type": "agent", "agent": "b"},
                            {
                                "key": "r2",
                                "type": "loop",
                                "depends_on": ["r1"],
                                "over": "{{ steps.r1.output }}",
                                "body": {
                                    "steps": [
                                        {
                                            "key": "inner",
                                            "type": "agent",
                                            "agent": "c",
                                            "inputs": {
                                                "x": "{{ item }}",
                                                "y": "{{ steps.r1.output }}",
                                            },
                                        },
                                    ],
                                    "output": "{{ steps.inner.output }}",
                                },
                            },
                        ],
                        "output": "{{ steps.r2.output }}",
                    },
                },
            },
            {
                "key": "until",
                "type": "wait",
                "until": "2030-01-01T09:00:00+00:00",
                "depends_on": ["fan"],
            },
        ]
    }


def linear(n: int) -> dict[str, Any]:
    steps = [{"key": f"s{i}", "type": "wait", "duration_ms": 1} for i in range(n)]
    for i in range(1, n):
        steps[i]["depends_on"] = [f"s{i - 1}"]
    return {"steps": steps}


def errors_of(doc: Any, **kwargs: Any) -> list[FieldError]:
    with pytest.raises(ValidationFailed) as info:
        validate_definition(doc, **kwargs)
    assert info.value.errors
    return info.value.errors


def find(errors: list[FieldError], path: tuple[Any, ...]) -> FieldError:
    matches = [e for e in errors if e.path == (*P, *path)]
    assert matches, f"no error at {path}: {[(e.path, e.message) for e in errors]}"
    return matches[0]


# -- valid documents and canonical form ------------------------------------------------------


@pytest.mark.parametrize("make", [full_definition, parallel_definition, lambda: linear(5)])
def test_valid_definitions_round_trip_through_canonical_form(make: Any) -> None:
    doc = make()
    defn = validate_definition(doc)
    canonical = canonical_document(defn)
    assert validate_definition(canonical) == defn
    assert canonical_document(validate_definition(canonical)) == canonical
    assert json.loads(json.dumps(canonical)) == canonical


def test_canonical_form_omits_defaults() -> None:
    doc = {
        "steps": [
            {
                "key": "a",
                "type": "agent",
                "agent": "x",
                "on_error": "fail",
                "join": "all",
                "depends_on": [],
                "inputs": {},
                "retry": {"count": 0, "delay_ms": 1000, "backoff": "exponential"},
            }
        ],
        "vars": {},
        "signals": [],
    }
    assert canonical_document(validate_definition(doc)) == {
        "steps": [{"key": "a", "type": "agent", "agent": "x", "retry": {}}]
    }


def test_full_example_in_docs_is_valid() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "workflow-definitions.md").read_text()
    block = docs.split("```json\n", 1)[1].split("```", 1)[0]
    assert validate_definition(json.loads(block)) == validate_definition(full_definition())


# -- shape errors ----------------------------------------------------------------------------


def test_unknown_fields_and_wrong_types_name_step_and_field() -> None:
    doc = full_definition()
    doc["steps"][0]["colour"] = "red"
    doc["steps"][0]["retry"]["tries"] = 3
    doc["steps"][2]["signal"]["name"] = 5
    doc["steps"][4]["timeout_ms"] = "5"
    doc["steps"][3]["body"]["agent"] = 7
    doc["bogus"] = True
    errors = errors_of(doc)
    assert "step 'fetch'" in find(errors, ("steps", 0, "colour")).message
    assert "unknown field" in find(errors, ("steps", 0, "colour")).message
    find(errors, ("steps", 0, "retry", "tries"))
    assert "step 'approve'" in find(errors, ("steps", 2, "signal", "name")).message
    assert "step 'draft'" in find(errors, ("steps", 4, "timeout_ms")).message
    assert "step 'summarize_one'" in find(errors, ("steps", 3, "body", "agent")).message
    find(errors, ("bogus",))
    assert len(errors) == 6


def test_type_and_per_type_requirements() -> None:
    errors = errors_of(
        {
            "steps": [
                {"key": "a", "type": "robot"},
                {"key": "b"},
                {"key": "c", "type": "agent"},
                {"key": "d", "type": "agent", "agent": "x", "component": {"kind": "llm"}},
                {"key": "e", "type": "wait", "duration_ms": 1, "until": "2030-01-01T00:00:00Z"},
                {"key": "f", "type": "wait"},
                {"key": "g", "type": "agent", "component": {"kind": "custom"}},
                {"key": "Bad-Key", "type": "wait", "duration_ms": 1},
                {"key": "h", "type": "condition", "branches": []},
            ]
        }
    )
    assert "type must be one of" in find(errors, ("steps", 0, "type")).message
    find(errors, ("steps", 1, "type"))
    assert "exactly one of agent or component" in find(errors, ("steps", 2)).message
    find(errors, ("steps", 3))
    assert "exactly one of duration_ms" in find(errors, ("steps", 4)).message
    find(errors, ("steps", 5))
    assert "custom component needs a name" in find(errors, ("steps", 6, "component")).message
    find(errors, ("steps", 7, "key"))
    find(errors, ("steps", 8, "branches"))


def test_document_must_be_plain_json_within_size() -> None:
    assert errors_of(["not", "a", "mapping"])[0].path == P  # type: ignore[arg-type]
    assert "plain JSON" in errors_of({"steps": [], "vars": {"x": {1, 2}}})[0].message
    assert "steps" in find(errors_of({"steps": []}), ("steps",)).path
    big = linear(3)
    big["vars"] = {"blob": "x" * 600_000}
    error = errors_of(big)[0]
    assert error.code == "limit" and "bytes" in error.message
    deep: Any = 1
    for _ in range(200):
        deep = [deep]
    assert "nested" in errors_of({"steps": [], "vars": {"d": deep}})[0].message


# -- meaning ---------------------------------------------------------------------------------


def test_duplicate_keys_across_nested_bodies() -> None:
    doc = parallel_definition()
    doc["steps"][1]["branches"]["right"]["steps"][1]["body"]["steps"][0]["key"] = "start"
    error = find(
        errors_of(doc),
        ("steps", 1, "branches", "right", "steps", 1, "body", "steps", 0, "key"),
    )
    assert "duplicate step key 'start'" in error.message and "steps[0]" in error.message


def test_unknown_and_cross_graph_dependencies() -> None:
    doc = parallel_definition()
    doc["steps"][2]["depends_on"] = ["fan", "ghost", "r1", "fan"]
    errors = errors_of(doc)
    assert "unknown step 'ghost'" in find(errors, ("steps", 2, "depends_on", 1)).message
    assert "another graph" in find(errors, ("steps", 2, "depends_on", 2)).message
    assert "twice" in find(errors, ("steps", 2, "depends_on", 3)).message


def test_cycles_are_reported_with_their_keys_in_order() -> None:
    doc = linear(4)
    doc["steps"][0]["depends_on"] = ["s3"]
    doc["steps"].append({"key": "me", "type": "wait", "duration_ms": 1, "depends_on": ["me"]})
    errors = errors_of(doc)
    cycle = [e for e in errors if e.code == "cycle"]
    assert len(cycle) == 2
    assert "s0 -> s3 -> s2 -> s1 -> s0" in find(errors, ("steps", 0, "depends_on", 0)).message
    assert "depends on itself" in find(errors, ("steps", 4, "depends_on", 0)).message


def test_when_needs_exactly_one_condition_with_that_label() -> None:
    doc = full_definition()
    doc["steps"][2]["when"] = "urgnet"
    doc["steps"][4]["when"] = "urgent"
    doc["steps"].append(
        {
            "key": "other",
            "type": "condition",
            "branches": [{"label": "urgent", "when": "{{ true }}"}],
        }
    )
    doc["steps"].append(
        {
            "key": "both",
            "type": "wait",
            "duration_ms": 1,
            "depends_on": ["triage", "other"],
            "when": "urgent",
        }
    )
    errors = errors_of(doc)
    message = find(errors, ("steps", 2, "when")).message
    assert "'urgnet'" in message and "urgent, normal" in message
    assert "no condition" in find(errors, ("steps", 4, "when")).message
    assert "several conditions" in find(errors, ("steps", 6, "when")).message


def test_duplicate_branch_labels() -> None:
    doc = {
        "steps": [
            {
                "key": "c",
                "type": "condition",
                "branches": [
                    {"label": "a", "when": "{{ true }}"},
                    {"label": "a", "when": "{{ false }}"},
                ],
            }
        ]
    }
    assert (
        "duplicate branch label"
        in find(errors_of(doc), ("steps", 0, "branches", 1, "label")).message
    )


def test_unknown_agents_are_checked_once_per_reference() -> None:
    asked: list[str] = []

    def resolve(ref: str) -> bool:
        asked.append(ref)
        return ref != "summarizer"

    doc = full_definition()
    doc["steps"].append({"key": "again", "type": "agent", "agent": "summarizer"})
    errors = errors_of(doc, resolve_agent=resolve)
    assert "unknown agent 'summarizer'" in find(errors, ("steps", 3, "body", "agent")).message
    find(errors, ("steps", 5, "agent"))
    assert sorted(asked) == ["reply-writer", "summarizer"]
    assert validate_definition(full_definition(), resolve_agent=lambda ref: True)


def test_invalid_expressions_name_step_and_field() -> None:
    doc = full_definition()
    doc["steps"][0]["component"]["config"]["headers"] = {"X": ["{{ input.( }}"]}
    doc["steps"][1]["branches"][0]["when"] = "{{ 1 + }}"
    doc["steps"][3]["over"] = "{{ 'a }}"
    doc["outputs"]["bad"] = "{{ nope }}"
    doc["queries"][0]["expression"] = "{{ len() }}"
    doc["steps"].append({"key": "w", "type": "wait", "until": "{{ ) }}"})
    errors = errors_of(doc)
    error = find(errors, ("steps", 0, "component", "config", "headers", "X", 0))
    assert error.code == "expression_syntax" and "step 'fetch'" in error.message
    assert "step 'triage'" in find(errors, ("steps", 1, "branches", 0, "when")).message
    find(errors, ("steps", 3, "over"))
    find(errors, ("outputs", "bad"))
    find(errors, ("queries", 0, "expression"))
    find(errors, ("steps", 5, "until"))


def test_expression_length_limit() -> None:
    doc = linear(1)
    doc["outputs"] = {"x": "{{ " + "1 + " * 100 + "1 }}"}
    error = find(
        errors_of(doc, limits=DefinitionLimits(max_expression_length=50)), ("outputs", "x")
    )
    assert error.code == "expression_limit"


def test_step_references_must_be_upstream() -> None:
    doc = full_definition()
    doc["steps"][0]["component"]["config"]["body"] = "{{ steps.draft.output }}"
    doc["steps"][2]["signal"]["timeout_ms"] = 5
    doc["steps"][4]["inputs"]["inner"] = "{{ steps.summarize_one.output }}"
    doc["steps"][4]["inputs"]["ghost"] = "{{ steps.ghost.output }}"
    doc["steps"][4]["inputs"]["dynamic"] = "{{ steps[input.k].output }}"
    doc["steps"][4]["inputs"]["own"] = "{{ steps.draft.status }}"
    doc["steps"][1]["branches"][0]["when"] = "{{ item }}"
    errors = errors_of(doc)
    message = find(errors, ("steps", 0, "component", "config", "body")).message
    assert "steps.draft is not upstream" in message and "depends_on" in message
    assert "inside the body of 'summarize'" in find(errors, ("steps", 4, "inputs", "inner")).message
    assert "unknown step" in find(errors, ("steps", 4, "inputs", "ghost")).message
    assert "followed by a step key" in find(errors, ("steps", 4, "inputs", "dynamic")).message
    assert "this step itself" in find(errors, ("steps", 4, "inputs", "own")).message
    assert "only inside a loop" in find(errors, ("steps", 1, "branches", 0, "when")).message


def test_bodies_see_outer_upstream_and_siblings_but_not_downstream() -> None:
    doc = parallel_definition()
    validate_definition(doc)  # inner reads item and steps.r1 (upstream of its loop)
    inner = doc["steps"][1]["branches"]["right"]["steps"][1]["body"]["steps"][0]
    inner["inputs"]["z"] = "{{ steps.until.output }}"
    inner["inputs"]["w"] = "{{ steps.start.output }}"
    doc["steps"][1]["branches"]["left"]["inputs"] = {"i": "{{ index }}"}
    errors = errors_of(doc)
    path = ("steps", 1, "branches", "right", "steps", 1, "body", "steps", 0, "inputs")
    assert "not upstream" in find(errors, (*path, "z")).message
    assert (
        "only inside a loop"
        in find(errors, ("steps", 1, "branches", "left", "inputs", "i")).message
    )
    assert len(errors) == 2


def test_signals_queries_and_work_queues() -> None:
    doc = full_definition()
    doc["steps"][2]["signal"]["name"] = "approvl"
    doc["work_queues"].append({"name": "notes", "signal": "nope", "query": "nope"})
    doc["work_queues"].append({"name": "more", "signal": "add_note"})
    doc["signals"].append({"name": "approval"})
    doc["queries"].append({"name": "progress", "expression": "{{ 1 }}"})
    errors = errors_of(doc)
    assert "undeclared signal 'approvl'" in find(errors, ("steps", 2, "signal", "name")).message
    find(errors, ("work_queues", 1, "name"))
    assert "undeclared signal" in find(errors, ("work_queues", 1, "signal")).message
    assert "undeclared query" in find(errors, ("work_queues", 1, "query")).message
    assert "already feeds" in find(errors, ("work_queues", 2, "signal")).message
    find(errors, ("signals", 2, "name"))
    find(errors, ("queries", 1, "name"))


def test_json_schemas_are_checked() -> None:
    doc = full_definition()
    doc["inputs"] = {"type": "array"}
    doc["signals"][0]["schema"] = {"type": "nonsense"}
    doc["work_queues"][0]["item_schema"] = {"properties": 3}
    errors = errors_of(doc)
    find(errors, ("inputs", "type"))
    assert any(e.path[: len(P) + 3] == (*P, "signals", 0, "schema") for e in errors)
    assert any(e.path[: len(P) + 3] == (*P, "work_queues", 0, "item_schema") for e in errors)


def test_limits_on_steps_and_nesting() -> None:
    errors = errors_of(linear(6), limits=DefinitionLimits(max_steps=5))
    assert find(errors, ("steps",)).code == "limit"
    body: dict[str, Any] = {"key": "leaf", "type": "wait", "duration_ms": 1}
    for depth in range(10):
        body = {"key": f"l{depth}", "type": "loop", "over": "{{ [1] }}", "body": body}
    errors = errors_of({"steps": [body]}, limits=DefinitionLimits(max_nesting=8))
    assert [e.code for e in errors] == ["limit"]
    assert "nested 9 bodies deep" in errors[0].message
    validate_definition({"steps": [body]}, limits=DefinitionLimits(max_nesting=10))


def test_retry_and_wait_sanity() -> None:
    doc = full_definition()
    doc["steps"][0]["retry"] = {"count": 2, "delay_ms": 1000, "max_delay_ms": 10}
    doc["steps"][4]["on_error"] = "retry"
    doc["steps"].append({"key": "later", "type": "wait", "until": "2030-01-01T09:00:00"})
    doc["steps"].append({"key": "much", "type": "wait", "until": "tomorrow"})
    doc["steps"][3]["max_items"] = 2
    errors = errors_of(doc)
    assert "less than delay_ms" in find(errors, ("steps", 0, "retry", "max_delay_ms")).message
    assert "retry policy" in find(errors, ("steps", 4, "on_error")).message
    assert "UTC offset" in find(errors, ("steps", 5, "until")).message
    find(errors, ("steps", 6, "until"))
    find(errors, ("steps", 3, "max_concurrency"))


def test_one_error_lists_every_problem() -> None:
    doc = linear(3)
    doc["steps"][0]["depends_on"] = ["ghost"]
    doc["steps"][1]["when"] = "x"
    doc["outputs"] = {"o": "{{ 1 + }}"}
    with pytest.raises(ValidationFailed) as info:
        validate_definition(doc, path_prefix=("definition",))
    assert len(info.value.errors) == 3
    assert all(e.path[0] == "definition" for e in info.value.errors)
    assert "and 2 more problems" in info.value.detail


# -- views -----------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [full_definition, parallel_definition, lambda: linear(4)])
def test_canvas_round_trip(make: Any) -> None:
    defn = validate_definition(make())
    canvas = to_canvas(defn)
    assert from_canvas(json.loads(json.dumps(canvas))) == canonical_document(defn)
    assert validate_definition(from_canvas(canvas)) == defn


def test_canvas_shape() -> None:
    canvas = to_canvas(validate_definition(full_definition()))
    nodes = {n["id"]: n for n in canvas["nodes"]}  # type: ignore[index, union-attr]
    assert nodes["fetch"]["position"] == {"x": 0.0, "y": 0.0}
    assert nodes["fetch"]["type"] == "agent"
    assert nodes["fetch"]["data"]["name"] == "Fetch ticket"
    assert "position" not in nodes["approve"]
    assert canvas["edges"][:2] == [
        {"id": "fetch->triage", "source": "fetch", "target": "triage"},
        {"id": "triage->approve", "source": "triage", "target": "approve", "label": "urgent"},
    ]
    assert canvas["signals"] and "steps" not in canvas


def test_canvas_auto_layout_fills_missing_positions() -> None:
    canvas = to_canvas(validate_definition(linear(3)), auto_layout=True)
    positions = [n["position"] for n in canvas["nodes"]]  # type: ignore[index, union-attr]
    assert positions == [{"x": 0.0, "y": 0.0}, {"x": 260.0, "y": 0.0}, {"x": 520.0, "y": 0.0}]


def test_from_canvas_accepts_ui_fields_and_reports_bad_structure() -> None:
    canvas: dict[str, Any] = {
        "nodes": [
            {
                "id": "a",
                "type": "condition",
                "data": {"branches": [{"label": "y", "when": "{{ true }}"}]},
                "position": {"x": 1, "y": 2},
                "selected": True,
                "width": 100,
            },
            {"id": "b", "type": "wait", "data": {"duration_ms": 5}},
        ],
        "edges": [{"id": "e", "source": "a", "target": "b", "label": "y", "animated": True}],
    }
    doc = from_canvas(canvas)
    assert doc["steps"][1] == {
        "key": "b",
        "type": "wait",
        "duration_ms": 5,
        "depends_on": ["a"],
        "when": "y",
    }  # type: ignore[index]
    validate_definition(doc)
    bad: dict[str, Any] = {
        "nodes": [
            {"id": "a", "type": "wait", "data": {"duration_ms": 1, "depends_on": []}, "colour": 1},
            {"id": "a", "type": "wait", "data": {}},
            "nope",
        ],
        "edges": [
            {"source": "a", "target": "zz"},
            {"source": "a", "target": "a", "label": "x"},
            {"source": "a", "target": "a"},
        ],
        "steps": [],
    }
    with pytest.raises(ValidationFailed) as info:
        from_canvas(bad)
    paths = {e.path for e in info.value.errors}
    assert {
        ("body", "nodes", 0, "colour"),
        ("body", "nodes", 0, "data", "depends_on"),
        ("body", "nodes", 1, "id"),
        ("body", "nodes", 2),
        ("body", "edges", 0, "target"),
        ("body", "edges", 1, "label"),
        ("body", "edges", 2),
        ("body", "steps"),
    } <= paths


def test_topological_order_and_agent_refs() -> None:
    doc = {
        "steps": [
            {"key": "d", "type": "agent", "agent": "z", "depends_on": ["b", "c"]},
            {"key": "c", "type": "wait", "duration_ms": 1, "depends_on": ["a"]},
            {"key": "b", "type": "wait", "duration_ms": 1},
            {"key": "a", "type": "wait", "duration_ms": 1},
        ]
    }
    assert topological_order(validate_definition(doc)) == ["b", "a", "c", "d"]
    assert agent_refs(validate_definition(parallel_definition())) == {"a", "b", "c"}
    assert agent_refs(validate_definition(full_definition())) == {"summarizer", "reply-writer"}


def test_materialized_steps() -> None:
    records = materialize_steps(validate_definition(full_definition()))
    assert [r.key for r in records] == [
        "fetch",
        "triage",
        "approve",
        "summarize",
        "summarize_one",
        "draft",
    ]
    assert [r.position for r in records] == list(range(6))
    fetch, triage, approve, summarize, one, draft = records
    assert fetch.config["component"]["kind"] == "api"  # type: ignore[index, call-overload]
    assert (fetch.retry_count, fetch.retry_delay_ms, fetch.retry_max_delay_ms) == (3, 500, 5000)
    assert fetch.retry_backoff == "exponential" and fetch.timeout_ms == 10000
    assert fetch.canvas_position == {"x": 0.0, "y": 0.0} and approve.canvas_position is None
    assert triage.config == {
        "branches": [
            {
                "label": "urgent",
                "when": "{{ input.urgent or steps.fetch.output.priority == 'high' }}",
            }
        ],
        "default": "normal",
    }
    assert approve.when_label == "urgent" and approve.depends_on == ["triage"]
    assert summarize.config["max_concurrency"] == 4 and summarize.config["max_items"] == 1000
    assert one.parent_key == "summarize" and one.agent_ref == "summarizer"
    assert one.inputs == {"text": "{{ item.body }}", "n": "{{ index }}"}
    assert draft.join == "any" and draft.on_error == "continue" and draft.retry_count == 0
    nested = materialize_steps(validate_definition(parallel_definition()))
    assert [(r.key, r.parent_key, r.parent_branch) for r in nested] == [
        ("start", None, None),
        ("fan", None, None),
        ("left_one", "fan", "left"),
        ("r1", "fan", "right"),
        ("r2", "fan", "right"),
        ("inner", "r2", None),
        ("until", None, None),
    ]


# -- schema ----------------------------------------------------------------------------------


def test_committed_schema_matches_the_models() -> None:
    assert SCHEMA_FILE.read_text() == definition_json_schema_text(), (
        "regenerate schemas/workflow-definition.schema.json (see turbocat.domain.definitions.schema)"
    )


def test_schema_is_valid_and_documents_every_field() -> None:
    from jsonschema import Draft202012Validator

    schema = definition_json_schema()
    assert schema["$id"] == "urn:turbocat:workflow-definition:v1"
    Draft202012Validator.check_schema(schema)
    missing: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for name, prop in (node.get("properties") or {}).items():
                if "title" not in prop or "description" not in prop:
                    missing.append(f"{where}/{name}")
            for key, child in node.items():
                walk(child, f"{where}/{key}")
        elif isinstance(node, list):
            for i, child in enumerate(node):
                walk(child, f"{where}/{i}")

    walk(schema, "")
    assert missing == []
    Draft202012Validator(schema).validate(full_definition())
    Draft202012Validator(schema).validate(parallel_definition())


def test_model_is_immutable_and_strict() -> None:
    defn = validate_definition(full_definition())
    with pytest.raises(Exception):  # noqa: B017, PT011 - pydantic's frozen-instance error
        defn.steps[0].key = "other"  # type: ignore[misc]
    doc = copy.deepcopy(full_definition())
    doc["steps"][0]["retry"]["jitter"] = "yes"
    find(errors_of(doc), ("steps", 0, "retry", "jitter"))
    assert isinstance(
        WorkflowDefinition.model_validate_json(json.dumps(linear(1))), WorkflowDefinition
    )


async def test_inputs_may_be_one_template_yielding_the_object() -> None:
    from turbocat.engine.runner import run_step

    doc = {
        "steps": [
            {"key": "a", "type": "agent", "inputs": "{{ input }}",
             "component": {"kind": "data", "config": {"query": "values"}}},
        ],
    }  # fmt: skip
    defn = validate_definition(doc)
    step = defn.steps[0]
    assert materialize_steps(defn)[0].inputs == "{{ input }}"
    ok = await run_step(step, {"input": {"values": [1, 2]}})
    assert ok.failure is None and ok.output == [1, 2] and ok.rendered_input == {"values": [1, 2]}
    bad = await run_step(step, {"input": [1]})  # not an object: the step fails, said so
    assert bad.failure is not None and bad.failure.type == "invalid_input"
    with pytest.raises(ValidationFailed, match="unknown step"):
        validate_definition({**doc, "steps": [{**doc["steps"][0], "inputs": "{{ steps.zz }}"}]})
