"""Task queues: the organization's own and the system queues every organization shares."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from turbocat.api.deps import MetaDep, NowDep, PrincipalDep, SessionDep
from turbocat.api.paging import PageDep, make_page
from turbocat.api.schemas.common import PROBLEM_RESPONSES, Page
from turbocat.api.schemas.task_queues import TaskQueueCreate, TaskQueueRead, TaskQueueUpdate
from turbocat.services import task_queues

router = APIRouter(prefix="/task-queues", tags=["task-queues"], responses=PROBLEM_RESPONSES)


@router.post(
    "", name="task-queues-create", status_code=status.HTTP_201_CREATED,
    response_model=TaskQueueRead,
)  # fmt: skip
async def create_task_queue(
    body: TaskQueueCreate, principal: PrincipalDep, session: SessionDep, now: NowDep, meta: MetaDep
) -> TaskQueueRead:
    """Create a queue of the organization (owners and admins). It may share its name with a
    system queue: the organization's own queue then applies to its executions and steps."""
    values = task_queues.QueueValues(**body.model_dump(exclude={"system"}))
    row = await task_queues.create(
        session, principal, values, system=body.system, now=now, meta=meta
    )
    return TaskQueueRead.model_validate(row)


@router.get("", name="task-queues-list", response_model=Page[TaskQueueRead])
async def list_task_queues(
    principal: PrincipalDep,
    session: SessionDep,
    page: PageDep,
    q: Annotated[
        str | None, Query(max_length=200, description="part of the name or display name")
    ] = None,
    system: Annotated[
        bool | None,
        Query(description="true: system queues only; false: the organization's own only"),
    ] = None,
    effective: Annotated[
        bool,
        Query(description="leave out system queues the organization overrides with its own"),
    ] = False,
) -> Page[TaskQueueRead]:
    """The organization's queues and the system queues."""
    filters = task_queues.QueueFilter(q=q, system=system, effective=effective)
    rows = await task_queues.list_queues(session, principal, filters, page)
    return make_page(rows, page, TaskQueueRead)


@router.get("/{queue_id}", name="task-queues-get", response_model=TaskQueueRead)
async def get_task_queue(
    queue_id: uuid.UUID, principal: PrincipalDep, session: SessionDep
) -> TaskQueueRead:
    return TaskQueueRead.model_validate(await task_queues.get(session, principal, queue_id))


@router.patch("/{queue_id}", name="task-queues-update", response_model=TaskQueueRead)
async def update_task_queue(
    queue_id: uuid.UUID, body: TaskQueueUpdate, principal: PrincipalDep, session: SessionDep,
    now: NowDep, meta: MetaDep,
) -> TaskQueueRead:  # fmt: skip
    """Change the labels or limits (owners and admins; system queues: system administrators).
    New limits apply to the next claims and admissions; running work is not interrupted."""
    row = await task_queues.update(
        session, principal, queue_id, changes=body.model_dump(exclude_unset=True), now=now,
        meta=meta,
    )  # fmt: skip
    return TaskQueueRead.model_validate(row)


@router.delete("/{queue_id}", name="task-queues-delete", status_code=status.HTTP_204_NO_CONTENT)
async def delete_task_queue(
    queue_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, now: NowDep, meta: MetaDep
) -> Response:
    """Delete a queue (owners and admins; system queues: system administrators). Work on it
    carries on, limited by the system queue of the same name if there is one, else unlimited."""
    await task_queues.delete(session, principal, queue_id, now=now, meta=meta)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
