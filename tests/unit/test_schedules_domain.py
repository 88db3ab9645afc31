"""Cron slots across daylight-saving changes, checked against a brute-force oracle."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from turbocat.domain import schedules as slots
from turbocat.domain.enums import MisfirePolicy

UTC = dt.UTC
MINUTE = dt.timedelta(minutes=1)

# (zone, a UTC instant a day before a transition): spring forward and fall back in each.
TRANSITIONS = [
    ("America/New_York", dt.datetime(2026, 3, 7, 12, tzinfo=UTC)),  # 02:00 -> 03:00, Mar 8
    ("America/New_York", dt.datetime(2026, 10, 31, 12, tzinfo=UTC)),  # 02:00 -> 01:00, Nov 1
    ("Europe/Berlin", dt.datetime(2026, 3, 28, 12, tzinfo=UTC)),  # 02:00 -> 03:00, Mar 29
    ("Europe/Berlin", dt.datetime(2026, 10, 24, 12, tzinfo=UTC)),  # 03:00 -> 02:00, Oct 25
    ("Australia/Sydney", dt.datetime(2026, 4, 4, 0, tzinfo=UTC)),  # 03:00 -> 02:00, Apr 5
    ("Australia/Sydney", dt.datetime(2026, 10, 3, 0, tzinfo=UTC)),  # 02:00 -> 03:00, Oct 4
]
CRONS = ["30 2 * * *", "0 2 * * *", "*/15 * * * *", "30 1 * * *", "0 3 * * *", "45 * * * *"]


def oracle(cron: str, zone: str, start: dt.datetime, end: dt.datetime, gap: bool) -> list:
    """Every minute in (start, end] walked in UTC: a matching wall-clock time fires at its
    first occurrence; one that never occurs (a gap) at the first instant past it, or not."""
    tz = ZoneInfo(zone)
    first_seen: dict[dt.datetime, dt.datetime] = {}
    u = start + MINUTE
    while u <= end + dt.timedelta(hours=3):
        first_seen.setdefault(u.astimezone(tz).replace(tzinfo=None), u)
        u += MINUTE
    expected = set()
    # croniter only enumerates the matching wall-clock times (naive); the zone is ours.
    it = croniter(cron, start.astimezone(tz).replace(tzinfo=None))
    local_end = end.astimezone(tz).replace(tzinfo=None)
    while (local := it.get_next(dt.datetime)) <= local_end:
        if local in first_seen:
            expected.add(first_seen[local])
        elif gap:
            expected.add(min(v for k, v in first_seen.items() if k > local))
    return sorted(t for t in expected if start < t <= end)


def walk(cron: str, zone: str, start: dt.datetime, end: dt.datetime, gap: bool) -> list:
    out, t = [], start
    while True:
        nxt = slots.next_slot(cron, zone, t, gap_fires=gap)
        assert nxt is not None and nxt > t
        if nxt > end:
            return out
        out.append(nxt)
        t = nxt


@pytest.mark.parametrize(("zone", "start"), TRANSITIONS)
@pytest.mark.parametrize("cron", CRONS)
@pytest.mark.parametrize("gap", [True, False])
def test_slots_match_the_oracle_across_dst(zone: str, start: dt.datetime, cron: str, gap: bool):
    end = start + dt.timedelta(hours=48)
    got = walk(cron, zone, start, end, gap)
    assert got == oracle(cron, zone, start, end, gap)
    assert len(set(got)) == len(got)


def test_spring_forward_0230_fires_once_or_is_skipped() -> None:
    ny = "America/New_York"
    before = dt.datetime(2026, 3, 8, 5, tzinfo=UTC)  # 00:00 EST on the day
    fired = slots.next_slot("30 2 * * *", ny, before, gap_fires=True)
    assert fired == dt.datetime(2026, 3, 8, 7, tzinfo=UTC)  # 03:00 EDT, the end of the gap
    after = slots.next_slot("30 2 * * *", ny, fired, gap_fires=True)
    assert after == dt.datetime(2026, 3, 9, 6, 30, tzinfo=UTC)  # next day, once
    skipped = slots.next_slot("30 2 * * *", ny, before, gap_fires=False)
    assert skipped == dt.datetime(2026, 3, 9, 6, 30, tzinfo=UTC)


def test_fall_back_fires_at_the_first_occurrence_only() -> None:
    berlin = "Europe/Berlin"
    before = dt.datetime(2026, 10, 24, 22, tzinfo=UTC)  # 00:00 CEST on Oct 25
    first = slots.next_slot("30 2 * * *", berlin, before)
    assert first == dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST
    second = slots.next_slot("30 2 * * *", berlin, first)
    assert second == dt.datetime(2026, 10, 26, 1, 30, tzinfo=UTC)  # not 02:30 CET the same day


def test_six_field_cron_has_seconds() -> None:
    t = dt.datetime(2026, 1, 1, tzinfo=UTC)
    assert slots.next_slot("*/10 * * * * *", "UTC", t) == t + dt.timedelta(seconds=10)


def test_never_firing_cron() -> None:
    assert slots.next_slot("0 0 30 2 *", "UTC", dt.datetime(2026, 1, 1, tzinfo=UTC)) is None


SPEC = slots.ScheduleSpec("0 * * * *", "UTC", MisfirePolicy.SKIP)
T0 = dt.datetime(2026, 5, 1, 10, tzinfo=UTC)


def test_on_time_firing_runs_the_slot_and_moves_to_the_next() -> None:
    firing = slots.plan(SPEC, T0, 0, T0 + dt.timedelta(seconds=5))
    assert firing.slot == T0 and firing.next_fire_at == T0 + dt.timedelta(hours=1)
    assert not firing.misfired


@pytest.mark.parametrize("policy", list(MisfirePolicy))
def test_misfire_after_downtime(policy: MisfirePolicy) -> None:
    spec = slots.ScheduleSpec("0 * * * *", "UTC", policy)
    now = T0 + dt.timedelta(hours=5, minutes=10)  # down for 5 hours: slots 10:00 .. 15:00
    firing = slots.plan(spec, T0, 0, now)
    assert firing.missed == 6
    assert firing.next_fire_at == T0 + dt.timedelta(hours=6)  # the first slot after now
    assert firing.slot == (T0 if policy is MisfirePolicy.RUN_ONCE else None)


def test_max_runs_ends_the_schedule() -> None:
    spec = slots.ScheduleSpec("0 * * * *", "UTC", max_runs=2)
    assert slots.plan(spec, T0, 0, T0).next_fire_at is not None
    last = slots.plan(spec, T0, 1, T0)
    assert last.slot == T0 and last.next_fire_at is None
    assert slots.plan(spec, T0, 2, T0).slot is None


def test_start_immediately() -> None:
    assert slots.first_fire(SPEC, T0, start_immediately=True) == T0
    assert slots.first_fire(SPEC, T0, start_immediately=False) == T0 + dt.timedelta(hours=1)
