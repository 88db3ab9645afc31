"""Schedules: cron slots of a workflow in a time zone, fired exactly once each."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from turbocat.api.deps import ContextDep, MetaDep, NowDep, PrincipalDep, SessionDep
from turbocat.api.paging import PageDep, make_page
from turbocat.api.schemas.common import PROBLEM_RESPONSES, Page
from turbocat.api.schemas.schedules import ScheduleCreate, ScheduleRead, ScheduleUpdate
from turbocat.services import schedules

router = APIRouter(prefix="/schedules", tags=["schedules"], responses=PROBLEM_RESPONSES)


@router.post(
    "", name="schedules-create", status_code=status.HTTP_201_CREATED, response_model=ScheduleRead
)
async def create_schedule(
    body: ScheduleCreate, ctx: ContextDep, principal: PrincipalDep, session: SessionDep,
    now: NowDep, meta: MetaDep,
) -> ScheduleRead:  # fmt: skip
    """Run a workflow on cron slots in a time zone. ``next_fire_at`` shows the first slot
    (now, with ``start_immediately``). An invalid cron or zone is a 422 naming the field."""
    values = schedules.ScheduleValues(**body.model_dump())
    row = await schedules.create(session, principal, values, plans=ctx.plans, now=now, meta=meta)
    return ScheduleRead.model_validate(row)


@router.get("", name="schedules-list", response_model=Page[ScheduleRead])
async def list_schedules(
    principal: PrincipalDep,
    session: SessionDep,
    page: PageDep,
    workflow_id: Annotated[
        uuid.UUID | None, Query(description="any version of this workflow")
    ] = None,
    enabled: bool | None = None,
) -> Page[ScheduleRead]:
    rows = await schedules.list_schedules(
        session, principal, page, workflow_id=workflow_id, enabled=enabled
    )
    return make_page(rows, page, ScheduleRead)


@router.get("/{schedule_id}", name="schedules-get", response_model=ScheduleRead)
async def get_schedule(
    schedule_id: uuid.UUID, principal: PrincipalDep, session: SessionDep
) -> ScheduleRead:
    return ScheduleRead.model_validate(await schedules.get(session, principal, schedule_id))


@router.patch("/{schedule_id}", name="schedules-update", response_model=ScheduleRead)
async def update_schedule(
    schedule_id: uuid.UUID, body: ScheduleUpdate, ctx: ContextDep, principal: PrincipalDep,
    session: SessionDep, now: NowDep, meta: MetaDep,
) -> ScheduleRead:  # fmt: skip
    """Change the cron, zone, input, policy or limits; ``next_fire_at`` is recomputed from now
    when the slots change."""
    row = await schedules.update_schedule(
        session, principal, schedule_id, body.model_dump(exclude_unset=True), plans=ctx.plans,
        now=now, meta=meta,
    )  # fmt: skip
    return ScheduleRead.model_validate(row)


@router.post("/{schedule_id}/enable", name="schedules-enable", response_model=ScheduleRead)
async def enable_schedule(
    schedule_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, now: NowDep,
    meta: MetaDep,
) -> ScheduleRead:  # fmt: skip
    """Fire again from the next slot after now (slots passed while disabled do not run)."""
    row = await schedules.set_enabled(session, principal, schedule_id, True, now=now, meta=meta)
    return ScheduleRead.model_validate(row)


@router.post("/{schedule_id}/disable", name="schedules-disable", response_model=ScheduleRead)
async def disable_schedule(
    schedule_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, now: NowDep,
    meta: MetaDep,
) -> ScheduleRead:  # fmt: skip
    row = await schedules.set_enabled(session, principal, schedule_id, False, now=now, meta=meta)
    return ScheduleRead.model_validate(row)


@router.delete("/{schedule_id}", name="schedules-delete", status_code=status.HTTP_204_NO_CONTENT)
async def delete_schedule(
    schedule_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, now: NowDep,
    meta: MetaDep,
) -> Response:  # fmt: skip
    """Delete the schedule; its past executions stay."""
    await schedules.delete(session, principal, schedule_id, now=now, meta=meta)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
