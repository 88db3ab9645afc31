"""The ``llm`` kind: chat completions over the OpenAI-compatible or the Anthropic protocol.

One step is a conversation: the system prompt (inline, or an agent prompt rendered with its
variables), one user message (``user_prompt`` rendered over the workflow context plus ``inputs``,
the step's inputs; default: the inputs as JSON), then model calls in a loop:

- a reply asking for tools runs each tool and sends the results back: an agent of the
  organization runs inline (``services.run_tool``); a workflow runs as a child execution the
  engine starts while the step waits (``ChildNeeded``), its end making the step ready again
  with the result; a failing tool is an error the model reads. At most ``max_iterations``
  model calls may ask for tools, a model still asking after that fails the step
  (``max_iterations_exceeded``);
- with ``response_schema``, the final reply must be JSON satisfying it; a reply that does not is
  asked for again with the validation error (``schema_retries`` times, setting), then the step
  fails with ``llm_invalid_output`` naming the field and the schema rule.

Every model call records its token usage (``services.record_usage``) and writes one log line
with it; with ``stream`` the text is written to the execution's logs as it arrives, coalesced
into lines. The output is ``{content, json, model, finish_reason, tool_calls, usage,
iterations}`` (see docs/agents.md).

The loop is durable: after each model reply asking for tools, each tool result and each schema
repair, the conversation is checkpointed on the step run (``checkpoint.State``, fenced by the
step's lease), and a run of the same attempt (after its worker died, or once a workflow tool's
child ended) resumes from it rather than asking the model again. Only the step's own
conversation is durable: an llm agent called as a tool runs inline, within its caller's call.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import httpx
from jsonschema import validators
from pydantic import ValidationError as PydanticValidationError

from turbocat.config import HttpRuntimeSettings, LlmRuntimeSettings
from turbocat.domain.agents import LlmConfig
from turbocat.domain.enums import LogLevel, ParentClosePolicy
from turbocat.domain.errors import ValidationFailed
from turbocat.domain.expressions import ROOTS, ExpressionError, JSONValue, compile_template
from turbocat.domain.expressions import render_value as render_json
from turbocat.engine.agents import checkpoint
from turbocat.engine.agents.base import AgentError, Invocation, Services, ToolTarget, Usage
from turbocat.engine.agents.checkpoint import Pending, State, tool_error, tool_result
from turbocat.engine.agents.http import make_client
from turbocat.engine.agents.providers.anthropic import AnthropicWire
from turbocat.engine.agents.providers.common import (
    ChatRequest,
    Endpoint,
    Message,
    Reply,
    ToolCall,
    ToolSpec,
    Wire,
    exchange,
)
from turbocat.engine.agents.providers.openai import OpenAIWire
from turbocat.engine.agents.workflow import ChildNeeded, ChildRequest

USER_ROOTS = ROOTS | {"inputs"}
ANY_OBJECT: dict[str, Any] = {"type": "object"}


class LogStream:
    """Streamed text into the execution's logs, a line per ``chars`` characters or per
    ``seconds``, whichever comes first (never a line per token)."""

    def __init__(self, services: Services, settings: LlmRuntimeSettings, call: int) -> None:
        self.services, self.settings, self.call = services, settings, call
        self.parts: list[str] = []
        self.size = 0
        self.since = time.monotonic()

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)
        if (
            self.size >= self.settings.stream_log_chars
            or time.monotonic() - self.since >= self.settings.stream_log_seconds
        ):
            self.flush()

    def flush(self) -> None:
        if self.parts:
            text = "".join(self.parts)
            self.services.log(LogLevel.INFO, text, {"stream": True, "llm_call": self.call})
        self.parts, self.size, self.since = [], 0, time.monotonic()


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _user_message(spec: LlmConfig, call: Invocation) -> str:
    if spec.user_prompt is None:
        return _json_text(call.inputs)
    scope = {**call.context, "inputs": call.inputs}
    try:
        rendered = compile_template(spec.user_prompt, roots=USER_ROOTS).render(scope)
    except ExpressionError as exc:
        raise AgentError("expression_error", f"user_prompt: {exc.detail}") from None
    return rendered if isinstance(rendered, str) else _json_text(rendered)


async def _endpoint(spec: LlmConfig, call: Invocation) -> Endpoint:
    settings = call.settings.llm
    credential = (
        await call.services.credential(spec.integration_id) if spec.integration_id else None
    )
    api_key: str | None = None
    extra: dict[str, Any] = {}
    if credential is not None:
        if credential.provider not in (spec.provider, "http"):
            raise AgentError(
                "integration_mismatch",
                f"integration {credential.integration_id} is a {credential.provider} "
                f"integration; this step speaks the {spec.provider} protocol",
            )
        secrets = credential.secrets
        api_key = secrets.get("api_key") or secrets.get("token") or secrets.get("access_token")
        extra = dict(credential.settings)
    default = settings.openai_base_url if spec.provider == "openai" else settings.anthropic_base_url
    base = str(spec.base_url or extra.get("base_url") or default).rstrip("/")
    if spec.provider == "anthropic":  # its clients take the host; a pasted /v1 is not doubled
        base = base.removesuffix("/v1")
    try:
        parts = urlsplit(base)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        parts, port = urlsplit(""), ""
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AgentError("bad_base_url", "base_url is not an http(s) URL with a host")
    # messages name the server without user info or query (either may carry a secret)
    shown = f"{parts.scheme}://{parts.hostname}{port}{parts.path}"
    headers: dict[str, str] = {}
    if spec.provider == "openai":
        for name, header in (
            ("organization", "OpenAI-Organization"),
            ("project", "OpenAI-Project"),
        ):
            if extra.get(name):
                headers[header] = str(extra[name])
        label = f"the OpenAI-compatible server at {shown}"
    else:
        headers["anthropic-version"] = str(
            extra.get("anthropic_version") or settings.anthropic_version
        )
        label = f"Anthropic at {shown}"
    return Endpoint(base, api_key, headers, spec.integration_id, label)


def _tool_name(target: ToolTarget, given: str | None, taken: set[str]) -> str:
    """The name the model sees: the configured one, else the agent's name made safe."""
    base = given or "".join(c if c.isalnum() or c in "_-" else "_" for c in target.name)[:60]
    name, n = base or "tool", 2
    while name in taken:
        name, n = f"{base[:58]}_{n}", n + 1
    taken.add(name)
    return name


