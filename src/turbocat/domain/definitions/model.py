"""The workflow definition document (SPEC section 4) as pydantic models.

Every model refuses unknown fields. Scalars are read strictly from JSON (``"5"`` is not a number).
The canonical form of a document is ``model_dump(mode="json", by_alias=True,
exclude_defaults=True)``: fields left at their default are omitted, so two documents that mean the
same thing serialize the same way (see :func:`canonical_document`).

Step keys match ``^[a-z][a-z0-9_]{0,63}$`` and are unique across the whole definition, nested
bodies included, so a key names one ``workflow_steps`` row. A loop iteration's step run is keyed
by the engine (for example ``loop/body#3``); the definition only fixes the step keys.

Join semantics (what the engine implements):

- A step becomes ready when every dependency has finished (completed, failed under
  ``on_error: continue``, or skipped).
- ``join: all`` (the default): if any dependency was skipped, the step is skipped too, so an
  untaken branch skips everything downstream of it.
- ``join: any``: the step runs when at least one dependency completed and the others completed or
  were skipped; it is skipped only when all of them were. This is how branches merge again.
- ``when: label``: the step depends on exactly one condition step and runs only if that condition
  chose ``label``; otherwise it is skipped (which then propagates as above).
- A condition evaluates its branches in order and chooses the first whose expression is true,
  else its ``default`` label, else no label (every ``when`` dependent is skipped). Its output is
  ``{"label": <chosen or null>}``.
- A loop's output is the list of body outputs in item order; a parallel step's output is an
  object of branch outputs by label. A sub-graph's output is its ``output`` expression, or else an
  object of its steps' outputs by key.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from turbocat.domain.enums import OnError, WorkQueueOrder
from turbocat.domain.enums import ParentClosePolicy as ParentClosePolicy
from turbocat.domain.expressions import JSONValue
from turbocat.domain.semver import REQUIREMENT_PATTERN

KEY_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
LABEL_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$"
MAX_MS = 31 * 24 * 3600 * 1000

StepKey = Annotated[str, Field(pattern=KEY_PATTERN, description="A step key.")]
Label = Annotated[str, Field(pattern=LABEL_PATTERN, description="A branch label.")]
Name = Annotated[str, Field(pattern=NAME_PATTERN, description="A name (signal, query...).")]
Template = Annotated[str, Field(min_length=1, description="A template with {{ expressions }}.")]
JSONObject = dict[str, JSONValue]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        use_attribute_docstrings=True,
        validate_by_alias=True,
        validate_by_name=False,
        serialize_by_alias=True,
    )


class Backoff(StrEnum):
    FIXED = "fixed"
    EXPONENTIAL = "exponential"


class Join(StrEnum):
    ALL = "all"
    ANY = "any"


class InlineKind(StrEnum):
    """Kinds a step may run inline (the agent kinds plus registered custom components)."""

    LLM = "llm"
    CODE = "code"
    API = "api"
    DATA = "data"
    WORKFLOW = "workflow"
    CUSTOM = "custom"


class Position(_Model):
    """Where the step sits on the canvas."""

    x: float
    """Horizontal canvas coordinate."""
    y: float
    """Vertical canvas coordinate."""


class RetryPolicy(_Model):
    """How a failed attempt is retried: ``delay_ms * 2**(attempt-1)`` when exponential."""

    count: int = Field(default=0, ge=0, le=20)
    """Retries after the first attempt (0 to 20)."""
    delay_ms: int = Field(default=1000, ge=0, le=MAX_MS)
    """Delay before the first retry, in milliseconds."""
    backoff: Backoff = Backoff.EXPONENTIAL
    """fixed: the same delay every time; exponential: doubling delays."""
    max_delay_ms: int | None = Field(default=None, ge=0, le=MAX_MS)
    """Upper bound on any delay, in milliseconds; at least delay_ms."""
    jitter: bool = True
    """Randomize each delay by up to +/-20% so retries do not move in lockstep."""


class ComponentSpec(_Model):
    """An inline component configuration, instead of a reference to a saved agent."""

    kind: InlineKind
    """What runs: llm, code, api, data, workflow, or a registered custom component."""
    name: str | None = Field(default=None, min_length=1, max_length=200)
    """The registered component's name; required for kind custom."""
    version: str | None = Field(default=None, pattern=REQUIREMENT_PATTERN, max_length=50)
    """Kind custom only: the versions it may run: ``^1.2`` (compatible), ``~1.2`` (patches),
    ``1.2.0`` (exactly) or ``*``; none means any release."""
    config: JSONObject = Field(default_factory=dict)
    """Kind-specific configuration; strings may hold {{ expressions }}."""

    @model_validator(mode="after")
    def _custom_needs_name(self) -> ComponentSpec:
        if self.kind is InlineKind.CUSTOM and self.name is None:
            raise ValueError("a custom component needs a name")
        if self.kind is not InlineKind.CUSTOM and self.version is not None:
            raise ValueError("only a custom component takes a version")
        return self


