"""argon2id password hashing, run off the event loop, with equal work for unknown users."""

from __future__ import annotations

import anyio.to_thread
from argon2 import PasswordHasher as _Argon2
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from turbocat.config import AuthSettings


class PasswordHasher:
    def __init__(self, settings: AuthSettings) -> None:
        self._argon2 = _Argon2(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
            type=Type.ID,
        )
        # Verified against when the email is unknown, so both paths cost the same.
        self._dummy_hash = self._argon2.hash("turbocat-timing-equalizer")

    def hash_sync(self, password: str) -> str:
        return self._argon2.hash(password)

    def verify_sync(self, password_hash: str | None, password: str) -> bool:
        try:
            return self._argon2.verify(password_hash or self._dummy_hash, password) and (
                password_hash is not None
            )
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        return self._argon2.check_needs_rehash(password_hash)

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self.hash_sync, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        return await anyio.to_thread.run_sync(self.verify_sync, password_hash, password)
