"""`why` on SQLite and PostgreSQL: the same golden text from both, JSON shape, errors."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine_support import Seed
from store_backends import fresh_store
from dsl.compiler import compile_play
from dsl.project import load_text
from engine.why import WhyError, render_text, why
from engine.store import Store

TODAY = dt.date(2026, 6, 1)
GOLDEN = Path(__file__).with_name("golden")

SOURCE = """\
entity account
  field company text?
  field segment enum(smb, ent)?
  field arr money?
  field health_score number?
  field usage_percent percent?
  field seats_active int?
  field seats_purchased int?
  field admin contact?
  let seat_utilization = account.seats_active / account.seats_purchased

metric api_calls per day
event funding_announced

gate expansion_ready "Expansion readiness"
  when account.segment == smb
    require account.health_score >= 75  "health score 75+"
  when account.segment == ent
    require account.health_score >= 85  "health score 85+"
    require account.seat_utilization > 70%  "over 70% of seats in use"

score readiness "Readiness points"
  points 50 if account.health_score > 85, 30 if account.health_score >= 70
  points 50 if account.usage_percent > 80%
  band prioritize >70..100  "Prioritize this quarter"
  band monitor    ..70      "Monitor monthly"

route touch
  when account.segment == ent -> high_touch
  when account.arr >= 25000 and growth(api_calls, 60 days) >= 60% -> high_touch
  when account.arr < 10000 -> low_touch
  otherwise -> mid_touch

trigger usage_ceiling "Usage ceiling: over 80% of the plan"
  when account.usage_percent > 80%
  then start usage_limit

trigger funding_round "Funding announced"
  when happened(funding_announced, within 30 days)
   and account.seat_utilization > 90%
  then start team_growth

play usage_limit "Usage limit expansion"
  priority 80
  gate expansion_ready
  reenter after 90 days
  day 1 email account.admin template hello

play team_growth "Team growth"
  priority 50
  gate expansion_ready
  day 1 email account.admin template hello

template hello
  subject "Hello"
  body "Hello"
"""
CATALOG = load_text(SOURCE, "why.play").catalog
PLANS = [compile_play(CATALOG, p) for p in CATALOG.plays.values()]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with fresh_store(request.param, tmp_path_factory.mktemp("why"), CATALOG) as s:
        seed = Seed(s)
        seed.accounts(
            {"id": "acme", "company": "Acme", "segment": "ent", "arr": 30000, "health_score": 88,
             "usage_percent": 0.86, "seats_active": 47, "seats_purchased": 50, "admin": "ana@acme.test"},
            {"id": "bolt", "company": "Bolt", "segment": "smb", "arr": 28000, "health_score": 70,
             "usage_percent": 0.95, "seats_active": 5, "seats_purchased": 10, "admin": "bo@bolt.test"},
        )
        seed.event("acme", "funding_announced", TODAY - dt.timedelta(days=12))
        seed.metric("bolt", "api_calls", {TODAY - dt.timedelta(days=50): 1000, TODAY: 1700})
        seed.enrollment("bolt", "team_growth", "running", started=TODAY - dt.timedelta(days=4))
        yield s


def text(store: Store, account: str, play: str | None = None) -> str:
    with store.connect() as conn:
        return render_text(why(conn, CATALOG, PLANS, TODAY, account, play), CATALOG)


def golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        raise AssertionError(f"golden file {path} was missing and has been written; check it and commit it")
    assert actual == path.read_text(encoding="utf-8")


def test_why_every_rule_golden(store: Store) -> None:
    golden("why_acme.txt", text(store, "acme"))


def test_why_a_skipped_account_golden(store: Store) -> None:
    golden("why_bolt_usage_limit.txt", text(store, "bolt", "usage_limit"))


def test_why_json_has_every_part(store: Store) -> None:
    with store.connect() as conn:
        doc = json.loads(json.dumps(why(conn, CATALOG, PLANS, TODAY, "acme").to_json()))
    assert doc["account_id"] == "acme" and doc["today"] == "2026-06-01"
    assert [t["text"] for t in doc["triggers"]] == ["trigger usage_ceiling", "trigger funding_round"]
    assert [t["truth"] for t in doc["triggers"]] == ["true", "true"]
    cond = doc["triggers"][1]["children"][0]["children"]
    assert [(c["text"], c["truth"]) for c in cond] == [
        ("happened(funding_announced, within 30 days)", "true"), ("account.seat_utilization > 90%", "true")]
    assert [(p["play"], p["decision"], [r["code"] for r in p["reasons"]]) for p in doc["plays"]] == [
        ("usage_limit", "enroll", []), ("team_growth", "skip", ["lower_priority"])]
    assert doc["disagreements"] == []


def test_unknown_account_or_play(store: Store) -> None:
    with store.connect() as conn:
        with pytest.raises(WhyError, match="no account with id 'nope'"):
            why(conn, CATALOG, PLANS, TODAY, "nope")
        with pytest.raises(WhyError, match=r"no play named 'usage' \(plays: team_growth, usage_limit\)"):
            why(conn, CATALOG, PLANS, TODAY, "acme", "usage")
