"""Write-behind counter of authenticated API requests per organization (``api_calls_made``).

A request adds one to an in-memory count per (organization, UTC day); a background task (and
shutdown) adds each count to the day's usage row with one upsert per organization and day, so
the hot path never writes. A crash loses at most one flush interval of counts; a request the
API replays after a database conflict (``ConflictRetryMiddleware``) is counted once per run.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter

from turbocat.db import tenancy
from turbocat.db.engine import Database, TenantContext
from turbocat.domain.enums import UsageMetric
from turbocat.services import metering


class ApiCallBuffer:
    def __init__(self) -> None:
        self._pending: Counter[tuple[uuid.UUID, dt.datetime]] = Counter()

    def record(self, organization_id: uuid.UUID, now: dt.datetime) -> None:
        self._pending[(organization_id, metering.day_of(now)[0])] += 1

    def __len__(self) -> int:
        return len(self._pending)

    async def flush(self, db: Database, now: dt.datetime) -> int:
        """Write and clear the buffered counts; returns how many requests were written."""
        if not self._pending:
            return 0
        pending, self._pending = self._pending, Counter()
        try:
            async with db.transaction() as session:
                for (organization_id, day), count in sorted(pending.items()):
                    await tenancy.enter(session, TenantContext(organization_id=organization_id))
                    # the request's day, not the flush's: a flush after midnight keeps them apart
                    await metering.add(
                        session, organization_id, UsageMetric.API_CALLS_MADE, count, now,
                        day=day,
                    )  # fmt: skip
        except Exception:
            self._pending.update(pending)  # the next flush retries them
            raise
        return sum(pending.values())
