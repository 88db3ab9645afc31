"""Work queues in the pure domain: item order, dedupe keys, priorities, room, and the wait step's
``queue`` option in definitions."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.unit.test_definitions import errors_of, find
from turbocat.domain import work_queues
from turbocat.domain.definitions import WorkQueueDef, validate_definition
from turbocat.domain.enums import WorkQueueOrder
from turbocat.domain.errors import Conflict, ValidationFailed


def queue(**fields: Any) -> WorkQueueDef:
    return WorkQueueDef.model_validate_json(json.dumps({"name": "jobs", "signal": "job", **fields}))


def leave_order(order: WorkQueueOrder, items: list[tuple[str, int]]) -> list[str]:
    """Names of (name, priority) items, arrived in list order, in the order they leave."""
    arrived = [(name, priority, seq) for seq, (name, priority) in enumerate(items, start=1)]
    ranked = sorted(arrived, key=lambda i: work_queues.sort_key(order, i[1], i[2]))
    return [name for name, _, _ in ranked]


ARRIVALS = [("a", 0), ("b", 5), ("c", 0), ("d", 5), ("e", -1)]


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        (WorkQueueOrder.FIFO, ["a", "b", "c", "d", "e"]),
        (WorkQueueOrder.LIFO, ["e", "d", "c", "b", "a"]),
        (WorkQueueOrder.PRIORITY, ["b", "d", "a", "c", "e"]),  # higher first, ties by arrival
    ],
)
def test_items_leave_in_queue_order(order: WorkQueueOrder, expected: list[str]) -> None:
    assert leave_order(order, ARRIVALS) == expected


def test_ordering_names_the_columns_the_database_sorts_by() -> None:
    assert work_queues.ordering(WorkQueueOrder.FIFO) == (("seq", False),)
    assert work_queues.ordering(WorkQueueOrder.LIFO) == (("seq", True),)
    assert work_queues.ordering(WorkQueueOrder.PRIORITY) == (("priority", True), ("seq", False))


def test_dedupe_key_is_the_sha256_of_canonical_json() -> None:
    key = work_queues.dedupe_key({"b": [1, 2.0], "a": "é"})
    assert key == work_queues.dedupe_key({"a": "é", "b": [1.0, 2]})
    assert work_queues.canonical_json({"b": [1, 2.0], "a": "é"}) == '{"a":"é","b":[1,2]}'
    assert len(key) == 64 and int(key, 16) >= 0
    assert key != work_queues.dedupe_key({"a": "é", "b": [2, 1]})
    assert work_queues.dedupe_key(None) != work_queues.dedupe_key("null")
    assert work_queues.dedupe_key(True) != work_queues.dedupe_key(1)


def test_priority_is_a_whole_number_defaulting_to_zero() -> None:
    assert work_queues.priority_of({"priority": 7}) == 7
    assert work_queues.priority_of({"priority": -2.0}) == -2
    assert work_queues.priority_of({"priority": None}) == 0
    assert work_queues.priority_of({"other": 1}) == 0
    assert work_queues.priority_of(["priority"]) == 0
    for bad, message in [
        ("high", "must be a number"),
        (True, "must be a number"),
        (1.5, "whole number"),
        (2**31, "between"),
    ]:
        with pytest.raises(ValidationFailed) as info:
            work_queues.priority_of({"priority": bad}, ("body", "payload"))
        assert info.value.errors[0].path == ("body", "payload", "priority")
        assert message in info.value.detail


def test_new_item_checks_the_schema_and_sets_priority_and_key_only_when_used() -> None:
    plain = work_queues.new_item(queue(), {"priority": 9}, ("payload",))
    assert plain == work_queues.NewItem({"priority": 9}, 0, None)
    ranked = work_queues.new_item(
        queue(order="priority", deduplicate=True), {"priority": 9}, ("payload",)
    )
    assert ranked.priority == 9
    assert ranked.dedupe_key == work_queues.dedupe_key({"priority": 9})
    typed = queue(item_schema={"type": "object", "properties": {"n": {"type": "integer"}}})
    with pytest.raises(ValidationFailed) as info:
        work_queues.new_item(typed, {"n": "x"}, ("body", "payload"))
    assert info.value.errors[0].path == ("body", "payload", "n")


def test_a_full_queue_refuses_more() -> None:
    work_queues.check_room(queue(), 10_000)
    work_queues.check_room(queue(max_size=2), 1)
    with pytest.raises(Conflict, match=r"'jobs' is full.*maximum of 2") as info:
        work_queues.check_room(queue(max_size=2), 2)
    assert isinstance(info.value, work_queues.QueueFull)
    assert (info.value.code, info.value.queue, info.value.max_size) == ("queue_full", "jobs", 2)


def consumer_definition(**wait: Any) -> dict[str, Any]:
    return {
        "signals": [{"name": "job"}],
        "queries": [{"name": "backlog"}],
        "work_queues": [{"name": "jobs", "signal": "job", "query": "backlog"}],
        "steps": [{"key": "take", "type": "wait", "queue": {"name": "jobs", **wait}}],
    }


def test_wait_step_takes_from_a_declared_queue() -> None:
    defn = validate_definition(consumer_definition(max_items=5, timeout_ms=1000))
    step = defn.steps[0]
    assert step.type == "wait" and step.queue is not None
    assert (step.queue.name, step.queue.max_items, step.queue.timeout_ms) == ("jobs", 5, 1000)
    assert defn.queries[0].expression is None
    default = validate_definition(consumer_definition()).steps[0]
    assert default.type == "wait" and default.queue is not None and default.queue.max_items == 1


def test_wait_step_queue_is_checked() -> None:
    doc = consumer_definition()
    doc["steps"][0]["queue"]["name"] = "jbos"
    error = find(errors_of(doc), ("steps", 0, "queue", "name"))
    assert error.code == "unknown_queue" and "undeclared work queue 'jbos'" in error.message
    assert "(declared: jobs)" in error.message

    doc = consumer_definition(max_items=0)
    find(errors_of(doc), ("steps", 0, "queue", "max_items"))

    doc = consumer_definition()
    doc["steps"][0]["signal"] = {"name": "job"}
    message = find(errors_of(doc), ("steps", 0)).message
    assert "exactly one of duration_ms, until, signal or queue" in message


def test_only_a_work_queues_query_may_omit_its_expression() -> None:
    doc = consumer_definition()
    doc["queries"].append({"name": "loose"})
    error = find(errors_of(doc), ("queries", 1, "expression"))
    assert "needs an expression" in error.message
