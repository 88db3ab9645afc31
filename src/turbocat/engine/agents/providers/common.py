"""A protocol-neutral chat conversation, one HTTP exchange with a provider, and its failures.

Failures become ``AgentError`` with a message a user understands and whether the step's retry
policy applies: 401/403 (the credentials were refused) and other 4xx (the request itself is
wrong: unknown model, bad parameters) are final; 429 waits at least the Retry-After the server
sent; 5xx, 529, timeouts, connection failures and replies that are not what the protocol says
(malformed JSON, a stream that stops short) are retried.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import json
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import httpx

from turbocat.domain.netpolicy import AddressRefused
from turbocat.engine.agents.base import AgentError
from turbocat.engine.agents.http import ResolveError

MAX_MESSAGE = 500
"""Characters of a provider's error message quoted in a step's error."""


@dataclass(frozen=True)
class ToolCall:
    """The model asks to run tool ``name``; ``arguments`` is None when ``raw`` is not JSON."""

    id: str
    name: str
    arguments: Any
    raw: str


@dataclass(frozen=True)
class Message:
    """One turn: a user text, an assistant reply (text and/or tool calls) or a tool result."""

    role: Literal["user", "assistant", "tool"]
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    call_id: str = ""
    """For a tool result: the id of the call it answers."""
    is_error: bool = False


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: Mapping[str, Any]
    """JSON Schema of the tool's arguments (an object)."""


@dataclass(frozen=True)
class ChatRequest:
    model: str
    system: str | None
    messages: list[Message]
    temperature: float | None = None
    max_tokens: int | None = None
    tools: list[ToolSpec] = field(default_factory=list)
    response_schema: Mapping[str, Any] | None = None
    stream: bool = False
    max_tokens_field: str = "max_tokens"
    """OpenAI's newer models take ``max_completion_tokens`` instead (see ``llm.Conversation``)."""


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom: ``base_url`` without a trailing slash, the API key if any."""

    base_url: str
    api_key: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    integration_id: uuid.UUID | None = None
    label: str = "the provider"


@dataclass
class Reply:
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    model: str | None = None


class Assembler(Protocol):
    """Builds a ``Reply`` from a provider's SSE events."""

    def feed(self, event: str | None, data: str) -> str:
        """Take one event; return the text it adds to the reply ('' for none)."""

    def reply(self) -> Reply:
        """The assembled reply; raises ``bad_reply`` if the stream ended too soon."""


class Wire(Protocol):
    """One chat protocol."""

    def build(self, request: ChatRequest, endpoint: Endpoint) -> tuple[str, dict[str, str], Any]:
        """URL, headers and JSON body of the request."""

    def parse(self, doc: Any) -> Reply:
        """A whole (non-streamed) reply; raises ``bad_reply`` when it is not the protocol's."""

    def assembler(self) -> Assembler: ...


def join_url(base: str, path: str) -> str:
    """``path`` appended to ``base``'s path, keeping its query (``?api-version=...``)."""
    head, sep, query = base.partition("?")
    return f"{head.rstrip('/')}{path}{sep}{query}"


def bad_reply(endpoint: Endpoint, what: str) -> AgentError:
    return AgentError(
        "llm_bad_reply",
        f"{endpoint.label} sent a reply that does not follow its protocol ({what}); "
        "it will be retried",
        retryable=True,
    )


def parse_tool_arguments(raw: str) -> Any:
    """The JSON arguments, or None when the model wrote something that is not JSON."""
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _provider_message(text: str) -> str:
    """The human part of an error body: OpenAI/Anthropic ``error.message``, Ollama ``error``."""
    try:
        doc = json.loads(text)
    except ValueError:
        return text.strip()[:MAX_MESSAGE]
    if isinstance(doc, dict):
        error = doc.get("error", doc)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:MAX_MESSAGE]
        if isinstance(error, str):
            return error[:MAX_MESSAGE]
        if isinstance(doc.get("message"), str):
            return str(doc["message"])[:MAX_MESSAGE]
    return text.strip()[:MAX_MESSAGE]


