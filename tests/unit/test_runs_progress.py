"""The engine's pure rules: state machines, results, retry delays, graph progress."""

from __future__ import annotations

import random

import pytest

from turbocat.domain.enums import ExecutionResult, ExecutionStatus, OnError, StepStatus
from turbocat.domain.errors import InvalidTransition
from turbocat.domain.progress import (
    Node,
    State,
    advance,
    dependents,
    finished,
    neighbourhood,
    roots,
)
from turbocat.domain.runs import Retry, execution_result, execution_transition, step_transition

S = StepStatus


def test_step_transitions() -> None:
    assert step_transition(S.PENDING, S.READY) == S.READY
    assert step_transition(S.RUNNING, S.READY) == S.READY  # lease expired: run again
    for terminal in (S.COMPLETED, S.FAILED, S.SKIPPED, S.CANCELLED):
        with pytest.raises(InvalidTransition):
            step_transition(terminal, S.READY)
    with pytest.raises(InvalidTransition):
        step_transition(S.PENDING, S.COMPLETED)


def test_execution_transitions() -> None:
    assert execution_transition(ExecutionStatus.RUNNING, ExecutionStatus.WAITING)
    with pytest.raises(InvalidTransition):
        execution_transition(ExecutionStatus.COMPLETED, ExecutionStatus.RUNNING)


@pytest.mark.parametrize(
    ("outcomes", "cancelled", "result"),
    [
        ([S.COMPLETED, S.SKIPPED], False, ExecutionResult.SUCCESS),
        ([S.COMPLETED, S.FAILED], False, ExecutionResult.PARTIAL),
        ([S.FAILED, S.SKIPPED], False, ExecutionResult.FAILURE),
        ([S.COMPLETED], True, ExecutionResult.CANCELLED),
        ([], False, ExecutionResult.SUCCESS),
    ],
)
def test_execution_result(
    outcomes: list[StepStatus], cancelled: bool, result: ExecutionResult
) -> None:
    assert execution_result(outcomes, cancelled=cancelled) == result


def test_retry_delays_exponential_capped_and_jittered() -> None:
    policy = Retry(count=4, delay_ms=100, exponential=True, max_delay_ms=350, jitter=False)
    assert [policy.delay_before(a, 0.5) for a in range(1, 7)] == [None, 100, 200, 350, 350, None]
    fixed = Retry(count=2, delay_ms=100, exponential=False, jitter=False)
    assert [fixed.delay_before(a, 0.0) for a in (2, 3)] == [100, 100]
    jittered = Retry(count=1, delay_ms=1000, jitter=True)
    assert jittered.delay_before(2, 0.0) == 800 and jittered.delay_before(2, 0.999999) == 1200
    assert jittered.delay_before(2, 0.5) == 1000
    assert Retry(count=0).delay_before(2, 0.5) is None


def graph(*nodes: Node) -> dict[str, Node]:
    return {n.key: n for n in nodes}


def states(**status: StepStatus | tuple[StepStatus, str]) -> dict[str, State]:
    return {k: State(*v) if isinstance(v, tuple) else State(v) for k, v in status.items()}


def test_sequential_chain_advances_one_at_a_time() -> None:
    g = graph(Node("a"), Node("b", ("a",)), Node("c", ("b",)))
    assert roots(g) == ["a"]
    assert advance(g, states(a=S.RUNNING)).ready == []
    d = advance(g, states(a=S.COMPLETED))
    assert d.ready == ["b"] and d.skipped == []
    assert not finished(states(a=S.COMPLETED, b=S.COMPLETED), g)
    assert finished(states(a=S.COMPLETED, b=S.COMPLETED, c=S.SKIPPED), g)


def test_condition_branches_and_skip_propagation() -> None:
    g = graph(
        Node("cond"),
        Node("yes", ("cond",), when="yes"),
        Node("no", ("cond",), when="no"),
        Node("after_no", ("no",)),
        Node("join", ("yes", "no"), join_any=True),
    )
    d = advance(g, states(cond=(S.COMPLETED, "yes")))
    assert d.ready == ["yes"]
    assert d.skipped == ["no", "after_no"]  # skips propagate in one pass
    d = advance(
        g, states(cond=(S.COMPLETED, "yes"), yes=S.COMPLETED, no=S.SKIPPED, after_no=S.SKIPPED)
    )
    assert d.ready == ["join"]


