"""The composition root: builds what a process needs from the settings, once."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from turbocat.api.ratelimit import RateLimiter
from turbocat.config import Settings
from turbocat.db.engine import Database
from turbocat.security.crypto import KeyringSource
from turbocat.security.passwords import PasswordHasher
from turbocat.services.key_usage import KeyUsageBuffer


def utc_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class AppContext:
    """Everything a request handler or CLI verb reaches through one object."""

    settings: Settings
    db: Database
    hasher: PasswordHasher
    keyring: KeyringSource
    """Credential encryption keys, loaded on first use (``keyring.get()``)."""
    clock: Callable[[], dt.datetime] = utc_clock
    rate_limiter: RateLimiter = field(default_factory=RateLimiter)
    key_usage: KeyUsageBuffer = field(default_factory=KeyUsageBuffer)

    @classmethod
    def build(cls, settings: Settings, *, app_role: bool = True) -> AppContext:
        return cls(
            settings=settings,
            db=Database.from_settings(settings, app_role=app_role),
            hasher=PasswordHasher(settings.auth),
            keyring=KeyringSource(settings),
        )

    async def close(self) -> None:
        await self.key_usage.flush(self.db)
        await self.db.dispose()
