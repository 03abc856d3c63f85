"""engine/reports/triggers.py on SQLite and PostgreSQL: fire rate per quarter, bands, accuracy."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from report_data import CATALOG, seed_book
from store_backends import BACKENDS, fresh_store
from engine.reports.triggers import band, triggers_report
from engine.store import Store


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
        r = triggers_report(conn)
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
        r = triggers_report(conn, eligible=100)
    assert [q.to_json()["fire_rate_percent"] for q in r.rows] == ["1%", "1%", "3%"]
    assert [q.to_json()["band"] for q in r.rows] == ["too restrictive or missing data"] * 2 + ["low"]