def test_join_all_skips_when_a_branch_was_not_taken() -> None:
    g = graph(
        Node("cond"),
        Node("a", ("cond",), when="a"),
        Node("b", ("cond",), when="b"),
        Node("all", ("a", "b")),
    )
    d = advance(g, states(cond=(S.COMPLETED, "a")))
    assert d.ready == ["a"] and set(d.skipped) == {"b", "all"}


def test_on_error_continue_lets_dependents_run() -> None:
    g = graph(
        Node("flaky", on_error=OnError.CONTINUE),
        Node("next", ("flaky",)),
        Node("strict"),
        Node("after", ("strict",)),
    )
    d = advance(g, states(flaky=S.FAILED, strict=S.FAILED))
    assert d.ready == ["next"] and d.skipped == ["after"]


def test_join_any_waits_for_every_dependency() -> None:
    g = graph(Node("a"), Node("b"), Node("any", ("a", "b"), join_any=True))
    assert advance(g, states(a=S.COMPLETED, b=S.RUNNING)).ready == []
    assert advance(g, states(a=S.COMPLETED, b=S.FAILED)).ready == ["any"]
    assert advance(g, states(a=S.SKIPPED, b=S.CANCELLED)).skipped == ["any"]


def test_dependents_reverse_depends_on_across_graphs() -> None:
    top = graph(Node("a"), Node("b", ("a",)), Node("c", ("a", "b")))
    body = graph(Node("x"), Node("y", ("x",)))
    assert dependents([top, body]) == {"a": ("b", "c"), "b": ("c",), "x": ("y",)}


def _random_graph(rng: random.Random, size: int) -> dict[str, Node]:
    nodes: list[Node] = []
    for i in range(size):
        earlier = [n.key for n in nodes]
        deps = tuple(rng.sample(earlier, rng.randint(0, min(3, len(earlier)))))
        when = rng.choice([None, None, "a", "b"]) if deps and deps[0].startswith("c") else None
        kind = "c" if rng.random() < 0.25 else "s"  # c: a condition, choosing branch a or b
        nodes.append(
            Node(
                f"{kind}{i}",
                deps,
                when=when,
                join_any=rng.random() < 0.3,
                on_error=rng.choice([OnError.FAIL, OnError.CONTINUE]),
            )
        )
    return graph(*nodes)


@pytest.mark.parametrize("seed", range(300))
def test_deciding_the_neighbourhood_decides_what_the_whole_graph_would(seed: int) -> None:
    """Runs a random graph step by step as the engine does. Whenever a step ends, advance over
    the ended step's dependents, seeing only the states ``neighbourhood`` names, must decide
    exactly what advance over the whole graph decides, unless it skips something (then the
    engine reads the whole frame) and it must skip something whenever the whole graph does."""
    rng = random.Random(seed)
    g = _random_graph(rng, rng.randint(2, 12))
    current = {key: State() for key in g}
    for key in advance(g, current).ready:
        current[key] = State(S.READY)
    for key in roots(g):
        current[key] = State(S.READY)
    while True:
        runnable = [k for k, s in current.items() if s.status == S.READY]
        if not runnable:
            break
        ended = rng.choice(runnable)
        if rng.random() < 0.3:
            current[ended] = State(S.FAILED)
        else:
            current[ended] = State(S.COMPLETED, rng.choice("ab") if ended[0] == "c" else None)
        whole = advance(g, current)
        deciding, reads = neighbourhood(g, dependents([g]).get(ended, ()))
        part = advance(g, {k: current[k] for k in reads}, deciding)
        if part.skipped:
            assert whole.skipped
        else:
            assert not whole.skipped and part == whole, (ended, current)
        for key in whole.ready:
            current[key] = State(S.READY)
        for key in whole.skipped:
            current[key] = State(S.SKIPPED)
    assert finished(current, g)
