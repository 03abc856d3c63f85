"""engine/reports/funnel.py on SQLite and PostgreSQL: the seeds' pipeline example exactly, time in
stage, later stages implying earlier ones, filters."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from report_data import DAYS_PER_STAGE, SEEDS_COUNTS, SEEDS_STAGES, seed_funnel
from store_backends import BACKENDS, fresh_store
from engine.reports.funnel import PIPELINE_STAGES, FunnelError, funnel
from engine.schema import Base
from engine.store import Store

T = Base.metadata.tables


@pytest.fixture(scope="module", params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with fresh_store(request.param, tmp_path_factory.mktemp("funnel")) as s:
        seed_funnel(s)
        yield s


def test_the_seeds_example_reproduces_exactly(store: Store) -> None:
    with store.connect() as conn:
        f = funnel(conn, SEEDS_STAGES)
    assert [s.count for s in f.stages] == list(SEEDS_COUNTS)
    doc = f.to_json()
    assert [s["step_conversion_percent"] for s in doc["stages"]] == ["", "60%", "67%", "63%", "60%", "50%"]
    assert doc["overall_conversion_percent"] == "7.5%"
    assert doc["overall_conversion"] == pytest.approx(0.075)


def test_time_in_stage_is_measured_over_the_deals_that_left_it(store: Store) -> None:
    with store.connect() as conn:
        f = funnel(conn, SEEDS_STAGES)
    assert [s.avg_days_in_stage for s in f.stages] == [float(DAYS_PER_STAGE)] * 5 + [None]
    assert [s.left for s in f.stages] == [*SEEDS_COUNTS[:5], 0]


def test_a_deal_counts_at_every_stage_before_the_highest_it_reached(store: Store) -> None:
    # Only the first and the last stage listed: every deal is a signal, 75 are won.
    with store.connect() as conn:
        f = funnel(conn, (SEEDS_STAGES[0], SEEDS_STAGES[-1]))
    assert [(s.stage, s.count, s.step_conversion) for s in f.stages] == [
        ("Signal Detected", 1000, None), ("Closed Won", 75, 0.075)]


def test_the_default_stages_are_the_built_in_pipelines_and_later_ones_imply_earlier(store: Store) -> None:
    with store.connect() as conn:
        f = funnel(conn)
    assert [s.stage for s in f.stages] == list(PIPELINE_STAGES)
    # Qualified, Proposal Sent and Closed Won are in both lists; the stages before each are implied.
    assert [s.count for s in f.stages] == [600, 600, 600, 150, 75, 75]
    assert f.stages[4].step_conversion == 0.5


def test_filters_by_play_and_creation_day(store: Store) -> None:
    with store.connect() as conn:
        by_play = funnel(conn, SEEDS_STAGES, play="usage_limit")
        none = funnel(conn, SEEDS_STAGES, since=dt.date(2026, 2, 1))
        first_day = funnel(conn, SEEDS_STAGES, until=dt.date(2026, 1, 6))
    assert by_play.stages[0].count == 500
    assert [s.count for s in none.stages] == [0] * 6
    assert first_day.stages[0].count == 900  # one a minute from 09:00 on 2026-01-05: 900 before midnight


@pytest.mark.parametrize(("stages", "message"), [((), "at least one stage"), (("A", "B", "A"), "twice: A")])
def test_stages_that_make_no_funnel_are_refused(store: Store, stages: tuple[str, ...], message: str) -> None:
    with pytest.raises(FunnelError, match=message), store.connect() as conn:
        funnel(conn, stages)
