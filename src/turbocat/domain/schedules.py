"""Cron slots in an IANA time zone, with daylight-saving rules made explicit; misfires; max runs.

Pure: every function takes the time it reasons about. A cron expression describes *wall-clock*
times in the schedule's zone (``30 2 * * *`` is 02:30 local every day). Two days a year the wall
clock misbehaves, and the rules are:

- **Spring forward** (a gap: 02:00-03:00 does not exist in America/New_York on the second Sunday
  of March): a slot whose local time falls in the gap fires once at the first valid instant
  after the gap (03:00 local) under the ``run_once`` policy, and is skipped under ``skip``.
  Several slots in one gap (``*/15`` at 02:00, 02:15, ...) are one firing, not several, and
  never a second one at the same instant as a real slot.
- **Fall back** (an overlap: 01:00-02:00 happens twice): a slot in the repeated hour fires once,
  at its first occurrence (``fold=0``); the second pass of that hour fires nothing.

A *misfire* is a slot the scheduler reaches more than ``grace`` after its time (the scheduler
was down). ``skip`` drops every missed slot; ``run_once`` makes one run stand for all of them.
Either way the next slot is the first one after now: there is never a burst of catch-up runs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

from turbocat.domain.enums import MisfirePolicy

UTC = dt.UTC
MAX_SCAN = 10_000
"""Slots examined at most when looking for the next one or counting missed ones."""
DEFAULT_GRACE = dt.timedelta(seconds=60)


@dataclass(frozen=True)
class ScheduleSpec:
    """What decides a schedule's slots."""

    cron: str
    timezone: str = "UTC"
    misfire_policy: MisfirePolicy = MisfirePolicy.SKIP
    max_runs: int | None = None


def _iterator(cron: str, start: dt.datetime) -> croniter:
    fields = cron.split()
    return croniter(" ".join(fields), start, second_at_beginning=len(fields) == 6)


def _transition(before: dt.datetime, after: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """The first instant in (before, after] whose UTC offset is ``after``'s (whole seconds)."""
    target = after.astimezone(zone).utcoffset()
    lo, hi = int(before.timestamp()), int(after.timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if dt.datetime.fromtimestamp(mid, UTC).astimezone(zone).utcoffset() == target:
            hi = mid
        else:
            lo = mid
    return dt.datetime.fromtimestamp(hi, UTC)


def resolve(local: dt.datetime, zone: ZoneInfo, *, gap_fires: bool) -> dt.datetime | None:
    """The UTC instant of naive wall-clock time ``local`` in ``zone``.

    Ambiguous (fall back): the first occurrence. Nonexistent (spring forward): the end of the
    gap when ``gap_fires``, else None.
    """
    first = local.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == local:
        return first  # exists; fold=0 is the first occurrence when it is ambiguous
    if not gap_fires:
        return None
    # In a gap, fold=1 reads the time with the offset after the transition (an earlier
    # instant) and fold=0 with the offset before it (a later one): the transition lies between.
    second = local.replace(tzinfo=zone, fold=1).astimezone(UTC)
    return _transition(min(first, second), max(first, second), zone)


def next_slot(
    cron: str, timezone: str, after: dt.datetime, *, gap_fires: bool = True
) -> dt.datetime | None:
    """The first slot strictly after ``after`` (aware), in UTC; None when there is none."""
    zone = ZoneInfo(timezone)
    start = after.astimezone(zone).replace(tzinfo=None, fold=0)
    # croniter works in naive wall-clock time; one step back makes a slot equal to the
    # wall-clock time of ``after`` a candidate again (it may be a later instant in a fold).
    it = _iterator(cron, start - dt.timedelta(seconds=1))
    try:
        for _ in range(MAX_SCAN):
            local: dt.datetime = it.get_next(dt.datetime)
            instant = resolve(local, zone, gap_fires=gap_fires)
            if instant is not None and instant > after:
                return instant
    except CroniterBadDateError:  # e.g. "0 0 30 2 *": never
        return None
    return None


def gap_fires(policy: MisfirePolicy) -> bool:
    """A slot in a spring-forward gap is a slot the clock skipped: the misfire policy decides."""
    return policy is MisfirePolicy.RUN_ONCE


def next_for(spec: ScheduleSpec, after: dt.datetime) -> dt.datetime | None:
    return next_slot(spec.cron, spec.timezone, after, gap_fires=gap_fires(spec.misfire_policy))


def first_fire(spec: ScheduleSpec, now: dt.datetime, *, start_immediately: bool) -> dt.datetime:
    """``next_fire_at`` of a new (or re-enabled) schedule: now when it starts immediately."""
    if start_immediately:
        return now
    slot = next_for(spec, now)
    if slot is None:
        raise ValueError(f"the cron expression {spec.cron!r} never fires")
    return slot


@dataclass(frozen=True)
class Firing:
    """What one scheduler pass over a due schedule does."""

    slot: dt.datetime | None
    """The slot a run is started for (its identity), or None when nothing runs."""
    next_fire_at: dt.datetime | None
    """None: the schedule is exhausted (max_runs) or its cron never fires again."""
    missed: int = 0
    """Slots that passed unserved (a misfire); 0 on an on-time firing."""

    @property
    def misfired(self) -> bool:
        return self.missed > 0


def plan(
    spec: ScheduleSpec,
    due: dt.datetime,
    run_count: int,
    now: dt.datetime,
    *,
    grace: dt.timedelta = DEFAULT_GRACE,
) -> Firing:
    """The firing of the slot ``due`` (the schedule's ``next_fire_at``, at or before ``now``).

    On time (within ``grace``): run it; the next slot follows it. Late: a misfire, counted over
    every slot up to now; ``run_once`` runs once (keyed by the first missed slot), ``skip`` not at
    all; the next slot is the first after now. ``max_runs`` ends the schedule after its last run.
    """
    if spec.max_runs is not None and run_count >= spec.max_runs:
        return Firing(None, None)
    slot: dt.datetime | None = due
    if now - due <= grace:
        following = next_for(spec, due)
        missed = 0
    else:
        missed = _count_slots(spec, due, now)
        slot = due if spec.misfire_policy is MisfirePolicy.RUN_ONCE else None
        following = next_for(spec, now)
    runs = run_count + (slot is not None)
    if spec.max_runs is not None and runs >= spec.max_runs:
        following = None
    return Firing(slot, following, missed)


def _count_slots(spec: ScheduleSpec, first: dt.datetime, now: dt.datetime) -> int:
    """Slots in [first, now] (``first`` is one), at most ``MAX_SCAN``."""
    count, slot = 1, first
    while count < MAX_SCAN:
        following = next_for(spec, slot)
        if following is None or following > now:
            break
        count, slot = count + 1, following
    return count


def slot_key(schedule_id: object, slot: dt.datetime) -> str:
    """The idempotency key of the run of one slot: unique per (organization, workflow)."""
    return f"schedule:{schedule_id}:{slot.astimezone(UTC).isoformat()}"
