"""Schedules (seed 003): cron slots of a workflow, and firing them exactly once.

A schedule belongs to a workflow lineage: each slot runs the latest version, with the
schedule's ``input``. Slot computation (time zones, DST, misfires, max runs) is
``domain.schedules``; this module stores and fires.

Exactly once, with any number of schedulers: firing a slot is one transaction that (1) locks the
due schedule row (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so schedulers spread the work;
SQLite serializes writers), (2) advances ``next_fire_at`` with a compare-and-set on the value it
read (``UPDATE ... WHERE id = ? AND next_fire_at = ?``: a second scheduler that read the same
slot updates nothing and starts nothing), and (3) starts the execution with the idempotency key
``schedule:<id>:<slot>``, unique per (organization, workflow version) in the database, so a
slot can never own two executions even if the first two guards were bypassed.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db.listing import PageRequest, apply_page
from turbocat.db.models import ScheduleRow, WorkflowRow
from turbocat.domain import schedules as slots
from turbocat.domain.access import Principal
from turbocat.domain.enums import MisfirePolicy, TriggerType
from turbocat.domain.errors import FieldError, NotFound, TurbocatError, ValidationFailed
from turbocat.domain.jsonschemas import validate_instance
from turbocat.domain.triggers import check_cron, check_timezone
from turbocat.engine.plan import PlanCache
from turbocat.services import audit, executions, outbox, versions, workflows

log = logging.getLogger("turbocat.scheduler")

_FIELDS = (
    "workflow_id", "name", "cron_expression", "timezone", "enabled", "start_immediately",
    "max_runs", "misfire_policy", "next_fire_at",
)  # fmt: skip
NULLABLE = ("name", "max_runs")
"""Fields an update may clear with null (null elsewhere leaves the field as it is)."""
EDITABLE = (
    "name", "cron_expression", "timezone", "input", "start_immediately", "max_runs",
    "misfire_policy",
)  # fmt: skip


@dataclass
class ScheduleValues:
    workflow_id: uuid.UUID
    cron_expression: str
    timezone: str = "UTC"
    name: str | None = None
    input: dict[str, Any] | None = None
    enabled: bool = True
    start_immediately: bool = False
    max_runs: int | None = None
    misfire_policy: MisfirePolicy = MisfirePolicy.SKIP


def spec_of(row: ScheduleRow) -> slots.ScheduleSpec:
    return slots.ScheduleSpec(row.cron_expression, row.timezone, row.misfire_policy, row.max_runs)


def _checked_cron(expression: str, timezone: str) -> tuple[str, str]:
    """The normalized cron and zone, or 422 with the field at fault."""
    errors: list[tuple[tuple[str, ...], str]] = []
    try:
        expression = check_cron(expression)
    except ValueError as exc:
        errors.append((("body", "cron_expression"), str(exc)))
    try:
        timezone = check_timezone(timezone)
    except ValueError as exc:
        errors.append((("body", "timezone"), str(exc)))
    epoch = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    if not errors and slots.next_slot(expression, timezone, epoch) is None:
        errors.append((("body", "cron_expression"), f"{expression!r} never fires"))
    if errors:
        raise ValidationFailed(errors[0][1], [FieldError(p, m) for p, m in errors])
    return expression, timezone


async def _check_input(
    session: AsyncSession, workflow: WorkflowRow, data: dict[str, Any], plans: PlanCache
) -> None:
    plan = await plans.load(session, workflow)
    if plan.definition.inputs:
        validate_instance(data, plan.definition.inputs, ("body", "input"))


async def create(
    session: AsyncSession,
    principal: Principal,
    values: ScheduleValues,
    *,
    plans: PlanCache,
    now: dt.datetime,
    meta: audit.RequestMeta | None = None,
) -> ScheduleRow:
    """A schedule of a workflow of the organization; its first slot is computed at once."""
    principal.require_access("schedules", write=True)
    cron, zone = _checked_cron(values.cron_expression, values.timezone)
    workflow = await workflows.get(session, principal, values.workflow_id, for_write=True)
    data = values.input or {}
    await _check_input(session, workflow, data, plans)
    row = ScheduleRow(
        organization_id=principal.organization_id,
        created_by_id=principal.user_id,
        workflow_id=versions.lineage_id(workflow),
        name=values.name,
        cron_expression=cron,
        timezone=zone,
        input=data,
        enabled=values.enabled,
        start_immediately=values.start_immediately,
        max_runs=values.max_runs,
        run_count=0,
        misfire_policy=values.misfire_policy,
        created_at=now,
        updated_at=now,
    )
    row.next_fire_at = (
        slots.first_fire(spec_of(row), now, start_immediately=values.start_immediately)
        if values.enabled
        else None
    )
    session.add(row)
    await session.flush()
    _audit(session, principal, row, "schedule.create", now, meta, after=True)
    return row


def _audit(
    session: AsyncSession,
    principal: Principal,
    row: ScheduleRow,
    action: str,
    now: dt.datetime,
    meta: audit.RequestMeta | None,
    *,
    before: dict[str, Any] | None = None,
    after: bool = False,
) -> None:
    audit.record(
        session, organization_id=row.organization_id, actor=audit.Actor.of(principal),
        action=action, resource_type="schedule", resource_id=row.id, now=now, meta=meta,
        before=before, after=audit.snapshot(row, _FIELDS) if after else None,
    )  # fmt: skip


async def get(session: AsyncSession, principal: Principal, schedule_id: uuid.UUID) -> ScheduleRow:
    principal.require_access("schedules")
    row = await session.get(ScheduleRow, schedule_id)
    if row is None or row.organization_id != principal.organization_id:
        raise NotFound("schedule", schedule_id)
    return row


async def list_schedules(
    session: AsyncSession,
    principal: Principal,
    page: PageRequest,
    *,
    workflow_id: uuid.UUID | None = None,
    enabled: bool | None = None,
) -> list[ScheduleRow]:
    principal.require_access("schedules")
    stmt = select(ScheduleRow).where(ScheduleRow.organization_id == principal.organization_id)
    if workflow_id is not None:
        workflow = await workflows.get(session, principal, workflow_id)
        stmt = stmt.where(ScheduleRow.workflow_id == versions.lineage_id(workflow))
    if enabled is not None:
        stmt = stmt.where(ScheduleRow.enabled.is_(enabled))
    stmt = apply_page(stmt, page, id_col=ScheduleRow.id, created_col=ScheduleRow.created_at)
    return list((await session.execute(stmt)).scalars())


async def update_schedule(
    session: AsyncSession,
    principal: Principal,
    schedule_id: uuid.UUID,
    changes: dict[str, Any],
    *,
    plans: PlanCache,
    now: dt.datetime,
    meta: audit.RequestMeta | None = None,
) -> ScheduleRow:
    """Change fields; a new cron, zone or policy recomputes ``next_fire_at`` from now."""
    principal.require_access("schedules", write=True)
    row = await get(session, principal, schedule_id)
    before = audit.snapshot(row, _FIELDS)
    cron, zone = _checked_cron(
        changes.get("cron_expression") or row.cron_expression,
        changes.get("timezone") or row.timezone,
    )
    if "input" in changes:
        await _check_input(session, await _target(session, row), changes["input"] or {}, plans)
    for name in EDITABLE:
        if name in changes and (changes[name] is not None or name in NULLABLE):
            setattr(row, name, changes[name])
    row.cron_expression, row.timezone = cron, zone
    if row.max_runs is not None and row.max_runs <= row.run_count:
        row.next_fire_at = None
    elif row.enabled and {"cron_expression", "timezone", "misfire_policy", "max_runs"} & set(
        changes
    ):
        row.next_fire_at = slots.next_for(spec_of(row), now)
    row.updated_at = now
    await session.flush()
    _audit(session, principal, row, "schedule.update", now, meta, before=before, after=True)
    return row


async def set_enabled(
    session: AsyncSession,
    principal: Principal,
    schedule_id: uuid.UUID,
    enabled: bool,
    *,
    now: dt.datetime,
    meta: audit.RequestMeta | None = None,
) -> ScheduleRow:
    """Disable (no slot fires, ``next_fire_at`` cleared) or enable (slots missed while
    disabled are not run; the next one is the first after now)."""
    principal.require_access("schedules", write=True)
    row = await get(session, principal, schedule_id)
    before = audit.snapshot(row, _FIELDS)
    if enabled and not row.enabled:
        exhausted = row.max_runs is not None and row.run_count >= row.max_runs
        row.next_fire_at = None if exhausted else slots.next_for(spec_of(row), now)
    elif not enabled:
        row.next_fire_at = None
    row.enabled = enabled
    row.updated_at = now
    await session.flush()
    action = "schedule.enable" if enabled else "schedule.disable"
    _audit(session, principal, row, action, now, meta, before=before, after=True)
    return row


async def delete(
    session: AsyncSession,
    principal: Principal,
    schedule_id: uuid.UUID,
    *,
    now: dt.datetime,
    meta: audit.RequestMeta | None = None,
) -> None:
    principal.require_access("schedules", write=True)
    row = await get(session, principal, schedule_id)
    before = audit.snapshot(row, _FIELDS)
    _audit(session, principal, row, "schedule.delete", now, meta, before=before)
    await session.delete(row)
    await session.flush()


# --- firing -----------------------------------------------------------------------------------


NEVER = dt.datetime.max.replace(tzinfo=dt.UTC)
"""No schedule has a next slot."""


async def due(
    session: AsyncSession, now: dt.datetime, limit: int = 100
) -> tuple[list[uuid.UUID], dt.datetime | None]:
    """Ids of enabled schedules whose next slot has come, oldest first (at most ``limit``),
    and the next slot after ``now`` when this one query saw it (``NEVER``: there is none;
    None: it did not see far enough, ask ``next_due``)."""
    stmt = (
        select(ScheduleRow.id, ScheduleRow.next_fire_at)
        .where(ScheduleRow.enabled.is_(True), ScheduleRow.next_fire_at.is_not(None))
        .order_by(ScheduleRow.next_fire_at)
        .limit(limit + 1)
    )
    rows = (await session.execute(stmt)).all()
    ids = [row.id for row in rows if row.next_fire_at <= now][:limit]
    upcoming = next((row.next_fire_at for row in rows if row.next_fire_at > now), None)
    if upcoming is None and len(rows) <= limit:  # it saw every enabled schedule: none is next
        upcoming = NEVER
    return ids, upcoming


async def next_due(session: AsyncSession) -> dt.datetime | None:
    stmt = (
        select(ScheduleRow.next_fire_at)
        .where(ScheduleRow.enabled.is_(True), ScheduleRow.next_fire_at.is_not(None))
        .order_by(ScheduleRow.next_fire_at)
        .limit(1)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


@dataclass(frozen=True)
class Fired:
    """What firing one due schedule did."""

    schedule_id: uuid.UUID
    slot: dt.datetime | None
    execution_id: uuid.UUID | None
    missed: int
    next_fire_at: dt.datetime | None
    skipped_reason: str | None = None


async def _target(session: AsyncSession, row: ScheduleRow) -> WorkflowRow:
    """The latest live version of the schedule's workflow lineage."""
    stmt = select(WorkflowRow).where(
        versions.lineage_of(WorkflowRow) == row.workflow_id, versions.is_latest(WorkflowRow)
    )
    workflow = (await session.execute(stmt)).scalars().first()
    if workflow is None or workflow.deleted_at is not None:
        raise NotFound("workflow", row.workflow_id)
    return workflow


