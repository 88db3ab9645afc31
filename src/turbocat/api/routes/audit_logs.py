"""The audit trail of the current organization."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from turbocat.api.deps import PrincipalDep, SessionDep
from turbocat.api.schemas.common import PROBLEM_RESPONSES, Page
from turbocat.api.schemas.identity import AuditLogRead
from turbocat.domain.pagination import DEFAULT_LIMIT, MAX_LIMIT, Cursor
from turbocat.services import audit

router = APIRouter(prefix="/audit-logs", tags=["audit-logs"], responses=PROBLEM_RESPONSES)


@router.get(
    "", name="audit-logs-list", response_model=Page[AuditLogRead], summary="Audit trail (admins)"
)
async def list_audit_logs(
    principal: PrincipalDep,
    session: SessionDep,
    action: str | None = None,
    resource_type: str | None = None,
    resource_id: uuid.UUID | None = None,
    user_id: uuid.UUID | None = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> Page[AuditLogRead]:
    """Every change made in the organization, newest first, secrets redacted."""
    rows = await audit.list_entries(
        session,
        principal,
        filters=audit.AuditFilter(action, resource_type, resource_id, user_id, since, until),
        limit=limit + 1,
        cursor_id=Cursor.decode(cursor).id if cursor else None,
    )
    page = rows[:limit]
    more = len(rows) > limit
    return Page[AuditLogRead](
        items=[AuditLogRead.model_validate(r) for r in page],
        next_cursor=Cursor.after(page[-1].created_at, page[-1].id).encode() if more else None,
    )
