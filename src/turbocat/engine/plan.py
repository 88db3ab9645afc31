"""A workflow version as the engine runs it: validated definition, graph nodes, step specs.

Plans are cached per version row and its ``updated_at``: a version that has run never changes,
and an edit before its first run changes ``updated_at``.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from turbocat.domain import definitions, progress
from turbocat.domain.definitions import (
    AgentStep,
    AnyStep,
    ConditionStep,
    WaitStep,
    WorkflowDefinition,
)
from turbocat.domain.enums import OnError
from turbocat.domain.errors import ValidationFailed

SUPPORTED = (AgentStep, ConditionStep, WaitStep)
"""Step types this engine version runs; loops and parallel branches arrive next."""

_UNBOUNDED = definitions.DefinitionLimits(
    max_steps=1_000_000, max_nesting=1_000, max_bytes=1 << 40, max_expression_length=1 << 20
)


@dataclass(frozen=True)
class Plan:
    workflow_id: uuid.UUID
    definition: WorkflowDefinition
    steps: dict[str, AnyStep]
    nodes: dict[str, progress.Node]
    task_queue: str

    def queue_of(self, key: str) -> str:
        return self.steps[key].task_queue or self.task_queue


def build(workflow_id: uuid.UUID, document: dict[str, Any], task_queue: str) -> Plan:
    defn = definitions.validate_definition(document, limits=_UNBOUNDED)
    unsupported = [s.key for s in defn.steps if not isinstance(s, SUPPORTED)]
    if unsupported:
        raise ValidationFailed.field(
            ("definition", "steps"),
            f"this engine runs agent, condition and wait steps; {', '.join(unsupported)} "
            "use step types that are not supported yet",
            "unsupported_step_type",
        )
    steps = {s.key: s for s in defn.steps}
    nodes = {
        s.key: progress.Node(
            key=s.key,
            depends_on=tuple(s.depends_on),
            when=s.when,
            join_any=s.join.value == "any",
            on_error=OnError(s.on_error.value),
        )
        for s in defn.steps
    }
    return Plan(workflow_id, defn, steps, nodes, defn.task_queue or task_queue)


class PlanCache:
    def __init__(self, size: int = 256) -> None:
        self._plans: OrderedDict[tuple[uuid.UUID, str], Plan] = OrderedDict()
        self._size = size

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
