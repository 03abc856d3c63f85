"""The calendar rules of workflows/schedule.py (see its docstring for the rules)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsl import nodes as n
from workflows import schedule as sch
from workflows.model import ScheduleRequest
from wf_plans import days, email, plan, ref, step, utc

NY = "America/New_York"
HOLIDAY = dt.date(2026, 3, 11)  # a Wednesday
WEEKDAYS_9_17 = n.SendWindow(start="09:00", end="17:00", weekdays_only=True)


def one(s, *, enrolled_at, anchor=None, tz="UTC", **plan_kw):
    if anchor is not None:
        plan_kw.setdefault("anchor", ref("account.renewal_date"))
    p = plan([s], **plan_kw)
    return sch.compute(ScheduleRequest(plan=p, enrolled_at=enrolled_at, anchor=anchor, timezone=tz)).steps[0]


def test_day_zero_is_enrollment_instant():
    enrolled = utc(2026, 3, 4, 15, 17)
    assert one(step("a", 0, email()), enrolled_at=enrolled).due_at == enrolled


def test_day_n_keeps_local_time_of_day_across_dst():
    # Fri 10:00 EST (15:00 UTC); DST starts Sun 8 March; day 3 is Mon 10:00 EDT = 14:00 UTC.
    s = one(step("a", 3, email()), enrolled_at=utc(2026, 3, 6, 15, 0), tz=NY)
    assert s.due_at == utc(2026, 3, 9, 14, 0)
    assert s.local == "2026-03-09 10:00 EDT"


def test_business_days_skip_weekends():
    s = one(step("a", 5, email(), business=True), enrolled_at=utc(2026, 3, 6, 12))  # Friday
    assert s.due_at == utc(2026, 3, 13, 12)


def test_business_days_skip_holidays():
    s = one(step("a", 5, email(), business=True), enrolled_at=utc(2026, 3, 6, 12), holidays=[HOLIDAY])
    assert s.due_at == utc(2026, 3, 16, 12)


def test_business_day_zero_rolls_forward_from_weekend():
    s = one(step("a", 0, email(), business=True), enrolled_at=utc(2026, 3, 7, 12))  # Saturday
    assert s.due_at == utc(2026, 3, 9, 12)
    assert "not a business day" in s.notes[0]


def test_at_sets_local_time_of_day():
    s = one(step("a", 1, email(), at="10:30"), enrolled_at=utc(2026, 7, 1, 6), tz="Europe/Berlin")
    assert s.due_at == utc(2026, 7, 2, 8, 30)  # CEST = UTC+2


def test_at_inside_dst_gap_moves_forward():
    # 02:30 does not exist in New York on 8 March 2026.
    s = one(step("a", 2, email(), at="02:30"), enrolled_at=utc(2026, 3, 6, 15), tz=NY)
    assert s.due_at == utc(2026, 3, 8, 7, 30)  # 03:30 EDT
    assert any("DST" in note for note in s.notes)


def test_at_inside_dst_fold_is_first_occurrence():
    # 01:30 happens twice in New York on 1 November 2026; the first is EDT (UTC-4).
    s = one(step("a", 1, email(), at="01:30"), enrolled_at=utc(2026, 10, 31, 16), tz=NY)
    assert s.due_at == utc(2026, 11, 1, 5, 30)


def test_earlier_on_enrollment_day_runs_at_enrollment():
    enrolled = utc(2026, 3, 4, 15)
    s = one(step("a", 0, email(), at="09:00"), enrolled_at=enrolled)
    assert s.due_at == enrolled and not s.missed


def test_window_moves_evening_to_next_weekday_morning():
    # Friday 18:00 in New York -> Monday 09:00 EDT.
    s = one(step("a", 0, email()), enrolled_at=utc(2026, 3, 6, 23), tz=NY, window=WEEKDAYS_9_17)
    assert s.due_at == utc(2026, 3, 9, 13)
    assert s.local == "2026-03-09 09:00 EDT"


def test_window_moves_early_morning_to_start():
    s = one(step("a", 1, email()), enrolled_at=utc(2026, 3, 3, 12, 0), tz=NY, window=WEEKDAYS_9_17)
    assert s.due_at == utc(2026, 3, 4, 14)  # 07:00 EST -> 09:00 EST


def test_window_end_is_exclusive():
    s = one(step("a", 0, email(), at="17:00"), enrolled_at=utc(2026, 3, 3, 6), window=WEEKDAYS_9_17)
    assert s.due_at == utc(2026, 3, 4, 9)


def test_weekdays_window_skips_holidays():
    s = one(step("a", 1, email()), enrolled_at=utc(2026, 3, 10, 10), window=WEEKDAYS_9_17, holidays=[HOLIDAY])
    assert s.due_at == utc(2026, 3, 12, 9)
    assert any("holiday" in note for note in s.notes)


def test_window_without_weekdays_allows_weekends():
    window = n.SendWindow(start="09:00", end="17:00")
    s = one(step("a", 0, email()), enrolled_at=utc(2026, 3, 7, 20), window=window)  # Saturday evening
    assert s.due_at == utc(2026, 3, 8, 9)  # Sunday morning


def test_anchor_negative_days_at_window_start():
    s = one(
        step("a", -90, email()), enrolled_at=utc(2026, 1, 5, 12), anchor=dt.date(2026, 6, 30),
        tz=NY, window=WEEKDAYS_9_17,
    )
    assert s.due_at == utc(2026, 4, 1, 13)  # 09:00 EDT on 1 April (a Wednesday)


def test_anchor_without_window_defaults_to_nine_local():
    s = one(step("a", -1, email()), enrolled_at=utc(2026, 1, 5, 12), anchor=dt.date(2026, 6, 30), tz="Europe/Berlin")
    assert s.due_at == utc(2026, 6, 29, 7)


def test_anchor_business_days_before():
    s = one(step("a", -1, email(), business=True), enrolled_at=utc(2026, 1, 5), anchor=dt.date(2026, 3, 16))  # Monday
    assert s.due_at.date() == dt.date(2026, 3, 13)


def test_anchor_day_before_enrollment_is_missed():
    s = one(step("a", -90, email()), enrolled_at=utc(2026, 6, 1, 12), anchor=dt.date(2026, 6, 30))
    assert s.missed
    assert "before enrollment" in s.notes[-1]


def test_anchor_day_on_enrollment_day_is_not_missed():
    s = one(step("a", -29, email()), enrolled_at=utc(2026, 6, 1, 12), anchor=dt.date(2026, 6, 30))
    assert not s.missed and s.due_at == utc(2026, 6, 1, 12)


def test_missing_anchor_value_is_an_error():
    p = plan([step("a", -1, email())], anchor=ref("account.renewal_date"))
    with pytest.raises(sch.ScheduleError, match="renewal_date"):
        sch.compute(ScheduleRequest(plan=p, enrolled_at=utc(2026, 1, 1)))


def test_unknown_zone_is_an_error():
    with pytest.raises(sch.ScheduleError, match="Mars/Olympus"):
        one(step("a", 1, email()), enrolled_at=utc(2026, 1, 1), tz="Mars/Olympus")


def test_empty_window_is_an_error():
    with pytest.raises(sch.ScheduleError, match="empty"):
        one(step("a", 1, email()), enrolled_at=utc(2026, 1, 1), window=n.SendWindow(start="17:00", end="09:00"))


def test_wait_timeouts_are_resolved_per_path():
    wait_bd = n.WaitStep(timeout=days(2, n.DurationUnit.BUSINESS_DAYS), events=["replied"])
    branch = n.BranchStep(condition=n.Symbol(name="replied"), then=[email()], otherwise=[n.WaitStep(timeout=days(1, n.DurationUnit.WEEKS), events=["replied"])])
    p = plan([step("w", 0, wait_bd), step("b", 0, branch)])
    s = sch.compute(ScheduleRequest(plan=p, enrolled_at=utc(2026, 3, 6, 12)))  # Friday
    assert s.steps[0].wait_seconds == {"w": 4 * 86400}  # Friday -> Tuesday
    assert s.steps[1].wait_seconds == {"b/else/0": 7 * 86400}


def test_add_duration_units():
    start = utc(2026, 3, 6, 12)
    assert sch.add_duration(start, days(2)) == utc(2026, 3, 8, 12)
    assert sch.add_duration(start, days(3, n.DurationUnit.HOURS)) == utc(2026, 3, 6, 15)
    assert sch.add_duration(start, days(1, n.DurationUnit.MONTHS)) == utc(2026, 4, 5, 12)
    assert sch.add_duration(start, days(1, n.DurationUnit.BUSINESS_DAYS)) == utc(2026, 3, 9, 12)


@given(st.dates(dt.date(2020, 1, 1), dt.date(2030, 12, 31)), st.integers(-40, 40),
       st.lists(st.dates(dt.date(2020, 1, 1), dt.date(2030, 12, 31)), max_size=20))
def test_add_business_days_counts_exactly(start, count, holidays):
    end = sch.add_business_days(start, count, holidays)
    assert sch.is_business_day(end, holidays)
    if count == 0:
        assert end >= start and all(not sch.is_business_day(start + dt.timedelta(d), holidays) for d in range((end - start).days))
        return
    lo, hi = (start, end) if count > 0 else (end, start)
    between = [lo + dt.timedelta(d) for d in range(1, (hi - lo).days + 1)] if count > 0 else [lo + dt.timedelta(d) for d in range(0, (hi - lo).days)]
    assert sum(sch.is_business_day(d, holidays) for d in between) == abs(count)


@given(st.datetimes(dt.datetime(2024, 1, 1), dt.datetime(2028, 12, 31), timezones=st.just(dt.timezone.utc)),
       st.sampled_from(["UTC", NY, "Europe/Berlin", "Australia/Sydney", "Asia/Kolkata"]))
def test_window_result_is_inside_and_not_earlier(instant, tz_name):
    tz = sch.zone(tz_name)
    local, _ = sch.fit_window(instant, WEEKDAYS_9_17, tz, [HOLIDAY])
    assert local >= instant
    assert dt.time(9) <= local.time() < dt.time(17)
    assert sch.is_business_day(local.date(), [HOLIDAY])
    assert local - instant < dt.timedelta(days=5)


# Calendars whose holidays come from the `holidays` package (dsl/calendars.py).


@pytest.mark.parametrize("region", ["US", "US-CA", "GB-SCT", "DE-BY", "JP"])
def test_a_region_calendar_has_the_business_days_the_holidays_package_says_2026_to_2030(region):
    import holidays

    country, _, subdivision = region.partition("-")
    public = holidays.country_holidays(country, subdiv=subdivision or None, years=range(2026, 2031))
    days_off = sch.days_off([], [region])
    day = dt.date(2026, 1, 1)
    while day.year <= 2030:
        assert sch.is_business_day(day, days_off) == (day.weekday() < 5 and day not in public), day
        day += dt.timedelta(days=1)


def test_business_days_skip_a_region_holiday_and_the_calendars_own_days_off():
    # Wed 25 Nov 2026; Thu 26 is Thanksgiving (US), Fri 27 the company's own day off.
    s = one(step("a", 1, email(), business=True), enrolled_at=utc(2026, 11, 25, 15),
            holiday_regions=["US"], holidays=[dt.date(2026, 11, 27)])
    assert s.due_at == utc(2026, 11, 30, 15)


def test_a_region_calendar_reaches_past_any_typed_list():
    # Thu 25 Nov 2100 is Thanksgiving: a weekdays window moves the step to Friday.
    s = one(step("a", 0, email()), enrolled_at=utc(2100, 11, 25, 10), window=WEEKDAYS_9_17, holiday_regions=["US"])
    assert s.due_at == utc(2100, 11, 26, 9)
    assert "2100-11-25 is a holiday (Thanksgiving Day)" in s.notes


def test_a_business_day_task_due_date_counts_region_holidays():
    start = utc(2026, 12, 24, 12)  # Thursday; Friday 25 is Christmas Day
    assert sch.add_duration(start, days(1, n.DurationUnit.BUSINESS_DAYS), "UTC", sch.days_off([], ["US"])) \
        == utc(2026, 12, 28, 12)


def test_a_region_the_holidays_package_does_not_know_is_a_schedule_error():
    with pytest.raises(sch.ScheduleError, match="unknown holiday country 'XX'"):
        one(step("a", 1, email(), business=True), enrolled_at=utc(2026, 3, 4, 12), holiday_regions=["XX"])
