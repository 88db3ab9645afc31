"""The step graphs of a definition: walking nested bodies, ordering, and ``workflow_steps`` rows."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from turbocat.domain.definitions.model import (
    AgentStep,
    AnyStep,
    Backoff,
    LoopStep,
    ParallelStep,
    RetryPolicy,
    SubGraph,
    WorkflowDefinition,
)
from turbocat.domain.expressions import JSONValue

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Graph:
    """One graph of sibling steps: the top level, or a loop/parallel body."""

    steps: tuple[AnyStep, ...]
    paths: tuple[Path, ...]
    """Path of each step inside the document (without any prefix)."""
    parent: str | None = None
    """Key of the loop or parallel step owning this body; none at the top level."""
    branch: str | None = None
    """Parallel branch label of this body."""
    depth: int = 0
    """0 at the top level, 1 inside one body, and so on."""
    in_loop: bool = False
    """Whether item and index exist here (some enclosing step is a loop)."""
    output_path: Path | None = None
    """Path of the sub-graph's output expression, if it is a sub-graph."""
    sub_graph: SubGraph | None = field(default=None, compare=False)


def body_graph(
    body: AnyStep | SubGraph, path: Path, owner: AnyStep, depth: int, in_loop: bool
) -> Graph:
    branch = path[-1] if isinstance(owner, ParallelStep) and isinstance(path[-1], str) else None
    if isinstance(body, SubGraph):
        return Graph(
            steps=body.steps,
            paths=tuple((*path, "steps", i) for i in range(len(body.steps))),
            parent=owner.key,
            branch=branch,
            depth=depth,
            in_loop=in_loop,
            output_path=(*path, "output"),
            sub_graph=body,
        )
    return Graph((body,), (path,), owner.key, branch, depth, in_loop)


def child_graphs(step: AnyStep, path: Path, depth: int, in_loop: bool) -> list[Graph]:
    """The bodies directly inside ``step`` (a loop has one, a parallel step one per branch)."""
    if isinstance(step, LoopStep):
        return [body_graph(step.body, (*path, "body"), step, depth + 1, True)]
    if isinstance(step, ParallelStep):
        return [
            body_graph(body, (*path, "branches", label), step, depth + 1, in_loop)
            for label, body in step.branches.items()
        ]
    return []


def top_graph(defn: WorkflowDefinition) -> Graph:
    return Graph(defn.steps, tuple(("steps", i) for i in range(len(defn.steps))))


def walk_graphs(defn: WorkflowDefinition) -> Iterator[Graph]:
    """Every graph, outermost first (depth-first in document order)."""
    stack = [top_graph(defn)]
    while stack:
        graph = stack.pop()
        yield graph
        children: list[Graph] = []
        for step, path in zip(graph.steps, graph.paths, strict=True):
            children.extend(child_graphs(step, path, graph.depth, graph.in_loop))
        stack.extend(reversed(children))


def all_steps(defn: WorkflowDefinition) -> Iterator[tuple[AnyStep, Path, Graph]]:
    for graph in walk_graphs(defn):
        for step, path in zip(graph.steps, graph.paths, strict=True):
            yield step, path, graph


def order_steps(steps: Sequence[AnyStep]) -> list[AnyStep]:
    """Topological order (Kahn), ties broken by document order; steps on a cycle come last."""
    keys = {s.key for s in steps}
    waiting = {s.key: len({d for d in s.depends_on if d in keys}) for s in steps}
    dependents: dict[str, list[str]] = {s.key: [] for s in steps}
    for s in steps:
        for d in dict.fromkeys(s.depends_on):
            if d in keys:
                dependents[d].append(s.key)
    index = {s.key: i for i, s in enumerate(steps)}
    by_key = {s.key: s for s in steps}
    ready = sorted((k for k, n in waiting.items() if n == 0), key=index.__getitem__)
    out: list[AnyStep] = []
    while ready:
        key = ready.pop(0)
        out.append(by_key[key])
        for nxt in dependents[key]:
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                ready.append(nxt)
                ready.sort(key=index.__getitem__)
    done = {s.key for s in out}
    return out + [s for s in steps if s.key not in done]


