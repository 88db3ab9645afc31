"""Run statistics of components per workflow (seed 003's activity_statistics)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from turbocat.api.deps import PrincipalDep, SessionDep
from turbocat.api.schemas.activity import ActivityStatisticsRead
from turbocat.api.schemas.common import PROBLEM_RESPONSES
from turbocat.services import activity

router = APIRouter(
    prefix="/activity-statistics", tags=["activity-statistics"], responses=PROBLEM_RESPONSES
)


@router.get("", name="activity-statistics-list", response_model=list[ActivityStatisticsRead])
async def list_statistics(
    principal: PrincipalDep,
    session: SessionDep,
    component_id: uuid.UUID | None = None,
    workflow_id: Annotated[
        uuid.UUID | None, Query(description="any version of this workflow")
    ] = None,
    overall: Annotated[
        bool, Query(description="one row per component, summed over the workflows")
    ] = False,
) -> list[ActivityStatisticsRead]:
    """How often each component (the built-in kind of an agent step, or a custom component)
    ran in this organization's workflows, with successes, failures and durations: one row
    per component and workflow version, busiest first. Counted once per step run's final
    outcome (retried attempts do not count)."""
    rows = await activity.statistics(
        session, principal, component_id=component_id, workflow_id=workflow_id, overall=overall
    )
    return [ActivityStatisticsRead.model_validate(row) for row in rows]
