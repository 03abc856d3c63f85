"""engine/demo_history.py: a deterministic year of closed deals before the demo starts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from store_backends import fresh_store
from dsl import pipeline
from dsl.project import load
from engine import demo_data, demo_history
from engine.schema import Base
from engine.store import Store

T = Base.metadata.tables
CATALOG = load([Path(__file__).resolve().parents[2] / "playbooks"]).catalog
BEFORE = dt.datetime(2026, 6, 1, 6, 0, tzinfo=dt.timezone.utc)


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[Store]:
    with fresh_store("sqlite", tmp_path, CATALOG) as s:
        demo_data.generate(CATALOG, 200, seed=3, today=BEFORE.date(), store=s)
        yield s


def rows(store: Store, table: str) -> list[sa.Row]:
    with store.connect() as conn:
        return list(conn.execute(sa.select(T[table])))


def test_every_deal_walked_the_pipeline_and_closed_before_the_start(store: Store) -> None:
    h = demo_history.write(store, CATALOG, seed=3, before=BEFORE)
    assert h.deals == h.won + h.lost and h.deals > 40 and h.won > 0
    opps = rows(store, "opportunities")
    assert len(opps) == h.deals
    assert all(o.stage in pipeline.CLOSED and o.closed_at < BEFORE for o in opps)
    moves: dict[str, list[sa.Row]] = {}
    for m in sorted(rows(store, "stage_history"), key=lambda m: (m.opportunity_id, m.at)):
        moves.setdefault(m.opportunity_id, []).append(m)
    for ms in moves.values():
        assert ms[0].stage == pipeline.TRIGGER_FIRED and ms[0].from_stage is None
        for a, b in zip(ms, ms[1:]):
            pipeline.check_move(a.stage, b.stage)  # a move the pipeline allows
            assert b.from_stage == a.stage


def test_each_deal_has_its_outcome_and_no_play_decision_is_written(store: Store) -> None:
    h = demo_history.write(store, CATALOG, seed=3, before=BEFORE)
    outcomes = rows(store, "outcomes")
    deals = [o for o in outcomes if o.opportunity_id is not None]
    assert sorted(o.outcome for o in deals) == sorted(["won"] * h.won + ["lost"] * h.lost)
    assert all(o.reason and o.days_to_close is not None and o.days_to_close > 0 for o in deals)
    assert sum(o.outcome == "churned" for o in outcomes) == h.churned
    assert sum(o.outcome == "contracted" for o in outcomes) == h.contracted
    assert rows(store, "enrollments") == [] and rows(store, "enrollment_decisions") == []


def test_the_same_seed_writes_the_same_history(tmp_path: Path, store: Store) -> None:
    demo_history.write(store, CATALOG, seed=3, before=BEFORE)
    first = sorted((o.id, o.stage, o.amount, o.closed_at) for o in rows(store, "opportunities"))
    with fresh_store("sqlite", tmp_path / "again", CATALOG) as other:
        demo_data.generate(CATALOG, 200, seed=3, today=BEFORE.date(), store=other)
        demo_history.write(other, CATALOG, seed=3, before=BEFORE)
        assert sorted((o.id, o.stage, o.amount, o.closed_at) for o in rows(other, "opportunities")) == first
