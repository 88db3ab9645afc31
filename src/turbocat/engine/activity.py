"""Run statistics of agents and components, kept in the transaction that records each agent
step's final outcome.

What counts: one final outcome per step run of an ``agent`` step (a loop iteration is a step
run of its own): completed is a success, failed (retries spent, or not retryable) a failure.
Attempts that were retried do not count, nor do steps that never ended (cancelled, skipped)
or outputs reused by a re-run. The duration is the final attempt's ``duration_ms`` (for a
workflow step: from its claim until its child ended).

Where: the saved agent's counters (``agents.total_executions`` ...), and
``activity_statistics`` per (organization, component, workflow version), the component being
the built-in component of the step's kind or the registered custom component it names. The
"all workflows" row of seed 003 is not written on the hot path: readers sum the per-workflow
rows (``services/activity.py``).

Cost: at most two statements per agent step (one UPDATE of the agent, one upsert), none for
other steps. They run as the transaction commits (``db.engine.at_commit``): these rows are
shared by every run of an agent or component, and a lock taken earlier would make concurrent
workers wait for each other's whole transaction. Arithmetic happens in SQL
(``count = count + 1``, the running average, LEAST and GREATEST), so concurrent workers on
PostgreSQL never lose an update. The averages are running
means rounded to whole milliseconds at each update.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import Integer, String, and_, bindparam, func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, aliased

from turbocat.db import dialects
from turbocat.db.engine import at_commit
from turbocat.db.models import (
    ActivityStatisticsRow,
    AgentRow,
    ComponentRow,
    ExecutionRow,
    StepRunRow,
)
from turbocat.db.types import GUID, UTCDateTime
from turbocat.domain.definitions import AgentStep, AnyStep, InlineKind
from turbocat.domain.ids import new_id
from turbocat.services import versions

A = ActivityStatisticsRow.__table__.c


def step_ended(
    session: AsyncSession,
    execution: ExecutionRow,
    run: StepRunRow,
    step: AnyStep,
    ok: bool,
    now: dt.datetime,
) -> None:
    """Count the final outcome of agent step ``run`` (as the transaction commits)."""
    if not isinstance(step, AgentStep):
        return
    duration = run.duration_ms or 0
    component: str | None = None
    if step.component is not None:
        kind = step.component.kind
        component = step.component.name if kind is InlineKind.CUSTOM else kind.value
    agent_id = run.agent_id
    named = step.agent is not None and not _is_uuid(step.agent)
    org, workflow_id = execution.organization_id, execution.workflow_id

    def count(sync: Session) -> None:
        name = component
        if agent_id is not None:
            name = name or _count_agent(sync, agent_id, named, ok, duration)
        if name is not None:
            _count_component(sync, org, workflow_id, name, ok, duration, now)

    key = f"2-agent:{agent_id}" if agent_id is not None else f"3-activity:{component}"
    at_commit(session, key, count)


def _mean(average: Any, count: Any, duration: Any) -> Any:
    return func.round((average * 1.0 * count + duration) / (count + 1))


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _count_agent(
    session: Session, agent_id: uuid.UUID, named: bool, ok: bool, duration: int
) -> str | None:
    """Update the counters of the agent version that ran: ``agent_id`` (saved with the
    workflow) when the step names it by id, else the newest version of its lineage (the
    worker runs that one). Returns its kind (None when it no longer exists)."""
    total = AgentRow.total_executions
    target: Any = AgentRow.id == agent_id
    if named:  # every lookup by primary key or the parent_id index, never a scan
        saved, other = aliased(AgentRow), aliased(AgentRow)  # not correlated with the target
        root = select(versions.lineage_of(saved)).where(saved.id == agent_id).scalar_subquery()
        newest = (
            select(func.max(other.version))
            .where(or_(other.id == root, other.parent_id == root), other.deleted_at.is_(None))
            .scalar_subquery()
        )
        target = and_(
            or_(AgentRow.id == root, AgentRow.parent_id == root),
            AgentRow.version == newest,
            AgentRow.deleted_at.is_(None),
        )
    kind = session.execute(
        update(AgentRow)
        .where(target)
        .values(
            total_executions=total + 1,
            successful_executions=AgentRow.successful_executions + int(ok),
            failed_executions=AgentRow.failed_executions + int(not ok),
            avg_execution_time_ms=_mean(AgentRow.avg_execution_time_ms, total, duration),
            updated_at=AgentRow.updated_at,  # counters are not an edit of the agent
        )
        .returning(AgentRow.type),
        execution_options={"synchronize_session": False},
    )
    found = kind.scalar_one_or_none()
    return None if found is None else str(found.value)


def _count_component(
    session: Session,
    org: uuid.UUID,
    workflow_id: uuid.UUID | None,
    name: str,
    ok: bool,
    duration: int,
    now: dt.datetime,
) -> None:
    """One upsert: insert the (component, workflow) row with this outcome, or add it to the
    row there. The component is the organization's own of that name, else the built-in."""
    params = {
        "new_id": new_id(), "org": org, "workflow_id": workflow_id, "name": name,
        "ok": int(ok), "failed": int(not ok), "duration": duration, "now": now,
    }  # fmt: skip
    connection = session.connection()  # Core: no ORM bookkeeping for a plain upsert
    dialects.execute_at_commit(connection, _component_upsert(connection.dialect.name), [params])


_UPSERTS: dict[str, Any] = {}


def _component_upsert(dialect: str) -> Any:
    """The upsert of ``_count_component``, built once per dialect (it runs for every agent
    step): its values are bound parameters."""
    stmt = _UPSERTS.get(dialect)
    if stmt is not None:
        return stmt
    duration, now = bindparam("duration", type_=Integer), bindparam("now", type_=UTCDateTime)
    source = (
        select(
            bindparam("new_id", type_=GUID),
            bindparam("org", type_=GUID),
            ComponentRow.id,
            bindparam("workflow_id", type_=GUID),
            literal(1),
            bindparam("ok", type_=Integer),
            bindparam("failed", type_=Integer),
            duration,
            duration,
            duration,
            now,
            now,
            now,
        )
        .where(
            ComponentRow.name == bindparam("name", type_=String),
            or_(
                ComponentRow.organization_id == bindparam("org", type_=GUID),
                ComponentRow.organization_id.is_(None),
            ),
        )
        .order_by(ComponentRow.organization_id.is_(None), ComponentRow.created_at.desc())
        .limit(1)
    )
    columns = [
        "id", "organization_id", "component_id", "workflow_id", "execution_count",
        "success_count", "failure_count", "avg_duration_ms", "min_duration_ms",
        "max_duration_ms", "last_executed_at", "created_at", "updated_at",
    ]  # fmt: skip
    stmt = dialects.upsert(dialect, ActivityStatisticsRow.__table__).from_select(columns, source)
    stmt = stmt.on_conflict_do_update(
        index_elements=[A.organization_id, A.component_id, A.workflow_id],
        index_where=A.workflow_id.is_not(None),
        set_={
            "execution_count": A.execution_count + 1,
            "success_count": A.success_count + bindparam("ok", type_=Integer),
            "failure_count": A.failure_count + bindparam("failed", type_=Integer),
            "avg_duration_ms": _mean(A.avg_duration_ms, A.execution_count, duration),
            "min_duration_ms": dialects.least(
                dialect, func.coalesce(A.min_duration_ms, duration), duration
            ),
            "max_duration_ms": dialects.greatest(
                dialect, func.coalesce(A.max_duration_ms, duration), duration
            ),
            "last_executed_at": now,
            "updated_at": now,
        },
    )
    _UPSERTS[dialect] = stmt
    return stmt
