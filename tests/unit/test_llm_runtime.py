"""The llm kind against a fake provider at the wire (tests/fakes/llm_server.py), both protocols:
requests as the providers expect them, replies, structured output, streaming into logs, usage,
tool calls running real agents (the data kind), the iteration bound, and every failure mapped
onto the retry policy."""

from __future__ import annotations

import json
import re
import socket
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from tests.fakes.llm_server import ANTHROPIC, OPENAI, FakeLLM, Script, running
from turbocat.config import LlmRuntimeSettings, RuntimeSettings
from turbocat.engine.agents import llm
from turbocat.engine.agents.base import (
    AgentError,
    Credential,
    Invocation,
    PromptSource,
    RecordingServices,
    ToolTarget,
    Usage,
)
from turbocat.engine.agents.providers.common import retry_after

PROVIDERS = ["openai", "anthropic"]
KEY_ID = uuid.UUID(int=7)
LOOPBACK = ["127.0.0.1/32"]
"""The fake provider listens on loopback, which the SSRF policy refuses unless allowed."""


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    with running() as server:
        yield server


def base_url(fake: FakeLLM, provider: str) -> str:
    return fake.openai_url if provider == "openai" else fake.anthropic_url


def invocation(
    fake: FakeLLM,
    provider: str = "openai",
    services: RecordingServices | None = None,
    inputs: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    **config: Any,
) -> Invocation:
    config = {"provider": provider, "model": "m-1", "base_url": base_url(fake, provider)} | config
    return Invocation(
        kind="llm", config=config, inputs=inputs if inputs is not None else {"q": "hi"},
        context={"input": {"who": "ada"}, "steps": {}, "vars": {"tone": "dry"}},
        services=services or RecordingServices(), idempotency_key="ex:ask:0",
        execution_id=uuid.UUID(int=1), organization_id=uuid.UUID(int=2), step_key="ask",
        settings=RuntimeSettings(llm=LlmRuntimeSettings(**({"allow": LOOPBACK} | (settings or {})))),
    )  # fmt: skip


def keyed(provider: str, key: str = "sk-test", **settings: Any) -> RecordingServices:
    credential = Credential(KEY_ID, provider, "api_key", {"api_key": key}, settings)
    return RecordingServices(credentials={KEY_ID: credential})


async def fails(call: Invocation) -> AgentError:
    with pytest.raises(AgentError) as caught:
        await llm.invoke(call)
    return caught.value


# --- requests and replies --------------------------------------------------------------------


async def test_openai_request_and_reply(fake: FakeLLM) -> None:
    fake.text("Hello Ada", usage=(12, 3))
    services = RecordingServices()
    out = await llm.invoke(
        invocation(fake, services=services, system_prompt="Be brief.", temperature=0.3,
                   max_tokens=50)
    )  # fmt: skip
    assert isinstance(out, dict)
    assert out["content"] == "Hello Ada" and out["json"] is None and out["tool_calls"] == []
    assert out["usage"] == {"prompt": 12, "completion": 3, "total": 15,
                            "calls": 1}  # fmt: skip
    assert out["model"] == "fake-model" and out["finish_reason"] == "stop"
    (seen,) = fake.requests
    assert seen.path == OPENAI and "authorization" not in {k.lower() for k in seen.headers}
    assert seen.json == {
        "model": "m-1", "temperature": 0.3, "max_tokens": 50,
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": '{"q": "hi"}'}],
    }  # fmt: skip
    assert services.usage == [Usage("fake-model", 12, 3)]
    (line,) = services.logs
    assert line[2]["usage"] == {"model": "fake-model", "prompt": 12, "completion": 3}