class _StepBase(_Model):
    key: StepKey
    """Unique step key: lower case letter, then letters, digits or _, at most 64 characters."""
    name: str | None = Field(default=None, min_length=1, max_length=200)
    """Human-readable name."""
    description: str | None = Field(default=None, max_length=5000)
    """What the step is for."""
    depends_on: tuple[StepKey, ...] = ()
    """Keys of the steps (in the same graph) that must finish before this one."""
    when: Label | None = None
    """Run only if the condition step this depends on chose this branch label."""
    join: Join = Join.ALL
    """all: skipped if any dependency was skipped; any: runs if at least one completed."""
    position: Position | None = None
    """Canvas position."""
    retry: RetryPolicy | None = None
    """Retry policy; none means a failure is final."""
    timeout_ms: int | None = Field(default=None, ge=1, le=MAX_MS)
    """Per-attempt time limit in milliseconds."""
    on_error: OnError = OnError.FAIL
    """fail: the execution fails; continue: dependents run and see the error; retry: retry then
    fail."""
    task_queue: str | None = Field(default=None, pattern=NAME_PATTERN)
    """Task queue whose workers run this step (default: the workflow's)."""


class AgentStep(_StepBase):
    """Runs a saved agent (``agent``) or an inline component (``component``): exactly one."""

    type: Literal["agent"]
    """Step type."""
    agent: str | None = Field(default=None, min_length=1, max_length=255)
    """Id or name of a saved agent, resolved in the workflow's organization."""
    component: ComponentSpec | None = None
    """Inline component configuration."""
    inputs: JSONObject | Template = Field(default_factory=dict)
    """Input values by name, strings may hold {{ expressions }}; or one template yielding the
    whole object (``"{{ input }}"`` passes the execution input through as it is)."""

    @model_validator(mode="after")
    def _exactly_one_runner(self) -> AgentStep:
        if (self.agent is None) == (self.component is None):
            raise ValueError("an agent step needs exactly one of agent or component")
        return self


class Branch(_Model):
    """One branch of a condition."""

    label: Label
    """The label dependents name in their when."""
    when: Template
    """Expression; the first branch whose value is true is chosen."""


class ConditionStep(_StepBase):
    """Chooses one label; dependents with a matching ``when`` run."""

    type: Literal["condition"]
    """Step type."""
    branches: tuple[Branch, ...] = Field(min_length=1, max_length=50)
    """Branches, evaluated in order."""
    default: Label | None = None
    """Label chosen when no branch matches; none means no label."""


class SubGraph(_Model):
    """A small graph of steps used as a loop or parallel body."""

    steps: tuple[Step, ...] = Field(min_length=1)
    """The steps; depends_on refers to steps of this same graph."""
    output: Template | None = None
    """Expression for the body's output; default: an object of its steps' outputs by key."""


def _body_tag(value: object) -> str:
    if isinstance(value, dict):
        return "graph" if "steps" in value else "step"
    return "graph" if isinstance(value, SubGraph) else "step"


Body = Annotated[
    Annotated["Step", Tag("step")] | Annotated[SubGraph, Tag("graph")],
    Discriminator(_body_tag),
]


class LoopStep(_StepBase):
    """Runs its body once per item of a list; output is the list of body outputs."""

    type: Literal["loop"]
    """Step type."""
    over: Template
    """Expression yielding the list to iterate; the body sees item and index."""
    body: Body
    """A single step or a sub-graph run per item."""
    max_concurrency: int = Field(default=1, ge=1, le=1000)
    """Iterations running at the same time."""
    max_items: int = Field(default=1000, ge=1, le=100_000)
    """More items than this fail the step."""


class ParallelStep(_StepBase):
    """Runs named branches concurrently; output is an object of branch outputs."""

    type: Literal["parallel"]
    """Step type."""
    branches: dict[Label, Body] = Field(min_length=1, max_length=50)
    """Branch bodies by label."""


class SignalWait(_Model):
    """Wait for a declared signal (human approval is one)."""

    name: Name
    """A signal declared in the definition's signals."""
    timeout_ms: int | None = Field(default=None, ge=1, le=MAX_MS)
    """Give up (the step fails) after this long."""