def topological_order(defn: WorkflowDefinition) -> list[str]:
    """Top-level step keys, dependencies first, ties in document order."""
    return [s.key for s in order_steps(defn.steps)]


def agent_refs(defn: WorkflowDefinition) -> set[str]:
    """Every saved-agent reference (``agent``) in the definition, nested bodies included."""
    return {s.agent for s, _, _ in all_steps(defn) if isinstance(s, AgentStep) and s.agent}


@dataclass(frozen=True)
class StepRecord:
    """One ``workflow_steps`` row materialized from a definition."""

    key: str
    name: str | None
    type: str
    position: int
    """Index in execution order: top-level steps topologically, each body right after its
    owner."""
    canvas_position: dict[str, float] | None
    config: dict[str, JSONValue]
    """The type-specific part of the step (component, branches, over/body, wait target...)."""
    inputs: dict[str, JSONValue] | str
    """An agent step's inputs by name, or the one template yielding them."""
    depends_on: list[str]
    when_label: str | None
    join: str
    retry_count: int
    retry_delay_ms: int
    retry_backoff: str
    retry_max_delay_ms: int | None
    retry_jitter: bool
    timeout_ms: int | None
    on_error: str
    agent_ref: str | None
    task_queue: str | None
    description: str | None
    parent_key: str | None
    """The loop or parallel step whose body holds this step; none at the top level."""
    parent_branch: str | None
    """The parallel branch label holding this step."""


_COMMON = frozenset(
    {"key", "type", "name", "description", "depends_on", "when", "join", "position", "retry"}
    | {"timeout_ms", "on_error", "task_queue", "agent", "inputs"}
)


def _config(step: AnyStep) -> dict[str, JSONValue]:
    dumped = step.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    config = {k: v for k, v in dumped.items() if k not in _COMMON}
    if isinstance(step, LoopStep):
        config.setdefault("max_concurrency", step.max_concurrency)
        config.setdefault("max_items", step.max_items)
    return config


def _inputs(step: AnyStep) -> dict[str, JSONValue] | str:
    if not isinstance(step, AgentStep):
        return {}
    return step.inputs if isinstance(step.inputs, str) else dict(step.inputs)


def _record(step: AnyStep, position: int, graph: Graph) -> StepRecord:
    retry = step.retry or RetryPolicy()
    return StepRecord(
        key=step.key,
        name=step.name,
        type=step.type,
        position=position,
        canvas_position=step.position.model_dump() if step.position else None,
        config=_config(step),
        inputs=_inputs(step),
        depends_on=list(step.depends_on),
        when_label=step.when,
        join=step.join.value,
        retry_count=retry.count,
        retry_delay_ms=retry.delay_ms,
        retry_backoff=Backoff(retry.backoff).value,
        retry_max_delay_ms=retry.max_delay_ms,
        retry_jitter=retry.jitter,
        timeout_ms=step.timeout_ms,
        on_error=step.on_error.value,
        agent_ref=step.agent if isinstance(step, AgentStep) else None,
        task_queue=step.task_queue,
        description=step.description,
        parent_key=graph.parent,
        parent_branch=graph.branch,
    )


def materialize_steps(defn: WorkflowDefinition) -> list[StepRecord]:
    """One record per step, nested ones included, in execution order."""
    out: list[StepRecord] = []

    def visit(graph: Graph) -> None:
        paths = {s.key: p for s, p in zip(graph.steps, graph.paths, strict=True)}
        for step in order_steps(graph.steps):
            out.append(_record(step, len(out), graph))
            for child in child_graphs(step, paths[step.key], graph.depth, graph.in_loop):
                visit(child)

    visit(top_graph(defn))
    return out


__all__ = [
    "Graph",
    "StepRecord",
    "agent_refs",
    "all_steps",
    "materialize_steps",
    "order_steps",
    "topological_order",
    "walk_graphs",
]
