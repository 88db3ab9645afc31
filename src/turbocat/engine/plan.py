"""A workflow version as the engine runs it: validated definition, step specs, and its graphs.

A plan knows every step, nested ones included (keys are unique across a definition), and for
each *owner* (None for the top level, else a loop or parallel step) the graph of steps that
run together in one frame of it. Plans are cached per version row and its ``updated_at``: a
version that has run never changes, and an edit before its first run changes ``updated_at``.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db.models import WorkflowRow, WorkflowStepRow
from turbocat.domain import definitions, progress
from turbocat.domain.definitions import (
    AgentStep,
    AnyStep,
    LoopStep,
    ParallelStep,
    SubGraph,
    WaitStep,
    WorkflowDefinition,
    WorkQueueDef,
)
from turbocat.domain.definitions.graph import walk_graphs
from turbocat.domain.enums import OnError
from turbocat.domain.expressions import ROOTS, ExpressionError, compile_template, references
from turbocat.domain.plans import Quotas

CONTAINERS = (LoopStep, ParallelStep)
"""Steps that run a body of other steps rather than work of their own."""

_UNBOUNDED = definitions.DefinitionLimits(
    max_steps=1_000_000, max_nesting=1_000, max_bytes=1 << 40, max_expression_length=1 << 20
)


@dataclass(frozen=True)
class Body:
    """One body of a container: a loop's body, or one branch of a parallel step."""

    label: str | None
    keys: tuple[str, ...]
    graph: SubGraph | None
    """The sub-graph (None when the body is a single step)."""


@dataclass(frozen=True)
class Plan:
    workflow_id: uuid.UUID
    definition: WorkflowDefinition
    steps: dict[str, AnyStep]
    """Every step by key, nested ones included."""
    nodes: dict[str | None, dict[str, progress.Node]]
    """The graph of each owner: None (top level) or a container's key."""
    owner: dict[str, str | None]
    bodies: dict[str, tuple[Body, ...]]
    """The bodies of each container step."""
    task_queue: str
    has_signal_waits: bool = False
    """Some wait step waits for a signal or for items of a work queue (which signals feed)."""
    agent_ids: dict[str, uuid.UUID] = field(default_factory=dict)
    step_queues: dict[str, str] = field(default_factory=dict)
    """Task queues resolved on save: a custom step's component queue (``workflow_steps``)."""
    resolved: bool = False
    """``agent_ids`` and ``step_queues`` were read from the version's step rows."""
    work_queues: dict[str, WorkQueueDef] = field(default_factory=dict)
    """The declared work queues by name."""
    reads: dict[str, frozenset[str] | None] = field(default_factory=dict)
    """The step keys whose runs each step's expressions read (``steps.X``); None when it
    cannot be known (then a step sees every step). Lets a worker load only those runs."""
    unlimited: bool = False
    """Known from the version's row: it has no ``max_concurrent_executions`` (so none of its
    executions ever waits as pending for its limit). False when unknown."""
    dependents: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """The steps of the same graph that depend on each step (the reverse of ``depends_on``)."""

    def queue_of(self, key: str) -> str:
        return self.steps[key].task_queue or self.step_queues.get(key) or self.task_queue

    def work_queue_fed_by(self, signal: str) -> WorkQueueDef | None:
        """The work queue ``signal`` adds items to, if any (a signal feeds at most one)."""
        return next((q for q in self.work_queues.values() if q.signal == signal), None)

    def waits_on_queue(self, queue: str) -> list[str]:
        """Keys of the wait steps that take items from work queue ``queue``."""
        return [
            key
            for key, step in self.steps.items()
            if isinstance(step, WaitStep) and step.queue is not None and step.queue.name == queue
        ]

    def is_container(self, key: str) -> bool:
        return isinstance(self.steps[key], CONTAINERS)


def _node(step: AnyStep) -> progress.Node:
    return progress.Node(
        key=step.key,
        depends_on=tuple(step.depends_on),
        when=step.when,
        join_any=step.join.value == "any",
        on_error=OnError(step.on_error.value),
    )


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def step_reads(step: AnyStep) -> frozenset[str] | None:
    """Keys of the steps that ``step``'s templates read (its inputs, conditions, ``over``,
    ``until``, inline component config...). Validation only lets constant ``steps.X`` paths
    through; anything else falls back to None (read everything)."""
    return template_reads(step.model_dump(mode="json", exclude_none=True))


READ_ROOTS = ROOTS | {"inputs"}
"""Agent configs (llm prompts, api URLs) also see ``inputs``, the step's rendered inputs."""


