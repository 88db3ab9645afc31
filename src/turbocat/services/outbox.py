"""The events outbox: an event is a row written in the transaction that caused it, so it exists
exactly when what it describes was committed; ``services.events`` dispatches it afterwards."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db.models import EventRow, ExecutionRow
from turbocat.domain import events


def emit(
    session: AsyncSession,
    organization_id: uuid.UUID,
    name: str,
    payload: dict[str, Any],
    now: dt.datetime,
) -> EventRow:
    """Add an event to the current transaction (dispatched once it commits)."""
    row = EventRow(organization_id=organization_id, name=name, payload=payload, created_at=now)
    session.add(row)
    return row


def execution_ended(session: AsyncSession, execution: ExecutionRow, now: dt.datetime) -> None:
    """``execution.completed|failed|timeout|cancelled`` for an execution that just ended.

    ``depth`` is the length of the event chain that started the execution (0 unless an event
    did; a child execution's is its parent's), so that subscribers can be stopped before a loop
    runs away."""
    name = events.EXECUTION_ENDED.get(execution.status.value)
    if name is None:
        return
    emit(
        session,
        execution.organization_id,
        name,
        {
            "execution_id": str(execution.id),
            "workflow_id": str(execution.workflow_id),
            "status": execution.status.value,
            "result": execution.result.value,
            "trigger_type": execution.trigger_type.value,
            "depth": events.chain_depth(
                execution.trigger_data or {}, child=execution.parent_execution_id is not None
            ),
            "output": execution.output_data,
            "error": execution.error_message,
            "duration_ms": execution.duration_ms,
        },
        now,
    )
