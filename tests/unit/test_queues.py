"""Which task queue applies to an organization, and what a queue may hold."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from turbocat.domain import queues
from turbocat.domain.errors import ValidationFailed

ORG = uuid.uuid4()
OTHER = uuid.uuid4()


@dataclass(frozen=True)
class Q:
    name: str
    organization_id: uuid.UUID | None
    max_concurrent_workflows: int = 100


def test_the_organizations_queue_wins_over_the_system_queue_in_any_order() -> None:
    system, own = Q("gpu", None, 5), Q("gpu", ORG, 2)
    assert queues.effective_queue([system, own], ORG, "gpu") is own
    assert queues.effective_queue([own, system], ORG, "gpu") is own
    assert queues.effective_queue([system, own], OTHER, "gpu") is system


def test_other_organizations_queues_never_apply() -> None:
    theirs = Q("gpu", OTHER)
    assert queues.effective_queue([theirs], ORG, "gpu") is None
    assert queues.effective_queue([theirs, Q("gpu", None)], ORG, "gpu") == Q("gpu", None)
    assert queues.effective_queue([], ORG, "gpu") is None
    assert queues.effective_queue([Q("cpu", ORG)], ORG, "gpu") is None


def test_effective_queues_by_name() -> None:
    rows = [Q("a", None), Q("a", ORG, 1), Q("b", None), Q("c", OTHER), Q("d", ORG)]
    got = queues.effective_queues(rows, ORG)
    assert got == {"a": Q("a", ORG, 1), "b": Q("b", None), "d": Q("d", ORG)}
    assert queues.effective_queues(list(reversed(rows)), ORG) == got


@pytest.mark.parametrize("name", ["default", "gpu-high", "a.b_c", "A" + "x" * 99])
def test_valid_names(name: str) -> None:
    assert queues.check_name(name) == name


@pytest.mark.parametrize("name", ["", "9lives", "-x", "has space", "x" * 101, "ü", "a/b"])
def test_invalid_names_name_the_field(name: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        queues.check_name(name)
    assert info.value.errors[0].path == ("body", "name")


@pytest.mark.parametrize("value", [1, 50, queues.MAX_LIMIT])
def test_valid_limits(value: int) -> None:
    assert queues.check_limit("max_concurrent_workflows", value) == value


@pytest.mark.parametrize("value", [0, -1, queues.MAX_LIMIT + 1, None, True, "5", 1.5])
def test_invalid_limits_name_the_field(value: object) -> None:
    with pytest.raises(ValidationFailed) as info:
        queues.check_limit("max_concurrent_activities", value)
    assert info.value.errors[0].path == ("body", "max_concurrent_activities")
