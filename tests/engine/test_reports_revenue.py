"""engine/reports/revenue.py on SQLite and PostgreSQL: expansion, GRR, NRR by segment, cohorts,
time to expand, CAC."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from report_data import CATALOG, seed_book
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
