"""The platform as a running step sees it: ``agents.base.Services`` over the database.

Credentials are decrypted in a short transaction of the step's organization (RLS applies on
PostgreSQL). Log lines and token usage are buffered here and written by the worker in the
transaction that records the step's outcome, so a step that runs again after a crash does not
leave the lines of its lost attempt behind twice.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from turbocat.db.engine import Database, TenantContext
from turbocat.domain.enums import LogLevel
from turbocat.domain.errors import TurbocatError
from turbocat.engine.agents.base import AgentError, Credential, Usage
from turbocat.security.crypto import Keyring
from turbocat.services import integrations

MAX_BUFFERED_LINES = 2_000
"""Log lines one step run may write; past this one line says how many were dropped."""


@dataclass
class LogLine:
    level: LogLevel
    message: str
    metadata: dict[str, Any]
    at: dt.datetime


@dataclass
class StepServices:
    db: Database
    keyring: Callable[[], Keyring]
    organization_id: uuid.UUID
    clock: Callable[[], dt.datetime]
    lines: list[LogLine] = field(default_factory=list)
    usage: list[Usage] = field(default_factory=list)
    dropped: int = 0

    async def credential(self, integration_id: uuid.UUID) -> Credential:
        context = TenantContext(organization_id=self.organization_id)
        try:
            async with self.db.transaction(context) as session:
                resolved = await integrations.resolve_credentials(
                    session, self.organization_id, integration_id, self.keyring(), self.clock()
                )
        except TurbocatError as exc:  # not found in this organization, disabled, expired
            raise AgentError("integration_unavailable", exc.detail) from None
        return Credential(
            integration_id=resolved.integration_id,
            provider=resolved.provider,
            auth_kind=str(resolved.auth_kind.value),
            secrets=resolved.credentials,
            settings=resolved.settings,
        )

    def log(self, level: LogLevel, message: str, metadata: Mapping[str, Any] | None = None) -> None:
        if len(self.lines) >= MAX_BUFFERED_LINES:
            self.dropped += 1
            return
        self.lines.append(LogLine(level, message, dict(metadata or {}), self.clock()))

    def record_usage(self, usage: Usage) -> None:
        self.usage.append(usage)

    def drain(self) -> list[LogLine]:
        """The buffered lines (and a note of any dropped), emptying the buffer."""
        lines, self.lines = self.lines, []
        if self.dropped:
            note = f"{self.dropped} more log lines of this step were dropped"
            lines.append(LogLine(LogLevel.WARN, note, {}, self.clock()))
            self.dropped = 0
        return lines
