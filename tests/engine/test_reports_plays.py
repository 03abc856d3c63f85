"""engine/reports/plays.py on SQLite and PostgreSQL: per play and per email step."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from report_data import CATALOG, seed_book
from store_backends import BACKENDS, fresh_store
from engine.reports.plays import plays_report
from engine.store import Store


@pytest.fixture(scope="module", params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with fresh_store(request.param, tmp_path_factory.mktemp("plays"), CATALOG) as s:
        seed_book(s)
        yield s


def test_per_play_attempts_replies_closes_and_value(store: Store) -> None:
    with store.connect() as conn:
        r = plays_report(conn)
    assert [(p.play, p.attempts, p.replies, p.closes, p.rate, p.avg_value) for p in r.plays] == [
        ("team_growth", 2, 2, 1, 0.5, 30000.0), ("usage_limit", 2, 1, 1, 0.5, 6000.0)]


def test_per_step_a_close_belongs_to_the_email_that_got_the_reply(store: Store) -> None:
    with store.connect() as conn:
        r = plays_report(conn)
    assert [(s.play, s.step, s.attempts, s.replies, s.closes, s.avg_value) for s in r.steps] == [
        ("team_growth", "day1-email", 2, 2, 1, 30000.0),
        ("usage_limit", "day0-email", 2, 0, 0, None),
        ("usage_limit", "day3-email", 1, 1, 1, 6000.0),  # the cancelled one reached nobody
    ]


def test_a_period_counts_the_enrollments_started_in_it(store: Store) -> None:
    import datetime as dt

    with store.connect() as conn:
        r = plays_report(conn, since=dt.date(2026, 2, 3), until=dt.date(2026, 2, 5))
    assert [(p.play, p.attempts) for p in r.plays] == [("team_growth", 1), ("usage_limit", 1)]
    assert r.to_json()["plays"][0]["rate_percent"] == "100%"