async def test_anthropic_request_and_reply_with_the_integration_key(fake: FakeLLM) -> None:
    fake.api_key = "sk-ant"
    fake.text("Bonjour", usage=(20, 4))
    services = keyed("anthropic", "sk-ant", anthropic_version="2024-01-01")
    out = await llm.invoke(
        invocation(fake, "anthropic", services, integration_id=str(KEY_ID), system_prompt="Sys",
                   user_prompt="Greet {{ input.who }} ({{ inputs.q }}) in a {{ vars.tone }} tone")
    )  # fmt: skip
    assert isinstance(out, dict) and out["content"] == "Bonjour"
    assert out["usage"]["total"] == 24 and out["finish_reason"] == "end_turn"
    (seen,) = fake.requests
    assert seen.path == ANTHROPIC
    assert seen.headers["x-api-key"] == "sk-ant"
    fake.text("again")  # a base_url given with /v1, as OpenAI's are, is not doubled
    await llm.invoke(
        invocation(fake, "anthropic", services, integration_id=str(KEY_ID),
                   base_url=f"{fake.anthropic_url}/v1/")
    )  # fmt: skip
    assert fake.requests[-1].path == ANTHROPIC
    assert seen.headers["anthropic-version"] == "2024-01-01"
    assert seen.json == {
        "model": "m-1", "max_tokens": 4096, "system": "Sys",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Greet ada (hi) in a dry tone"}]}],
    }  # fmt: skip


async def test_base_url_and_key_from_the_integration(fake: FakeLLM) -> None:
    fake.api_key = "sk-1"
    fake.text("ok")
    services = keyed("openai", "sk-1", base_url=fake.openai_url, organization="org-9")
    out = await llm.invoke(
        invocation(fake, "openai", services, integration_id=str(KEY_ID), base_url=None)
    )
    assert isinstance(out, dict) and out["content"] == "ok"
    assert fake.requests[0].headers["OpenAI-Organization"] == "org-9"


async def test_prompt_with_variables_and_its_model_and_parameters(fake: FakeLLM) -> None:
    prompt_id = uuid.uuid4()
    services = RecordingServices(prompts={prompt_id: PromptSource(
        "You write for {{ vars.company }}, {{ vars.tone | default('kind') }}.",
        {"company": {"type": "string", "required": True}, "tone": {}},
        model="prompt-model", parameters={"temperature": 0.1, "max_tokens": 99},
    )})  # fmt: skip
    fake.text("ok")
    config = {"provider": "openai", "base_url": fake.openai_url, "prompt_id": str(prompt_id),
              "prompt_variables": {"company": "{{ input.who }} Inc"}}  # fmt: skip
    call = invocation(fake, services=services)
    await llm.invoke(replace(call, config=config))
    body = fake.bodies[0]
    assert body["model"] == "prompt-model" and body["temperature"] == 0.1
    assert body["max_tokens"] == 99
    assert body["messages"][0] == {"role": "system", "content": "You write for ada Inc, kind."}
    # a variable the prompt does not declare fails the step, clearly and for good
    bad = {**config, "prompt_variables": {"company": "x", "colour": "red"}}
    error = await fails(replace(call, config=bad))
    assert error.kind == "prompt_error" and "colour" in error.message and not error.retryable


# --- structured output -----------------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {"label": {"enum": ["spam", "ham"]}, "score": {"type": "number"}},
    "required": ["label", "score"],
}


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_structured_output_valid(fake: FakeLLM, provider: str) -> None:
    fake.text('```json\n{"label": "spam", "score": 0.9}\n```')
    out = await llm.invoke(invocation(fake, provider, response_schema=SCHEMA))
    assert isinstance(out, dict) and out["json"] == {"label": "spam", "score": 0.9}
    body = fake.bodies[0]
    if provider == "openai":
        assert body["response_format"]["json_schema"]["schema"] == SCHEMA
    else:  # no native format: the schema is stated in the system prompt
        assert '"required": ["label", "score"]' in body["system"]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_invalid_output_is_asked_again_with_the_error(fake: FakeLLM, provider: str) -> None:
    fake.text('{"label": "eggs", "score": 1}')
    fake.text("not json at all")
    fake.text('{"label": "ham", "score": 0.2}')
    services = RecordingServices()
    out = await llm.invoke(invocation(fake, provider, services, response_schema=SCHEMA))
    assert isinstance(out, dict) and out["json"] == {"label": "ham", "score": 0.2}
    assert out["usage"]["calls"] == 3 and len(services.usage) == 3
    second = json.dumps(fake.bodies[1]["messages"])
    assert "$.label" in second and "eggs" in second
    third = json.dumps(fake.bodies[2]["messages"])
    assert "not JSON" in third


