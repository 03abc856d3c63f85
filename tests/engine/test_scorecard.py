"""The scorecard on SQLite and PostgreSQL: columns, order, ACV, motion, limit."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine_support import Seed
from store_backends import fresh_store
from dsl.project import load, load_text
from engine import scorecard
from engine.scorecard import Options, ScorecardError
from engine.store import Store

TODAY = dt.date(2026, 6, 1)

SOURCE = """\
entity account
  field segment enum(smb, ent)?
  field arr money?
  field next_plan_arr money?
  field health_score number?
  field usage percent?

event funding

gate ready "Ready"
  when account.segment == smb
    require account.health_score >= 70  "health score 70+"
  when account.segment == ent
    require account.health_score >= 80  "health score 80+"
    require account.usage > 50%         "uses over half the plan"

score readiness
  points 50 if account.health_score > 85, 30 if account.health_score >= 70
  points 50 if account.usage > 80%, 20 if account.usage > 50%
  band prioritize >70..100  "Prioritize"
  band monitor    40..70    "Monitor"
  band not_ready  ..<40     "Not ready"

route touch
  when account.segment == ent -> high_touch
  when account.arr < 10000 -> low_touch
  otherwise -> mid_touch

trigger busy
  when account.usage > 80%
  then start p

trigger funded
  when happened(funding, within 30 days)
  then start p

play p
  ungated
  day 1 stage "A"
"""
CATALOG = load_text(SOURCE, "scorecard.play").catalog


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with fresh_store(request.param, tmp_path_factory.mktemp("sc"), CATALOG) as s:
        seed = Seed(s)
        seed.accounts(
            {"id": "s1", "segment": "smb", "arr": 5000, "next_plan_arr": 9000, "health_score": 90, "usage": 0.9},
            {"id": "s2", "segment": "smb", "arr": 20000, "next_plan_arr": None, "health_score": 60, "usage": 0.6},
            {"id": "e1", "segment": "ent", "arr": 90000, "next_plan_arr": 80000, "health_score": 82, "usage": 0.4},
            {"id": "e2", "segment": "ent", "arr": 120000, "next_plan_arr": 150000, "health_score": 88, "usage": 0.85},
            {"id": "x", "arr": None, "health_score": None, "usage": None},
        )
        seed.event("s2", "funding", TODAY - dt.timedelta(days=3))
        seed.event("x", "funding", TODAY - dt.timedelta(days=40))
        yield s


def card(store: Store, options: Options = Options(score="readiness", gate="ready"), limit: int | None = None):
    with store.connect() as conn:
        return list(scorecard.rows(conn, CATALOG, TODAY, options, limit))


def test_rows_are_sorted_by_readiness_then_id_with_every_column(store: Store) -> None:
    got = [r.to_json() for r in card(store)]
    assert [list(r) for r in got][0] == scorecard.COLUMNS
    assert [(r["account_id"], r["expansion_readiness"]) for r in got] == [
        ("e2", 100), ("s1", 100), ("e1", 30), ("s2", 20), ("x", 0)]
    assert got[1] == {
        "account_id": "s1", "segment": "smb", "health_score": 90, "activation_status": "activated",
        "expansion_readiness": 100, "active_triggers": ["busy"], "recommended_motion": "low_touch",
        "estimated_expansion_acv": 4000,
    }
    by_id = {r["account_id"]: r for r in got}
    # The first unmet requirement, in business words; no `when` applies to x.
    assert by_id["e1"]["activation_status"] == "not activated: uses over half the plan"
    assert by_id["s2"]["activation_status"] == "not activated: health score 70+"
    assert by_id["x"]["activation_status"] == "not activated: no readiness rules for this kind of account"
    assert by_id["s2"]["active_triggers"] == ["funded"] and by_id["x"]["active_triggers"] == []
    assert by_id["e2"]["active_triggers"] == ["busy"] and by_id["e2"]["recommended_motion"] == "high_touch"
    # ACV: next_plan_arr - arr, never below 0, else 20% of ARR, else empty.
    assert [by_id[a]["estimated_expansion_acv"] for a in ("e2", "e1", "s2", "x")] == [30000, 0, 4000, None]


def test_limit_keeps_the_best(store: Store) -> None:
    assert [r.account_id for r in card(store, limit=2)] == ["e2", "s1"]


def test_without_a_route_the_motion_is_the_band(store: Store) -> None:
    got = {r.account_id: r.recommended_motion for r in card(store, Options(score="readiness", gate="ready", route=None))}
    assert got == {"e2": "prioritize", "s1": "prioritize", "e1": "not_ready", "s2": "not_ready", "x": "not_ready"}


def test_a_declared_estimated_acv_wins(store: Store) -> None:
    source = SOURCE.replace("  field usage percent?\n", "  field usage percent?\n"
                            "  let estimated_expansion_acv = account.arr * 50%\n")
    catalog = load_text(source, "acv.play").catalog
    with store.connect() as conn:
        got = {r.account_id: r.estimated_expansion_acv
               for r in scorecard.rows(conn, catalog, TODAY, Options(score="readiness", gate="ready"))}
    assert got == {"e2": 60000, "s1": 2500, "e1": 45000, "s2": 10000, "x": None}


def test_unknown_rules_are_named_with_what_exists() -> None:
    with pytest.raises(ScorecardError, match=r"no score named 'readines' \(declared: readiness\)"):
        scorecard.query(CATALOG, TODAY, "sqlite", Options(score="readines", gate="ready"))
    with pytest.raises(ScorecardError, match="no gate named 'expansion_ready'"):
        scorecard.query(CATALOG, TODAY, "sqlite", Options())


def test_the_defaults_name_rules_of_the_shipped_playbooks() -> None:
    scorecard.validate(load([Path(__file__).resolve().parents[2] / "playbooks"]).catalog, Options())
