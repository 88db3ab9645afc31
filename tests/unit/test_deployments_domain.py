"""The deployment lifecycle, endpoint keys and health rules."""

from __future__ import annotations

import secrets

import pytest

from turbocat.domain import deployments as rules
from turbocat.domain.enums import DeploymentStatus as S
from turbocat.domain.enums import HealthStatus as H
from turbocat.domain.errors import InvalidTransition

VALID = {
    (S.STOPPED, S.STARTING), (S.STARTING, S.RUNNING), (S.STARTING, S.FAILED),
    (S.STARTING, S.STOPPED), (S.RUNNING, S.STOPPING), (S.RUNNING, S.MAINTENANCE),
    (S.RUNNING, S.FAILED), (S.STOPPING, S.STOPPED), (S.STOPPING, S.FAILED),
    (S.MAINTENANCE, S.RUNNING), (S.MAINTENANCE, S.STOPPING), (S.FAILED, S.STARTING),
    (S.FAILED, S.STOPPED),
}  # fmt: skip


@pytest.mark.parametrize("current", list(S))
@pytest.mark.parametrize("target", list(S))
def test_only_valid_transitions(current: S, target: S) -> None:
    if (current, target) in VALID:
        assert rules.transition(current, target) is target
    else:
        with pytest.raises(InvalidTransition):
            rules.transition(current, target)


def test_a_path_is_checked_whole() -> None:
    assert rules.path(S.STOPPED, S.STARTING, S.RUNNING) == [S.STARTING, S.RUNNING]
    with pytest.raises(InvalidTransition):
        rules.path(S.STOPPED, S.STOPPING, S.STOPPED)


def test_keys_are_recognizable_and_checksummed() -> None:
    key = rules.make_key(secrets.token_bytes(24))
    assert key.startswith("tcd_") and rules.is_well_formed_key(key)
    assert not rules.is_well_formed_key(key[:-1] + ("x" if key[-1] != "x" else "y"))
    assert not rules.is_well_formed_key("tc_" + key[4:])


LIMITS = rules.HealthThresholds()


@pytest.mark.parametrize(
    ("finished", "failed", "latency", "worker", "expected"),
    [
        (0, 0, None, True, H.HEALTHY),
        (100, 1, 200.0, True, H.HEALTHY),
        (100, 10, 200.0, True, H.DEGRADED),
        (100, 0, 6_000.0, True, H.DEGRADED),
        (100, 60, 200.0, True, H.UNHEALTHY),
        (100, 0, 40_000.0, True, H.UNHEALTHY),
        (100, 0, 200.0, False, H.UNHEALTHY),
    ],
)
def test_health(
    finished: int, failed: int, latency: float | None, worker: bool, expected: H
) -> None:
    traffic = rules.RecentTraffic(finished, failed, latency)
    assert rules.health(traffic, worker, LIMITS) is expected