async def test_an_empty_reply_is_asked_again_in_a_valid_turn(fake: FakeLLM) -> None:
    fake.text("")
    fake.text('{"label": "ham", "score": 1}')
    out = await llm.invoke(invocation(fake, "anthropic", response_schema=SCHEMA))
    assert isinstance(out, dict) and out["json"] == {"label": "ham", "score": 1}
    assistant = fake.bodies[1]["messages"][1]
    assert assistant == {
        "role": "assistant",
        "content": [{"type": "text", "text": "(empty reply)"}],
    }


async def test_output_that_never_validates_fails_naming_the_field(fake: FakeLLM) -> None:
    for _ in range(3):
        fake.text('{"label": "spam", "score": "high"}')
    error = await fails(invocation(fake, response_schema=SCHEMA))
    assert error.kind == "llm_invalid_output" and not error.retryable
    assert "after 3 tries" in error.message and "$.score" in error.message
    assert "properties/score/type" in error.message
    assert error.details["usage"]["calls"] == 3 and len(fake.requests) == 3


# --- streaming -------------------------------------------------------------------------------

TEXT = "The quick brown fox jumps over the lazy dog. " * 3


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_streaming_writes_coalesced_lines_and_usage(fake: FakeLLM, provider: str) -> None:
    fake.add(Script(text=TEXT, usage=(30, 40), chunk=3))
    services = RecordingServices()
    settings = {"stream_log_chars": 40, "stream_log_seconds": 60}
    out = await llm.invoke(invocation(fake, provider, services, settings=settings, stream=True))
    assert isinstance(out, dict) and out["content"] == TEXT
    assert out["usage"]["prompt"] == 30 and out["usage"]["completion"] == 40
    assert services.usage == [Usage("fake-model", 30, 40)]
    streamed = [m for _, m, meta in services.logs if meta.get("stream")]
    assert "".join(streamed) == TEXT
    # 135 characters in 45 deltas: a handful of lines, not one per token
    assert 3 <= len(streamed) <= 5 and all(len(m) <= 42 for m in streamed[:-1])
    body = fake.bodies[0]
    assert body["stream"] is True
    if provider == "openai":
        assert body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_stream_cut_short_is_retried(fake: FakeLLM, provider: str) -> None:
    fake.add(Script(text="partial answer", cut=True))
    error = await fails(invocation(fake, provider, stream=True))
    assert error.kind == "llm_bad_reply" and error.retryable


# --- tools -----------------------------------------------------------------------------------

ORDERS = [{"id": 1, "total": 250}, {"id": 2, "total": 20}, {"id": 3, "total": 101}]
BIG_ORDERS = ToolTarget(
    type="agent", ref="big-orders", name="big orders", description="Ids of orders over 100",
    parameters={"type": "object", "properties": {"data": {"type": "array"}},
                "required": ["data"]},
    kind="data", config={"query": "[?total > `100`].id"},
)  # fmt: skip


def with_tools() -> RecordingServices:
    return RecordingServices(tools={"big-orders": BIG_ORDERS})


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_tool_loop_runs_an_agent(fake: FakeLLM, provider: str, stream: bool) -> None:
    fake.tool("big_orders", {"data": ORDERS}, call_id="c1", usage=(50, 10))
    fake.text("Orders 1 and 3 are big.", usage=(80, 8))
    services = with_tools()
    out = await llm.invoke(
        invocation(fake, provider, services, stream=stream,
                   tools=[{"type": "agent", "ref": "big-orders"}])
    )  # fmt: skip
    assert isinstance(out, dict) and out["content"] == "Orders 1 and 3 are big."
    assert out["tool_calls"] == [
        {"id": "c1", "name": "big_orders", "arguments": {"data": ORDERS}, "output": [1, 3]}
    ]
    assert out["usage"] == {"prompt": 130, "completion": 18, "total": 148,
                            "calls": 2}  # fmt: skip
    assert out["iterations"] == 2
    ((ref, arguments, key),) = services.tool_calls
    assert (ref, arguments) == ("big-orders", {"data": ORDERS})
    assert re.fullmatch(r"ex:ask:0:tool:[0-9a-f]{16}", key)
    first, second = fake.bodies
    if provider == "openai":
        assert first["tools"] == [{"type": "function", "function": {
            "name": "big_orders", "description": "Ids of orders over 100",
            "parameters": BIG_ORDERS.parameters}}]  # fmt: skip
        assert second["messages"][-2]["tool_calls"][0]["id"] == "c1"
        assert second["messages"][-1] == {"role": "tool", "tool_call_id": "c1", "content": "[1, 3]"}
    else:
        assert first["tools"][0]["input_schema"] == BIG_ORDERS.parameters
        assistant, results = second["messages"][-2:]
        assert assistant["content"] == [
            {"type": "tool_use", "id": "c1", "name": "big_orders", "input": {"data": ORDERS}}
        ]
        assert results == {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "[1, 3]", "is_error": False}
            ],
        }
    assert any("tool big_orders" in m for _, m, _ in services.logs)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_tool_errors_go_back_to_the_model(fake: FakeLLM, provider: str) -> None:
    fake.add(Script(tool_calls=[("a", "nope", {}), ("b", "big_orders", {"data": "x"})]))
    fake.text("sorry")
    out = await llm.invoke(
        invocation(fake, provider, with_tools(), tools=[{"type": "agent", "ref": "big-orders"}])
    )
    assert isinstance(out, dict) and out["content"] == "sorry"
    errors = [c["error"] for c in out["tool_calls"]]
    assert "no tool named 'nope'" in errors[0] and "$.data" in errors[1]
    assert "no tool named" in json.dumps(fake.bodies[1]["messages"])


