"""engine/reports/triggers.py on SQLite and PostgreSQL: fire rate per quarter, bands, accuracy."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from report_data import CATALOG, TRIGGER_RULES, T, seed_arr_history, seed_book
from store_backends import BACKENDS, fresh_store
from dsl.project import load_text
from engine.reports.triggers import DEFAULT_MATURITY, band, triggers_report
from engine.store import Store

SEPT = dt.date(2026, 9, 15)


@pytest.fixture(scope="module", params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with fresh_store(request.param, tmp_path_factory.mktemp("triggers"), CATALOG) as s:
        seed_book(s)
        yield s


@pytest.mark.parametrize(("rate", "expected"), [
    (0.0, "too restrictive or missing data"), (0.029, "too restrictive or missing data"), (0.03, "low"),
    (0.05, "healthy"), (0.15, "healthy"), (0.151, "high"), (0.40, "high"), (0.41, "too permissive"), (None, "")])
def test_bands_follow_the_seeds(rate: float | None, expected: str) -> None:
    assert band(rate) == expected


def test_fire_rate_counts_accounts_once_per_quarter_and_every_listed_trigger(store: Store) -> None:
    with store.connect() as conn:
        r = triggers_report(conn, today=SEPT)
    assert [(q.trigger, q.quarter, q.fired, q.eligible, q.converted) for q in r.rows] == [
        ("t_growth", "2026-Q1", 1, 4, 1),  # named second in a3's list
        ("t_growth", "2026-Q2", 1, 4, 0),  # from the decision's column: no list recorded
        ("t_usage", "2026-Q1", 3, 4, 2),   # a1 twice counts once; a1 and a3 won afterwards
    ]
    doc = r.to_json()["rows"]
    assert [(d["fire_rate_percent"], d["band"], d["accuracy_percent"]) for d in doc] == [
        ("25%", "high", "100%"), ("25%", "high", "0%"), ("75%", "too permissive", "67%")]
    assert doc[2]["advice"] == "raise the threshold, add a health-score gate"


def test_eligible_accounts_can_be_given(store: Store) -> None:
    with store.connect() as conn:
        r = triggers_report(conn, eligible=100, today=SEPT)
    assert [q.to_json()["fire_rate_percent"] for q in r.rows] == ["1%", "1%", "3%"]
    assert [q.to_json()["band"] for q in r.rows] == ["too restrictive or missing data"] * 2 + ["low"]


def test_accuracy_judges_only_fires_older_than_the_median_days_to_close(store: Store) -> None:
    # won outcomes took 10 and 60 days: median 35. On 10 March only a1's fire (2 Feb) is 35 days old.
    with store.connect() as conn:
        r = triggers_report(conn, today=dt.date(2026, 3, 10))
    assert (r.maturity_days, r.maturity_from) == (35, "the median days from signal to close of 2 won outcome(s)")
    doc = [q.to_json() for q in r.rows]
    assert [(d["trigger"], d["quarter"], d["fired"], d["accuracy_counted"], d["converted"], d["accuracy_percent"])
            for d in doc] == [("t_growth", "2026-Q1", 1, 0, 0, ""), ("t_growth", "2026-Q2", 1, 0, 0, ""),
                              ("t_usage", "2026-Q1", 3, 1, 1, "100%")]


# ---------------------------------------------------------------- quarters from the field history

RULES_CATALOG = load_text(TRIGGER_RULES, "rules.play").catalog


@pytest.fixture(scope="module", params=BACKENDS)
def kept(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with fresh_store(request.param, tmp_path_factory.mktemp("triggers_history"), RULES_CATALOG) as s:
        seed_arr_history(s)
        yield s


def rows(store: Store, today: dt.date = SEPT) -> list[tuple[str, str, str, int, int, int]]:
    with store.connect() as conn:
        r = triggers_report(conn, history_rules=RULES_CATALOG, today=today)
    return [(q.trigger, q.quarter, q.source, q.fired, q.judged, q.converted) for q in r.rows]


def test_without_sweeps_every_quarter_since_the_history_began_is_evaluated_from_it(kept: Store) -> None:
    # The history begins 1 Dec 2025. t_big: h3 at 120k from 10 March to 1 August. t_mid: h2 at 12k from
    # 20 April, h1 at 15k from 15 May, both still. No won outcome has days to close: fires 90 days old are judged
    # (to 17 June); neither h1, h2 nor h3 won.
    assert rows(kept) == [
        ("t_big", "2025-Q4", "history", 0, 0, 0), ("t_big", "2026-Q1", "history", 1, 1, 0),
        ("t_big", "2026-Q2", "history", 1, 0, 0), ("t_big", "2026-Q3", "history", 1, 0, 0),
        ("t_mid", "2025-Q4", "history", 0, 0, 0), ("t_mid", "2026-Q1", "history", 0, 0, 0),
        ("t_mid", "2026-Q2", "history", 2, 2, 0), ("t_mid", "2026-Q3", "history", 2, 0, 0)]  # first fired in Q2
    assert DEFAULT_MATURITY == 90


def test_a_history_quarter_counts_as_eligible_the_accounts_known_by_its_end(kept: Store) -> None:
    # Six accounts are known from 1 Dec 2025, h5 from 10 May 2026: the store's seven are not Q1's base.
    with kept.connect() as conn:
        r = triggers_report(conn, history_rules=RULES_CATALOG, today=SEPT)
        given = triggers_report(conn, eligible=50, history_rules=RULES_CATALOG, today=SEPT)
    assert sorted({(q.quarter, q.eligible) for q in r.rows}) == [
        ("2025-Q4", 6), ("2026-Q1", 6), ("2026-Q2", 7), ("2026-Q3", 7)]
    assert {q.eligible for q in given.rows} == {50}


def test_history_stops_at_the_quarter_of_the_first_sweep(kept: Store) -> None:
    with kept.begin() as conn:
        conn.execute(T["enrollment_decisions"].insert(), [
            {"account_id": "h3", "play": "p", "decision": "enrolled", "trigger": "t_big",
             "reasons": {"triggers": ["t_big"]}, "at": dt.datetime(2026, 7, 15, 9, tzinfo=dt.timezone.utc)}])
    try:
        got = rows(kept)
    finally:
        with kept.begin() as conn:
            conn.execute(T["enrollment_decisions"].delete())
    assert [r for r in got if r[0] == "t_big"] == [
        ("t_big", "2025-Q4", "history", 0, 0, 0), ("t_big", "2026-Q1", "history", 1, 1, 0),
        ("t_big", "2026-Q2", "history", 1, 0, 0), ("t_big", "2026-Q3", "sweeps", 1, 0, 0)]
    assert [r[1] for r in got if r[0] == "t_mid"] == ["2025-Q4", "2026-Q1", "2026-Q2"]  # Q3 is the sweeps'

