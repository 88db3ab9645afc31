"""Usage metering: counters per organization, metric and UTC day in ``usage_records``.

Each addition is one upsert on the row's unique key, so concurrent workers add up correctly
(PostgreSQL and SQLite both take ``ON CONFLICT ... DO UPDATE``); it runs in the caller's
transaction, so what is counted commits or rolls back with what it counts.

Counters (``COUNTERS``) are added to as things happen: workflow_executions when an execution
is created (``services.executions.launch`` and re-runs), ai_tokens_used when an llm step's
outcome is recorded (the worker), api_calls_made from the API's write-behind buffer
(``services.api_calls``). Gauges (``GAUGES``) are measured by ``measure_gauges`` (the
scheduler, every ``scheduler.usage_gauge_seconds``): the day's row holds the last value
measured that day. Months are derived from the daily rows (``report``): counters are summed,
gauges take the month's largest daily value (docs/billing.md).
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import ROUND_CEILING, Decimal
from typing import Any

from sqlalchemy import Text, cast, func, not_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db.dialects import upsert
from turbocat.db.listing import tags_any
from turbocat.db.models import (
    ApiKeyRow,
    ExecutionLogRow,
    ExecutionRow,
    MembershipRow,
    OrganizationRow,
    StepRunRow,
    UsageRecordRow,
    UserRow,
    WorkflowRow,
)
from turbocat.domain.deployments import MANAGED_WORKFLOW_TAG
from turbocat.domain.enums import UsageMetric, WorkflowStatus
from turbocat.domain.ids import new_id
from turbocat.domain.plans import month_of

COUNTERS = (UsageMetric.WORKFLOW_EXECUTIONS, UsageMetric.AI_TOKENS_USED, UsageMetric.API_CALLS_MADE)
GAUGES = (UsageMetric.STORAGE_GB, UsageMetric.ACTIVE_USERS, UsageMetric.ACTIVE_WORKFLOWS)


def day_of(now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The UTC day ``now`` falls in, as [start, end)."""
    start = now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + dt.timedelta(days=1)


async def add(
    session: AsyncSession,
    organization_id: uuid.UUID,
    metric: UsageMetric,
    quantity: int | Decimal,
    now: dt.datetime,
    *,
    day: dt.datetime | None = None,
) -> None:
    """Add ``quantity`` to the organization's ``metric`` for today, or for the UTC day of
    ``day`` (a buffered count), nothing when it is 0."""
    if not quantity:
        return
    start, end = day_of(day or now)
    row = {
        "id": new_id(), "organization_id": organization_id, "metric": metric,
        "quantity": Decimal(quantity), "period_start": start, "period_end": end, "details": {},
        "created_at": now, "updated_at": now,
    }  # fmt: skip
    await session.execute(_adding(session.get_bind().dialect.name), row)


_ADDING: dict[str, Any] = {}


def _adding(dialect: str) -> Any:
    """The upsert ``add`` runs, built once per dialect (it runs for every execution started
    and every llm step recorded; building it each time cost more than running it)."""
    stmt = _ADDING.get(dialect)
    if stmt is None:
        table = UsageRecordRow.__table__
        insert = upsert(dialect, table)
        stmt = _ADDING[dialect] = insert.on_conflict_do_update(
            index_elements=["organization_id", "metric", "period_start", "period_end"],
            set_={
                "quantity": table.c.quantity + insert.excluded.quantity,
                "updated_at": insert.excluded.updated_at,
            },
        )
    return stmt


async def set_gauge(
    session: AsyncSession,
    organization_id: uuid.UUID,
    metric: UsageMetric,
    value: Decimal,
    now: dt.datetime,
    details: dict[str, Any] | None = None,
) -> None:
    """Make ``value`` the organization's ``metric`` for today (a re-measurement replaces it)."""
    start, end = day_of(now)
    table = UsageRecordRow.__table__
    stmt = upsert(session.get_bind().dialect.name, table).values(
        id=new_id(), organization_id=organization_id, metric=metric, quantity=value,
        period_start=start, period_end=end, created_at=now, updated_at=now,
        details={"measured_at": now.isoformat(), **(details or {})},
    )  # fmt: skip
    stmt = stmt.on_conflict_do_update(
        index_elements=["organization_id", "metric", "period_start", "period_end"],
        set_={"quantity": stmt.excluded.quantity, "details": stmt.excluded.details,
              "updated_at": now},
    )  # fmt: skip
    await session.execute(stmt)


