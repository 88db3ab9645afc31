"""Run statistics per component and workflow (seed 003's activity_statistics), read side.

The engine writes one row per (organization, component, workflow version) as steps end
(``engine/activity.py``); the "all workflows" figures of a component are summed here from
those rows rather than kept in a second row on the engine's hot path.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db.models import ActivityStatisticsRow, ComponentRow
from turbocat.domain.access import Principal
from turbocat.services import workflows

A = ActivityStatisticsRow


@dataclass(frozen=True)
class ActivityStatistics:
    component_id: uuid.UUID
    component_name: str
    workflow_id: uuid.UUID | None
    """None: every workflow of the organization together."""
    execution_count: int
    success_count: int
    failure_count: int
    avg_duration_ms: int
    min_duration_ms: int | None
    max_duration_ms: int | None
    last_executed_at: dt.datetime | None


async def statistics(
    session: AsyncSession,
    principal: Principal,
    *,
    component_id: uuid.UUID | None = None,
    workflow_id: uuid.UUID | None = None,
    overall: bool = False,
) -> list[ActivityStatistics]:
    """The organization's statistics per component and workflow version (of any version of
    ``workflow_id``'s workflow when given), or with ``overall`` one row per component summed
    over those workflows. Busiest first."""
    principal.require_access("executions")
    where = [A.organization_id == principal.organization_id]
    if component_id is not None:
        where.append(A.component_id == component_id)
    if workflow_id is not None:
        lineage = await workflows.history(session, principal, workflow_id)
        where.append(A.workflow_id.in_([w.id for w in lineage]))
    if not overall:
        rows = await session.execute(
            select(A, ComponentRow.name)
            .join(ComponentRow, ComponentRow.id == A.component_id)
            .where(*where)
            .order_by(A.execution_count.desc(), A.id)
        )
        return [
            ActivityStatistics(
                row.component_id,
                name,
                row.workflow_id,
                row.execution_count,
                row.success_count,
                row.failure_count,
                row.avg_duration_ms,
                row.min_duration_ms,
                row.max_duration_ms,
                row.last_executed_at,
            )
            for row, name in rows.all()
        ]
    count = func.sum(A.execution_count)
    summed = await session.execute(
        select(
            A.component_id,
            ComponentRow.name,
            count,
            func.sum(A.success_count),
            func.sum(A.failure_count),
            func.sum(A.avg_duration_ms * A.execution_count),
            func.min(A.min_duration_ms),
            func.max(A.max_duration_ms),
            func.max(A.last_executed_at),
        )
        .join(ComponentRow, ComponentRow.id == A.component_id)
        .where(*where)
        .group_by(A.component_id, ComponentRow.name)
        .order_by(count.desc(), A.component_id)
    )
    return [
        ActivityStatistics(
            component,
            name,
            None,
            int(total),
            int(ok),
            int(failed),
            round(int(weighted) / int(total)) if total else 0,
            low,
            high,
            last,
        )
        for component, name, total, ok, failed, weighted, low, high, last in summed.all()
    ]
