"""Workflow definitions: the canonical document, its validation and its views.

``validate_definition`` turns a JSON document into a :class:`WorkflowDefinition` (or one
``ValidationFailed`` listing every problem); ``to_canvas``/``from_canvas`` convert to and from the
nodes-and-edges form; ``materialize_steps`` gives the ``workflow_steps`` rows. The model module
documents the canonical form and the join semantics.
"""

from turbocat.domain.definitions.canvas import from_canvas, to_canvas
from turbocat.domain.definitions.graph import (
    StepRecord,
    agent_refs,
    materialize_steps,
    topological_order,
)
from turbocat.domain.definitions.model import (
    AgentStep,
    AnyStep,
    Backoff,
    Branch,
    ChildWorkflowDef,
    ComponentSpec,
    ConditionStep,
    InlineKind,
    Join,
    LoopStep,
    ParallelStep,
    Position,
    QueryDef,
    QueueWait,
    RetryPolicy,
    SignalDef,
    SignalWait,
    SubGraph,
    WaitStep,
    WorkflowDefinition,
    WorkQueueDef,
    canonical_document,
)
from turbocat.domain.definitions.schema import (
    SCHEMA_ID,
    definition_json_schema,
    definition_json_schema_text,
)
from turbocat.domain.definitions.validate import (
    DEFAULT_DEFINITION_LIMITS,
    DefinitionLimits,
    validate_definition,
)

__all__ = [
    "DEFAULT_DEFINITION_LIMITS",
    "SCHEMA_ID",
    "AgentStep",
    "AnyStep",
    "Backoff",
    "Branch",
    "ChildWorkflowDef",
    "ComponentSpec",
    "ConditionStep",
    "DefinitionLimits",
    "InlineKind",
    "Join",
    "LoopStep",
    "ParallelStep",
    "Position",
    "QueryDef",
    "QueueWait",
    "RetryPolicy",
    "SignalDef",
    "SignalWait",
    "StepRecord",
    "SubGraph",
    "WaitStep",
    "WorkQueueDef",
    "WorkflowDefinition",
    "agent_refs",
    "canonical_document",
    "definition_json_schema",
    "definition_json_schema_text",
    "from_canvas",
    "materialize_steps",
    "to_canvas",
    "topological_order",
    "validate_definition",
]
