"""Status lifecycles: the only code that decides whether a status change is allowed."""

from __future__ import annotations

from turbocat.domain.enums import AgentStatus, WorkflowStatus
from turbocat.domain.errors import InvalidTransition

WORKFLOW_TRANSITIONS: dict[WorkflowStatus, frozenset[WorkflowStatus]] = {
    WorkflowStatus.DRAFT: frozenset({WorkflowStatus.ACTIVE, WorkflowStatus.ARCHIVED}),
    WorkflowStatus.ACTIVE: frozenset(
        {WorkflowStatus.PAUSED, WorkflowStatus.INACTIVE, WorkflowStatus.ARCHIVED}
    ),
    WorkflowStatus.PAUSED: frozenset(
        {WorkflowStatus.ACTIVE, WorkflowStatus.INACTIVE, WorkflowStatus.ARCHIVED}
    ),
    WorkflowStatus.INACTIVE: frozenset({WorkflowStatus.ACTIVE, WorkflowStatus.ARCHIVED}),
    WorkflowStatus.ARCHIVED: frozenset({WorkflowStatus.DRAFT}),
}
"""paused: triggers hold (schedules skip); inactive: switched off; archived: retired, read-only
until brought back to draft."""

AGENT_TRANSITIONS: dict[AgentStatus, frozenset[AgentStatus]] = {
    AgentStatus.DRAFT: frozenset({AgentStatus.ACTIVE, AgentStatus.ARCHIVED}),
    AgentStatus.ACTIVE: frozenset({AgentStatus.INACTIVE, AgentStatus.ARCHIVED}),
    AgentStatus.INACTIVE: frozenset({AgentStatus.ACTIVE, AgentStatus.ARCHIVED}),
    AgentStatus.ARCHIVED: frozenset({AgentStatus.DRAFT}),
}


def workflow_transition(current: WorkflowStatus, target: WorkflowStatus) -> WorkflowStatus:
    if target != current and target not in WORKFLOW_TRANSITIONS[current]:
        raise InvalidTransition("workflow", current.value, target.value)
    return target


def agent_transition(current: AgentStatus, target: AgentStatus) -> AgentStatus:
    if target != current and target not in AGENT_TRANSITIONS[current]:
        raise InvalidTransition("agent", current.value, target.value)
    return target