async def fire(
    session: AsyncSession,
    schedule_id: uuid.UUID,
    *,
    plans: PlanCache,
    notify: Callable[[], None],
    now: dt.datetime,
    grace: dt.timedelta = slots.DEFAULT_GRACE,
) -> Fired | None:
    """Fire the due slot of one schedule, in the caller's transaction; None when it is not
    due any more (another scheduler fired it, or it was changed)."""
    stmt = (
        select(ScheduleRow)
        .where(
            ScheduleRow.id == schedule_id,
            ScheduleRow.enabled.is_(True),
            ScheduleRow.next_fire_at <= now,
        )
        .with_for_update(skip_locked=True)
    )
    row = (await session.execute(stmt)).scalar_one_or_none()
    if row is None or row.next_fire_at is None:
        return None
    due_at = row.next_fire_at
    firing = slots.plan(spec_of(row), due_at, row.run_count, now, grace=grace)
    reason = None
    workflow: WorkflowRow | None = None
    try:
        workflow = await _target(session, row)
    except NotFound:
        reason = "the workflow was deleted; the schedule is disabled"
    if workflow is not None and workflow.status not in executions.RUNNABLE:
        reason = f"the workflow is {workflow.status.value}; the slot is skipped"
    runs = firing.slot is not None and reason is None
    advanced = await session.execute(
        update(ScheduleRow)
        .where(ScheduleRow.id == row.id, ScheduleRow.next_fire_at == due_at)
        .values(
            next_fire_at=None if workflow is None else firing.next_fire_at,
            enabled=workflow is not None,
            run_count=ScheduleRow.run_count + int(runs),
            last_fired_at=now if runs else ScheduleRow.last_fired_at,
            updated_at=now,
        ),
        execution_options={"synchronize_session": False},
    )
    if advanced.rowcount != 1:  # type: ignore[attr-defined]
        return None  # another scheduler advanced it first: the database decided
    if firing.misfired:
        _emit(session, row, "schedule.misfired", {
            "schedule_id": str(row.id), "missed_slots": firing.missed,
            "first_missed": due_at.isoformat(), "policy": row.misfire_policy.value,
            "ran_once": runs,
        }, now)  # fmt: skip
    execution_id = None
    if runs and workflow is not None and firing.slot is not None:
        execution_id, reason = await _start(session, row, workflow, firing, plans, notify, now)
    if reason:
        log.warning("schedule %s: %s", row.id, reason)
    return Fired(row.id, firing.slot, execution_id, firing.missed, firing.next_fire_at, reason)


