"""Anthropic's messages API: ``POST {base_url}/v1/messages`` with ``x-api-key`` and
``anthropic-version``; ``base_url`` is the host part (``https://api.anthropic.com``), as in
Anthropic's own clients.

Tool calls are ``tool_use`` content blocks and their results ``tool_result`` blocks in the next
user turn. The protocol has no JSON-Schema response format, so a ``response_schema`` is stated
in the system prompt and the reply is validated by the runtime like any other.
"""

from __future__ import annotations

import json
from typing import Any

from turbocat.engine.agents.base import AgentError
from turbocat.engine.agents.providers.common import (
    ChatRequest,
    Endpoint,
    Message,
    Reply,
    ToolCall,
    bad_reply,
    join_url,
    parse_tool_arguments,
)

DEFAULT_MAX_TOKENS = 4096
"""``max_tokens`` is required by this protocol; used when the step sets none."""
OVERLOADED = "overloaded_error"


def schema_instruction(schema: Any) -> str:
    return (
        "Answer with a single JSON value only (no prose, no code fences) that satisfies this "
        f"JSON Schema:\n{json.dumps(schema, sort_keys=True)}"
    )


def _blocks(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [
            {"type": "tool_result", "tool_use_id": message.call_id, "content": message.text,
             "is_error": message.is_error}
        ]  # fmt: skip
    blocks: list[dict[str, Any]] = [{"type": "text", "text": message.text}] if message.text else []
    for call in message.tool_calls:
        arguments = call.arguments if isinstance(call.arguments, dict) else {}
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": arguments})
    return blocks


def _messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Turns alternate user/assistant: tool results join the user turn they belong to."""
    out: list[dict[str, Any]] = []
    for message in messages:
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message)
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out


def _usage(reply: Reply, usage: Any) -> None:
    if isinstance(usage, dict):
        if "input_tokens" in usage:
            reply.prompt_tokens = int(usage.get("input_tokens") or 0)
        if "output_tokens" in usage:
            reply.completion_tokens = int(usage.get("output_tokens") or 0)


class AnthropicWire:
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    def build(self, request: ChatRequest, endpoint: Endpoint) -> tuple[str, dict[str, str], Any]:
        headers = {"content-type": "application/json", **endpoint.headers}
        if endpoint.api_key:
            headers["x-api-key"] = endpoint.api_key
        system = request.system or ""
        if request.response_schema is not None:
            instruction = schema_instruction(request.response_schema)
            system = f"{system}\n\n{instruction}" if system else instruction
        body: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": _messages(request.messages),
        }
        if system:
            body["system"] = system
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.tools:
            body["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": dict(t.parameters)}
                for t in request.tools
            ]
        if request.stream:
            body["stream"] = True
        return join_url(endpoint.base_url, "/v1/messages"), headers, body

    def parse(self, doc: Any) -> Reply:
        try:
            reply = Reply(finish_reason=doc.get("stop_reason"), model=doc.get("model"))
            texts = []
            for block in doc["content"]:
                if block["type"] == "text":
                    texts.append(str(block["text"]))
                elif block["type"] == "tool_use":
                    raw = json.dumps(block.get("input") or {})
                    reply.tool_calls.append(
                        ToolCall(
                            str(block["id"]), str(block["name"]), block.get("input") or {}, raw
                        )
                    )
            reply.text = "".join(texts)
            _usage(reply, doc.get("usage"))
        except (KeyError, TypeError, AttributeError, ValueError):
            raise bad_reply(self.endpoint, "no content blocks") from None
        return reply

    def assembler(self) -> StreamAssembler:
        return StreamAssembler(self.endpoint)


class StreamAssembler:
    """message_start (input tokens), content_block_start/delta/stop (text_delta,
    input_json_delta), message_delta (stop_reason, output tokens), message_stop."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.result = Reply()
        self.blocks: dict[int, dict[str, Any]] = {}
        self.stopped = False

    def feed(self, event: str | None, data: str) -> str:
        try:
            doc = json.loads(data)
            kind = doc["type"] if isinstance(doc, dict) else None
        except (ValueError, KeyError):
            raise bad_reply(self.endpoint, "a stream event is not JSON with a type") from None
        try:
            return self._take(kind, doc)
        except (KeyError, TypeError, AttributeError, ValueError):
            raise bad_reply(self.endpoint, f"a {kind} event lacks its fields") from None

    def _take(self, kind: Any, doc: dict[str, Any]) -> str:
        match kind:
            case "message_start":
                message = doc["message"]
                self.result.model = message.get("model")
                _usage(self.result, message.get("usage"))
            case "content_block_start":
                block = dict(doc["content_block"])
                block["parts"] = [block.get("text", "")] if block["type"] == "text" else []
                self.blocks[int(doc["index"])] = block
                return str(block.get("text") or "")
            case "content_block_delta":
                block, delta = self.blocks[int(doc["index"])], doc["delta"]
                if delta["type"] == "text_delta":
                    block["parts"].append(delta["text"])
                    return str(delta["text"])
                if delta["type"] == "input_json_delta":
                    block["parts"].append(delta["partial_json"])
            case "message_delta":
                self.result.finish_reason = doc.get("delta", {}).get("stop_reason")
                _usage(self.result, doc.get("usage"))
            case "message_stop":
                self.stopped = True
            case "error":
                error = doc.get("error") or {}
                overloaded = error.get("type") == OVERLOADED
                raise AgentError(
                    "llm_unavailable",
                    f"{self.endpoint.label} failed while streaming"
                    f"{' (overloaded)' if overloaded else ''}: {error.get('message', '')}",
                    retryable=True,
                )
        return ""  # ping, content_block_stop and events added later

    def reply(self) -> Reply:
        if not self.stopped:
            raise bad_reply(self.endpoint, "the stream ended before message_stop")
        texts = []
        for index in sorted(self.blocks):
            block = self.blocks[index]
            if block["type"] == "text":
                texts.append("".join(block["parts"]))
            elif block["type"] == "tool_use":
                raw = "".join(block["parts"])
                self.result.tool_calls.append(
                    ToolCall(str(block["id"]), str(block["name"]), parse_tool_arguments(raw), raw)
                )
        self.result.text = "".join(texts)
        return self.result
