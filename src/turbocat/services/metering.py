"""Usage metering: counters per organization, metric and UTC day in ``usage_records``.

Each addition is one upsert on the row's unique key, so concurrent workers add up correctly
(PostgreSQL and SQLite both take ``ON CONFLICT ... DO UPDATE``); it runs in the caller's
transaction, so what is counted commits or rolls back with what it counts.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from turbocat.db.dialects import upsert
from turbocat.db.models import UsageRecordRow
from turbocat.domain.enums import UsageMetric
from turbocat.domain.ids import new_id


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
) -> None:
    """Add ``quantity`` to the organization's ``metric`` for today (nothing when it is 0)."""
    if not quantity:
        return
    start, end = day_of(now)
    table = UsageRecordRow.__table__
    stmt = upsert(session.get_bind().dialect.name, table).values(
        id=new_id(), organization_id=organization_id, metric=metric, quantity=Decimal(quantity),
        period_start=start, period_end=end, details={}, created_at=now, updated_at=now,
    )  # fmt: skip
    stmt = stmt.on_conflict_do_update(
        index_elements=["organization_id", "metric", "period_start", "period_end"],
        set_={"quantity": table.c.quantity + stmt.excluded.quantity, "updated_at": now},
    )
    await session.execute(stmt)
