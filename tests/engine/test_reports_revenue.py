"""engine/reports/revenue.py on SQLite and PostgreSQL: expansion, GRR, NRR by segment, cohorts,
time to expand, CAC."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from report_data import CATALOG, seed_arr_history, seed_book
from store_backends import BACKENDS, fresh_store
from engine.reports.revenue import Fields, RevenueError, revenue_report
from engine.store import Store

AS_OF = dt.date(2026, 9, 15)


@pytest.fixture(scope="module", params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with fresh_store(request.param, tmp_path_factory.mktemp("revenue"), CATALOG) as s:
        seed_book(s)
        yield s


def report(store: Store, **kw: object):  # type: ignore[no-untyped-def]
    with store.connect() as conn:
        return revenue_report(conn, store.table("account", CATALOG), as_of=AS_OF, **kw)  # type: ignore[arg-type]


def test_overall_expansion_grr_and_nrr(store: Store) -> None:
    o = report(store).overall
    # start 200k; won 6k + 30k; a2 churned with no amount: its whole 20k; a4 contracted 7k
    assert (o.starting_arr, o.expansion_arr, o.churned_arr, o.contraction_arr, o.expansions) == (
        200000.0, 36000.0, 20000.0, 7000.0, 2)
    doc = o.to_json()
    assert (doc["expansion_mrr"], doc["expansion_rate_percent"], doc["grr_percent"], doc["nrr_percent"]) == (
        3000.0, "18%", "86.5%", "104.5%")


def test_retention_by_segment(store: Store) -> None:
    segs = [s.to_json() for s in report(store).by_segment]
    assert [(s["segment"], s["starting_arr"], s["grr_percent"], s["nrr_percent"]) for s in segs] == [
        ("enterprise", 170000.0, "95.9%", "113.5%"), ("smb", 30000.0, "33.3%", "53.3%")]


def test_cohorts_by_contract_quarter_at_6_and_12_months(store: Store) -> None:
    cohorts = [c.to_json() for c in report(store).cohorts]
    assert [(c["cohort"], c["accounts"], c["expanded_6m"], c["expanded_12m"], c["avg_expansion"]) for c in cohorts] == [
        ("2025-Q1", 1, 0.0, 0.0, None),
        ("2025-Q3", 2, 0.5, 1.0, 18000.0),  # a1 won 164 days in, a3 278 days in
    ]
    young = report_as_of(store, dt.date(2026, 6, 1)).cohorts[1]
    assert (young.expanded_6m, young.expanded_12m) == (0.5, None)  # not 12 months old yet


def report_as_of(store: Store, day: dt.date):  # type: ignore[no-untyped-def]
    with store.connect() as conn:
        return revenue_report(conn, store.table("account", CATALOG), as_of=day)


def test_time_to_expand_and_cac(store: Store) -> None:
    r = report(store, cost=9000.0)
    assert [(t.quarter, t.expansions, t.avg_days) for t in r.time_to_expand] == [("2026-Q1", 1, 10.0),
                                                                                 ("2026-Q2", 1, 60.0)]
    assert r.avg_days_to_expand == 35.0
    assert (r.to_json()["expansion_cac"], r.to_json()["expansion_cac_per_arr"]) == (4500.0, 0.25)
    assert report(store).to_json()["expansion_cac"] is None


def test_a_period_counts_the_outcomes_closed_in_it(store: Store) -> None:
    o = report(store, since=dt.date(2026, 3, 1)).overall  # a3's win, a2's churn, a4's contraction
    assert (o.expansion_arr, o.churned_arr, o.contraction_arr) == (30000.0, 20000.0, 7000.0)


def test_a_field_the_accounts_lack_is_named(store: Store) -> None:
    with pytest.raises(RevenueError, match="no field 'region' for the segment"), store.connect() as conn:
        revenue_report(conn, store.table("account", CATALOG), fields=Fields(segment="region"))


# ---------------------------------------------------------------- from the field history

Q2 = {"since": dt.date(2026, 4, 1), "until": dt.date(2026, 7, 1)}


@pytest.fixture(scope="module", params=BACKENDS)
def kept(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with fresh_store(request.param, tmp_path_factory.mktemp("revenue_history"), CATALOG) as s:
        seed_arr_history(s)
        yield s


def test_a_past_quarter_compares_the_arr_known_at_its_start_and_end(kept: Store) -> None:
    r = report(kept, **Q2)
    o = r.overall
    # base: h1 10k -> 15k, h2 20k -> 12k, h3 120k (not 90k, today's) unchanged, h4 50k churned,
    # h7 8k + 2k won (ARR never updated); h5 is new (known 10 May), h6 churned before April
    assert (o.accounts, o.starting_arr, o.ending_arr) == (5, 208000.0, 157000.0)
    assert (o.expansion_arr, o.contraction_arr, o.churned_arr) == (7000.0, 8000.0, 50000.0)
    doc = o.to_json()
    assert (doc["nrr_percent"], doc["grr_percent"], doc["expansion_rate_percent"]) == ("75.5%", "72.1%", "3.4%")
    assert (r.ended_by_history, r.ended_by_outcomes, r.new_accounts) == (2, 3, 1)


def test_the_segment_is_the_one_held_at_the_start(kept: Store) -> None:
    segs = [s.to_json() for s in report(kept, **Q2).by_segment]
    # h2 is mid-market today but was smb on 1 April
    assert [(s["segment"], s["accounts"], s["starting_arr"], s["ending_arr"], s["nrr_percent"], s["grr_percent"])
            for s in segs] == [("enterprise", 2, 170000.0, 120000.0, "70.6%", "70.6%"),
                               ("smb", 3, 38000.0, 37000.0, "97.4%", "78.9%")]


def test_cac_counts_every_win_of_the_period(kept: Store) -> None:
    r = report(kept, cost=3000.0, **Q2)
    assert (r.wins, r.won_arr, r.overall.expansions) == (2, 6000.0, 1)  # h5's win is not in the base
    assert (r.to_json()["expansion_cac"], r.to_json()["expansion_cac_per_arr"]) == (1500.0, 0.5)


def test_before_the_history_began_the_first_known_values_stand_in(kept: Store) -> None:
    r = report(kept, since=dt.date(2025, 10, 1), until=dt.date(2026, 1, 1))
    # h1 10k, h2 20k, h3 100k, h6 30k (churned later), h7 8k; h4 first known at 50k after winning 5k on
    # 15 November: 45k on 1 October, 50k at the end; h5 first known later: new
    o = r.overall
    assert (o.accounts, o.starting_arr, o.ending_arr, o.expansion_arr, r.new_accounts) == (
        6, 213000.0, 218000.0, 5000.0, 1)
    assert o.to_json()["nrr_percent"] == "102.3%"  # 218 / 213
    assert any("history begins 2025-12-01" in note for note in r.notes)


def test_the_period_defaults_to_the_twelve_months_to_today(kept: Store) -> None:
    r = report(kept)
    assert (r.since, r.until) == (dt.date(2025, 9, 16), dt.date(2026, 9, 16))


def test_a_period_with_nothing_recorded_says_so(kept: Store) -> None:
    r = report(kept, since=dt.date(2025, 12, 15), until=dt.date(2026, 1, 15))
    assert r.overall.nrr == 1.0 and any(note.startswith("nothing to measure") for note in r.notes)
