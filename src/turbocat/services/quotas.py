"""Monthly quotas of the organization's plan: executions started and AI tokens spent.

Checked before the thing they limit starts, from the usage counters (``services.metering``):
an execution start reads the month's workflow_executions, an llm step the month's
ai_tokens_used. Nothing is read when no plan sets the quota (the default).
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db.models import OrganizationRow
from turbocat.domain import plans
from turbocat.domain.enums import Plan, UsageMetric
from turbocat.services import metering


async def _plan_of(session: AsyncSession, organization_id: uuid.UUID, *, lock: bool) -> Plan:
    stmt = select(OrganizationRow.plan).where(OrganizationRow.id == organization_id)
    if lock:
        # FOR NO KEY UPDATE: starts of one organization take turns from here to their commit,
        # so two cannot both see the last free execution (rows that reference the
        # organization only take KEY SHARE and are not held up). SQLite writes one at a time.
        stmt = stmt.with_for_update(key_share=True)
    return (await session.execute(stmt)).scalar_one()


async def check_execution(
    session: AsyncSession, organization_id: uuid.UUID, quotas: plans.Quotas, now: dt.datetime
) -> None:
    """Refuse (``QuotaExceeded``, before anything is written) an execution start that would
    pass the plan's ``executions_per_month``."""
    if not quotas.executions:
        return
    plan = await _plan_of(session, organization_id, lock=True)
    limits = quotas.of(plan)
    if limits.executions_per_month is None:
        return
    used = await metering.month_total(
        session, organization_id, UsageMetric.WORKFLOW_EXECUTIONS, now
    )
    plans.check_monthly(plan, limits, "executions_per_month", used, now)


async def count_execution(
    session: AsyncSession, organization_id: uuid.UUID, now: dt.datetime
) -> None:
    """Count one execution for the organization (in the transaction that creates it)."""
    await metering.add(session, organization_id, UsageMetric.WORKFLOW_EXECUTIONS, 1, now)


async def check_tokens(
    session: AsyncSession, organization_id: uuid.UUID, quotas: plans.Quotas, now: dt.datetime
) -> None:
    """Refuse (``QuotaExceeded``) when the month's AI tokens are spent. A step that starts
    with tokens left may pass the quota by what it uses: its usage is known only afterwards."""
    if not quotas.tokens:
        return
    plan = await _plan_of(session, organization_id, lock=False)
    limits = quotas.of(plan)
    if limits.ai_tokens_per_month is None:
        return
    used = await metering.month_total(session, organization_id, UsageMetric.AI_TOKENS_USED, now)
    plans.check_monthly(plan, limits, "ai_tokens_per_month", used, now, adding=1)
