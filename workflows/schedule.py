"""Calendar arithmetic for plays: business days, holidays, send windows, time zones.

Pure functions, run OUTSIDE the workflow (from the `compute_schedule` local
activity and from acting activities): inside the Temporal sandbox
`ZoneInfo` is a restricted proxy and `astimezone` raises, so the workflow
only ever sees the UTC instants computed here.

Rules (also in docs/workflows.md):

- `day N` without an anchor: N calendar days after enrollment, at the
  enrollment's local time of day (`day 0` / `immediately` = at enrollment).
- `day N` with `Plan.anchor` (N may be negative): N days from the anchor
  date, at the send window's start, or 09:00 local without a window.
- `business day N`: N business days (Mon-Fri, not a day off: the calendar's
  own dates and its regions' public holidays, dsl/calendars.py) after the base
  date, or before it when N < 0. `business day 0` on a non-business day
  rolls forward to the next business day.
- `at HH:MM` replaces the time of day, in the recipient's zone.
- A send window moves an instant forward into the window: before the start
  -> the start; at or after the end -> the next day's start; a
  `weekdays` window also skips weekends and holidays.
- A step due on a local DAY before the enrollment day is missed (never
  run): a "90 days before renewal" email is wrong 30 days before renewal.
  A step due earlier on the enrollment day runs at enrollment (then the
  window applies).
- A local time that does not exist (DST gap) moves forward by the gap; an
  ambiguous one (DST fold) is the first occurrence.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Container, Iterable
from zoneinfo import ZoneInfo

from dsl.calendars import DaysOff, UnknownRegion
from dsl.nodes import Duration, DurationUnit, SendWindow, StepAction, WaitStep
from dsl.steps import walk
from dsl.plan import Plan, PlanStep
from workflows.model import Schedule, ScheduledStep, ScheduleRequest

UTC = dt.timezone.utc
DEFAULT_TIME = dt.time(9, 0)  # anchor-relative steps without `at` and without a window
MAX_SEARCH_DAYS = 3660  # a calendar with no business day in ten years is a bug, not a loop


class ScheduleError(ValueError):
    """A Plan that cannot be scheduled for this account (bad zone, missing anchor...)."""


def parse_hhmm(text: str) -> dt.time:
    try:
        hours, minutes = text.split(":")
        return dt.time(int(hours), int(minutes))
    except ValueError as exc:
        raise ScheduleError(f"not a time of day (HH:MM): {text!r}") from exc


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except Exception as exc:  # ZoneInfoNotFoundError, ValueError on odd keys
        raise ScheduleError(f"unknown time zone {name!r}") from exc


def days_off(dates: Iterable[dt.date], regions: Iterable[str]) -> DaysOff:
    """A Plan's days off: its calendar's own dates and its regions' public holidays."""
    try:
        return DaysOff(dates, regions)
    except UnknownRegion as exc:  # the checker refuses these; a `holidays` package that lost a region
        raise ScheduleError(str(exc)) from exc


def is_business_day(day: dt.date, holidays: Container[dt.date]) -> bool:
    return day.weekday() < 5 and day not in holidays


def add_business_days(start: dt.date, n: int, holidays: Container[dt.date]) -> dt.date:
    """The n-th business day after `start` (before it for n < 0); n == 0 rolls forward."""
    day = start
    if n == 0:
        for _ in range(MAX_SEARCH_DAYS):
            if is_business_day(day, holidays):
                return day
            day += dt.timedelta(days=1)
        raise ScheduleError("no business day found")
    step = dt.timedelta(days=1 if n > 0 else -1)
    remaining = abs(n)
    for _ in range(MAX_SEARCH_DAYS + remaining * 7):
        day += step
        if is_business_day(day, holidays):
            remaining -= 1
            if remaining == 0:
                return day
    raise ScheduleError("no business day found")


def local_instant(day: dt.date, time: dt.time, tz: ZoneInfo) -> dt.datetime:
    """Wall-clock `day time` in `tz`, normalised: a DST-gap time moves forward by the gap."""
    naive = dt.datetime.combine(day, time)
    aware = naive.replace(tzinfo=tz, fold=0)
    # Round-trip through UTC: for a time inside a gap zoneinfo uses the offset
    # before the transition, so 02:30 on a spring-forward day becomes 03:30.
    return aware.astimezone(UTC).astimezone(tz)


