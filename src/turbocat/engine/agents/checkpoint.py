"""The durable state of an llm step's tool loop: what ``llm.Conversation`` checkpoints on the
step run, and how a child workflow's end answers the tool call it was started for.

While an llm step runs (or waits for a workflow tool), its step run's ``output`` column holds
``{"llm_checkpoint": {...}}`` (plus ``execution_id`` while a workflow tool's child runs, the
way a ``workflow`` step holds it); the step's final output replaces it. Pure data: no I/O.

The checkpoint (``version`` 1)::

    {"version": 1,
     "messages": [{"role": "user"|"assistant"|"tool", "text": str,
                   "tool_calls": [{"id", "name", "arguments", "raw"}],   # assistant only
                   "call_id": str, "is_error": bool}],                    # tool only
     "pending": [{"id", "name", "arguments", "raw", "key"}],
     "iterations": int, "repairs": int, "calls": int,
     "prompt_tokens": int, "completion_tokens": int,
     "tool_runs": [{"id", "name", "arguments", "output" | "error", "execution_id"?}],
     "seen": {digest: count}, "max_tokens_field": str}

``messages`` is the whole conversation after the system prompt (the first user message
included); ``pending`` the tool calls of the last assistant message not answered yet, in
order, each with its idempotency ``key`` (see ``llm.Conversation.call_key``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from turbocat.domain.expressions import JSONValue
from turbocat.engine.agents.providers.common import Message, ToolCall

KEY = "llm_checkpoint"
VERSION = 1
MAX_TOOL_RESULT_CHARS = 100_000
"""A tool's output sent back to the model is cut to this many characters of JSON."""


def json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def tool_result(call_id: str, output: JSONValue) -> Message:
    return Message("tool", json_text(output)[:MAX_TOOL_RESULT_CHARS], call_id=call_id)


def tool_error(call_id: str, problem: str) -> Message:
    return Message("tool", json_text({"error": problem}), call_id=call_id, is_error=True)


def _call_json(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "name": call.name, "arguments": call.arguments, "raw": call.raw}


def _call_of(doc: dict[str, Any]) -> ToolCall:
    return ToolCall(str(doc["id"]), str(doc["name"]), doc.get("arguments"), str(doc.get("raw", "")))


def _message_json(message: Message) -> dict[str, Any]:
    doc: dict[str, Any] = {"role": message.role, "text": message.text}
    if message.tool_calls:
        doc["tool_calls"] = [_call_json(c) for c in message.tool_calls]
    if message.role == "tool":
        doc.update(call_id=message.call_id, is_error=message.is_error)
    return doc


def _message_of(doc: dict[str, Any]) -> Message:
    return Message(
        doc["role"], str(doc.get("text", "")),
        tuple(_call_of(c) for c in doc.get("tool_calls") or ()),
        str(doc.get("call_id", "")), bool(doc.get("is_error", False)),
    )  # fmt: skip


@dataclass(frozen=True)
class Pending:
    """A tool call the model asked for and nobody answered yet, with its idempotency key."""

    call: ToolCall
    key: str


@dataclass
class State:
    """One llm step's conversation and counters: all a resumed step needs to go on."""

    messages: list[Message]
    pending: list[Pending] = field(default_factory=list)
    iterations: int = 0
    """Model replies that asked for tools (bounded by ``max_iterations``)."""
    repairs: int = 0
    """Replies rejected by ``response_schema`` and asked for again."""
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tool_runs: list[dict[str, JSONValue]] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)
    max_tokens_field: str = "max_tokens"

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "messages": [_message_json(m) for m in self.messages],
            "pending": [{**_call_json(p.call), "key": p.key} for p in self.pending],
            "iterations": self.iterations, "repairs": self.repairs, "calls": self.calls,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "tool_runs": self.tool_runs, "seen": self.seen,
            "max_tokens_field": self.max_tokens_field,
        }  # fmt: skip

    @classmethod
    def from_json(cls, doc: Any) -> State | None:
        """The state in ``doc``; None when it is not a checkpoint this version can read (the
        step then starts its conversation over)."""
        if not isinstance(doc, dict) or doc.get("version") != VERSION:
            return None
        try:
            return cls(
                messages=[_message_of(m) for m in doc["messages"]],
                pending=[Pending(_call_of(p), str(p["key"])) for p in doc["pending"]],
                iterations=int(doc["iterations"]), repairs=int(doc["repairs"]),
                calls=int(doc["calls"]), prompt_tokens=int(doc["prompt_tokens"]),
                completion_tokens=int(doc["completion_tokens"]),
                tool_runs=list(doc["tool_runs"]), seen=dict(doc["seen"]),
                max_tokens_field=str(doc["max_tokens_field"]),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError):
            return None


def of(output: Any) -> State | None:
    """The checkpoint held in a step run's ``output``, if any."""
    return State.from_json(output.get(KEY)) if isinstance(output, dict) else None


def answered(
    output: Any,
    call_id: str,
    *,
    result: JSONValue = None,
    error: str | None = None,
    execution_id: str | None = None,
) -> dict[str, Any] | None:
    """The step run's new ``output`` once pending tool call ``call_id`` has its answer (a
    child workflow's output, or ``error``): the tool message appended, the call no longer
    pending, its run recorded. None when ``output`` holds no checkpoint waiting for that call."""
    state = of(output)
    if state is None or not state.pending or state.pending[0].call.id != call_id:
        return None
    call = state.pending.pop(0).call
    record: dict[str, JSONValue] = {"id": call.id, "name": call.name, "arguments": call.arguments}
    if execution_id is not None:
        record["execution_id"] = execution_id
    if error is None:
        record["output"] = result
        state.messages.append(tool_result(call.id, result))
    else:
        record["error"] = error
        state.messages.append(tool_error(call.id, error))
    state.tool_runs.append(record)
    return {KEY: state.to_json()}
