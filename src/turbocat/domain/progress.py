"""How a workflow graph moves forward: which pending steps become ready, which are skipped.

Join semantics (also in the definitions docs):

- A dependency *succeeded* when it completed, or failed with ``on_error: continue`` (its
  dependents run and see its error).
- A dependency edge is *dead* when the dependency was skipped or cancelled, failed with
  ``on_error`` fail/retry, or is a condition whose chosen branch is not the step's ``when``.
- ``join: all`` (default): the step is ready when every edge succeeded; skipped as soon as one
  edge is dead.
- ``join: any``: the step waits until every dependency finished; it is ready when at least one
  edge succeeded, else skipped.

Skips propagate: a skipped step can make its dependents skipped in the same pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from turbocat.domain.enums import OnError, StepStatus

S = StepStatus


class Edge(Enum):
    OK = "ok"
    DEAD = "dead"
    OPEN = "open"


@dataclass(frozen=True)
class Node:
    """A step as the graph sees it."""

    key: str
    depends_on: tuple[str, ...] = ()
    when: str | None = None
    join_any: bool = False
    on_error: OnError = OnError.FAIL


@dataclass(frozen=True)
class State:
    """What has happened to a step so far; ``branch`` is a completed condition's label."""

    status: StepStatus = S.PENDING
    branch: str | None = None


@dataclass
class Decision:
    ready: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _edge(node: Node, dep: Node, state: State) -> Edge:
    match state.status:
        case S.COMPLETED:
            if node.when is not None and state.branch is not None and state.branch != node.when:
                return Edge.DEAD
            return Edge.OK
        case S.FAILED:
            return Edge.OK if dep.on_error == OnError.CONTINUE else Edge.DEAD
        case S.SKIPPED | S.CANCELLED:
            return Edge.DEAD
        case S.PENDING | S.READY | S.RUNNING | S.WAITING:
            return Edge.OPEN


def _verdict(node: Node, edges: list[Edge]) -> StepStatus | None:
    if node.join_any:
        if Edge.OPEN in edges:
            return None
        return S.READY if Edge.OK in edges or not edges else S.SKIPPED
    if Edge.DEAD in edges:
        return S.SKIPPED
    return None if Edge.OPEN in edges else S.READY


def advance(
    nodes: Mapping[str, Node], states: Mapping[str, State], only: Iterable[str] | None = None
) -> Decision:
    """The pending steps that can now be decided (every dependency must be a known node);
    among ``only`` when given (see ``neighbourhood``)."""
    current = dict(states)
    decision = Decision()
    candidates = nodes if only is None else {key: nodes[key] for key in only}
    changed = True
    while changed:
        changed = False
        for key, node in candidates.items():
            if current.get(key, State()).status != S.PENDING:
                continue
            edges = [_edge(node, nodes[d], current.get(d, State())) for d in node.depends_on]
            verdict = _verdict(node, edges)
            if verdict is None:
                continue
            current[key] = State(verdict)
            (decision.ready if verdict == S.READY else decision.skipped).append(key)
            changed = changed or verdict == S.SKIPPED
    return decision


def dependents(graphs: Iterable[Mapping[str, Node]]) -> dict[str, tuple[str, ...]]:
    """For each step, the steps of its graph that depend on it (keys are unique across
    graphs), in graph order."""
    found: dict[str, list[str]] = {}
    for nodes in graphs:
        for key, node in nodes.items():
            for dep in node.depends_on:
                found.setdefault(dep, []).append(key)
    return {key: tuple(keys) for key, keys in found.items()}


def neighbourhood(nodes: Mapping[str, Node], after: Iterable[str]) -> tuple[list[str], set[str]]:
    """What deciding the dependents ``after`` of a step that just ended takes: those keys
    (for ``advance``'s ``only``), and the keys whose states their edges read (theirs and
    their dependencies').

    Only the dependents of a step that changed can become decidable, so ``advance`` over them
    decides what it would decide over the whole graph, as long as it skips nothing: a skip
    makes the skipped step's own dependents decidable, and then the whole graph is needed."""
    deciding = list(after)
    reads = set(deciding)
    for key in deciding:
        reads.update(nodes[key].depends_on)
    return deciding, reads


def roots(nodes: Mapping[str, Node]) -> list[str]:
    """Steps with no dependencies: ready as soon as the execution starts."""
    return [key for key, node in nodes.items() if not node.depends_on]


def finished(states: Mapping[str, State], nodes: Mapping[str, Node]) -> bool:
    terminal = {S.COMPLETED, S.FAILED, S.SKIPPED, S.CANCELLED}
    return all(states.get(key, State()).status in terminal for key in nodes)
