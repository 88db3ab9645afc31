"""Agents of the current organization, public agents of others, versions and lifecycle."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from turbocat.api.deps import MetaDep, NowDep, PrincipalDep, SessionDep
from turbocat.api.paging import PageDep, make_page
from turbocat.api.schemas.catalog import AgentCreate, AgentRead, AgentTypeRead, AgentUpdate
from turbocat.api.schemas.common import PROBLEM_RESPONSES, Page
from turbocat.domain import agents as agent_rules
from turbocat.domain.enums import AgentStatus, AgentType
from turbocat.services import agents

router = APIRouter(prefix="/agents", tags=["agents"], responses=PROBLEM_RESPONSES)


@router.get("/types", name="agents-types", response_model=list[AgentTypeRead])
async def agent_types() -> list[AgentTypeRead]:
    """The agent types and the JSON Schema of each one's ``config`` (for forms)."""
    return [
        AgentTypeRead(type=t, config_schema=agent_rules.config_json_schema(t)) for t in AgentType
    ]


@router.post(
    "", name="agents-create", status_code=status.HTTP_201_CREATED, response_model=AgentRead
)
async def create_agent(
    body: AgentCreate, principal: PrincipalDep, session: SessionDep, now: NowDep, meta: MetaDep
) -> AgentRead:
    """Create an agent (version 1). Its ``config`` is checked against its type's schema."""
    values = body.model_dump(exclude_unset=True, exclude={"type"})
    row = await agents.create(
        session, principal, agent_type=body.type, values=values, now=now, meta=meta
    )
    return AgentRead.model_validate(row)


@router.get("", name="agents-list", response_model=Page[AgentRead])
async def list_agents(
    principal: PrincipalDep,
    session: SessionDep,
    page: PageDep,
    type: AgentType | None = None,
    status_: Annotated[AgentStatus | None, Query(alias="status")] = None,
    tags: Annotated[list[str] | None, Query(description="any of these tags")] = None,
    created_by: uuid.UUID | None = None,
    public: Annotated[bool, Query(description="public agents of all organizations")] = False,
    q: Annotated[str | None, Query(max_length=200, description="text search")] = None,
    all_versions: bool = False,
) -> Page[AgentRead]:
    """The latest version of each agent (``all_versions`` for every version)."""
    filters = agents.AgentFilter(
        type=type, status=status_, tags=tags or [], created_by=created_by, public=public, q=q,
        all_versions=all_versions,
    )  # fmt: skip
    return make_page(await agents.list_agents(session, principal, filters, page), page, AgentRead)


@router.get("/{agent_id}", name="agents-get", response_model=AgentRead)
async def get_agent(agent_id: uuid.UUID, principal: PrincipalDep, session: SessionDep) -> AgentRead:
    return AgentRead.model_validate(await agents.get(session, principal, agent_id))


@router.patch("/{agent_id}", name="agents-update", response_model=AgentRead)
async def update_agent(
    agent_id: uuid.UUID, body: AgentUpdate, principal: PrincipalDep, session: SessionDep,
    now: NowDep, meta: MetaDep,
) -> AgentRead:  # fmt: skip
    """Edit the latest version; if it has run and config/parameters change, a new version is
    created and returned (the version that ran stays as it was)."""
    row = await agents.update(
        session,
        principal,
        agent_id,
        changes=body.model_dump(exclude_unset=True),
        now=now,
        meta=meta,
    )
    return AgentRead.model_validate(row)


@router.get("/{agent_id}/versions", name="agents-versions", response_model=list[AgentRead])
async def agent_versions(
    agent_id: uuid.UUID, principal: PrincipalDep, session: SessionDep
) -> list[AgentRead]:
    """Every version of the agent, newest first."""
    return [AgentRead.model_validate(r) for r in await agents.history(session, principal, agent_id)]


@router.delete("/{agent_id}", name="agents-delete", status_code=status.HTTP_204_NO_CONTENT)
async def delete_agent(
    agent_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, now: NowDep, meta: MetaDep
) -> Response:
    """Soft-delete the agent with all its versions (restorable)."""
    await agents.delete(session, principal, agent_id, now=now, meta=meta)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{agent_id}/restore", name="agents-restore", response_model=AgentRead)
async def restore_agent(
    agent_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, now: NowDep, meta: MetaDep
) -> AgentRead:
    return AgentRead.model_validate(
        await agents.restore(session, principal, agent_id, now=now, meta=meta)
    )
