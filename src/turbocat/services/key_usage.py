"""Write-behind counters for API key use: usage_count and last_used_at without a write per request.

Requests add to an in-memory buffer; a background task (and shutdown) writes each key's total in
one UPDATE per key, per flush. A crash loses at most one flush interval of counts.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import update

from turbocat.db import tenancy
from turbocat.db.engine import Database, TenantContext
from turbocat.db.models import ApiKeyRow


@dataclass
class _Pending:
    organization_id: uuid.UUID
    count: int
    last_used_at: dt.datetime


class KeyUsageBuffer:
    def __init__(self) -> None:
        self._pending: dict[uuid.UUID, _Pending] = {}

    def record(self, key_id: uuid.UUID, organization_id: uuid.UUID, now: dt.datetime) -> None:
        entry = self._pending.get(key_id)
        if entry is None:
            self._pending[key_id] = _Pending(organization_id, 1, now)
        else:
            entry.count += 1
            entry.last_used_at = max(entry.last_used_at, now)

    def __len__(self) -> int:
        return len(self._pending)

    async def flush(self, db: Database) -> int:
        """Write and clear the buffered counts; returns how many keys were updated."""
        if not self._pending:
            return 0
        pending, self._pending = self._pending, {}
        try:
            async with db.transaction() as session:
                for key_id, entry in sorted(pending.items()):
                    await tenancy.enter(
                        session, TenantContext(organization_id=entry.organization_id)
                    )
                    await session.execute(
                        update(ApiKeyRow)
                        .where(ApiKeyRow.id == key_id)
                        .values(
                            usage_count=ApiKeyRow.usage_count + entry.count,
                            last_used_at=entry.last_used_at,
                        )
                        .execution_options(synchronize_session=False)
                    )
        except Exception:
            # Put the counts back so the next flush retries them.
            for key_id, entry in pending.items():
                current = self._pending.get(key_id)
                if current is None:
                    self._pending[key_id] = entry
                else:
                    current.count += entry.count
                    current.last_used_at = max(current.last_used_at, entry.last_used_at)
            raise
        return len(pending)