UNAVAILABLE = "unavailable"
"""The kind of a tool that went away while its conversation was checkpointed."""


async def _tools(
    spec: LlmConfig, call: Invocation, resumed: bool = False
) -> dict[str, tuple[ToolTarget, ToolSpec]]:
    """The tools the model is shown. A tool that is unavailable fails the step, unless the
    conversation is resumed: the model has seen it, so it stays listed and a call to it
    answers with the reason."""
    found: dict[str, tuple[ToolTarget, ToolSpec]] = {}
    for tool in spec.tools:
        try:
            target = await call.services.tool(tool.type, tool.ref)
        except AgentError as exc:
            if not resumed or exc.kind != "tool_unavailable":
                raise
            target = ToolTarget(
                type=tool.type, ref=tool.ref, name=tool.ref, description="", parameters={},
                kind=UNAVAILABLE, config={"reason": exc.message},
            )  # fmt: skip
        name = _tool_name(target, tool.name, set(found))
        schema = target.parameters if target.parameters.get("type") == "object" else ANY_OBJECT
        description = tool.description or target.description or f"Runs {tool.type} {target.name}"
        found[name] = (target, ToolSpec(name, description, schema))
    return found


def _parse_json(text: str) -> Any:
    """The reply as JSON; a Markdown code fence around it is tolerated."""
    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[1] if "\n" in body else ""
        body = body.rsplit("```", 1)[0]
    return json.loads(body)