class QueueWait(_Model):
    """Take items from a declared work queue, waiting for one when it is empty."""

    name: Name
    """A work queue declared in the definition's work_queues."""
    max_items: int = Field(default=1, ge=1, le=1000)
    """Take up to this many items; the step takes what is there without waiting for more."""
    timeout_ms: int | None = Field(default=None, ge=1, le=MAX_MS)
    """Give up (the step fails with ``queue_timeout``) after waiting this long."""


class WaitStep(_StepBase):
    """Pauses for exactly one of: a duration, an instant, a signal, or work queue items."""

    type: Literal["wait"]
    """Step type."""
    duration_ms: int | None = Field(default=None, ge=0, le=MAX_MS)
    """Wait this long."""
    until: str | None = Field(default=None, min_length=1)
    """Wait until this ISO 8601 instant with a UTC offset, or an expression yielding one."""
    signal: SignalWait | None = None
    """Wait for this signal; its payload becomes the step output."""
    queue: QueueWait | None = None
    """Take items from this work queue; the list of items taken becomes the step output."""

    @model_validator(mode="after")
    def _exactly_one_wait(self) -> WaitStep:
        given = [
            self.duration_ms is not None,
            self.until is not None,
            self.signal is not None,
            self.queue is not None,
        ]
        if sum(given) != 1:
            raise ValueError("a wait step needs exactly one of duration_ms, until, signal or queue")
        return self


Step = Annotated[
    AgentStep | ConditionStep | LoopStep | ParallelStep | WaitStep, Field(discriminator="type")
]


class SignalDef(_Model):
    """A signal the execution accepts while running."""

    name: Name
    """Signal name."""
    description: str | None = None
    """What the signal means."""
    payload_schema: JSONObject | None = Field(default=None, alias="schema")
    """JSON Schema of the payload."""


class QueryDef(_Model):
    """A read-only view of a running execution."""

    name: Name
    """Query name."""
    description: str | None = None
    """What the query returns."""
    expression: Template | None = None
    """Expression over input, steps, vars and execution; required unless a work queue names
    this query (a work queue's query answers with the queue's pending items)."""


class WorkQueueDef(_Model):
    """A queue of work items fed by a signal."""

    name: Name
    """Queue name."""
    signal: Name
    """The declared signal that adds an item."""
    query: Name | None = None
    """A declared query that reads the queue."""
    order: WorkQueueOrder = WorkQueueOrder.FIFO
    """fifo, lifo or priority."""
    deduplicate: bool = False
    """Drop an item equal to one already queued."""
    max_size: int | None = Field(default=None, ge=1)
    """Most items held; none means unlimited."""
    item_schema: JSONObject | None = None
    """JSON Schema of an item."""


class ChildWorkflowDef(_Model):
    """A child workflow this workflow may start (declarative)."""

    name: Name
    """Local name of the child."""
    workflow: str = Field(min_length=1, max_length=255)
    """Id or kebab name of the child workflow."""
    parent_close_policy: ParentClosePolicy = ParentClosePolicy.TERMINATE
    """What happens to the child when the parent closes."""
    can_signal_parent: bool = False
    """The child may signal the parent."""
    can_query_parent: bool = False
    """The child may query the parent."""


class WorkflowDefinition(_Model):
    """A workflow: its input schema, outputs, steps and the signals and queries it serves."""

    inputs: JSONObject | None = None
    """JSON Schema of the execution input (type object)."""
    outputs: dict[str, Template] = Field(default_factory=dict)
    """Execution outputs by name, as expressions over step outputs."""
    steps: tuple[Step, ...] = Field(min_length=1)
    """The steps; order is presentation only, depends_on decides execution order."""
    vars: JSONObject = Field(default_factory=dict)
    """Constants available to expressions as vars (never templated themselves)."""
    signals: tuple[SignalDef, ...] = ()
    """Signals the execution accepts."""
    queries: tuple[QueryDef, ...] = ()
    """Queries the execution answers."""
    work_queues: tuple[WorkQueueDef, ...] = ()
    """Work queues fed by signals."""
    child_workflows: tuple[ChildWorkflowDef, ...] = ()
    """Child workflows this workflow may start."""
    timeout_seconds: int | None = Field(default=None, ge=1, le=31 * 24 * 3600)
    """Execution time limit in seconds."""
    task_queue: str | None = Field(default=None, pattern=NAME_PATTERN)
    """Default task queue of the steps."""


SubGraph.model_rebuild()
LoopStep.model_rebuild()
ParallelStep.model_rebuild()
WorkflowDefinition.model_rebuild()

AnyStep = AgentStep | ConditionStep | LoopStep | ParallelStep | WaitStep


def canonical_document(defn: WorkflowDefinition) -> dict[str, JSONValue]:
    """The canonical JSON form: defaults omitted, aliases used."""
    return defn.model_dump(mode="json", by_alias=True, exclude_defaults=True)
