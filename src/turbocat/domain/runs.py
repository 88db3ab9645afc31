"""Execution and step-run state machines, execution results, and retry delays.

These are the only rules that decide a status change of an execution or a step run; the engine
asks them before it writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from turbocat.domain.enums import ExecutionResult, ExecutionStatus, StepStatus
from turbocat.domain.errors import InvalidTransition

S = StepStatus
E = ExecutionStatus

STEP_TERMINAL = frozenset({S.COMPLETED, S.FAILED, S.SKIPPED, S.CANCELLED})
STEP_TRANSITIONS: dict[StepStatus, frozenset[StepStatus]] = {
    S.PENDING: frozenset({S.READY, S.SKIPPED, S.CANCELLED}),
    S.READY: frozenset({S.RUNNING, S.SKIPPED, S.CANCELLED}),
    # running -> ready: the lease expired (worker died) and the attempt runs again
    S.RUNNING: frozenset({S.COMPLETED, S.FAILED, S.WAITING, S.READY, S.CANCELLED}),
    S.WAITING: frozenset({S.READY, S.COMPLETED, S.FAILED, S.CANCELLED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
    S.SKIPPED: frozenset(),
    S.CANCELLED: frozenset(),
}

EXECUTION_TERMINAL = frozenset({E.COMPLETED, E.FAILED, E.CANCELLED, E.TIMEOUT})
EXECUTION_TRANSITIONS: dict[ExecutionStatus, frozenset[ExecutionStatus]] = {
    E.PENDING: frozenset({E.RUNNING, E.CANCELLED, E.TIMEOUT}),
    E.RUNNING: frozenset({E.WAITING, E.COMPLETED, E.FAILED, E.CANCELLED, E.TIMEOUT}),
    E.WAITING: frozenset({E.RUNNING, E.COMPLETED, E.FAILED, E.CANCELLED, E.TIMEOUT}),
    E.COMPLETED: frozenset(),
    E.FAILED: frozenset(),
    E.CANCELLED: frozenset(),
    E.TIMEOUT: frozenset(),
}


def step_transition(current: StepStatus, target: StepStatus) -> StepStatus:
    if target not in STEP_TRANSITIONS[current]:
        raise InvalidTransition("step run", current.value, target.value)
    return target


def execution_transition(current: ExecutionStatus, target: ExecutionStatus) -> ExecutionStatus:
    if target not in EXECUTION_TRANSITIONS[current]:
        raise InvalidTransition("execution", current.value, target.value)
    return target


def execution_result(outcomes: Iterable[StepStatus], *, cancelled: bool = False) -> ExecutionResult:
    """success: nothing failed; partial: some steps failed, some completed; failure: steps
    failed and none completed; cancelled when the execution was cancelled."""
    if cancelled:
        return ExecutionResult.CANCELLED
    seen = list(outcomes)
    failed = S.FAILED in seen
    completed = S.COMPLETED in seen
    if not failed:
        return ExecutionResult.SUCCESS
    return ExecutionResult.PARTIAL if completed else ExecutionResult.FAILURE


def result_of(*, failed: bool, completed: bool) -> ExecutionResult:
    """The result of a finished execution from whether any step failed for good and any
    completed (nested steps included)."""
    if not failed:
        return ExecutionResult.SUCCESS
    return ExecutionResult.PARTIAL if completed else ExecutionResult.FAILURE


@dataclass(frozen=True)
class Retry:
    """A step's retry policy as the engine applies it."""

    count: int = 0
    delay_ms: int = 1000
    exponential: bool = True
    max_delay_ms: int | None = None
    jitter: bool = True

    JITTER = 0.2

    def delay_before(self, attempt: int, rand: float) -> int | None:
        """Milliseconds to wait before ``attempt`` (2 = the first retry), or None when the
        policy allows no such attempt. ``rand`` in [0, 1) comes from the caller (no hidden
        randomness), and spreads the delay by up to +/-20% when jitter is on."""
        if attempt < 2 or attempt > self.count + 1:
            return None
        delay = float(self.delay_ms)
        if self.exponential:
            delay *= 2 ** (attempt - 2)
        if self.max_delay_ms is not None:
            delay = min(delay, float(self.max_delay_ms))
        if self.jitter:
            delay *= 1 + self.JITTER * (2 * rand - 1)
            if self.max_delay_ms is not None:
                delay = min(delay, float(self.max_delay_ms))
        return max(0, round(delay))
