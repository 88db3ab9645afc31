"""Runs one claimed step: renders its inputs over the execution context and dispatches by kind.

User-facing failures come back as ``StepFailure`` (the engine decides retry or fail); nothing
here touches the database.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import traceback
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from turbocat.config import RuntimeSettings
from turbocat.domain.definitions import AgentStep, AnyStep, ConditionStep, WaitStep
from turbocat.domain.enums import AgentType
from turbocat.domain.errors import ValidationFailed
from turbocat.domain.expressions import JSONValue, compile_template, render_value
from turbocat.engine import custom
from turbocat.engine.agents import base, code, data, http, llm, workflow
from turbocat.engine.agents.base import AgentError, Invocation, Limits, RecordingServices

Runtime = Callable[[Invocation], Awaitable[JSONValue]]
RUNTIMES: dict[str, Runtime] = {
    "data": data.invoke, "api": http.invoke, "code": code.invoke, "llm": llm.invoke,
    "workflow": workflow.invoke,
}  # fmt: skip
"""Agent kind -> runtime. A kind missing here fails its steps with ``runtime_unavailable``.
Steps of kind ``workflow`` do not run here: ``_agent`` hands the engine a child request (its
``invoke`` only answers inline callers such as llm tools)."""


@dataclass(frozen=True)
class StepFailure:
    type: str
    message: str
    retryable: bool = True
    stack: str | None = None
    retry_after: float | None = None
    """Seconds the next attempt must wait at least (a provider's Retry-After)."""
    details: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        doc = {"type": self.type, "message": self.message, "retryable": self.retryable,
               "stack": self.stack}  # fmt: skip
        if self.retry_after is not None:
            doc["retry_after"] = self.retry_after
        if self.details:
            doc["details"] = self.details
        return doc


@dataclass(frozen=True)
class StepOutcome:
    output: JSONValue = None
    failure: StepFailure | None = None
    branch: str | None = None
    rendered_input: JSONValue = None
    child: workflow.ChildRequest | None = None
    """A workflow step's child execution to start: the engine starts it and the step waits.
    (An llm step's workflow tool: ``output`` is then the step's checkpoint, kept meanwhile.)"""


@dataclass(frozen=True)
class SavedAgent:
    """What the runner needs of a saved agent."""

    type: AgentType
    config: dict[str, Any]
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True)
class StepCall:
    """Who runs the step: the ids and services a runtime's ``Invocation`` carries."""

    execution_id: uuid.UUID
    organization_id: uuid.UUID
    idempotency_key: str
    attempt: int = 1
    services: base.Services = field(default_factory=RecordingServices)
    settings: RuntimeSettings = field(default_factory=RuntimeSettings)
    components: custom.Served = field(default_factory=custom.Served)
    """The custom components this worker loaded."""


def _truthy(value: JSONValue) -> bool:
    return value not in (None, False, 0, "", [], {})


def _condition(step: ConditionStep, context: Mapping[str, JSONValue]) -> StepOutcome:
    for branch in step.branches:
        if _truthy(compile_template(branch.when).render(context)):
            return StepOutcome(output={"label": branch.label}, branch=branch.label)
    return StepOutcome(output={"label": step.default}, branch=step.default)


def _timed_wait(step: WaitStep, context: Mapping[str, JSONValue]) -> StepOutcome:
    """A timed wait is claimed once it is due; a bad ``until`` is reported here."""
    if step.until is not None:
        value = compile_template(step.until).render(context)
        try:
            instant = dt.datetime.fromisoformat(str(value))
        except ValueError:
            instant = None
        if instant is None or instant.tzinfo is None:
            return StepOutcome(
                failure=StepFailure(
                    "bad_instant",
                    f"until gave {value!r}, not an ISO 8601 instant with offset",
                    False,
                )
            )
        return StepOutcome(output={"until": instant.isoformat()})
    return StepOutcome(output={"waited_ms": step.duration_ms})