async def test_tool_idempotency_keys_follow_the_call_not_the_provider_id(fake: FakeLLM) -> None:
    """After a crash or a retry the model's call ids differ; the key must not."""
    keys = []
    for call_id in ("first-id", "other-id"):
        fake.add(Script(tool_calls=[(call_id, "big_orders", {"data": ORDERS}),
                                    (f"{call_id}-2", "big_orders", {"data": ORDERS}),
                                    (f"{call_id}-3", "big_orders", {"data": []})]))  # fmt: skip
        fake.text("done")
        services = with_tools()
        await llm.invoke(
            invocation(fake, "openai", services, tools=[{"type": "agent", "ref": "big-orders"}])
        )
        keys.append([key for _, _, key in services.tool_calls])
    assert keys[0] == keys[1]
    first, again, other = keys[0]
    assert again == f"{first}.2" and other != first and not other.endswith(".2")


async def test_max_iterations_bounds_the_tool_loop(fake: FakeLLM) -> None:
    for n in range(3):
        fake.tool("big_orders", {"data": ORDERS}, call_id=f"c{n}")
    services = with_tools()
    error = await fails(
        invocation(fake, "openai", services, max_iterations=2,
                   tools=[{"type": "agent", "ref": "big-orders"}])
    )  # fmt: skip
    assert error.kind == "max_iterations_exceeded" and not error.retryable
    assert "after 2 calls" in error.message
    assert len(fake.requests) == 2 and len(services.tool_calls) == 1


async def test_unknown_tool_agent_fails_before_any_call(fake: FakeLLM) -> None:
    error = await fails(invocation(fake, tools=[{"type": "agent", "ref": "missing"}]))
    assert error.kind == "tool_unavailable" and fake.requests == []


# --- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_refused_credentials_name_the_integration(fake: FakeLLM, provider: str) -> None:
    fake.api_key = "right"
    error = await fails(
        invocation(fake, provider, keyed(provider, "wrong"), integration_id=str(KEY_ID))
    )
    assert error.kind == "llm_unauthorized" and not error.retryable
    assert f"refused the credentials of integration {KEY_ID}" in error.message
    assert "wrong" not in error.message
    error = await fails(invocation(fake, provider))  # and without any integration
    assert "no integration is configured" in error.message


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    ("script", "kind", "retryable", "after"),
    [
        (Script(status=429, headers={"Retry-After": "7"}), "llm_rate_limited", True, 7.0),
        (Script(status=500), "llm_unavailable", True, None),
        (Script(status=529, error="Overloaded"), "llm_unavailable", True, None),
        (Script(status=400, error="max_tokens is too large"), "llm_request_refused", False, None),
        (Script(status=404), "llm_not_found", False, None),
        (Script(body=b"{not json"), "llm_bad_reply", True, None),
        (Script(body=b'{"choices": []}'), "llm_bad_reply", True, None),
        (Script(status=502, body=b"<html>bad gateway</html>"), "llm_unavailable", True, None),
    ],
)
async def test_provider_failures_map_onto_the_retry_policy(
    fake: FakeLLM, provider: str, script: Script, kind: str, retryable: bool, after: float | None
) -> None:
    fake.add(script)
    error = await fails(invocation(fake, provider))
    assert (error.kind, error.retryable, error.retry_after) == (kind, retryable, after)
    if script.status == 400:
        assert "max_tokens is too large" in error.message
    if script.status == 429:
        assert "retrying after 7 s" in error.message


