"""OpenAI's chat completions, as OpenAI, Azure OpenAI (v1 API), vLLM, Ollama, LM Studio and
other compatible servers speak it: ``POST {base_url}/chat/completions``.

``base_url`` includes the version path, as in OpenAI's own clients
(``https://api.openai.com/v1``, ``http://localhost:11434/v1``). Streaming asks for the usage in
the last chunk (``stream_options.include_usage``).
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


def _message(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.call_id, "content": message.text}
    if message.role == "assistant" and message.tool_calls:
        return {
            "role": "assistant",
            "content": message.text or None,
            "tool_calls": [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.raw}}
                for c in message.tool_calls
            ],
        }
    return {"role": message.role, "content": message.text}


def _text(content: Any) -> str:
    """``content`` is a string, null, or (some servers) a list of typed parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    raise TypeError("content is neither text nor parts")


def _usage(reply: Reply, usage: Any) -> None:
    if isinstance(usage, dict):
        reply.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        reply.completion_tokens = int(usage.get("completion_tokens") or 0)


class OpenAIWire:
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    def build(self, request: ChatRequest, endpoint: Endpoint) -> tuple[str, dict[str, str], Any]:
        headers = {"content-type": "application/json", **endpoint.headers}
        if endpoint.api_key:
            headers["authorization"] = f"Bearer {endpoint.api_key}"
        messages = [{"role": "system", "content": request.system}] if request.system else []
        messages += [_message(m) for m in request.messages]
        body: dict[str, Any] = {"model": request.model, "messages": messages}
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body[request.max_tokens_field] = request.max_tokens
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name, "description": t.description,
                        "parameters": dict(t.parameters),
                    },
                }
                for t in request.tools
            ]  # fmt: skip
            body["tool_choice"] = "auto"
        if request.response_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "response", "schema": dict(request.response_schema)},
            }
        if request.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return join_url(endpoint.base_url, "/chat/completions"), headers, body

    def parse(self, doc: Any) -> Reply:
        try:
            choice = doc["choices"][0]
            message = choice["message"]
            reply = Reply(
                text=_text(message.get("content")),
                finish_reason=choice.get("finish_reason"),
                model=doc.get("model"),
            )
            for call in message.get("tool_calls") or []:
                function = call["function"]
                raw = function.get("arguments") or ""
                raw = raw if isinstance(raw, str) else json.dumps(raw)  # Ollama sends an object
                reply.tool_calls.append(
                    ToolCall(str(call["id"]), str(function["name"]), parse_tool_arguments(raw), raw)
                )
            _usage(reply, doc.get("usage"))
        except (KeyError, IndexError, TypeError, AttributeError, ValueError):
            raise bad_reply(self.endpoint, "no choices[0].message") from None
        return reply

    def assembler(self) -> StreamAssembler:
        return StreamAssembler(self.endpoint)


class StreamAssembler:
    """``data:`` chunks with ``choices[0].delta`` (content, tool_calls by index), a last chunk
    with ``usage`` and no choices, then ``data: [DONE]``."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.result = Reply()
        self.text: list[str] = []
        self.calls: dict[int, dict[str, str]] = {}
        self.done = False

    def feed(self, event: str | None, data: str) -> str:
        if data.strip() == "[DONE]":
            self.done = True
            return ""
        try:
            chunk = json.loads(data)
        except ValueError:
            raise bad_reply(self.endpoint, "a stream chunk is not JSON") from None
        if not isinstance(chunk, dict):
            raise bad_reply(self.endpoint, "a stream chunk is not an object")
        if "error" in chunk:  # some servers report failures inside the stream
            error = chunk["error"]
            said = error.get("message") if isinstance(error, dict) else error
            raise AgentError(
                "llm_unavailable", f"{self.endpoint.label} failed while streaming: {said}",
                retryable=True,
            )  # fmt: skip
        self.result.model = chunk.get("model") or self.result.model
        if chunk.get("usage"):
            _usage(self.result, chunk["usage"])
        added = ""
        try:
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                piece = _text(delta.get("content"))
                if piece:
                    self.text.append(piece)
                    added += piece
                for part in delta.get("tool_calls") or []:
                    slot = self.calls.setdefault(int(part.get("index", 0)), {"id": "", "name": ""})
                    slot["id"] = part.get("id") or slot["id"]
                    function = part.get("function") or {}
                    slot["name"] += function.get("name") or ""
                    slot["arguments"] = slot.get("arguments", "") + (
                        function.get("arguments") or ""
                    )
                if choice.get("finish_reason"):
                    self.result.finish_reason = choice["finish_reason"]
        except (TypeError, ValueError, AttributeError):
            raise bad_reply(self.endpoint, "a stream chunk has no valid delta") from None
        return added

    def reply(self) -> Reply:
        if not self.done and self.result.finish_reason is None:
            raise bad_reply(self.endpoint, "the stream ended before [DONE]")
        self.result.text = "".join(self.text)
        for index in sorted(self.calls):
            slot = self.calls[index]
            raw = slot.get("arguments", "")
            call_id = slot["id"] or f"call_{index}"
            self.result.tool_calls.append(
                ToolCall(call_id, slot["name"], parse_tool_arguments(raw), raw)
            )
        return self.result
