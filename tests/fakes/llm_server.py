"""A fake LLM provider at the wire: a real HTTP server on 127.0.0.1 that speaks OpenAI's chat
completions (``POST /v1/chat/completions``) and Anthropic's messages (``POST /v1/messages``).

Each test scripts the answers in order with ``FakeLLM.add``: a ``Script`` is protocol-neutral
(text, tool calls, usage) and is rendered in the protocol of the path it is asked on, whole or as
SSE when the request says ``stream: true``; or it is an error (status, Retry-After, body), a
malformed body, a stream cut short, or a slow answer (held until ``delay`` passes or the server
stops). Every request is recorded (path, headers, JSON body). With ``api_key`` set, requests
without that key (Bearer for OpenAI, ``x-api-key`` for Anthropic) get a 401 in the protocol's
error shape, so a test can tell the key really travelled.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

OPENAI = "/v1/chat/completions"
ANTHROPIC = "/v1/messages"


@dataclass
class Script:
    """One answer. ``tool_calls`` are (id, name, arguments)."""

    text: str = ""
    tool_calls: list[tuple[str, str, Any]] = field(default_factory=list)
    usage: tuple[int, int] = (11, 7)
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    error: str = "scripted failure"
    body: bytes | None = None
    """Sent as is (a malformed reply, an error body not in the protocol's shape)."""
    delay: float = 0.0
    cut: bool = False
    """Stream: stop before the end (no [DONE] / message_stop)."""
    chunk: int = 4
    """Characters per streamed text delta."""
    model: str = "fake-model"


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    json: Any


@dataclass
class FakeLLM:
    port: int = 0
    api_key: str | None = None
    scripts: deque[Script] = field(default_factory=deque)
    requests: list[Seen] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def openai_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, *scripts: Script) -> None:
        self.scripts.extend(scripts)

    def text(self, text: str, **kwargs: Any) -> None:
        self.add(Script(text=text, **kwargs))

    def tool(self, name: str, arguments: Any, call_id: str = "call_1", **kwargs: Any) -> None:
        self.add(Script(tool_calls=[(call_id, name, arguments)], **kwargs))

    def fail(self, status: int, error: str = "scripted failure", **kwargs: Any) -> None:
        self.add(Script(status=status, error=error, **kwargs))

    @property
    def bodies(self) -> list[Any]:
        return [r.json for r in self.requests]


# --- rendering ---------------------------------------------------------------------------


