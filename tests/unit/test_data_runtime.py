"""The data kind: JMESPath, list operations and mappings, deterministic and side-effect free."""

from __future__ import annotations

import pytest

from turbocat.engine.agents import data

ORDERS = [
    {"id": 1, "customer": "ada", "total": 250, "region": "eu"},
    {"id": 2, "customer": "bob", "total": 20, "region": "us"},
    {"id": 3, "customer": "ada", "total": 101, "region": "eu"},
]
CTX = {"input": {"threshold": 100}, "steps": {}, "vars": {"currency": "EUR"}}


def run(config: dict, inputs: dict | None = None) -> object:
    return data.run(config, {"data": ORDERS} if inputs is None else inputs, CTX)


def test_query_and_operations() -> None:
    assert run({"query": "[?total > `100`].id"}) == [1, 3]
    assert run(
        {
            "operations": [
                {"op": "filter", "where": "item.total > input.threshold"},
                {"op": "map", "by": "item.id"},
            ]
        }
    ) == [1, 3]
    assert run(
        {
            "operations": [
                {"op": "sort", "by": "item.total", "desc": True},
                {"op": "limit", "count": 2},
                {"op": "map", "by": "item.customer"},
            ]
        }
    ) == ["ada", "ada"]
    assert run({"operations": [{"op": "group", "by": "item.region"}]}) == {
        "eu": [ORDERS[0], ORDERS[2]],
        "us": [ORDERS[1]],
    }
    assert run(
        {"operations": [{"op": "unique", "by": "item.customer"}, {"op": "map", "by": "item.id"}]}
    ) == [1, 2]
    assert run({"operations": [{"op": "aggregate", "by": "item.total"}]}) == {
        "count": 3,
        "sum": 371,
        "avg": 371 / 3,
        "min": 20,
        "max": 250,
    }


def test_mapping_renders_over_the_workflow_context() -> None:
    assert run(
        {"mapping": {"currency": "{{ vars.currency }}", "limit": "{{ input.threshold }}"}}
    ) == {"currency": "EUR", "limit": 100}


def test_whole_input_is_the_subject_without_data() -> None:
    assert data.run({"query": "a.b"}, {"a": {"b": 7}}, CTX) == 7


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"query": "[?"}, "JMESPath"),
        ({"operations": [{"op": "aggregate", "by": "item.customer"}]}, "numbers"),
    ],
)
def test_clear_errors(config: dict, message: str) -> None:
    with pytest.raises(data.DataStepError, match=message):
        run(config)


def test_operations_need_a_list() -> None:
    with pytest.raises(data.DataStepError, match="needs a list"):
        data.run({"operations": [{"op": "limit", "count": 1}]}, {"data": {"a": 1}}, CTX)


async def test_a_config_that_does_not_fit_fails_for_good_naming_the_field() -> None:
    import uuid

    from turbocat.engine.agents.base import AgentError, Invocation, RecordingServices

    call = Invocation(
        kind="data", config={"operations": [{"op": "limit"}]}, inputs={}, context={},
        services=RecordingServices(), idempotency_key="e:s:0", execution_id=uuid.uuid4(),
        organization_id=uuid.uuid4(), step_key="s",
    )  # fmt: skip
    with pytest.raises(AgentError) as caught:
        await data.invoke(call)
    assert caught.value.kind == "invalid_config" and not caught.value.retryable
    assert "operations.0" in caught.value.message