def retry_after(headers: Mapping[str, str], now: dt.datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date)."""
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - (now or dt.datetime.now(dt.UTC))).total_seconds())


def status_failure(
    status: int, headers: Mapping[str, str], body: str, endpoint: Endpoint
) -> AgentError:
    """The step's failure for an HTTP error answer of the provider."""
    said = _provider_message(body)
    quoted = f": {said}" if said else ""
    who = endpoint.label
    if status in (401, 403):
        whose = (
            f"the credentials of integration {endpoint.integration_id}"
            if endpoint.integration_id
            else "the request: no integration is configured, and this server needs an API key"
        )
        return AgentError(
            "llm_unauthorized", f"{who} refused {whose} (HTTP {status}{quoted})",
            details={"status": status},
        )  # fmt: skip
    if status == 429:
        wait = retry_after(headers)
        after = f"; retrying after {wait:g} s" if wait is not None else ""
        return AgentError(
            "llm_rate_limited", f"{who} is rate limiting these requests (HTTP 429{quoted}){after}",
            retryable=True, retry_after=wait, details={"status": status},
        )  # fmt: skip
    if status >= 500 or status in (408, 409):
        return AgentError(
            "llm_unavailable",
            f"{who} failed to answer (HTTP {status}{quoted}); it will be retried",
            retryable=True, retry_after=retry_after(headers), details={"status": status},
        )  # fmt: skip
    if status == 404:
        return AgentError(
            "llm_not_found",
            f"{who} has no such model or endpoint (HTTP 404{quoted}); check model and base_url",
            details={"status": status},
        )
    return AgentError(
        "llm_request_refused", f"{who} refused the request (HTTP {status}{quoted})",
        details={"status": status},
    )  # fmt: skip


def too_large(endpoint: Endpoint, limit: int) -> AgentError:
    return AgentError(
        "llm_reply_too_large",
        f"{endpoint.label} sent more than {limit} bytes (max_reply_bytes); is base_url right?",
    )


async def _read(response: httpx.Response, limit: int, endpoint: Endpoint) -> bytes:
    """The whole body, refusing more than ``limit`` bytes (never held in memory)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise too_large(endpoint, limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def _events(
    response: httpx.Response, limit: int, endpoint: Endpoint
) -> AsyncIterator[tuple[str | None, str]]:
    """Server-sent events as (event name, data), at most ``limit`` characters in all."""
    event: str | None = None
    data: list[str] = []
    size = 0
    async for line in response.aiter_lines():
        size += len(line) + 1
        if size > limit:
            raise too_large(endpoint, limit)
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = None, []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        yield event, "\n".join(data)


async def exchange(
    client: httpx.AsyncClient,
    wire: Wire,
    request: ChatRequest,
    endpoint: Endpoint,
    *,
    seconds: float,
    limit: int,
    on_text: Callable[[str], None] | None = None,
) -> Reply:
    """One chat request within ``seconds`` in all and ``limit`` bytes of reply; streamed text
    goes to ``on_text``."""
    url, headers, body = wire.build(request, endpoint)
    try:
        async with (
            asyncio.timeout(seconds),
            client.stream("POST", url, json=body, headers=headers) as response,
        ):
            if response.status_code >= 400:
                text = (await _read(response, limit, endpoint)).decode("utf-8", "replace")
                raise status_failure(response.status_code, response.headers, text, endpoint)
            if request.stream:
                assembler = wire.assembler()
                async for event, data in _events(response, limit, endpoint):
                    added = assembler.feed(event, data)
                    if added and on_text is not None:
                        on_text(added)
                return assembler.reply()
            raw = await _read(response, limit, endpoint)
            try:
                doc = json.loads(raw)
            except ValueError:
                raise bad_reply(endpoint, "the body is not JSON") from None
            return wire.parse(doc)
    except (TimeoutError, httpx.TimeoutException):
        raise AgentError(
            "llm_timeout", f"{endpoint.label} did not answer within {seconds:g} s (timeout_ms); "
            "it will be retried", retryable=True,
        ) from None  # fmt: skip
    except AddressRefused as exc:
        raise AgentError(
            # the policy is the api kind's; its lists for this kind are [runtimes.llm]
            "ssrf_blocked", str(exc).replace("[runtimes.http]", "[runtimes.llm]"),
            details={"host": exc.host},
        ) from None  # fmt: skip
    except ResolveError as exc:
        raise AgentError("llm_unreachable", f"{exc}; it will be retried", retryable=True) from None
    except httpx.TransportError as exc:
        raise AgentError(
            "llm_unreachable",
            f"could not reach {endpoint.label} ({type(exc).__name__}); it will be retried",
            retryable=True,
        ) from None