def _openai_whole(s: Script) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": s.text or None}
    if s.tool_calls:
        message["tool_calls"] = [
            {"id": i, "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
            for i, n, a in s.tool_calls
        ]
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": s.model,
        "choices": [{"index": 0, "message": message,
                     "finish_reason": "tool_calls" if s.tool_calls else "stop"}],
        "usage": {"prompt_tokens": s.usage[0], "completion_tokens": s.usage[1],
                  "total_tokens": sum(s.usage)},
    }  # fmt: skip


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _openai_stream(s: Script, usage: bool) -> Iterator[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        doc = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": s.model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
        return f"data: {json.dumps(doc)}\n\n".encode()

    yield chunk({"role": "assistant", "content": ""})
    for piece in _pieces(s.text, s.chunk):
        yield chunk({"content": piece})
    if s.cut:
        return
    for index, (call_id, name, arguments) in enumerate(s.tool_calls):
        raw = json.dumps(arguments)
        yield chunk({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                     "function": {"name": name, "arguments": ""}}]})  # fmt: skip
        for piece in _pieces(raw, max(1, len(raw) // 2)):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, "tool_calls" if s.tool_calls else "stop")
    if usage:
        doc = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": s.model,
               "choices": [], "usage": {"prompt_tokens": s.usage[0],
                                        "completion_tokens": s.usage[1]}}  # fmt: skip
        yield f"data: {json.dumps(doc)}\n\n".encode()
    yield b"data: [DONE]\n\n"


def _anthropic_whole(s: Script) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": s.text}] if s.text else []
    content += [{"type": "tool_use", "id": i, "name": n, "input": a} for i, n, a in s.tool_calls]
    return {
        "id": "msg_fake", "type": "message", "role": "assistant", "model": s.model,
        "content": content, "stop_reason": "tool_use" if s.tool_calls else "end_turn",
        "usage": {"input_tokens": s.usage[0], "output_tokens": s.usage[1]},
    }  # fmt: skip


def _anthropic_stream(s: Script) -> Iterator[bytes]:
    def event(name: str, doc: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: {json.dumps({'type': name, **doc})}\n\n".encode()

    yield event("message_start", {"message": {
        "id": "msg_fake", "type": "message", "role": "assistant", "model": s.model, "content": [],
        "stop_reason": None, "usage": {"input_tokens": s.usage[0], "output_tokens": 1}}})  # fmt: skip
    yield event("ping", {})
    index = 0
    if s.text:
        yield event(
            "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
        )
        for piece in _pieces(s.text, s.chunk):
            yield event("content_block_delta",
                        {"index": 0, "delta": {"type": "text_delta", "text": piece}})  # fmt: skip
        yield event("content_block_stop", {"index": 0})
        index = 1
    if s.cut:
        return
    for offset, (call_id, name, arguments) in enumerate(s.tool_calls):
        at = index + offset
        yield event("content_block_start", {"index": at, "content_block": {
            "type": "tool_use", "id": call_id, "name": name, "input": {}}})  # fmt: skip
        raw = json.dumps(arguments)
        for piece in _pieces(raw, max(1, len(raw) // 2)):
            yield event("content_block_delta", {"index": at, "delta": {
                "type": "input_json_delta", "partial_json": piece}})  # fmt: skip
        yield event("content_block_stop", {"index": at})
    yield event("message_delta", {
        "delta": {"stop_reason": "tool_use" if s.tool_calls else "end_turn"},
        "usage": {"output_tokens": s.usage[1]}})  # fmt: skip
    yield event("message_stop", {})


def _error_body(path: str, status: int, message: str) -> bytes:
    if path == ANTHROPIC:
        kind = {401: "authentication_error", 429: "rate_limit_error", 529: "overloaded_error"}
        doc: dict[str, Any] = {
            "type": "error",
            "error": {"type": kind.get(status, "api_error"), "message": message},
        }
    else:
        doc = {"error": {"message": message, "type": "invalid_request_error", "code": status}}
    return json.dumps(doc).encode()


# --- the server --------------------------------------------------------------------------


def _handler(state: FakeLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _stream(self, events: Iterator[bytes]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for data in events:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")

        def _authorized(self, path: str) -> bool:
            if state.api_key is None:
                return True
            if path == ANTHROPIC:
                return self.headers.get("x-api-key") == state.api_key
            return self.headers.get("Authorization") == f"Bearer {state.api_key}"

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path = self.path.split("?", 1)[0]
            try:
                doc = json.loads(raw)
            except ValueError:
                doc = None
            state.requests.append(Seen(path, dict(self.headers), doc))
            if path not in (OPENAI, ANTHROPIC):
                self._send(404, _error_body(path, 404, f"no route {path}"))
                return
            if not self._authorized(path):
                self._send(401, _error_body(path, 401, "invalid x-api-key / bearer token"))
                return
            if not state.scripts:
                self._send(500, _error_body(path, 500, "the test scripted no more replies"))
                return
            s = state.scripts.popleft()
            if s.delay:
                state.release.wait(s.delay)
            if s.status >= 400:
                body = s.body if s.body is not None else _error_body(path, s.status, s.error)
                self._send(s.status, body, s.headers)
            elif s.body is not None:
                self._send(200, s.body, s.headers)
            elif isinstance(doc, dict) and doc.get("stream"):
                if path == ANTHROPIC:
                    self._stream(_anthropic_stream(s))
                else:
                    usage = bool((doc.get("stream_options") or {}).get("include_usage"))
                    self._stream(_openai_stream(s, usage))
            else:
                whole = _anthropic_whole(s) if path == ANTHROPIC else _openai_whole(s)
                self._send(200, json.dumps(whole).encode(), s.headers)

    return Handler


@contextmanager
def running(api_key: str | None = None) -> Iterator[FakeLLM]:
    """A fake provider on a free port of 127.0.0.1 for the ``with`` block."""
    state = FakeLLM(api_key=api_key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