async def test_slow_replies_time_out(fake: FakeLLM) -> None:
    fake.add(Script(text="late", delay=5))
    error = await fails(invocation(fake, timeout_ms=200))
    assert error.kind == "llm_timeout" and error.retryable and "0.2 s" in error.message


async def test_unreachable_server_is_retried(fake: FakeLLM) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    error = await fails(invocation(fake, base_url=f"http://127.0.0.1:{port}/v1"))
    assert error.kind == "llm_unreachable" and error.retryable


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_provider_urls_pass_the_ssrf_policy(fake: FakeLLM, provider: str) -> None:
    error = await fails(invocation(fake, provider, settings={"allow": []}))
    assert error.kind == "ssrf_blocked" and not error.retryable
    assert "127.0.0.1" in error.message and "[runtimes.llm] allow" in error.message
    assert "[runtimes.http]" not in error.message
    error = await fails(invocation(fake, provider, base_url="http://169.254.169.254/v1"))
    assert error.kind == "ssrf_blocked" and fake.requests == []
    fake.text("ok")  # allowed explicitly: through
    assert await llm.invoke(invocation(fake, provider))


@pytest.mark.parametrize("url", ["ftp://h/v1", "http://h:port/v1", "http:///v1", "localhost:1"])
async def test_bad_base_urls_are_refused(fake: FakeLLM, url: str) -> None:
    error = await fails(invocation(fake, base_url=url))
    assert error.kind == "bad_base_url" and not error.retryable


async def test_messages_never_show_user_info_or_query(fake: FakeLLM) -> None:
    url = f"http://user:s3cret@127.0.0.1:{fake.port}/v1?key=s3cret"
    fake.fail(401)
    error = await fails(invocation(fake, base_url=url))
    assert f"127.0.0.1:{fake.port}/v1" in error.message and "s3cret" not in error.message


async def test_an_invalid_inline_config_fails_for_good(fake: FakeLLM) -> None:
    error = await fails(invocation(fake, temperature=5))
    assert error.kind == "invalid_config" and not error.retryable
    assert "temperature" in error.message
    error = await fails(invocation(fake, model=None))
    assert "model is required" in error.message and fake.requests == []


async def test_an_integration_of_another_provider_is_refused(fake: FakeLLM) -> None:
    error = await fails(invocation(fake, "openai", keyed("anthropic"), integration_id=str(KEY_ID)))
    assert error.kind == "integration_mismatch" and fake.requests == []


def test_retry_after_takes_seconds_or_a_date() -> None:
    import datetime as dt

    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert retry_after({"retry-after": "3"}, now) == 3.0
    assert retry_after({"retry-after": "Thu, 01 Jan 2026 00:00:30 GMT"}, now) == 30.0
    assert retry_after({"retry-after": "soon"}, now) is None
    assert retry_after({}, now) is None


async def test_an_llm_agent_as_a_tool(fake: FakeLLM) -> None:
    helper = ToolTarget(
        type="agent", ref="helper", name="helper", description="Asks another model",
        parameters={}, kind="llm",
        config={"provider": "anthropic", "model": "inner", "base_url": fake.anthropic_url},
    )  # fmt: skip
    services = RecordingServices(tools={"helper": helper})
    fake.tool("helper", {"q": "x"}, usage=(1, 1))
    fake.text("inner answer", usage=(2, 2))
    fake.text("outer answer", usage=(3, 3))
    out = await llm.invoke(
        invocation(fake, "openai", services, tools=[{"type": "agent", "ref": "helper"}])
    )
    assert isinstance(out, dict) and out["content"] == "outer answer"
    inner = out["tool_calls"][0]["output"]
    assert inner["content"] == "inner answer" and inner["usage"]["total"] == 4
    assert [r.path for r in fake.requests] == [OPENAI, ANTHROPIC, OPENAI]
    assert fake.bodies[1]["messages"][0]["content"][0]["text"] == '{"q": "x"}'
    assert fake.bodies[0]["tools"][0]["function"]["parameters"] == {"type": "object"}
    assert [u.total_tokens for u in services.usage] == [2, 4, 6]  # the tool's own call too


