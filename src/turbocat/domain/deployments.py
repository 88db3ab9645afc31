"""Deployments: the lifecycle state machine, endpoint keys, and health from recent traffic.

Lifecycle (seed 001)::

    stopped -> starting -> running -> stopping -> stopped
                  |          |  ^        |
                  v          v  |        v
                failed    maintenance  failed

``failed`` may start again or be stopped; ``maintenance`` returns to ``running`` or stops.
Every status change goes through ``transition``; anything else is an ``InvalidTransition``
(409).
"""

from __future__ import annotations

from dataclasses import dataclass

from turbocat.domain import credentials
from turbocat.domain.enums import DeploymentStatus as S
from turbocat.domain.enums import HealthStatus
from turbocat.domain.errors import InvalidTransition

TRANSITIONS: dict[S, frozenset[S]] = {
    S.STOPPED: frozenset({S.STARTING}),
    S.STARTING: frozenset({S.RUNNING, S.FAILED, S.STOPPED}),
    S.RUNNING: frozenset({S.STOPPING, S.MAINTENANCE, S.FAILED}),
    S.STOPPING: frozenset({S.STOPPED, S.FAILED}),
    S.MAINTENANCE: frozenset({S.RUNNING, S.STOPPING}),
    S.FAILED: frozenset({S.STARTING, S.STOPPED}),
}

SERVING = frozenset({S.RUNNING})
"""Statuses in which the endpoint runs invocations (maintenance answers 503)."""


def transition(current: S, target: S) -> S:
    """``target`` if the lifecycle allows going there from ``current``; else 409."""
    if target not in TRANSITIONS[current]:
        raise InvalidTransition("deployment", current.value, target.value)
    return target


def path(current: S, *steps: S) -> list[S]:
    """Each status of a multi-step change (``start``: starting, running), all validated first."""
    out, at = [], current
    for step in steps:
        at = transition(at, step)
        out.append(at)
    return out


MANAGED_WORKFLOW_TAG = "turbocat:deployment"
"""Tags the hidden one-step workflow an agent deployment runs: it is the deployment's, not a
workflow people made (left out of listings, plan limits, usage gauges and exports)."""

KEY_PREFIX = "tcd_"
"""Deployment keys look like API keys with their own prefix, so scanners and logs tell them
apart, and the checksum still refuses a mistyped key without a lookup."""


def make_key(random_bytes: bytes) -> str:
    key = credentials.make_api_key(random_bytes)
    return KEY_PREFIX + key.removeprefix(credentials.API_KEY_PREFIX)


def is_well_formed_key(secret: str) -> bool:
    return secret.startswith(KEY_PREFIX) and credentials.is_well_formed_api_key(
        credentials.API_KEY_PREFIX + secret.removeprefix(KEY_PREFIX)
    )


@dataclass(frozen=True)
class HealthThresholds:
    """Error rate and latency over the recent window that make a deployment degraded or
    unhealthy."""

    degraded_error_rate: float = 0.05
    unhealthy_error_rate: float = 0.5
    degraded_latency_ms: int = 5_000
    unhealthy_latency_ms: int = 30_000


@dataclass(frozen=True)
class RecentTraffic:
    """Executions of the deployment that ended in the health window."""

    finished: int
    failed: int
    avg_duration_ms: float | None


def health(
    traffic: RecentTraffic, worker_serves_queue: bool, limits: HealthThresholds
) -> HealthStatus:
    """Unhealthy when no live worker serves its queue (nothing would run) or most runs fail;
    degraded on a raised error rate or slow runs; healthy otherwise (also with no traffic)."""
    if not worker_serves_queue:
        return HealthStatus.UNHEALTHY
    rate = traffic.failed / traffic.finished if traffic.finished else 0.0
    latency = traffic.avg_duration_ms or 0.0
    if rate >= limits.unhealthy_error_rate or latency >= limits.unhealthy_latency_ms:
        return HealthStatus.UNHEALTHY
    if rate >= limits.degraded_error_rate or latency >= limits.degraded_latency_ms:
        return HealthStatus.DEGRADED
    return HealthStatus.HEALTHY
