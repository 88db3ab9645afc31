"""The llm checkpoint's data: a round trip through JSON, answering the pending tool call."""

from __future__ import annotations

import json

from turbocat.engine.agents import checkpoint
from turbocat.engine.agents.checkpoint import Pending, State
from turbocat.engine.agents.providers.common import Message, ToolCall


def sample() -> State:
    call = ToolCall("call_1", "lookup", {"q": "x"}, '{"q": "x"}')
    other = ToolCall("call_2", "flow", {"n": 1}, '{"n": 1}')
    return State(
        messages=[
            Message("user", "hello"),
            Message("assistant", "looking", (call, other)),
            Message("tool", '{"a": 1}', call_id="call_1"),
        ],
        pending=[Pending(other, "abc123")],
        iterations=1, calls=1, prompt_tokens=10, completion_tokens=2,
        tool_runs=[{"id": "call_1", "name": "lookup", "arguments": {"q": "x"}, "output": {"a": 1}}],
        seen={"abc": 1, "abc123": 1}, max_tokens_field="max_completion_tokens",
    )  # fmt: skip


def test_a_state_survives_json() -> None:
    state = sample()
    doc = json.loads(json.dumps(state.to_json()))  # what the database gives back
    assert State.from_json(doc) == state
    assert doc["version"] == checkpoint.VERSION


def test_an_unknown_or_damaged_checkpoint_is_ignored() -> None:
    doc = sample().to_json()
    assert State.from_json({**doc, "version": 99}) is None
    assert State.from_json({k: v for k, v in doc.items() if k != "pending"}) is None
    assert State.from_json("nonsense") is None
    assert checkpoint.of({"execution_id": "x"}) is None


def test_answering_the_pending_call_appends_the_result() -> None:
    output = {checkpoint.KEY: sample().to_json(), "execution_id": "child-1"}
    assert checkpoint.answered(output, "call_9", result=1) is None  # not the pending call
    answered = checkpoint.answered(output, "call_2", result={"b": 2}, execution_id="child-1")
    assert answered is not None and set(answered) == {checkpoint.KEY}
    state = checkpoint.of(answered)
    assert state is not None and state.pending == []
    assert state.messages[-1] == Message("tool", '{"b": 2}', call_id="call_2")
    assert state.tool_runs[-1] == {"id": "call_2", "name": "flow", "arguments": {"n": 1},
                                   "execution_id": "child-1", "output": {"b": 2}}  # fmt: skip
    failed = checkpoint.of(checkpoint.answered(output, "call_2", error="child_failed: boom"))
    assert failed is not None
    assert failed.messages[-1].is_error and "child_failed: boom" in failed.messages[-1].text
    assert failed.tool_runs[-1]["error"] == "child_failed: boom"
