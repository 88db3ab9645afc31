"""Events: publish a custom event; read recent events (platform and custom)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from turbocat.api.deps import ContextDep, NowDep, PrincipalDep, SessionDep
from turbocat.api.paging import PageDep, make_page
from turbocat.api.schemas.common import PROBLEM_RESPONSES, Page
from turbocat.api.schemas.triggers import EventPublish, EventRead
from turbocat.services import events

router = APIRouter(prefix="/events", tags=["events"], responses=PROBLEM_RESPONSES)


@router.post(
    "",
    name="events-publish",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=EventRead,
    summary="Publish a custom event",
)
async def publish_event(
    body: EventPublish, ctx: ContextDep, principal: PrincipalDep, session: SessionDep, now: NowDep
) -> EventRead:
    """Every active workflow of the organization whose ``trigger_config.events`` matches the
    name (and whose filter passes) starts once, with the payload as its input and the event in
    ``trigger_data``. Names under ``execution.``, ``deployment.``, ``schedule.``,
    ``webhook.`` and ``turbocat.`` are the platform's."""
    row = await events.publish(
        session, principal, body.name, body.payload, wake=ctx.events.notify, now=now
    )
    return EventRead.model_validate(row)


@router.get("", name="events-list", response_model=Page[EventRead])
async def list_events(
    principal: PrincipalDep,
    session: SessionDep,
    page: PageDep,
    name: Annotated[str | None, Query(max_length=100)] = None,
) -> Page[EventRead]:
    return make_page(await events.list_events(session, principal, name, page), page, EventRead)
