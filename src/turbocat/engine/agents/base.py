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
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from turbocat.config import RuntimeSettings
from turbocat.domain import prompts
from turbocat.domain.enums import LogLevel
from turbocat.domain.errors import ValidationFailed
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


@dataclass(frozen=True)
class RenderedPrompt:
    """An agent prompt's text with its variables substituted, and what it recommends."""

    text: str
    model: str | None = None
    provider: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    """Model parameters of the prompt (temperature, max_tokens), below the step's own."""


@dataclass(frozen=True)
class PromptSource:
    """A stored prompt as ``RecordingServices`` holds it (the worker reads agent_prompts)."""

    content: str
    variables: Mapping[str, Any] = field(default_factory=dict)
    model: str | None = None
    provider: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolTarget:
    """Something an llm step may call: an agent or a workflow of its organization."""

    type: str
    """agent | workflow"""
    ref: str
    name: str
    description: str
    parameters: Mapping[str, Any]
    """JSON Schema of the arguments (the agent's ``parameters``; any object when it has none)."""
    kind: str = ""
    """The agent's kind (data, llm, ...)."""
    config: Mapping[str, Any] = field(default_factory=dict)
    limits: Limits = field(default_factory=lambda: Limits())


MAX_TOOL_DEPTH = 3
"""Agents called as tools by agents called as tools...: deeper calls fail (A calling A)."""


async def run_agent_tool(
    target: ToolTarget, arguments: dict[str, JSONValue], parent: Invocation, call_id: str
) -> JSONValue:
    """Run an agent tool inline through its kind's runtime, as a child of ``parent`` with its
    own idempotency key (``<parent key>:tool:<call_id>``; the llm kind derives ``call_id`` from
    the tool and its arguments) and the parent's services."""
    from turbocat.engine.runner import RUNTIMES  # the runner imports every runtime

    if parent.idempotency_key.count(":tool:") >= MAX_TOOL_DEPTH:
        raise AgentError(
            "tool_depth_exceeded",
            f"tools calling tools went deeper than {MAX_TOOL_DEPTH} levels (agent {target.ref})",
        )
    runtime = RUNTIMES.get(target.kind)
    if runtime is None:
        raise AgentError(
            "tool_unavailable", f"the {target.kind} runtime is not available in this engine"
        )
    child = replace(
        parent, kind=target.kind, config=dict(target.config), inputs=arguments,
        idempotency_key=f"{parent.idempotency_key}:tool:{call_id}", limits=target.limits,
    )  # fmt: skip
    return await runtime(child)


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

    async def check_token_quota(self) -> None:
        """Raise AgentError('token_quota_exceeded') when the organization's plan allows no more
        AI tokens this month (``[plans.*] ai_tokens_per_month``)."""

    async def prompt(self, prompt_id: uuid.UUID, variables: Mapping[str, Any]) -> RenderedPrompt:
        """An agent prompt visible to the organization, rendered with ``variables``; raises
        AgentError('prompt_unavailable' or 'prompt_error')."""

    async def tool(self, type: str, ref: str) -> ToolTarget:
        """The agent (by id or name) or workflow an llm step may call as a tool, looked up in
        the execution's organization; raises AgentError('tool_unavailable')."""

    async def run_tool(
        self, target: ToolTarget, arguments: dict[str, JSONValue], parent: Invocation, call_id: str
    ) -> JSONValue:
        """Run ``target`` with ``arguments`` on behalf of the llm step ``parent``, with the
        idempotency key ``<parent key>:tool:<call_id>``."""

    async def load_checkpoint(self) -> dict[str, Any] | None:
        """The checkpoint the step's run saved before (a step run again after its worker
        died, or after a workflow tool's child ended); None on a fresh run."""

    async def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Persist the step's checkpoint (committed before this returns), with the log lines
        and token usage buffered so far. Fenced by the step's lease: raises
        AgentError('lease_lost') when this worker no longer holds the step."""


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
    prompts: dict[uuid.UUID, PromptSource] = field(default_factory=dict)
    tools: dict[str, ToolTarget] = field(default_factory=dict)
    """By ref (id or name)."""
    tool_calls: list[tuple[str, dict[str, JSONValue], str]] = field(default_factory=list)
    """(ref, arguments, idempotency key) of every tool run."""
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    """Every checkpoint saved (none is ever loaded: each invocation starts fresh)."""

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

    async def check_token_quota(self) -> None:
        return None  # no organization, no quota

    async def prompt(self, prompt_id: uuid.UUID, variables: Mapping[str, Any]) -> RenderedPrompt:
        source = self.prompts.get(prompt_id)
        if source is None:
            raise AgentError("prompt_unavailable", f"prompt {prompt_id} is not available")
        return render_prompt(source, variables)

    async def tool(self, type: str, ref: str) -> ToolTarget:
        found = self.tools.get(ref)
        if found is None or found.type != type:
            raise AgentError("tool_unavailable", f"{type} {ref!r} is not available as a tool")
        return found

    async def run_tool(
        self, target: ToolTarget, arguments: dict[str, JSONValue], parent: Invocation, call_id: str
    ) -> JSONValue:
        self.tool_calls.append((target.ref, arguments, f"{parent.idempotency_key}:tool:{call_id}"))
        return await run_agent_tool(target, arguments, parent, call_id)

    async def load_checkpoint(self) -> dict[str, Any] | None:
        return None

    async def save_checkpoint(self, state: dict[str, Any]) -> None:
        self.checkpoints.append(state)


def render_prompt(source: PromptSource, variables: Mapping[str, Any]) -> RenderedPrompt:
    """``source`` rendered (sandboxed, see domain/prompts.py); bad variables fail the step."""
    try:
        text = prompts.render(
            source.content, source.variables, variables, ("config", "prompt_variables")
        )
    except ValidationFailed as exc:
        raise AgentError(
            "prompt_error", f"the prompt could not be rendered: {exc.detail}"
        ) from None
    return RenderedPrompt(text, source.model, source.provider, dict(source.parameters))