async def month_total(
    session: AsyncSession, organization_id: uuid.UUID, metric: UsageMetric, now: dt.datetime
) -> int:
    """The organization's ``metric`` summed over the UTC month ``now`` is in (a counter)."""
    start, end = month_of(now)
    total = (
        await session.execute(
            select(func.coalesce(func.sum(UsageRecordRow.quantity), 0)).where(
                UsageRecordRow.organization_id == organization_id,
                UsageRecordRow.metric == metric,
                UsageRecordRow.period_start >= start,
                UsageRecordRow.period_start < end,
            )
        )
    ).scalar_one()
    return int(total)


# -- gauges -------------------------------------------------------------------------------

GB = Decimal(1024**3)


def _text_size(column: Any) -> Any:
    """Characters of a column as text: JSON documents serialised, strings as they are."""
    return func.coalesce(func.sum(func.length(cast(column, Text))), 0)


async def storage_bytes(session: AsyncSession, organization_id: uuid.UUID) -> int:
    """An approximation of what the organization stores, in bytes: the serialised size of the
    payloads that grow with use (executions' trigger/input/output data, step runs'
    input/output/error, log lines' message and metadata), counted in characters. Row overhead,
    indexes and definitions (small, bounded by the plan) are left out."""
    queries = [
        select(
            _text_size(ExecutionRow.trigger_data) + _text_size(ExecutionRow.input_data)
            + _text_size(ExecutionRow.output_data)
        ).where(ExecutionRow.organization_id == organization_id),
        select(
            _text_size(StepRunRow.input) + _text_size(StepRunRow.output)
            + _text_size(StepRunRow.error)
        ).where(StepRunRow.organization_id == organization_id),
        select(
            _text_size(ExecutionLogRow.message) + _text_size(ExecutionLogRow.metadata_)
        ).where(ExecutionLogRow.organization_id == organization_id),
    ]  # fmt: skip
    total = 0
    for query in queries:
        total += int((await session.execute(query)).scalar_one() or 0)
    return total


async def active_users(
    session: AsyncSession, organization_id: uuid.UUID, since: dt.datetime
) -> int:
    """Members who logged in since ``since`` or whose API key of this organization was used
    since then (a login token used without a new login that day is not seen: no per-request
    write records it)."""
    key_users = select(ApiKeyRow.user_id).where(
        ApiKeyRow.organization_id == organization_id, ApiKeyRow.last_used_at >= since
    )
    stmt = (
        select(func.count(func.distinct(MembershipRow.user_id)))
        .join(UserRow, UserRow.id == MembershipRow.user_id)
        .where(
            MembershipRow.organization_id == organization_id,
            or_(UserRow.last_login_at >= since, MembershipRow.user_id.in_(key_users)),
        )
    )
    return int((await session.execute(stmt)).scalar_one())


async def active_workflows(session: AsyncSession, organization_id: uuid.UUID) -> int:
    """Workflows (lineages: versions count once) with an active version, not deleted; not the
    hidden ones agent deployments run (as the plan's workflow limit)."""
    dialect = session.get_bind().dialect.name
    stmt = select(func.count(func.distinct(WorkflowRow.kebab_name))).where(
        WorkflowRow.organization_id == organization_id,
        WorkflowRow.status == WorkflowStatus.ACTIVE,
        WorkflowRow.deleted_at.is_(None),
        not_(tags_any(dialect, WorkflowRow.tags, [MANAGED_WORKFLOW_TAG])),
    )
    return int((await session.execute(stmt)).scalar_one())


async def measure_gauges(
    session: AsyncSession, organization_id: uuid.UUID, now: dt.datetime
) -> None:
    """Measure the organization's gauges and store them as today's values (idempotent)."""
    start, _ = day_of(now)
    size = await storage_bytes(session, organization_id)
    # GB with the column's 4 decimals (~107 KB), rounded up so that stored data never reads 0;
    # the exact byte count is kept in the row's details.
    gigabytes = (Decimal(size) / GB).quantize(Decimal("0.0001"), rounding=ROUND_CEILING)
    await set_gauge(
        session, organization_id, UsageMetric.STORAGE_GB, gigabytes, now, {"bytes": size}
    )
    users = await active_users(session, organization_id, start)
    await set_gauge(session, organization_id, UsageMetric.ACTIVE_USERS, Decimal(users), now)
    workflows = await active_workflows(session, organization_id)
    await set_gauge(session, organization_id, UsageMetric.ACTIVE_WORKFLOWS, Decimal(workflows), now)


async def organization_ids(session: AsyncSession) -> list[uuid.UUID]:
    """Every organization, for the gauge measurement (a system-level read)."""
    return list(
        (await session.execute(select(OrganizationRow.id).order_by(OrganizationRow.id))).scalars()
    )