async def _start(
    session: AsyncSession,
    row: ScheduleRow,
    workflow: WorkflowRow,
    firing: slots.Firing,
    plans: PlanCache,
    notify: Callable[[], None],
    now: dt.datetime,
) -> tuple[uuid.UUID | None, str | None]:
    """Start the run of the slot (no user: the platform starts it for the schedule)."""
    assert firing.slot is not None
    trigger: dict[str, Any] = {"schedule_id": str(row.id), "slot": firing.slot.isoformat()}
    if firing.misfired:
        trigger["missed_slots"] = firing.missed
    try:
        # A savepoint: a run that cannot start (its input no longer fits a newer version)
        # skips the slot, while the schedule still advances.
        async with session.begin_nested():
            started = await executions.launch(
                session, workflow, input_data=dict(row.input),
                trigger_type=TriggerType.SCHEDULED, trigger_data=trigger, plans=plans,
                notify=notify, now=now, idempotency_key=slots.slot_key(row.id, firing.slot),
                input_path=("schedule", "input"),
            )  # fmt: skip
    except TurbocatError as exc:
        return None, f"the run of slot {firing.slot.isoformat()} could not start: {exc.detail}"
    if not started.created:  # unreachable past the compare-and-set; the key says so anyway
        return None, f"slot {firing.slot.isoformat()} already has execution {started.execution.id}"
    return started.execution.id, None


def _emit(
    session: AsyncSession, row: ScheduleRow, name: str, payload: dict[str, Any], now: dt.datetime
) -> None:
    """The one place this module emits an event (into the firing's transaction)."""
    outbox.emit(session, row.organization_id, name, payload, now)
