"""Execution log lines, written as the transaction that logs them commits.

A line is a plain row (no ORM object): the unit of work would spend about as long inserting it
as the rest of a step's transaction spends on its statements. The lines of one transaction
go out in one INSERT as it commits, after the other writes were flushed (a line may name a
step run created in the same transaction). A rolled-back savepoint drops the lines logged
inside it, as it would have dropped their objects (``db.engine.at_commit``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from turbocat.db import dialects
from turbocat.db.engine import at_commit
from turbocat.db.models import ExecutionLogRow, StepRunRow
from turbocat.domain.enums import LogLevel, StepStatus
from turbocat.domain.ids import new_id
from turbocat.domain.redaction import redact

_INSERT = insert(cast(Table, ExecutionLogRow.__table__))
_PENDING = "execution_log_lines"
_KEY = "0-execution-log"
"""Before the counters (``at_commit`` keys sort): lines lock no shared row."""


def add(
    session: AsyncSession,
    *,
    organization_id: uuid.UUID,
    execution_id: uuid.UUID,
    message: str,
    at: dt.datetime,
    level: LogLevel = LogLevel.INFO,
    run: StepRunRow | None = None,
    run_id: uuid.UUID | None = None,
    step_status: StepStatus | None = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Log ``message`` for an execution, with the state ``run`` is in now (its id is read as
    the line is written: a run new in this transaction has none before the flush)."""
    row = {
        "id": new_id(),  # now: lines keep the order they were logged in
        "organization_id": organization_id,
        "execution_id": execution_id,
        "step_run_id": run_id,
        "workflow_step_id": None,
        "level": level,
        "message": message,
        "metadata": redact(metadata or {}),
        "step_key": run.step_key if run is not None else None,
        "step_status": step_status or (run.status if run is not None else None),
        "step_started_at": run.started_at if run is not None else None,
        "step_completed_at": run.completed_at if run is not None else None,
        "step_duration_ms": run.duration_ms if run is not None else None,
        "created_at": at,
    }

    def queue(sync: Session) -> None:
        if run is not None and row["step_run_id"] is None:
            sync.flush()  # a run created in this transaction gets its id
            row["step_run_id"] = run.id
        sync.info.setdefault(_PENDING, []).append(row)

    at_commit(session, _KEY, queue)
    at_commit(session, _KEY + "~", _write)  # after every queued line; once is enough


def _write(sync: Session) -> None:
    rows = sync.info.pop(_PENDING, None)
    if rows:
        sync.flush()  # the rows the lines name exist first
        dialects.execute_at_commit(sync.connection(), _INSERT, rows)