def _schema_problem(text: str, schema: Mapping[str, Any]) -> tuple[Any, str | None]:
    """(parsed value, None) when ``text`` is JSON satisfying ``schema``, else (None, why)."""
    try:
        value = _parse_json(text)
    except ValueError as exc:
        return None, f"the reply is not JSON ({exc})"
    cls = validators.validator_for(schema, default=validators.Draft202012Validator)
    errors = sorted(cls(dict(schema)).iter_errors(value), key=lambda e: list(e.path))
    if not errors:
        return value, None
    first = errors[0]
    rule = "/".join(str(p) for p in first.schema_path)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return None, f"at {first.json_path} (schema {rule}): {first.message[:300]}{more}"


class Conversation:
    """One llm step: the calls, the tool runs and the usage they add up to, in ``state``
    (checkpointed on the step run when ``durable``, see ``checkpoint.py``)."""

    def __init__(
        self, call: Invocation, spec: LlmConfig, wire: Wire, endpoint: Endpoint, state: State
    ) -> None:
        self.call, self.spec, self.wire, self.endpoint = call, spec, wire, endpoint
        self.settings = call.settings.llm
        self.state = state
        self.durable = ":tool:" not in call.idempotency_key
        """Only the step's own conversation is checkpointed (and may start child workflows);
        an llm agent called as a tool runs inline, within its caller's tool call."""

    def usage(self) -> dict[str, JSONValue]:
        s = self.state
        return {
            "prompt": s.prompt_tokens, "completion": s.completion_tokens,
            "total": s.prompt_tokens + s.completion_tokens, "calls": s.calls,
        }  # fmt: skip

    async def save(self) -> None:
        if self.durable:
            await self.call.services.save_checkpoint(self.state.to_json())

    async def ask(self, client: httpx.AsyncClient, request: ChatRequest) -> Reply:
        s = self.state
        s.calls += 1
        stream = LogStream(self.call.services, self.settings, s.calls) if request.stream else None
        request = replace(request, max_tokens_field=s.max_tokens_field)
        try:
            reply = await exchange(
                client, self.wire, request, self.endpoint, seconds=self.spec.timeout_ms / 1000,
                limit=self.settings.max_reply_bytes, on_text=stream.add if stream else None,
            )  # fmt: skip
        except AgentError as exc:
            if not self._wants_max_completion_tokens(exc, request):
                raise
            # OpenAI's reasoning models refuse max_tokens: once, and for the rest of the step
            s.max_tokens_field = "max_completion_tokens"
            self.call.services.log(LogLevel.INFO, "retrying with max_completion_tokens", {})
            s.calls -= 1
            return await self.ask(client, request)
        finally:
            if stream is not None:
                stream.flush()
        model = reply.model or request.model
        s.prompt_tokens += reply.prompt_tokens
        s.completion_tokens += reply.completion_tokens
        self.call.services.record_usage(Usage(model, reply.prompt_tokens, reply.completion_tokens))
        self.call.services.log(
            LogLevel.INFO,
            f"llm call {s.calls} ({model}): {reply.prompt_tokens} prompt + "
            f"{reply.completion_tokens} completion tokens"
            + (f", {len(reply.tool_calls)} tool calls" if reply.tool_calls else ""),
            # keys without "token": log metadata is redacted by key name
            {"usage": {"model": model, "prompt": reply.prompt_tokens,
                       "completion": reply.completion_tokens}, "llm_call": s.calls},
        )  # fmt: skip
        return reply

    def call_key(self, request: ToolCall) -> str:
        """The tool run's part of its idempotency key: from the tool and its arguments, not
        the provider's random call id, so that the same call made again after a crash before
        the reply was checkpointed, or in a retry, carries the same key (an api tool sends it
        as Idempotency-Key); the n-th identical call of this step gets ``.n``. Computed when
        the reply arrives and checkpointed with it, so a resumed step keeps it."""
        text = f"{request.name}\n{_json_text(request.arguments)}"
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        n = self.state.seen[digest] = self.state.seen.get(digest, 0) + 1
        return digest if n == 1 else f"{digest}.{n}"

    def _wants_max_completion_tokens(self, exc: AgentError, request: ChatRequest) -> bool:
        return (
            isinstance(self.wire, OpenAIWire)
            and exc.kind == "llm_request_refused"
            and request.max_tokens is not None
            and self.state.max_tokens_field == "max_tokens"
            and "max_completion_tokens" in exc.message
        )

    def _problem(
        self, tools: Mapping[str, tuple[ToolTarget, ToolSpec]], request: ToolCall
    ) -> str | None:
        """Why the call cannot run as asked (told to the model), or None."""
        found = tools.get(request.name)
        if found is None:
            return f"there is no tool named {request.name!r}"
        if found[0].kind == UNAVAILABLE:
            return str(found[0].config.get("reason", "the tool is no longer available"))
        if not isinstance(request.arguments, dict):
            return "the arguments are not a JSON object"
        tool = found[1]
        cls = validators.validator_for(tool.parameters, validators.Draft202012Validator)
        error = next(iter(cls(dict(tool.parameters)).iter_errors(request.arguments)), None)
        if error is not None:
            return f"invalid arguments at {error.json_path}: {error.message}"
        if found[0].type == "workflow" and not self.durable:
            return (
                "a workflow tool can be called by the step's own llm agent only, not by an "
                "agent called as a tool"
            )
        return None

    async def answer_next(self, tools: Mapping[str, tuple[ToolTarget, ToolSpec]]) -> None:
        """Answer the first pending tool call and checkpoint. An agent tool runs here; a
        workflow tool raises ``ChildNeeded``: the engine starts the child and the step waits
        (its end answers the call and the step runs on). A failure is told to the model,
        which may recover."""
        pending = self.state.pending[0]
        request = pending.call
        record: dict[str, JSONValue] = {"id": request.id, "name": request.name,
                                        "arguments": request.arguments}  # fmt: skip
        problem = self._problem(tools, request)
        if problem is None:
            target = tools[request.name][0]
            arguments: dict[str, JSONValue] = request.arguments
            self.call.services.log(
                LogLevel.INFO, f"tool {request.name} ({target.type} {target.name}) called",
                {"tool": request.name, "call_id": request.id},
            )  # fmt: skip
            if target.type == "workflow":
                held = {checkpoint.KEY: self.state.to_json()}  # kept while the step waits
                raise ChildNeeded(self._child(target, arguments, pending), held)
            try:
                output = await self.call.services.run_tool(
                    target, arguments, self.call, pending.key
                )
            except AgentError as exc:
                problem = exc.message
            else:
                record["output"] = output
                message = tool_result(request.id, output)
        if problem is not None:
            record["error"] = problem
            self.call.services.log(
                LogLevel.WARN, f"tool {request.name} failed: {problem}",
                {"tool": request.name, "call_id": request.id},
            )  # fmt: skip
            message = tool_error(request.id, problem)
        self.state.tool_runs.append(record)
        self.state.messages.append(message)
        self.state.pending.pop(0)
        await self.save()

    def _child(
        self, target: ToolTarget, arguments: dict[str, JSONValue], pending: Pending
    ) -> ChildRequest:
        return ChildRequest(
            workflow=target.ref, version=None, wait=True,
            parent_close_policy=ParentClosePolicy.TERMINATE, input=arguments,
            max_depth=self.call.settings.workflow.max_depth, tool_key=pending.key,
            tool_call_id=pending.call.id,
        )  # fmt: skip

    async def run(
        self, request: ChatRequest, tools: Mapping[str, tuple[ToolTarget, ToolSpec]]
    ) -> JSONValue:
        s = self.state
        schema = self.spec.response_schema
        llm = self.settings
        guard = HttpRuntimeSettings(ssrf_protection=llm.ssrf_protection, allow=llm.allow,
                                    deny=llm.deny)  # fmt: skip
        async with make_client(guard, self.spec.timeout_ms / 1000) as client:
            while True:
                while s.pending:  # tool calls asked for before a crash or a child's end
                    await self.answer_next(tools)
                reply = await self.ask(client, replace(request, messages=s.messages))
                if reply.tool_calls and tools:
                    s.iterations += 1
                    if s.iterations >= self.spec.max_iterations:
                        raise AgentError(
                            "max_iterations_exceeded",
                            f"the model still asked for tools after {self.spec.max_iterations} "
                            "calls (max_iterations)",
                            details={"usage": self.usage(), "tool_calls": s.tool_runs},
                        )
                    s.messages.append(Message("assistant", reply.text, tuple(reply.tool_calls)))
                    s.pending = [Pending(c, self.call_key(c)) for c in reply.tool_calls]
                    await self.save()
                    continue
                value: Any = None
                if schema is not None:
                    value, problem = _schema_problem(reply.text, schema)
                    if problem is not None:
                        if s.repairs >= self.settings.schema_retries:
                            raise AgentError(
                                "llm_invalid_output",
                                f"the model's reply does not satisfy response_schema after "
                                f"{s.repairs + 1} tries: {problem}",
                                details={"usage": self.usage(), "reply": reply.text[:2000]},
                            )
                        s.repairs += 1
                        self.call.services.log(
                            LogLevel.WARN, f"reply rejected by response_schema: {problem}", {}
                        )
                        s.messages.append(Message("assistant", reply.text or "(empty reply)"))
                        s.messages.append(Message("user", (
                            f"Your reply does not satisfy the required JSON Schema: {problem}. "
                            "Answer again with only the corrected JSON."
                        )))  # fmt: skip
                        await self.save()
                        continue
                return {
                    "content": reply.text, "json": value, "model": reply.model or request.model,
                    "finish_reason": reply.finish_reason, "tool_calls": s.tool_runs,
                    "usage": self.usage(), "iterations": s.iterations + 1,
                }  # fmt: skip


