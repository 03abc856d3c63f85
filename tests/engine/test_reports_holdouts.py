"""The holdouts report on SQLite and PostgreSQL over tests/report_data.py's seed_holdouts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from engine.reports.holdouts import MIN_GROUP, holdouts_report
from engine.reports.stats import newcombe, welch
from engine.store import Store
from report_data import seed_holdouts
from store_backends import fresh_store

TREATED_VALUES = [1000.0 * (k + 1) for k in range(10)] + [0.0] * 31  # t00..t39 and h39
HELD_VALUES = [2000.0] * 4 + [0.0] * 35  # h00..h38


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with fresh_store(request.param, tmp_path_factory.mktemp("holdouts_report")) as s:
        seed_holdouts(s)
        yield s


def report(store: Store, **kw: dt.date) -> dict:
    with store.connect() as conn:
        return {p["play"]: p for p in holdouts_report(conn, **kw).to_json()["plays"]}


def test_groups_count_accounts_once_from_the_play_s_first_held_out_decision(store: Store) -> None:
    up = report(store)["upsell"]
    assert up["since"] == "2026-03-01"
    # h39 was held out then enrolled: treated. t_pre started before the holdout: in no group.
    assert (up["treated"]["accounts"], up["held_out"]["accounts"]) == (41, 39)


def test_conversion_counts_won_outcomes_closed_after_entering_the_group(store: Store) -> None:
    up = report(store)["upsell"]
    assert (up["treated"]["converted"], up["held_out"]["converted"]) == (10, 4)  # t10 lost; h05 won before
    assert up["treated"]["conversion_percent"] == "24.4%" and up["held_out"]["conversion_percent"] == "10.3%"
    assert up["treated"]["revenue"] == 55000 and up["held_out"]["revenue"] == 8000
    assert up["treated"]["revenue_per_account"] == round(55000 / 41, 2)
    assert up["held_out"]["revenue_per_account"] == round(8000 / 39, 2)


def test_differences_carry_their_intervals_and_methods(store: Store) -> None:
    diff = report(store)["upsell"]["difference"]
    conv, rev = newcombe(10, 41, 4, 39), welch(TREATED_VALUES, HELD_VALUES)
    assert diff["conversion"]["estimate"] == pytest.approx(10 / 41 - 4 / 39, abs=1e-6)
    assert (diff["conversion"]["low"], diff["conversion"]["high"]) == pytest.approx((conv.low, conv.high), abs=1e-6)
    assert diff["conversion"]["low"] < 0 < diff["conversion"]["high"]  # 40 a side cannot tell 24% from 10%
    assert (diff["revenue_per_account"]["low"], diff["revenue_per_account"]["high"]) == pytest.approx(
        (rev.low, rev.high), abs=0.01)
    assert "Newcombe" in diff["conversion"]["method"] and "Welch" in diff["revenue_per_account"]["method"]


def test_small_groups_say_not_enough_data(store: Store) -> None:
    nudge = report(store)["nudge"]
    assert (nudge["treated"]["accounts"], nudge["held_out"]["accounts"]) == (5, 5) and 5 < MIN_GROUP
    assert nudge["enough_data"] is False
    assert nudge["difference"] == {"conversion": None, "revenue_per_account": None}
    assert nudge["note"].startswith("not enough data: 5 treated and 5 held out")


def test_the_period_filters_on_the_day_an_account_entered_its_group(store: Store) -> None:
    up = report(store, since=dt.date(2026, 3, 2))["upsell"]
    assert (up["treated"]["accounts"], up["held_out"]["accounts"]) == (41, 0)
    assert up["held_out"]["conversion_ci"] is None and up["enough_data"] is False
    up = report(store, until=dt.date(2026, 3, 2))["upsell"]
    assert (up["treated"]["accounts"], up["held_out"]["accounts"]) == (0, 39)


def test_a_store_without_holdouts_has_no_rows(tmp_path_factory: pytest.TempPathFactory) -> None:
    with fresh_store("sqlite", tmp_path_factory.mktemp("empty")) as s, s.connect() as conn:
        assert holdouts_report(conn).plays == []
