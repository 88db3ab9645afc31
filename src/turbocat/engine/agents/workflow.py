"""The ``workflow`` kind: run another workflow as a child execution.

It is not a plain runtime: a child may run for days, so the worker must not hold a slot while
it does. The runner calls ``prepare`` (config rendered and checked, no I/O) and hands the
engine a ``ChildRequest`` instead of an output; the engine, in the transaction that records
the step, starts the child and puts the step in ``waiting`` (see ``engine/children.py``). The
child's end completes the step. ``invoke`` only serves callers that would run the kind inline
(an agent called as a tool): it refuses clearly. An llm step whose model calls a workflow
(``tools: [{type: workflow}]``) reaches the same machinery by raising ``ChildNeeded``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from turbocat.domain.agents import WorkflowConfig, validate_config
from turbocat.domain.enums import AgentType, ParentClosePolicy
from turbocat.domain.errors import ValidationFailed
from turbocat.domain.expressions import ROOTS, ExpressionError, JSONValue, compile_template
from turbocat.engine.agents.base import AgentError, Invocation

TEMPLATE_ROOTS = ROOTS | {"inputs"}


@dataclass(frozen=True)
class ChildRequest:
    """What a workflow step asks the engine to start."""

    workflow: str
    """Id or kebab name of the child workflow (its lineage)."""
    version: int | None
    """The pinned version; None: the newest active version (else the newest)."""
    wait: bool
    parent_close_policy: ParentClosePolicy
    input: dict[str, JSONValue]
    """The step's rendered inputs: the child execution's input."""
    max_depth: int
    tool_key: str | None = None
    """Set when an llm step's model called this workflow as a tool: the tool call's
    idempotency key (part of the child's). The child's end then answers the call in the
    step's checkpoint and makes the step ready again, instead of completing it."""
    tool_call_id: str | None = None
    """The provider's id of that tool call (which pending call the child answers)."""


class ChildNeeded(Exception):
    """Raised by a runtime that must wait for a child execution (an llm step calling a
    workflow tool): the runner hands the engine ``request``, and ``state`` (the step's
    checkpoint, see ``checkpoint.py``) is kept on the step run while it waits."""

    def __init__(self, request: ChildRequest, state: dict[str, Any]) -> None:
        super().__init__(f"waits for a child execution of {request.workflow}")
        self.request = request
        self.state = state


def _render(value: Any, scope: dict[str, JSONValue], field: str) -> Any:
    if not isinstance(value, str) or "{{" not in value:
        return value
    try:
        return compile_template(value, roots=TEMPLATE_ROOTS).render(scope)
    except ExpressionError as exc:
        raise AgentError("expression_error", f"{field}: {exc.detail}") from None


def prepare(call: Invocation) -> ChildRequest:
    """The child the step starts. ``workflow`` and ``version`` may be templates over the
    workflow context plus ``inputs``; a bad config fails the step for good."""
    scope = {**call.context, "inputs": call.inputs}
    raw = dict(call.config)
    for field in ("workflow", "version"):
        if field in raw:
            raw[field] = _render(raw[field], scope, field)
    if isinstance(raw.get("workflow"), int | float):
        raw["workflow"] = str(raw["workflow"])
    try:
        config = WorkflowConfig.model_validate(validate_config(AgentType.WORKFLOW, raw, ()))
    except ValidationFailed as exc:
        where = "; ".join(".".join(map(str, e.path)) + ": " + e.message for e in exc.errors)
        raise AgentError("invalid_config", f"{exc.detail}: {where}") from None
    return ChildRequest(
        workflow=config.workflow,
        version=config.version,
        wait=config.wait,
        parent_close_policy=config.parent_close_policy,
        input=dict(call.inputs),
        max_depth=call.settings.workflow.max_depth,
    )


async def invoke(call: Invocation) -> JSONValue:
    """Steps of this kind never get here (the runner hands them to the engine); an llm tool
    that names a workflow agent does."""
    raise AgentError(
        "runtime_unavailable",
        "a workflow agent runs as a child execution of a workflow step; it cannot be called "
        "inline (as a tool)",
    )
