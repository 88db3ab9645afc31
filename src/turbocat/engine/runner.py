"""Runs one claimed step: renders its inputs over the execution context and dispatches by kind.

User-facing failures come back as ``StepFailure`` (the engine decides retry or fail); nothing
here touches the database.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from turbocat.domain.definitions import AgentStep, AnyStep, ConditionStep, WaitStep
from turbocat.domain.enums import AgentType
from turbocat.domain.errors import ValidationFailed
from turbocat.domain.expressions import JSONValue, compile_template, render_value
from turbocat.engine.agents import data


@dataclass(frozen=True)
class StepFailure:
    type: str
    message: str
    retryable: bool = True
    stack: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "retryable": self.retryable,
                "stack": self.stack}  # fmt: skip


@dataclass(frozen=True)
class StepOutcome:
    output: JSONValue = None
    failure: StepFailure | None = None
    branch: str | None = None
    rendered_input: JSONValue = None


@dataclass(frozen=True)
class SavedAgent:
    """What the runner needs of a saved agent."""

    type: AgentType
    config: dict[str, Any]


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
    step: AgentStep, agent: SavedAgent | None, context: Mapping[str, JSONValue]
) -> StepOutcome:
    inputs = render_value(dict(step.inputs), context)
    assert isinstance(inputs, dict)
    if step.component is not None:
        kind, config = step.component.kind.value, dict(step.component.config)
    elif agent is not None:
        kind, config = agent.type.value, agent.config
    else:  # the agent was deleted after the workflow was saved
        return StepOutcome(
            failure=StepFailure("agent_missing", f"agent {step.agent!r} no longer exists", False)
        )
    if kind == "data":
        try:
            return StepOutcome(output=data.run(config, inputs, context), rendered_input=inputs)
        except data.DataStepError as exc:
            return StepOutcome(
                failure=StepFailure("data_error", str(exc), False), rendered_input=inputs
            )
    return StepOutcome(
        failure=StepFailure(
            "runtime_unavailable",
            f"the {kind} runtime is not available in this version of the engine yet",
            retryable=False,
        ),
        rendered_input=inputs,
    )


async def run_step(
    step: AnyStep,
    context: Mapping[str, JSONValue],
    *,
    agent: SavedAgent | None = None,
) -> StepOutcome:
    """Run ``step`` within its timeout; every error becomes a failure the engine can record."""
    try:
        if isinstance(step, ConditionStep):
            return _condition(step, context)
        if isinstance(step, WaitStep):
            return _timed_wait(step, context)
        if isinstance(step, AgentStep):
            work = _agent(step, agent, context)
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
