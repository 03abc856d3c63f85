"""The shipped playbooks/ folder: it checks clean and every test in it passes.

This is the same gate CI applies to a user's repository (`playbook check
--strict playbooks/` and `playbook test playbooks/`), run on our own plays.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from dsl import nodes as n
from dsl.checker import check
from dsl.project import load

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"


@pytest.fixture(scope="module")
def project():
    return load([PLAYBOOKS])


def _where(d) -> str:
    r = d.range
    return f"{r.file}:{r.start.line}:{r.start.column} {d.code} {d.summary}"


def test_shipped_playbooks_parse_and_check_clean(project):
    findings = list(project.diagnostics) + list(check(project))
    assert not findings, "\n".join(_where(d) for d in findings)


def test_shipped_playbooks_declare_the_five_plays(project):
    assert set(project.catalog.plays) == {
        "usage_limit", "renewal_expansion", "feature_upsell", "team_growth", "cross_sell",
    }


def test_every_shipped_play_is_gated_and_started_by_a_trigger(project):
    for name, play in project.catalog.plays.items():
        assert play.gate or play.ungated, name
        assert project.catalog.triggers_starting(name), name


def test_shipped_rule_tests_pass(project):
    testing = pytest.importorskip("dsl.testing")
    report = testing.run_tests(project.catalog)
    assert report.results, "no tests found in playbooks/"
    assert report.ok, testing.render_text(report)


def test_shipped_rule_tests_exercise_every_trigger_play_and_gate_both_ways(project):
    testing = pytest.importorskip("dsl.testing")
    report = testing.run_tests(project.catalog)
    one_sided = [f"{c.kind} {c.name}: only {c.outcomes}" for c in report.coverage if len(c.outcomes) < 2]
    assert not one_sided, "\n".join(one_sided)


def test_shipped_playbooks_are_in_the_canonical_layout():
    from dsl.formatter import format_source

    drift = []
    for path in sorted(PLAYBOOKS.rglob("*.play")):
        text = path.read_bytes().decode("utf-8")
        result = format_source(text, str(path))
        if result.text != text:
            drift.append(str(path.relative_to(PLAYBOOKS.parent)))
    assert not drift, f"run `playbook fmt playbooks/`: {drift}"


def test_the_shipped_calendar_skips_us_holidays_past_any_typed_list(project):
    # usage_limit's day-1 email for an account enrolled Wed 22 Nov 2028, 10:00 in New York:
    # Thursday is Thanksgiving, so the weekdays window moves it to Friday's start.
    from dsl.compiler import compile_plans
    from workflows import schedule
    from workflows.model import ScheduleRequest

    [plan] = [p for p in compile_plans(project) if p.play == "usage_limit"]
    enrolled = dt.datetime(2028, 11, 22, 15, tzinfo=dt.UTC)
    steps = schedule.compute(ScheduleRequest(plan=plan, enrolled_at=enrolled, timezone="America/New_York")).steps
    [email] = [s for s in steps if s.label == "day1-email"]
    assert email.local == "2028-11-24 09:00 EST"
    assert "2028-11-23 is a holiday (Thanksgiving Day)" in email.notes


_SAMPLE = {
    n.TypeName.INT: "3", n.TypeName.NUMBER: "50", n.TypeName.MONEY: "12000", n.TypeName.PERCENT: "40%",
    n.TypeName.BOOL: "true", n.TypeName.TEXT: "x", n.TypeName.DATE: "2026-01-15",
    n.TypeName.DATETIME: "2026-01-15T10:00:00Z", n.TypeName.DURATION: "3 days",
    n.TypeName.USER: "u1", n.TypeName.CONTACT: "c1",
}


def test_an_export_with_gaps_in_health_and_usage_imports(project, tmp_path):
    # Real CRM exports have accounts with no health score or usage figure yet; the
    # triggers' tests and docs/semantics.md treat them as empty, so the import must too.
    from engine.importers import import_file
    from engine.store import Store

    fields = project.catalog.account.fields
    gaps = {"health_score", "usage_percent"}

    def value(f: n.FieldDecl) -> str:
        if f.name in gaps:
            return ""
        if f.type.name is n.TypeName.ENUM:
            return f.type.values[0]
        return f"{f.type.low:g}" if f.type.low is not None else _SAMPLE[f.type.name]

    csv = tmp_path / "accounts.csv"
    csv.write_text("id," + ",".join(f.name for f in fields) + "\n" + "a1," + ",".join(value(f) for f in fields) + "\n")
    store = Store.open(f"sqlite:///{tmp_path}/store.db", catalog=project.catalog)
    try:
        assert import_file(store, project.catalog, "accounts", csv).rows == 1
    finally:
        store.close()
