"""What every agent runtime receives and returns: one ``Invocation`` in, a result out.

A runtime is ``async def run(call: Invocation) -> JSONValue`` in ``engine/agents/<kind>.py``.
It returns the step output, or raises ``AgentError`` with a message a user understands and
whether the engine may retry it. Anything else it raises is a bug: the runner turns it into a
retryable failure with a stack trace, never a crashed worker.

Runtimes reach the platform only through ``call.services`` (credentials, logs, usage), so
they know nothing of the database and can be tested against a plain ``RecordingServices``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from turbocat.config import RuntimeSettings
from turbocat.domain.enums import LogLevel
from turbocat.domain.expressions import JSONValue


class AgentError(Exception):
    """A failure of the step's work that the user must see (not a bug in the runtime).

    ``retryable`` says whether the step's retry policy applies; ``retry_after`` (seconds) is a
    floor the server asked for (HTTP 429 Retry-After), honoured by the engine's next attempt.
    """

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.details = dict(details or {})


@dataclass(frozen=True)
class Credential:
    """A decrypted integration credential: never logged, never returned to a user."""

    integration_id: uuid.UUID
    provider: str
    auth_kind: str
    """api_key | bearer | basic | oauth (see domain/integrations.py)."""
    secrets: Mapping[str, str]
    settings: Mapping[str, Any]


@dataclass(frozen=True)
class Usage:
    """Tokens an LLM call used; metered as ai_tokens_used and kept on the step run."""

    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Services(Protocol):
    """The platform as a runtime sees it. The worker implements it over the database."""

    async def credential(self, integration_id: uuid.UUID) -> Credential:
        """The decrypted credential of an integration of the execution's organization; raises
        AgentError('integration_unavailable') when it is missing, disabled or expired."""

    def log(self, level: LogLevel, message: str, metadata: Mapping[str, Any] | None = None) -> None:
        """Append a line to the execution's logs (buffered; written within about a second and
        at the latest with the step's outcome). Never pass secrets."""

    def record_usage(self, usage: Usage) -> None:
        """Count tokens against the organization's usage and the step run."""


@dataclass(frozen=True)
class Limits:
    """Resource limits from the saved agent (seed 000/001 fields) or the platform defaults."""

    max_execution_seconds: float | None = None
    max_memory_mb: int | None = None


@dataclass(frozen=True)
class Invocation:
    """One attempt of one step run of an agent kind."""

    kind: str
    config: Mapping[str, Any]
    """The agent's (or inline component's) config, canonical form of domain/agents.py."""
    inputs: dict[str, JSONValue]
    """The step's rendered ``inputs``."""
    context: Mapping[str, JSONValue]
    """The expression context: input, steps, vars, execution (and item/index in loops)."""
    services: Services
    idempotency_key: str
    """``execution_id:step_key:iteration``: the same on every attempt of this step run."""
    execution_id: uuid.UUID
    organization_id: uuid.UUID
    step_key: str
    attempt: int = 1
    limits: Limits = field(default_factory=Limits)
    timeout_seconds: float | None = None
    """The step's timeout_ms, when set: the runner cancels the work after it; runtimes that
    run outside this process (code) enforce it there too."""
    settings: RuntimeSettings = field(default_factory=RuntimeSettings)
    """The operator's settings for the agent kinds (``[runtimes.*]``)."""


@dataclass
class RecordingServices:
    """Services without a database: credentials given up front, logs and usage kept in lists.
    Used by ``turbocat run`` tests and runtime unit tests."""

    credentials: dict[uuid.UUID, Credential] = field(default_factory=dict)
    logs: list[tuple[LogLevel, str, dict[str, Any]]] = field(default_factory=list)
    usage: list[Usage] = field(default_factory=list)

    async def credential(self, integration_id: uuid.UUID) -> Credential:
        found = self.credentials.get(integration_id)
        if found is None:
            raise AgentError(
                "integration_unavailable", f"integration {integration_id} is not available"
            )
        return found

    def log(self, level: LogLevel, message: str, metadata: Mapping[str, Any] | None = None) -> None:
        self.logs.append((level, message, dict(metadata or {})))

    def record_usage(self, usage: Usage) -> None:
        self.usage.append(usage)