def template_reads(document: Any) -> frozenset[str] | None:
    """Keys of the steps the templates in ``document`` read (``steps.X``), or None when a
    template computes the key or does not compile (then everything may be read)."""
    keys: set[str] = set()
    for text in _strings(document):
        if "{{" not in text:
            continue
        try:
            refs = references(compile_template(text, roots=READ_ROOTS))
        except ExpressionError:
            return None
        for ref in refs:
            if ref[0] == "steps":
                if len(ref) < 2:
                    return None
                keys.add(ref[1])
    return frozenset(keys)


def build(workflow_id: uuid.UUID, document: dict[str, Any], task_queue: str) -> Plan:
    defn = definitions.validate_definition(document, limits=_UNBOUNDED)
    steps: dict[str, AnyStep] = {}
    nodes: dict[str | None, dict[str, progress.Node]] = {}
    owner: dict[str, str | None] = {}
    bodies: dict[str, list[Body]] = {}
    for graph in walk_graphs(defn):
        frame = nodes.setdefault(graph.parent, {})
        for step in graph.steps:
            steps[step.key] = step
            frame[step.key] = _node(step)
            owner[step.key] = graph.parent
        if graph.parent is not None:
            keys = tuple(s.key for s in graph.steps)
            bodies.setdefault(graph.parent, []).append(Body(graph.branch, keys, graph.sub_graph))
    waits = any(
        isinstance(s, WaitStep) and (s.signal is not None or s.queue is not None)
        for s in steps.values()
    )
    return Plan(
        workflow_id,
        defn,
        steps,
        nodes,
        owner,
        {key: tuple(b) for key, b in bodies.items()},
        defn.task_queue or task_queue,
        has_signal_waits=waits,
        work_queues={q.name: q for q in defn.work_queues},
        reads={key: step_reads(step) for key, step in steps.items()},
        dependents=progress.dependents(nodes.values()),
    )


class PlanCache:
    """Plans by workflow version. ``load`` also knows which saved agent each agent step runs
    (for per-agent concurrency limits); ``get`` builds from the document alone.

    It also carries the operator's plan ``quotas``: every caller that starts an execution
    (API, webhooks, schedules, events, deployments, child steps) already holds this cache."""

    def __init__(self, size: int = 256, quotas: Quotas | None = None) -> None:
        self.quotas = quotas or Quotas()
        self._plans: OrderedDict[tuple[uuid.UUID, str], Plan] = OrderedDict()
        self._size = size
        self._ran: OrderedDict[uuid.UUID, Plan] = OrderedDict()

    def of_version(self, workflow_id: uuid.UUID) -> Plan | None:
        """The plan of a version that has executions, without reading the row: such a version
        never changes what it runs (an edit makes the next version)."""
        plan = self._ran.get(workflow_id)
        if plan is not None:
            self._ran.move_to_end(workflow_id)
        return plan

    def get(
        self, workflow_id: uuid.UUID, version_stamp: str, document: dict[str, Any], queue: str
    ) -> Plan:
        key = (workflow_id, version_stamp)
        plan = self._plans.get(key)
        if plan is None:
            plan = build(workflow_id, document, queue)
            self._plans[key] = plan
            if len(self._plans) > self._size:
                self._plans.popitem(last=False)
        else:
            self._plans.move_to_end(key)
        return plan

    async def load(self, session: AsyncSession, workflow: WorkflowRow) -> Plan:
        stamp = workflow.updated_at.isoformat()
        plan = self.get(workflow.id, stamp, workflow.definition, workflow.task_queue)
        unlimited = workflow.max_concurrent_executions is None
        if plan.unlimited != unlimited:  # a versioned field: fixed once the version has run
            plan = self._plans[(workflow.id, stamp)] = dataclasses.replace(
                plan, unlimited=unlimited
            )
        if plan.resolved or not any(
            isinstance(s, AgentStep) and (s.agent or (s.component and s.component.name))
            for s in plan.steps.values()
        ):
            return plan
        rows = await session.execute(
            select(
                WorkflowStepRow.step_key, WorkflowStepRow.agent_id, WorkflowStepRow.task_queue
            ).where(
                WorkflowStepRow.workflow_id == workflow.id,
                WorkflowStepRow.agent_id.is_not(None) | WorkflowStepRow.component_id.is_not(None),
            )
        )
        found = rows.all()
        plan = dataclasses.replace(
            plan,
            agent_ids={key: agent for key, agent, _ in found if agent},
            step_queues={key: queue for key, agent, queue in found if queue and not agent},
            resolved=True,
        )
        self._plans[(workflow.id, stamp)] = plan
        return plan

    def remember_ran(self, plan: Plan) -> Plan:
        """Note that ``plan``'s version has an execution (see ``of_version``)."""
        self._ran[plan.workflow_id] = plan
        if len(self._ran) > self._size:
            self._ran.popitem(last=False)
        return plan