async def invoke(call: Invocation) -> JSONValue:
    """The runtime entry point (see agents/base.py)."""
    try:  # saved agents are validated when saved; inline components only get here
        spec = LlmConfig.model_validate(dict(call.config))
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise AgentError("invalid_config", f"llm config: {where}: {message}") from None
    system, model = spec.system_prompt, spec.model
    temperature, max_tokens = spec.temperature, spec.max_tokens
    if spec.prompt_id is not None:
        try:
            variables = render_json(dict(spec.prompt_variables), call.context)
        except (ExpressionError, ValidationFailed) as exc:
            raise AgentError("expression_error", f"prompt_variables: {exc.detail}") from None
        assert isinstance(variables, dict)
        prompt = await call.services.prompt(spec.prompt_id, variables)
        system, model = prompt.text, model or prompt.model
        params = prompt.parameters
        if temperature is None and isinstance(params.get("temperature"), int | float):
            temperature = float(params["temperature"])
        if max_tokens is None and isinstance(params.get("max_tokens"), int):
            max_tokens = int(params["max_tokens"])
    if not model:
        raise AgentError("llm_no_model", "no model: set model, or use a prompt that names one")
    if spec.provider == "anthropic" and max_tokens is None:
        max_tokens = call.settings.llm.anthropic_max_tokens
    await call.services.check_token_quota()  # before any model call: a spent month stops here
    endpoint = await _endpoint(spec, call)
    wire: Wire = OpenAIWire(endpoint) if spec.provider == "openai" else AnthropicWire(endpoint)
    state = await _resumed(call)
    tools = await _tools(spec, call, resumed=state is not None)
    if state is None:
        state = State(messages=[Message("user", _user_message(spec, call))])
    request = ChatRequest(
        model=model, system=system, messages=state.messages, temperature=temperature,
        max_tokens=max_tokens, tools=[t for _, t in tools.values()],
        response_schema=spec.response_schema, stream=spec.stream,
    )  # fmt: skip
    return await Conversation(call, spec, wire, endpoint, state).run(request, tools)


async def _resumed(call: Invocation) -> State | None:
    """The conversation this step run checkpointed before (after a crash, or once a workflow
    tool's child ended); None for a fresh one, and for an llm agent called as a tool."""
    if ":tool:" in call.idempotency_key:
        return None
    state = State.from_json(await call.services.load_checkpoint())
    if state is not None:
        call.services.log(
            LogLevel.INFO,
            f"conversation resumed from its checkpoint: {state.calls} model calls and "
            f"{len(state.tool_runs)} tool runs already done"
            + (f", {len(state.pending)} tool calls to answer" if state.pending else ""),
            {"llm_resumed": True},
        )
    return state
