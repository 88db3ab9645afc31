"""Schedules declared in a workflow's ``trigger_config.schedules`` (seed 000's
``workflow.schedule_*``), kept as schedule rows of the workflow.

Saving a version with a ``trigger_config`` makes the lineage's rows named
``trigger_config.schedules[i]`` match it: new entries are created, changed ones updated (their
next slot recomputed from now when the slots change), removed ones deleted. Their state
(``run_count``, ``next_fire_at``) survives saves that leave the entry as it was. They fire like
any schedule; schedules made through ``/api/v1/schedules`` are never touched here.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db.models import ScheduleRow, WorkflowRow
from turbocat.domain import schedules as slots
from turbocat.domain.triggers import ScheduleTrigger
from turbocat.services import versions

PREFIX = "trigger_config.schedules"
_SLOT_FIELDS = ("cron_expression", "timezone", "misfire_policy", "enabled", "max_runs")


def _name(index: int) -> str:
    return f"{PREFIX}[{index}]"


def _values(entry: dict[str, Any]) -> dict[str, Any]:
    parsed = ScheduleTrigger.model_validate(entry)
    return {
        "cron_expression": parsed.cron, "timezone": parsed.timezone, "input": parsed.input,
        "enabled": parsed.enabled, "misfire_policy": parsed.misfire_policy,
        "start_immediately": parsed.start_immediately, "max_runs": parsed.max_runs,
    }  # fmt: skip


async def sync(session: AsyncSession, workflow: WorkflowRow, now: dt.datetime) -> None:
    """Make the lineage's ``trigger_config`` schedule rows match this version's config."""
    lineage = versions.lineage_id(workflow)
    entries = list((workflow.trigger_config or {}).get("schedules") or [])
    stmt = select(ScheduleRow).where(
        ScheduleRow.workflow_id == lineage, ScheduleRow.name.like(f"{PREFIX}[%")
    )
    existing = {row.name: row for row in (await session.execute(stmt)).scalars()}
    for index, entry in enumerate(entries):
        values = _values(entry)
        row = existing.pop(_name(index), None)
        if row is None:
            row = ScheduleRow(
                organization_id=workflow.organization_id, workflow_id=lineage,
                created_by_id=workflow.created_by_id, name=_name(index), run_count=0,
                created_at=now, updated_at=now, **values,
            )  # fmt: skip
            _first_slot(row, now, start_immediately=values["start_immediately"])
            session.add(row)
            continue
        changed = {k for k, v in values.items() if getattr(row, k) != v}
        if not changed:
            continue
        for key in changed:
            setattr(row, key, values[key])
        row.updated_at = now
        if changed & set(_SLOT_FIELDS):
            _first_slot(row, now, start_immediately=False)
    if existing:
        await session.execute(
            delete(ScheduleRow).where(ScheduleRow.id.in_([r.id for r in existing.values()]))
        )
    await session.flush()


def _first_slot(row: ScheduleRow, now: dt.datetime, *, start_immediately: bool) -> None:
    spec = slots.ScheduleSpec(row.cron_expression, row.timezone, row.misfire_policy, row.max_runs)
    exhausted = row.max_runs is not None and row.run_count >= row.max_runs
    if not row.enabled or exhausted:
        row.next_fire_at = None
        return
    if start_immediately:
        row.next_fire_at = now
        return
    row.next_fire_at = slots.next_for(spec, now)
