"""Custom components in a worker: the ones this process loaded, how their steps run, and the
claim condition that keeps a worker from taking a custom step it cannot run.

A step ``component: {kind: custom, name: acme.enrich, version: "^1.2"}`` is saved against a
registered component (``services.workflows`` pins the row and its task queue in
``workflow_steps``); its runs are made ready on that queue. A worker claims such a run only when
it loaded a component of that name (``claim_filter``); it then checks the version requirement,
validates the inputs, runs the function and validates its output.
"""

from __future__ import annotations

import datetime as dt
import logging
import traceback
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, not_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.components import Component, InvalidValue, discover
from turbocat.db.models import ComponentRow, ExecutionRow, StepRunRow, WorkflowStepRow
from turbocat.domain import components as rules
from turbocat.domain import semver
from turbocat.domain.definitions import AgentStep, AnyStep, ComponentSpec
from turbocat.domain.enums import ComponentKind, StepStatus, StepType
from turbocat.engine.agents.base import AgentError

log = logging.getLogger("turbocat.components")


@dataclass(frozen=True)
class Served:
    """The components a worker process loaded, by name (one version per name)."""

    by_name: Mapping[str, Component] = field(default_factory=dict)
    packages: Mapping[str, str] = field(default_factory=dict)
    """Component name -> distribution."""
    errors: tuple[str, ...] = ()

    def specs(self) -> list[rules.CustomComponent]:
        """What the catalog stores about each."""
        return [
            rules.CustomComponent(
                name=c.name,
                version=c.version,
                task_queue=c.queue,
                description=c.description,
                display_name=c.display_name,
                tags=c.tags,
                input_schema=c.input_schema,
                output_schema=c.output_schema,
                implementation_path=c.implementation_path,
                package=self.packages.get(c.name),
            )
            for c in self.by_name.values()
        ]


def load() -> Served:
    """Import the ``turbocat.components`` entry points of this environment. A name loaded
    twice keeps its highest version; names of built-in kinds are refused."""
    found = discover()
    errors = list(found.errors)
    by_name: dict[str, Component] = {}
    for item in found.components:
        if item.name in rules.BUILTIN_NAMES:
            errors.append(f"component {item.name!r}: the name of a built-in component")
            continue
        other = by_name.get(item.name)
        if other is None or semver.sort_key(item.version) > semver.sort_key(other.version):
            by_name[item.name] = item
    for line in errors:
        log.error("custom component not loaded: %s", line)
    return Served(by_name, dict(found.packages), tuple(errors))


def is_custom(step: AnyStep) -> bool:
    return (
        isinstance(step, AgentStep)
        and step.component is not None
        and step.component.kind.value == ComponentKind.CUSTOM.value
    )


def can_run(step: AnyStep, served: Served) -> bool:
    """Whether this worker may run ``step`` (always, unless it is a custom step whose
    component it did not load)."""
    if not is_custom(step):
        return True
    assert isinstance(step, AgentStep)
    assert step.component is not None
    return step.component.name in served.by_name


def claim_filter(served: Served) -> ColumnElement[bool]:
    """Ready runs this worker may claim: every run except those of custom steps whose component
    it did not load (a step row pins its component; the name decides)."""
    others = (
        select(WorkflowStepRow.id)
        .join(ExecutionRow, ExecutionRow.workflow_id == WorkflowStepRow.workflow_id)
        .join(ComponentRow, ComponentRow.id == WorkflowStepRow.component_id)
        .where(
            ExecutionRow.id == StepRunRow.execution_id,
            WorkflowStepRow.step_key == StepRunRow.step_key,
            ComponentRow.kind == ComponentKind.CUSTOM,
        )
    )
    if served.by_name:
        others = others.where(ComponentRow.name.not_in(sorted(served.by_name)))
    return or_(StepRunRow.step_type != StepType.AGENT, not_(exists(others.correlate(StepRunRow))))


async def release(session: AsyncSession, run_id: uuid.UUID, epoch: int, now: dt.datetime) -> bool:
    """Give back a claimed run this worker cannot run (a successor it chained): ready again,
    for a worker that loaded its component. Fenced by the lease epoch."""
    result = await session.execute(
        update(StepRunRow)
        .where(
            and_(
                StepRunRow.id == run_id,
                StepRunRow.lease_epoch == epoch,
                StepRunRow.status == StepStatus.RUNNING,
            )
        )
        .values(
            status=StepStatus.READY,
            lease_owner=None,
            lease_expires_at=None,
            started_at=None,
            scheduled_for=now,
            updated_at=now,
        )
        .returning(StepRunRow.id),
        execution_options={"synchronize_session": False},
    )
    return result.first() is not None


async def invoke(spec: ComponentSpec, inputs: dict[str, Any], served: Served) -> Any:
    """Run the custom component ``spec`` names on ``inputs``; user-facing failures raise
    ``AgentError`` (the step's retry policy applies to exceptions of the function only)."""
    assert spec.name is not None
    loaded = served.by_name.get(spec.name)
    if loaded is None:
        raise AgentError(
            "component_unavailable",
            f"this worker has not loaded component {spec.name!r}; install its package where "
            "the workers serving its queue run",
        )
    if not semver.satisfies(loaded.version, spec.version):
        raise AgentError(
            "component_version",
            f"this worker serves {spec.name} {loaded.version}, which does not satisfy "
            f"{spec.version or 'any release'!r}",
        )
    try:
        return await loaded.call(inputs)
    except InvalidValue as exc:
        kind = "invalid_input" if exc.side == "inputs" else "invalid_output"
        raise AgentError(kind, f"{spec.name}: {exc}", details={"errors": exc.errors}) from None
    except AgentError:
        raise
    except Exception as exc:  # the function failed: the step's retry policy decides
        frames = traceback.format_exception(exc)
        raise AgentError(
            "component_error",
            f"{spec.name} {loaded.version} raised {type(exc).__name__}: {exc}",
            retryable=True,
            details={"traceback": "".join(frames)[-4000:]},
        ) from None
