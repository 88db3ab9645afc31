"""Frame scopes: built, parsed and walked without ambiguity."""

from __future__ import annotations

from turbocat.domain.enums import ExecutionResult
from turbocat.domain.runs import result_of
from turbocat.domain.scopes import (
    ancestors,
    innermost_loop,
    loop_indices,
    loop_scope,
    parallel_scope,
)


def test_nested_scopes_concatenate_and_parse_back() -> None:
    outer = loop_scope("", "rows", 3)
    fan = parallel_scope(outer, "fan")
    inner = loop_scope(fan, "cols", 12)
    assert inner == "/rows[3]/fan[]/cols[12]"
    assert ancestors(inner) == ["", "/rows[3]", "/rows[3]/fan[]", inner]
    assert loop_indices(inner) == [3, 12]
    assert innermost_loop(inner) == ("/rows[3]/fan[]", "cols", 12)
    assert innermost_loop(fan) == ("", "rows", 3)
    assert innermost_loop(parallel_scope("", "fan")) is None
    assert ancestors("") == [""] and loop_indices("") == []


def test_keys_sharing_a_prefix_stay_apart() -> None:
    # "/a[1]" must not be read as a prefix of "/ab[1]": brackets end every segment
    assert ancestors("/ab[1]/a[2]") == ["", "/ab[1]", "/ab[1]/a[2]"]
    assert innermost_loop("/a_b[10]") == ("", "a_b", 10)


def test_results_come_from_what_failed_and_what_completed() -> None:
    assert result_of(failed=False, completed=True) == ExecutionResult.SUCCESS
    assert result_of(failed=True, completed=True) == ExecutionResult.PARTIAL
    assert result_of(failed=True, completed=False) == ExecutionResult.FAILURE
