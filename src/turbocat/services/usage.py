"""Reading usage: daily rows as they are, or months derived from them (``GET /usage``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db.models import UsageRecordRow
from turbocat.domain.access import Principal
from turbocat.domain.enums import MemberRole, UsageMetric
from turbocat.domain.errors import ValidationFailed
from turbocat.domain.plans import month_of
from turbocat.services.metering import GAUGES

Granularity = Literal["day", "month"]
MAX_RANGE = dt.timedelta(days=731)
"""Longest range one request reads (two years: the retention of usage records)."""


@dataclass(frozen=True)
class UsagePoint:
    metric: UsageMetric
    period_start: dt.datetime
    period_end: dt.datetime
    quantity: Decimal


def require_reader(principal: Principal) -> None:
    """Usage is for the organization's owners and admins (``usage:read`` for a key)."""
    principal.require("usage:read", MemberRole.ADMIN)


def combine(metric: UsageMetric, values: Sequence[Decimal]) -> Decimal:
    """Several days of one metric as one value: counters add up; a gauge is its largest
    daily value (the peak is what a plan has to carry)."""
    if not values:
        return Decimal(0)
    return max(values) if metric in GAUGES else sum(values, Decimal(0))


async def report(
    session: AsyncSession,
    principal: Principal,
    *,
    start: dt.date,
    end: dt.date,
    metrics: Sequence[UsageMetric],
    granularity: Granularity,
) -> list[UsagePoint]:
    """Usage of the principal's organization for the UTC days [start, end), by day or by
    calendar month (a month cut by the range holds only its days within it); days and months
    without usage are left out."""
    require_reader(principal)
    if end <= start:
        raise ValidationFailed.field(("query", "to"), "'to' must be after 'from'")
    if end - start > MAX_RANGE:
        raise ValidationFailed.field(("query", "to"), "the range may span at most 731 days")
    first = dt.datetime.combine(start, dt.time(), dt.UTC)
    last = dt.datetime.combine(end, dt.time(), dt.UTC)
    stmt = (
        select(UsageRecordRow)
        .where(
            UsageRecordRow.organization_id == principal.organization_id,
            UsageRecordRow.period_start >= first,
            UsageRecordRow.period_start < last,
            UsageRecordRow.metric.in_(list(metrics)),
        )
        .order_by(UsageRecordRow.metric, UsageRecordRow.period_start)
    )
    rows = list((await session.execute(stmt)).scalars())
    if granularity == "day":
        return [UsagePoint(r.metric, r.period_start, r.period_end, r.quantity) for r in rows]
    months: dict[tuple[UsageMetric, dt.datetime], list[Decimal]] = {}
    for row in rows:
        months.setdefault((row.metric, month_of(row.period_start)[0]), []).append(row.quantity)
    return [
        UsagePoint(metric, month, month_of(month)[1], combine(metric, values))
        for (metric, month), values in months.items()
    ]


def totals(
    points: Sequence[UsagePoint], metrics: Sequence[UsageMetric]
) -> dict[UsageMetric, Decimal]:
    """Each metric over the whole range (sum of a counter, peak of a gauge)."""
    return {m: combine(m, [p.quantity for p in points if p.metric == m]) for m in metrics}
