"""Per-key request rate limits (GCRA, the leaky-bucket form used by many API gateways).

Limits are kept in this process: with N API processes a key can make up to N times its limit.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic, burst_fraction: float = 1.0):
        self._clock = clock
        self._tat: dict[uuid.UUID, float] = {}  # theoretical arrival time per key
        self._burst_fraction = burst_fraction

    def check(self, key: uuid.UUID, per_minute: int) -> int | None:
        """None if the request may go ahead, else the seconds to wait before retrying."""
        now = self._clock()
        interval = 60.0 / per_minute
        tolerance = 60.0 * self._burst_fraction - interval  # allows a burst of per_minute
        tat = max(self._tat.get(key, now), now)
        if tat - now > tolerance:
            return max(1, math.ceil(tat - now - tolerance))
        self._tat[key] = tat + interval
        if len(self._tat) > 100_000:
            self._evict(now)
        return None

    def _evict(self, now: float) -> None:
        for key in [k for k, tat in self._tat.items() if tat < now]:
            del self._tat[key]