async def test_tools_calling_tools_stop_at_three_levels(fake: FakeLLM) -> None:
    config = {"provider": "openai", "model": "m", "base_url": fake.openai_url,
              "tools": [{"type": "agent", "ref": "loop"}]}  # fmt: skip
    looping = ToolTarget("agent", "loop", "loop", "Calls itself", {}, "llm", config)
    services = RecordingServices(tools={"loop": looping})
    for n in range(4):
        fake.tool("loop", {}, call_id=f"c{n}")
    for n in range(4):
        fake.text(f"done {3 - n}")
    out = await llm.invoke(
        invocation(fake, "openai", services, tools=[{"type": "agent", "ref": "loop"}])
    )
    assert isinstance(out, dict) and out["content"] == "done 0"
    keys = [key for _, _, key in services.tool_calls]
    assert keys[-1].startswith("ex:ask:0:tool:") and keys[-1].count(":tool:") == 4
    deepest = json.dumps(fake.bodies[4]["messages"])
    assert "deeper than 3 levels" in deepest


async def test_max_completion_tokens_when_max_tokens_is_refused(fake: FakeLLM) -> None:
    fake.fail(400, "Unsupported parameter: 'max_tokens' is not supported with this model. "
              "Use 'max_completion_tokens' instead.")  # fmt: skip
    fake.tool("big_orders", {"data": ORDERS})
    fake.text("ok")
    out = await llm.invoke(
        invocation(fake, "openai", with_tools(), max_tokens=64,
                   tools=[{"type": "agent", "ref": "big-orders"}])
    )  # fmt: skip
    assert isinstance(out, dict) and out["content"] == "ok" and out["usage"]["calls"] == 2
    first, second, third = fake.bodies
    assert first["max_tokens"] == 64 and "max_completion_tokens" not in first
    assert second["max_completion_tokens"] == 64 and "max_tokens" not in second
    assert third["max_completion_tokens"] == 64
    for _ in range(2):  # switched once, never in a loop
        fake.fail(400, "Unsupported parameter: 'max_completion_tokens'")
    error = await fails(invocation(fake, "openai", max_tokens=64))
    assert error.kind == "llm_request_refused" and len(fake.requests) == 5


def test_base_url_query_is_kept() -> None:
    from turbocat.engine.agents.providers.common import join_url

    base = "https://r.openai.azure.com/openai/deployments/d?api-version=2024-10-21"
    assert join_url(base, "/chat/completions") == (
        "https://r.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-10-21"
    )
    assert join_url("http://h/v1/", "/chat/completions") == "http://h/v1/chat/completions"


@pytest.mark.parametrize(("kind", "accepted"), [("llm", True), ("api", True), ("data", False)])
def test_inline_components_of_llm_and_api_may_read_inputs(kind: str, accepted: bool) -> None:
    from turbocat.domain.definitions.validate import validate_definition
    from turbocat.domain.errors import ValidationFailed

    config = {"model": "m", "user_prompt": "Q: {{ inputs.q }} for {{ input.who }}"}
    step = {"key": "ask", "type": "agent", "inputs": {"q": "{{ input.q }}"},
            "component": {"kind": kind, "config": config}}  # fmt: skip
    if accepted:
        validate_definition({"steps": [step]})
    else:  # the data kind renders its mapping over the workflow context only
        with pytest.raises(ValidationFailed, match="unknown name 'inputs'"):
            validate_definition({"steps": [step]})


@pytest.mark.parametrize("stream", [False, True])
async def test_replies_larger_than_max_reply_bytes_are_refused(fake: FakeLLM, stream: bool) -> None:
    fake.text("x" * 3000)
    error = await fails(invocation(fake, stream=stream, settings={"max_reply_bytes": 2048}))
    assert error.kind == "llm_reply_too_large" and not error.retryable
    fake.add(Script(text="y" * 500, chunk=500))  # under the limit: fine
    out = await llm.invoke(invocation(fake, stream=stream, settings={"max_reply_bytes": 2048}))
    assert isinstance(out, dict) and out["content"] == "y" * 500
