"""The ``code`` kind: the user's ``def main(input)`` run in a sandboxed process.

``main`` gets the step's rendered inputs (a dict) and, if it takes a second parameter, a
context dict: ``execution_id``, ``organization_id``, ``step_key``, ``idempotency_key`` (the
same on every attempt: pass it on to make external side effects idempotent), ``attempt`` and
``workdir``. It returns any JSON value, which becomes the step output; ``async def main`` works
too. stdout and stderr go to the step's logs, bounded. How the process is confined is in
``engine/sandbox/``; what the user sees of it in docs/agents.md.
"""

from __future__ import annotations

import math
import signal
from typing import Any

from turbocat.domain.agents import CodeConfig
from turbocat.domain.enums import LogLevel
from turbocat.domain.expressions import JSONValue
from turbocat.engine.agents.base import AgentError, Invocation
from turbocat.engine.sandbox.process import (
    InputTooLarge,
    Limits,
    Outcome,
    SandboxUnavailable,
    run_python,
)

NOT_RETRYABLE_KINDS = {
    "error": "code_error",
    "missing_main": "code_missing_main",
    "result_not_json": "code_result_not_json",
    "result_too_large": "code_result_too_large",
    "sandbox": "code_sandbox_unavailable",
}


def limits_of(call: Invocation) -> Limits:
    """CPU and memory from the agent (or the operator's defaults); the wall clock is the CPU
    limit plus a margin, or the step's timeout when that is shorter."""
    settings = call.settings.code
    cpu = call.limits.max_execution_seconds or settings.default_max_execution_seconds
    memory = call.limits.max_memory_mb or settings.default_max_memory_mb
    wall = cpu + settings.wall_clock_margin_seconds
    if call.timeout_seconds is not None:
        wall = min(wall, call.timeout_seconds)
    return Limits(cpu_seconds=max(1, math.ceil(cpu)), memory_mb=memory, wall_seconds=wall)


def _log_streams(call: Invocation, outcome: Outcome) -> None:
    for name, stream, level in (
        ("stdout", outcome.stdout, LogLevel.INFO),
        ("stderr", outcome.stderr, LogLevel.WARN),
    ):
        if not stream.total:
            continue
        text = stream.text()
        if stream.truncated:
            text += f"\n[{name} truncated: {stream.total} bytes, the first {len(stream.kept)} kept]"
        call.services.log(level, text, {"stream": name, "bytes": stream.total,
                                        "truncated": stream.truncated})  # fmt: skip


def _failure(outcome: Outcome, limits: Limits) -> AgentError:
    """The error for a run that returned no output."""
    doc = outcome.document
    if outcome.timed_out:
        return AgentError(
            "code_timeout",
            f"the code ran longer than {limits.wall_seconds:g} s (wall clock) and was killed",
            retryable=True,
            details={"limit": "wall_clock", "seconds": limits.wall_seconds},
        )
    if doc is not None and doc.get("kind") == "memory":
        return _memory(limits)
    if doc is not None and doc.get("kind") in NOT_RETRYABLE_KINDS:
        details: dict[str, Any] = {}
        if doc.get("traceback"):
            details["traceback"] = doc["traceback"]
        return AgentError(NOT_RETRYABLE_KINDS[doc["kind"]], str(doc.get("message")),
                          details=details)  # fmt: skip
    code = outcome.returncode
    if code is not None and code < 0:
        try:
            sig = signal.Signals(-code)
        except ValueError:  # a real-time signal has no name of its own
            return AgentError("code_killed", f"the code's process was killed by signal {-code}",
                              details={"signal": str(-code)})  # fmt: skip
        if sig == signal.SIGXCPU or (
            sig == signal.SIGKILL and outcome.seconds >= limits.cpu_seconds
        ):
            return AgentError(
                "code_timeout",
                f"the code used more than {limits.cpu_seconds} s of CPU time and was killed",
                details={"limit": "cpu", "seconds": limits.cpu_seconds},
            )
        if sig == signal.SIGSEGV:  # a stack or allocation that hit the address-space limit
            return _memory(limits)
        return AgentError("code_killed", f"the code's process was killed by {sig.name}",
                          details={"signal": sig.name})  # fmt: skip
    if "MemoryError" in outcome.stderr.text():
        return _memory(limits)
    return AgentError(
        "code_exit",
        f"the code's process exited with status {code} before main returned",
        details={"stderr": outcome.stderr.text()[-2000:]},
    )


def _memory(limits: Limits) -> AgentError:
    return AgentError("code_memory", f"the code ran out of memory (limit {limits.memory_mb} MB)",
                      details={"limit_mb": limits.memory_mb})  # fmt: skip


async def invoke(call: Invocation) -> JSONValue:
    """The runtime entry point (see agents/base.py)."""
    spec = CodeConfig.model_validate(dict(call.config))
    limits = limits_of(call)
    context = {
        "execution_id": str(call.execution_id), "organization_id": str(call.organization_id),
        "step_key": call.step_key, "idempotency_key": call.idempotency_key,
        "attempt": call.attempt,
    }  # fmt: skip
    settings = call.settings.code
    try:
        outcome = await run_python(spec.source, call.inputs, context, limits, settings)
    except SandboxUnavailable as exc:
        raise AgentError("code_sandbox_unavailable", str(exc)) from None
    except InputTooLarge as exc:
        raise AgentError("code_input_too_large", str(exc)) from None
    isolation = outcome.isolation
    if settings.allow_degraded or not isolation.landlock_abi:
        call.services.log(LogLevel.WARN, f"code ran in a degraded sandbox: "
                          f"{isolation.describe()}")  # fmt: skip
    _log_streams(call, outcome)
    doc = outcome.document
    if doc is not None and doc.get("ok") is True and not outcome.timed_out:
        output: JSONValue = doc.get("output")
        return output
    error = _failure(outcome, limits)
    if error.details.get("traceback"):
        call.services.log(LogLevel.ERROR, str(error.details["traceback"]))
    raise error
