"""`test` blocks: passing and failing runs, the failure message (golden text), coverage.

Regenerate the golden files with `UPDATE_GOLDEN=1 pytest tests/dsl/test_testing.py`.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from dsl.catalog import Catalog
from dsl.project import load_text
from dsl.testing import TestReport, render_text, run_tests

GOLDEN = Path(__file__).parent / "golden" / "test_output"

RULES = """\
entity account
  field segment            enum(smb, mid_market, enterprise)
  field arr                money
  field health_score       number 0..100
  field usage_percent      percent
  field last_expansion_at  date?
  field onboarded_at       date

metric api_calls per day
event  funding_announced

trigger usage_ceiling "Usage ceiling"
  when account.usage_percent >= 80%
   and account.health_score > 60
   and days_since(account.last_expansion_at) > 90
  then start usage_limit

trigger growth_spurt
  when growth(api_calls, 60 days) >= 50%
  then start usage_limit

trigger funded
  when happened(funding_announced, within 30 days)
  then start congratulate

gate expansion_ready "Expansion readiness"
  require account.health_score >= 60 "healthy"
  when account.segment == smb
    require days_since(account.onboarded_at) > 30 "onboarded a month ago"
    require account.health_score >= 75
  when account.segment in [mid_market, enterprise]
    require account.health_score >= 80

score readiness
  points 25 if account.health_score > 85, 15 if account.health_score >= 70
  points 20 if account.usage_percent > 75%, 12 if account.usage_percent >= 60%
  band prioritize >70..
  band monitor ..70

route touch
  when account.arr < 10000 -> low_touch
  otherwise -> high_touch

play usage_limit "Usage limit expansion"
  gate expansion_ready
  day 1 notify "#cs" "usage"

play congratulate
  ungated
  day 1 notify "#cs" "congrats"

play dormant
  gate expansion_ready
  day 1 notify "#cs" "never started by a trigger"
"""

PASSING = """
test "healthy account at 85% usage enters usage_limit"
  today 2026-06-01
  given account segment=smb, usage_percent=85%, health_score=78, last_expansion_at=200 days ago
  given account onboarded_at=2025-01-15, arr=8000
  expect start usage_limit
  expect trigger usage_ceiling
  expect gate expansion_ready passes
  expect score readiness >= 27
  expect band readiness == monitor
  expect route touch == low_touch
  expect field segment == smb

test "an account that never expanded and grows fast still needs its gate"
  today 2026-06-01
  given account segment=enterprise, health_score=70, onboarded_at=2025-01-15
  given metric api_calls 100 at 59 days ago, 120 at 30 days ago, 160 at today
  expect trigger growth_spurt
  expect no trigger usage_ceiling
  expect gate expansion_ready fails
  expect no start usage_limit

test "funding starts the ungated play"
  today 2026-06-01
  given event funding_announced 3 days ago
  expect start congratulate
"""

FAILING = """
test "healthy account at 85% usage enters usage_limit"
  today 2026-06-01
  given account segment=smb, usage_percent=85%, health_score=72, onboarded_at=10 days ago
  given metric api_calls 100 at 60 days ago, 130 at today
  expect start usage_limit
  expect score readiness >= 70
  expect band readiness == prioritize
  expect route touch == low_touch
"""

ERRORS = """
test "a typo in a given field"
  today 2026-06-01
  given account helth_score=80
  expect trigger usage_ceiling

test "a wrong enum value"
  today 2026-06-01
  given account segment=smal
  expect trigger usage_ceiling

test "an expectation about an unknown band"
  today 2026-06-01
  given account health_score=80
  expect band readiness == hgih
"""


def project(tests: str) -> Catalog:
    p = load_text(RULES + tests, "playbooks/usage.play")
    assert not p.diagnostics, [d.summary for d in p.diagnostics]
    return p.catalog


def golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def test_passing_tests() -> None:
    report = run_tests(project(PASSING))
    assert [r.status for r in report.results] == ["passed", "passed", "passed"], render_text(report)
    assert report.ok
    assert render_text(report) == (
        "PASS  healthy account at 85% usage enters usage_limit\n"
        "PASS  an account that never expanded and grows fast still needs its gate\n"
        "PASS  funding starts the ungated play\n"
        "3 tests, 3 passed, 0 failed\n"
    )


def test_failing_test_explains_every_sub_condition() -> None:
    report = run_tests(project(FAILING))
    (result,) = report.results
    assert result.status == "failed"
    failed = [x.text for x in result.expectations if not x.passed]
    assert failed == ["expect start usage_limit", "expect score readiness >= 70",
                      "expect band readiness == prioritize", "expect route touch == low_touch"]
    start = result.expectations[0]
    assert start.actual == "usage_limit does not start"
    play = start.explanation[0]
    assert [c.text for c in play.children] == ["trigger usage_ceiling", "trigger growth_spurt", "gate expansion_ready"]
    golden("failing_start", render_text(report))


def test_errors_are_reported_not_raised() -> None:
    report = run_tests(project(ERRORS))
    assert [r.status for r in report.results] == ["error", "error", "error"]
    assert report.results[0].error == "account has no field 'helth_score'. Did you mean 'health_score'?"
    assert report.results[1].error == "account.segment must be one of smb, mid_market, enterprise, not 'smal'"
    assert report.results[2].expectations[0].error == "score readiness has no band 'hgih' (bands: prioritize, monitor)"
    golden("errors", render_text(report))


def test_default_today_is_the_real_date_and_givens_are_relative() -> None:
    tests = """
test "relative dates follow the run's day"
  given account usage_percent=90%, health_score=70, last_expansion_at=91 days ago
  expect trigger usage_ceiling
"""
    catalog = project(tests)
    for today in (dt.date(2026, 1, 1), dt.date(2030, 12, 31)):
        report = run_tests(catalog, today=today)
        assert report.results[0].status == "passed"
        assert report.results[0].today == today


def test_coverage_lists_what_no_test_exercised() -> None:
    report = run_tests(project(PASSING))
    seen = {(c.kind, c.name): c.outcomes for c in report.coverage}
    assert seen[("trigger", "usage_ceiling")] == ["does not fire", "fires"]
    assert seen[("trigger", "funded")] == ["fires"]
    assert seen[("play", "usage_limit")] == ["does not start", "starts"]
    assert seen[("gate", "expansion_ready")] == ["fails", "passes"]
    assert [(c.kind, c.name) for c in report.never_exercised] == [("play", "dormant")]


def test_report_is_json() -> None:
    report = run_tests(project(FAILING))
    again = TestReport.model_validate_json(report.model_dump_json())
    assert again == report


@pytest.mark.parametrize("only, count", [("healthy", 1), ("nothing matches", 0)])
def test_only(only: str, count: int) -> None:
    assert len(run_tests(project(PASSING), only=only).results) == count