async def _agent(
    step: AgentStep,
    agent: SavedAgent | None,
    context: Mapping[str, JSONValue],
    call: StepCall | None,
) -> StepOutcome:
    rendered = render_value(
        step.inputs if isinstance(step.inputs, str) else dict(step.inputs), context
    )
    if not isinstance(rendered, dict):  # one template gave the whole inputs: not an object
        message = f"inputs must render to an object, got {type(rendered).__name__}"
        return StepOutcome(failure=StepFailure("invalid_input", message, False))
    inputs: dict[str, Any] = rendered
    limits = Limits()
    if custom.is_custom(step):
        return await _custom(step, inputs, call)
    if step.component is not None:
        kind, config = step.component.kind.value, dict(step.component.config)
    elif agent is not None:
        kind, config, limits = agent.type.value, agent.config, agent.limits
    else:  # the agent was deleted after the workflow was saved
        return StepOutcome(
            failure=StepFailure("agent_missing", f"agent {step.agent!r} no longer exists", False)
        )
    runtime = None if kind == "workflow" else RUNTIMES.get(kind)
    if runtime is None and kind != "workflow":
        return StepOutcome(
            failure=StepFailure(
                "runtime_unavailable",
                f"the {kind} runtime is not available in this version of the engine yet",
                retryable=False,
            ),
            rendered_input=inputs,
        )
    call = call or _anonymous_call(context, step.key)
    invocation = Invocation(
        kind=kind, config=config, inputs=inputs, context=context, services=call.services,
        idempotency_key=call.idempotency_key, execution_id=call.execution_id,
        organization_id=call.organization_id, step_key=step.key, attempt=call.attempt,
        limits=limits, timeout_seconds=None if step.timeout_ms is None else step.timeout_ms / 1000,
        settings=call.settings,
    )  # fmt: skip
    try:
        if runtime is None:  # the workflow kind: the engine starts the child durably
            return StepOutcome(child=workflow.prepare(invocation), rendered_input=inputs)
        return StepOutcome(output=await runtime(invocation), rendered_input=inputs)
    except workflow.ChildNeeded as need:  # an llm step's workflow tool: the engine starts it
        return StepOutcome(output=need.state, child=need.request, rendered_input=inputs)
    except AgentError as exc:
        failure = StepFailure(exc.kind, exc.message, exc.retryable, None, exc.retry_after,
                              exc.details or None)  # fmt: skip
        return StepOutcome(failure=failure, rendered_input=inputs)


async def _custom(step: AgentStep, inputs: dict[str, Any], call: StepCall | None) -> StepOutcome:
    assert step.component is not None
    served = call.components if call is not None else custom.Served()
    try:
        output = await custom.invoke(step.component, inputs, served)
    except AgentError as exc:  # the traceback of the component's exception, as the stack
        stack = exc.details.pop("traceback", None)
        failure = StepFailure(
            exc.kind, exc.message, exc.retryable, stack, None, exc.details or None
        )
        return StepOutcome(failure=failure, rendered_input=inputs)
    return StepOutcome(output=output, rendered_input=inputs)


def _anonymous_call(context: Mapping[str, JSONValue], key: str) -> StepCall:
    """For callers without an execution row (unit tests of the runner)."""
    execution = context.get("execution")
    raw = execution.get("id") if isinstance(execution, dict) else None
    execution_id = uuid.UUID(str(raw)) if raw else uuid.UUID(int=0)
    return StepCall(execution_id, uuid.UUID(int=0), f"{execution_id}:{key}:0")


async def run_step(
    step: AnyStep,
    context: Mapping[str, JSONValue],
    *,
    agent: SavedAgent | None = None,
    call: StepCall | None = None,
) -> StepOutcome:
    """Run ``step`` within its timeout; every error becomes a failure the engine can record."""
    try:
        if isinstance(step, ConditionStep):
            return _condition(step, context)
        if isinstance(step, WaitStep):
            return _timed_wait(step, context)
        if isinstance(step, AgentStep):
            work = _agent(step, agent, context, call)
            if step.timeout_ms is None:
                return await work
            return await asyncio.wait_for(work, timeout=step.timeout_ms / 1000)
        return StepOutcome(
            failure=StepFailure("unsupported", f"step type {step.type} is not supported", False)
        )
    except TimeoutError:
        return StepOutcome(
            failure=StepFailure("timeout", f"the step took longer than {step.timeout_ms} ms")
        )
    except ValidationFailed as exc:  # expression errors name the expression
        return StepOutcome(failure=StepFailure("expression_error", exc.detail, False))
    except Exception as exc:  # a bug in a runtime must fail the step, never the worker
        return StepOutcome(
            failure=StepFailure(
                type(exc).__name__, str(exc) or type(exc).__name__, True, traceback.format_exc()
            )
        )