def fit_window(
    instant: dt.datetime, window: SendWindow, tz: ZoneInfo, holidays: Container[dt.date]
) -> tuple[dt.datetime, list[str]]:
    """Move `instant` forward into the send window; return it (local) and why it moved."""
    start, end = parse_hhmm(window.start), parse_hhmm(window.end)
    if end <= start:
        raise ScheduleError(f"send window {window.start}-{window.end} is empty")
    local = instant.astimezone(tz)
    notes: list[str] = []
    for _ in range(MAX_SEARCH_DAYS):
        day, time = local.date(), local.timetz().replace(tzinfo=None)
        if window.weekdays_only and not is_business_day(day, holidays):
            notes.append(f"{day} is {_day_off(day, holidays)}")
            local = local_instant(day + dt.timedelta(days=1), start, tz)
        elif time < start:
            notes.append(f"before the window ({window.start})")
            local = local_instant(day, start, tz)
        elif time >= end:
            notes.append(f"after the window ({window.end})")
            local = local_instant(day + dt.timedelta(days=1), start, tz)
        else:
            return local, notes
    raise ScheduleError("no instant inside the send window")


def _day_off(day: dt.date, holidays: Container[dt.date]) -> str:
    """Why `day` is no business day, in words: a weekend, a holiday (its name when it has one)."""
    if day not in holidays:
        return "a weekend"
    name = holidays.name(day) if isinstance(holidays, DaysOff) else None
    return f"a holiday ({name})" if name else "a holiday"


def duration_delta(
    start: dt.datetime, duration: Duration, tz_name: str, holidays: Container[dt.date]
) -> dt.timedelta:
    """Length of `duration` counted from `start`; business days follow the calendar in `tz`."""
    if duration.unit is DurationUnit.BUSINESS_DAYS:
        tz = zone(tz_name)
        local = start.astimezone(tz)
        whole = int(duration.amount)
        if whole != duration.amount:
            raise ScheduleError(f"business days must be whole: {duration.amount}")
        day = add_business_days(local.date(), whole, holidays)
        end = local_instant(day, local.timetz().replace(tzinfo=None), tz)
        return end.astimezone(UTC) - start.astimezone(UTC)
    return dt.timedelta(days=duration.days)


def add_duration(
    start: dt.datetime, duration: Duration, tz_name: str = "UTC", holidays: Container[dt.date] = ()
) -> dt.datetime:
    return start.astimezone(UTC) + duration_delta(start, duration, tz_name, holidays)


def _waits(action: StepAction, path: str) -> Iterable[tuple[str, WaitStep]]:
    """Every wait in an action tree with its path (the workflow uses the same paths)."""
    return ((v.path, v.action) for v in walk(action, path) if isinstance(v.action, WaitStep))


def schedule_step(
    step: PlanStep,
    *,
    enrolled_at: dt.datetime,
    anchor: dt.date | None,
    tz: ZoneInfo,
    tz_name: str,
    window: SendWindow | None,
    holidays: Container[dt.date],
) -> ScheduledStep:
    if enrolled_at.tzinfo is None:
        raise ScheduleError("enrolled_at must be timezone-aware")
    enrolled_local = enrolled_at.astimezone(tz)
    notes: list[str] = []
    base = anchor if anchor is not None else enrolled_local.date()
    if step.business:
        day = add_business_days(base, step.day, holidays)
        if step.day == 0 and day != base:
            notes.append(f"{base} is not a business day")
    else:
        day = base + dt.timedelta(days=step.day)

    if step.at is not None:
        time = parse_hhmm(step.at)
    elif anchor is not None:
        time = parse_hhmm(window.start) if window else DEFAULT_TIME
    else:
        time = enrolled_local.timetz().replace(tzinfo=None)
    local = local_instant(day, time, tz)
    if local.timetz().replace(tzinfo=None) != time:
        notes.append(f"{time:%H:%M} does not exist on {day} (DST)")

    missed = day < enrolled_local.date()
    if not missed and local < enrolled_local:
        notes.append("earlier on the enrollment day: runs at enrollment")
        local = enrolled_local
    if window is not None and not missed:
        local, moved = fit_window(local, window, tz, holidays)
        notes.extend(moved)

    due = local.astimezone(UTC)
    waits = {
        path: duration_delta(due, wait.timeout, tz_name, holidays).total_seconds()
        for path, wait in _waits(step.action, step.label)
    }
    return ScheduledStep(
        label=step.label,
        due_at=due,
        local=f"{local:%Y-%m-%d %H:%M %Z}",
        missed=missed,
        notes=notes + ([f"due {day}, before enrollment on {enrolled_local.date()}"] if missed else []),
        wait_seconds=waits,
    )


def compute(request: ScheduleRequest) -> Schedule:
    """The schedule of every step of a Plan for one enrollment."""
    plan: Plan = request.plan
    if plan.anchor is not None and request.anchor is None:
        raise ScheduleError(f"the play is anchored on {plan.anchor.dotted}, which is empty for this account")
    tz = zone(request.timezone)
    holidays = days_off(plan.holidays, plan.holiday_regions)
    steps = [
        schedule_step(
            step,
            enrolled_at=request.enrolled_at,
            anchor=request.anchor if plan.anchor is not None else None,
            tz=tz,
            tz_name=request.timezone,
            window=plan.window,
            holidays=holidays,
        )
        for step in plan.steps
    ]
    return Schedule(timezone=request.timezone, steps=steps)
