"""Incremental sweeps (engine/changes.py) on SQLite and PostgreSQL: a sweep that
evaluates only changed and time-sensitive accounts enrolls exactly whom a full
evaluation would, for random loads, run ends and days passing."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsl.checker import check
from dsl.compiler import compile_play
from dsl.printer import format_expr
from dsl.project import load_text
from engine import changes, enrollment
from engine.enroll import Settings, decision_set
from engine.importers import import_file
from engine.schema import Base
from engine.store import Store
from store_backends import fresh_store

START = dt.date(2026, 6, 1)

SOURCE = """\
entity account
  field usage percent?
  field health number?
  field renewal date?
  field admin contact?
  field onboarded date?
  let days_left = days_until(account.renewal)

metric seats
event funding

gate healthy "Healthy"
  require account.health >= 70  "health 70+"

trigger busy "Busy"
  when account.usage > 80%
  then start upsell

trigger growing "Seats grew"
  when growth(seats, 7 days) >= 20% or avg(seats, 3 days) > 50
  then start upsell

trigger funded "Funded lately"
  when happened(funding, within 5 days) or days_since(funding) == 8
  then start growth

trigger renewing "Renewal near"
  when account.days_left between 3 and 6
  then start renewal

trigger renewal_soon "Renewal in 8-10 days"
  when days_until(account.renewal) between 8 and 10
  then start renewal

# days_since of a stored date: its index range has no slack (changes._date_hull).
trigger settled "Onboarded over 6 days ago, or exactly 3"
  when days_since(account.onboarded) > 6 or days_since(account.onboarded) == 3
  then start growth

trigger quiet "Busy, no funding in 2 days"
  when not happened(funding, within 2 days) and account.usage > 80%
  then start growth

trigger quiet_renewal "Quiet, renewal in 4-9 days"
  when days_until(account.renewal) between 4 and 9 and account.usage < 60%
  then start expand

# A gate that reads the day: a trigger may fire days before its gate passes.
gate near_renewal "Renewal close, healthy"
  when days_until(account.renewal) <= 7
    require account.health >= 70  "health 70+"
  when account.health >= 90
    require account.usage < 70%  "usage under 70%"

play expand "Expand before the renewal"
  priority 60
  gate near_renewal
  reenter after 3 days
  day 1 email account.admin template hello

play upsell "Upsell"
  priority 80
  gate healthy
  reenter after 3 days
  holdout 30%
  day 1 email account.admin template hello

play growth "Growth"
  priority 50
  gate healthy
  reenter after 2 days
  day 1 email account.admin template hello

play renewal "Renewal"
  ungated
  concurrent
  day 1 email account.admin template hello

template hello
  subject "Hello"
  body "Hello"
"""

PROJECT = load_text(SOURCE, "changes.play")
CATALOG = PROJECT.catalog
PLANS = [compile_play(CATALOG, p) for p in CATALOG.plays.values()]
IDS = [f"a{i}" for i in range(8)]
# A cap of one email in 2 days: shared admins make accounts cap each other.
KNOBS = Settings(email_cap=1, email_cap_days=2)


def test_the_catalog_is_clean() -> None:
    assert [d for d in check(PROJECT) if d.severity.value == "error"] == []


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with fresh_store(request.param, tmp_path_factory.mktemp("changes"), CATALOG) as s:
        yield s


def clear(store: Store) -> None:
    md = Base.metadata.tables
    with store.begin() as conn:
        for t in ("sweep_marks", "sweep_rechecks", "account_changes", "account_field_history",
                  "enrollment_decisions", "enrollments", "outbox", "events", "metric_series", "metric_points"):
            conn.execute(md[t].delete())
        conn.execute(store.table("account").delete())


def load(store: Store, folder: Path, kind: Any, rows: list[dict[str, Any]]) -> None:
    """Through the importer, as a load would: it marks what it writes."""
    path = folder / f"{kind}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    import_file(store, CATALOG, kind, path)


NEW_IDS = ["b0", "b1"]  # accounts a later load may add
FIELDS = ["usage", "health", "renewal", "onboarded", "admin"]
account_rows = st.lists(st.fixed_dictionaries({
    "id": st.sampled_from(IDS),
    "usage": st.sampled_from([0.5, 0.9]),
    "health": st.sampled_from([50, 80, 95]),
    "renewal_in": st.integers(0, 12),
    "onboarded_ago": st.integers(0, 10),
    "admin": st.sampled_from(["x@example.com", "y@example.com", "z@example.com"]),
}), max_size=4, unique_by=lambda r: r["id"])
metric_rows = st.lists(st.tuples(st.sampled_from(IDS), st.integers(0, 9), st.sampled_from([10.0, 30.0, 60.0])),
                       max_size=5, unique_by=lambda r: r[:2])
event_rows = st.lists(st.tuples(st.sampled_from(IDS), st.integers(-1, 9)), max_size=3)
step = st.fixed_dictionaries({
    "accounts": account_rows, "metrics": metric_rows, "events": event_rows,
    # The fields a load writes (a fields-only change: only the plays reading them are evaluated again),
    # and whether it also adds a new account (NULL: all of its plays).
    "columns": st.sets(st.sampled_from(FIELDS), min_size=1), "new": st.sampled_from([None, *NEW_IDS]),
    "end": st.lists(st.integers(0, 20), max_size=3),  # which running enrollments end (by position)
    "days": st.integers(0, 4),  # days passing before the sweep
})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(first=account_rows, steps=st.lists(step, min_size=1, max_size=5))
def test_an_incremental_sweep_enrolls_whom_a_full_evaluation_would(
        store: Store, tmp_path: Path, first: list[dict[str, Any]], steps: list[dict[str, Any]]) -> None:
    clear(store)
    today = START

    def accounts(rows: list[dict[str, Any]], columns: Any = FIELDS) -> list[dict[str, Any]]:
        full = [{"id": r["id"], "usage": r["usage"], "health": r["health"], "admin": r["admin"],
                 "renewal": (today + dt.timedelta(days=r["renewal_in"])).isoformat(),
                 "onboarded": (today - dt.timedelta(days=r["onboarded_ago"])).isoformat()} for r in rows]
        return [{k: v for k, v in r.items() if k == "id" or k in columns} for r in full]

    base = {i: {"id": i, "usage": 0.5, "health": 80, "renewal_in": 30, "onboarded_ago": 30,
                "admin": f"{i}@example.com"} for i in IDS}
    base.update({r["id"]: r for r in first})
    load(store, tmp_path, "accounts", accounts(list(base.values())))
    first_sweep = enrollment.record(store, CATALOG, PLANS, today, KNOBS, incremental=True)
    assert first_sweep.full  # nothing to start from
    for s in steps:
        today += dt.timedelta(days=s["days"])
        rows = accounts(s["accounts"], s["columns"])
        if s["accounts"] and s["new"]:  # with every field: the test's worker emails its admin
            rows += accounts([{**s["accounts"][0], "id": s["new"]}])
        if rows:
            load(store, tmp_path, "accounts", rows)
        if s["metrics"]:
            load(store, tmp_path, "metrics", [{"account_id": a, "metric": "seats", "value": v,
                                               "date": (today - dt.timedelta(days=ago)).isoformat()}
                                              for a, ago, v in s["metrics"]])
        if s["events"]:
            load(store, tmp_path, "events", [
                {"account_id": a, "event": "funding", "id": f"{a}-{today}-{k}",
                 "occurred_at": f"{today - dt.timedelta(days=ago)}T12:00:00+00:00"}
                for k, (a, ago) in enumerate(s["events"])])
        run_and_end(store, today, s["end"])
        expected = {(d.play, d.account_id) for d in decision_set(store, CATALOG, PLANS, today, KNOBS) if d.enroll}
        result = enrollment.record(store, CATALOG, PLANS, today, KNOBS, incremental=True)
        assert {(e.play, e.account_id) for e in result.enrolled} == expected, (today, result.why_full)


def run_and_end(store: Store, today: dt.date, ends: list[int]) -> None:
    """Start the pending enrollments (each sends its email), then end some running ones, as the worker would."""
    at = dt.datetime.combine(today, dt.time(8), dt.timezone.utc)
    out = Base.metadata.tables["outbox"]
    acc = store.table("account")
    pending, _ = enrollment.pending(store, 0, 1000)
    with store.begin() as conn:
        for k, row in enumerate(pending):
            admin = conn.execute(sa.select(acc.c.admin).where(acc.c.id == row.account_id)).scalar()
            conn.execute(out.insert().values(idempotency_key=f"{row.workflow_id}-{row.id}", channel="email",
                                             recipient=admin, subject="s", body="b", status="sent",
                                             account_id=row.account_id, created_at=at))
    enrollment.record_starts(store, [enrollment.Start(r.id, "running", run_id=f"r{r.id}") for r in pending])
    running = enrollment.running(store)
    chosen = {running[i].id for i in ends if i < len(running)}
    enrollment.record_ends(store, [enrollment.End(i, "completed", at) for i in sorted(chosen)])


def test_after_a_load_only_the_loaded_accounts_are_evaluated(store: Store, tmp_path: Path) -> None:
    clear(store)
    load(store, tmp_path, "accounts", [{"id": i, "usage": 0.5, "health": 80, "admin": f"{i}@example.com",
                                        "renewal": "2027-01-01"} for i in IDS])
    enrollment.record(store, CATALOG, PLANS, START, KNOBS, incremental=True)
    load(store, tmp_path, "accounts", [{"id": "a3", "usage": 0.9}])
    result = enrollment.record(store, CATALOG, PLANS, START, KNOBS, incremental=True)
    assert (result.full, result.scope) == (False, 1)
    assert [(e.play, e.account_id) for e in result.enrolled] == [("upsell", "a3")]
    again = enrollment.record(store, CATALOG, PLANS, START, KNOBS, incremental=True)
    assert (again.full, again.scope, again.decisions) == (False, 0, 0)


def test_a_fields_only_change_evaluates_only_the_plays_that_read_those_fields(store: Store, tmp_path: Path) -> None:
    """a3's renewal is near: it is in `renewal` and `expand`. Its onboarding date changes: of its plays
    only `growth` reads it (trigger `settled`), so the others are not decided again, nor their triggers
    evaluated; a change of its renewal date brings them back."""
    clear(store)
    renewal = (START + dt.timedelta(days=4)).isoformat()
    load(store, tmp_path, "accounts", [{"id": i, "usage": 0.5, "health": 80, "admin": f"{i}@example.com",
                                        "renewal": renewal if i == "a3" else "2027-01-01",
                                        "onboarded": START.isoformat()} for i in IDS])
    enrollment.record(store, CATALOG, PLANS, START, KNOBS, incremental=True)
    assert decided(store, "a3") == ["expand", "renewal"]
    load(store, tmp_path, "accounts", [{"id": "a3", "onboarded": "2026-05-01"}])
    assert sorted(d.play for d in decision_set(store, CATALOG, PLANS, START, KNOBS)
                  if d.account_id == "a3") == ["expand", "growth", "renewal"]  # what a full sweep decides
    result = enrollment.record(store, CATALOG, PLANS, START, KNOBS, incremental=True)
    assert (result.full, result.scope) == (False, 1)
    assert decided(store, "a3") == ["growth"]
    load(store, tmp_path, "accounts", [{"id": "a3", "renewal": (START + dt.timedelta(days=5)).isoformat()}])
    enrollment.record(store, CATALOG, PLANS, START, KNOBS, incremental=True)
    assert decided(store, "a3") == ["expand", "renewal"]


def decided(store: Store, account: str) -> list[str]:
    """The plays the sweeps since the last call recorded a decision of for `account` (all are cleared)."""
    d = Base.metadata.tables["enrollment_decisions"]
    with store.begin() as conn:
        plays = sorted(r[0] for r in conn.execute(sa.select(d.c.play).where(d.c.account_id == account)))
        conn.execute(d.delete())
    return plays


def test_a_held_out_winner_is_decided_again_wherever_a_play_it_outranks_is(store: Store, tmp_path: Path) -> None:
    """x is in upsell's holdout: eligible (seats grow), not started, so no lower-priority play starts
    on it. Its onboarding date, which only growth reads, makes growth eligible: an incremental sweep
    must see upsell take growth's turn, as a full one does."""
    from engine.holdouts import held_out

    x = next(i for i in IDS if held_out("upsell", i, 30))
    clear(store)
    load(store, tmp_path, "accounts", [{"id": i, "usage": 0.5, "health": 80, "admin": f"{i}@example.com",
                                        "renewal": "2027-01-01", "onboarded": START.isoformat()} for i in IDS])
    load(store, tmp_path, "metrics", [{"account_id": x, "metric": "seats", "value": 60.0,
                                       "date": (START - dt.timedelta(days=d)).isoformat()} for d in (0, 1)])
    first = enrollment.record(store, CATALOG, PLANS, START, KNOBS, incremental=True)
    assert first.enrolled == [] and first.reasons["held_out"] == 1
    load(store, tmp_path, "accounts", [{"id": x, "onboarded": "2026-05-01"}])
    expected = {(d.play, d.account_id) for d in decision_set(store, CATALOG, PLANS, START, KNOBS) if d.enroll}
    result = enrollment.record(store, CATALOG, PLANS, START, KNOBS, incremental=True)
    assert (result.full, expected) == (False, set())
    assert [(e.play, e.account_id) for e in result.enrolled] == []


def test_a_plays_inputs_are_the_fields_and_roots_its_triggers_gate_and_emails_read() -> None:
    inputs = changes.trigger_inputs(CATALOG, {p.play: p for p in PLANS}, None)
    growth = {"trigger.settled", "trigger.quiet", "trigger.funded", "gate.healthy"}
    expand = {"trigger.quiet_renewal", "gate.near_renewal"}
    # upsell: busy, growing (a window), gate healthy; and, with its holdout, every play it outranks.
    assert inputs["busy"] == {"usage", "health", "admin", "onboarded", "renewal",
                              "trigger.busy", "trigger.growing", *growth, *expand}
    assert inputs["settled"] == {"onboarded", "usage", "health", "admin", *growth}
    # renewal (ungated) through `let days_left`, and expand's gate near_renewal.
    assert inputs["renewing"] == {"renewal", "admin", "trigger.renewing", "trigger.renewal_soon"}
    assert inputs["quiet_renewal"] == {"renewal", "usage", "health", "admin", *expand}


def test_a_first_load_marks_every_account_once_and_the_next_sweep_is_full_and_enrolls_as_a_full_one(
        store: Store, tmp_path: Path) -> None:
    """A CSV first load (the one-statement path) writes one `changes.EVERY` row, not a row per account:
    the sweep after it, recorded before on the emptied store, is full; the one after that has nothing."""
    clear(store)
    enrollment.record(store, CATALOG, PLANS, START, KNOBS, incremental=True)  # a mark on an empty store
    rows = [f"{i},{u},{h},2026-06-0{k + 3},{i}@example.com" for k, (i, u, h) in
            enumerate([("a1", 0.9, 80), ("a2", 0.9, 50), ("a3", 0.5, 95), ("a4", 0.95, 90)])]
    path = tmp_path / "accounts.csv"
    path.write_text("id,usage,health,renewal,admin\n" + "\n".join(rows) + "\n")
    import_file(store, CATALOG, "accounts", path)
    with store.connect() as conn:
        assert [r[0] for r in conn.execute(sa.select(changes.CHANGES.c.account_id))] == [changes.EVERY]
    expected = {(d.play, d.account_id) for d in decision_set(store, CATALOG, PLANS, START, KNOBS) if d.enroll}
    assert expected  # the rules enroll some of them
    result = enrollment.record(store, CATALOG, PLANS, START, KNOBS, incremental=True)
    assert (result.full, result.why_full) == (True, "every account was loaded (a first load)")
    assert {(e.play, e.account_id) for e in result.enrolled} == expected
    with store.connect() as conn:
        rechecks = {r[0] for r in conn.execute(sa.select(changes.RECHECKS.c.account_id))}
        assert conn.execute(sa.select(changes.CHANGES.c.account_id)).all() == []  # the sweep consumed it
    again = enrollment.record(store, CATALOG, PLANS, START, KNOBS, incremental=True)
    assert (again.full, again.scope, again.enrolled) == (False, len(rechecks), [])  # only its rechecks


def test_different_rules_or_settings_make_the_sweep_full(store: Store, tmp_path: Path) -> None:
    clear(store)
    load(store, tmp_path, "accounts", [{"id": "a1", "usage": 0.5, "health": 80}])
    enrollment.record(store, CATALOG, PLANS, START, KNOBS, incremental=True)
    other = enrollment.record(store, CATALOG, PLANS, START, Settings(email_cap=5), incremental=True)
    assert other.full and other.why_full == "the rules or settings changed"
    asked = enrollment.record(store, CATALOG, PLANS, START, Settings(email_cap=5))
    assert asked.full and asked.why_full == "asked for a full sweep"


def test_a_day_later_the_time_sensitive_accounts_come_back(store: Store, tmp_path: Path) -> None:
    clear(store)
    load(store, tmp_path, "accounts", [{"id": i, "usage": 0.5, "health": 80, "admin": f"{i}@example.com",
                                        "renewal": "2026-06-08" if i == "a5" else "2026-06-20"} for i in IDS])
    enrollment.record(store, CATALOG, PLANS, START, KNOBS, incremental=True)
    # On 06-02 a5's renewal is 6 days away: only its `between` comparison changed.
    result = enrollment.record(store, CATALOG, PLANS, START + dt.timedelta(days=1), KNOBS, incremental=True)
    assert (result.full, result.scope) == (False, 1)
    assert [(e.play, e.account_id) for e in result.enrolled] == [("renewal", "a5")]


def test_a_score_formula_of_the_day_read_by_a_trigger_reads_every_account() -> None:
    project = load_text(SOURCE + """
score urgency "Urgency"
  = 100 - days_since(account.renewal)
  band high 50..100 "Soon"

trigger urgent "Urgent"
  when band.urgency == high
  then start renewal
""", "changes.play")
    plans = {p.play: p for p in (compile_play(project.catalog, d) for d in project.catalog.plays.values())}
    rules = changes.time_rules(project.catalog, plans)
    assert ("band.urgency == high", True) in [(format_expr(v), p) for v, p, _ in rules.dated]


def test_a_comparison_of_the_day_with_a_window_reads_every_account() -> None:
    project = load_text(SOURCE + """
trigger odd "Odd"
  when days_until(account.renewal) > count(funding, 5 days)
  then start renewal
""", "changes.play")
    plans = {p.play: p for p in (compile_play(project.catalog, d) for d in project.catalog.plays.values())}
    with pytest.raises(changes.EveryAccount):
        changes.time_rules(project.catalog, plans)


def test_routes_and_unread_scores_are_not_time_sensitive() -> None:
    project = load_text(SOURCE + """
score urgency "Urgency"
  = 100 - days_since(account.renewal)
  band high 50..100 "Soon"

route touch "Touch"
  when growth(seats, 30 days) > 10% -> high
  otherwise -> low
""", "changes.play")
    rules = changes.time_rules(project.catalog, {p.play: p for p in PLANS})
    read = {(w.name, w.days) for _, ws, _, _ in rules.windowed for w in ws}
    assert read == {("seats", 7), ("seats", 3), ("funding", 5), ("funding", 2), ("funding", "all")}


def test_each_windowed_value_is_checked_alone() -> None:
    rules = changes.time_rules(CATALOG, {p.play: p for p in PLANS})
    assert sorted((format_expr(v), p) for v, _, p, _ in rules.windowed) == [
        ("avg(seats, 3 days) > 50", True), ("days_since(funding) == 8", True),
        ("growth(seats, 7 days) >= 20%", True), ("happened(funding, within 2 days)", False),
        ("happened(funding, within 5 days)", True)]
    assert sorted((format_expr(v), p, sorted(r)) for v, p, r in rules.dated) == [
        ("account.days_left between 3 and 6", True, ["trigger.renewing"]),
        ("days_since(account.onboarded) == 3", True, ["trigger.settled"]),
        ("days_since(account.onboarded) > 6", True, ["trigger.settled"]),
        ("days_until(account.renewal) <= 7", None, ["gate.near_renewal"]),
        ("days_until(account.renewal) between 4 and 9", True, ["trigger.quiet_renewal"]),
        ("days_until(account.renewal) between 8 and 10", True, ["trigger.renewal_soon"])]


def funded_busy(store: Store, tmp_path: Path, account: str) -> enrollment.SweepResult:
    """A sweep where upsell (priority 80) and growth (50) both fire for `account`."""
    clear(store)
    load(store, tmp_path, "accounts", [{"id": account, "usage": 0.9, "health": 80, "admin": "x@example.com",
                                        "renewal": "2027-01-01"}])
    load(store, tmp_path, "events", [{"account_id": account, "event": "funding", "id": "f1",
                                      "occurred_at": f"{START}T08:00:00+00:00"}])
    return enrollment.record(store, CATALOG, PLANS, START, KNOBS, incremental=True)


def test_a_play_that_lost_to_an_enrolled_one_is_not_looked_at_again(store: Store, tmp_path: Path) -> None:
    first = funded_busy(store, tmp_path, "a2")
    assert [(e.play, e.account_id) for e in first.enrolled] == [("upsell", "a2")]
    assert first.reasons["lower_priority"] == 1  # growth
    again = enrollment.record(store, CATALOG, PLANS, START, KNOBS, incremental=True)
    assert (again.full, again.scope) == (False, 0)


def test_a_play_that_lost_to_a_held_out_one_is_looked_at_again(store: Store, tmp_path: Path) -> None:
    first = funded_busy(store, tmp_path, "a1")  # a1 falls in upsell's holdout
    assert (first.enrolled, first.reasons["held_out"], first.reasons["lower_priority"]) == ([], 1, 1)
    again = enrollment.record(store, CATALOG, PLANS, START, KNOBS, incremental=True)
    assert (again.full, again.scope) == (False, 1)


def test_a_recorded_sweep_indexes_the_date_fields_the_next_days_scope_reads(store: Store, tmp_path: Path) -> None:
    clear(store)
    load(store, tmp_path, "accounts", [{"id": "a1", "usage": 0.5, "health": 80, "renewal": "2026-06-20"}])
    enrollment.record(store, CATALOG, PLANS, START, KNOBS, incremental=True)
    with store.connect() as conn:
        indexes = {i["name"]: i["column_names"] for i in sa.inspect(conn).get_indexes("accounts")}
    assert indexes.get("ix_accounts_renewal") == ["renewal"]
    assert indexes.get("ix_accounts_onboarded") == ["onboarded"]
    assert changes.dated_fields(CATALOG, changes.time_rules(CATALOG, {p.play: p for p in PLANS})) == [
        "onboarded", "renewal"]


def test_a_date_fields_ranges_are_the_days_its_count_can_cross_a_bound() -> None:
    rules = changes.time_rules(CATALOG, {p.play: p for p in PLANS})
    after = START + dt.timedelta(days=1)
    hulls = {format_expr(a): h[1] for a, _, _ in rules.dated
             if (h := changes._date_hull(CATALOG, a, START, after)) is not None}

    def day(k: int) -> dt.date:
        return START + dt.timedelta(days=k)

    # Whole-day counts: `count >= m` changes between the two days only for the one date whose count
    # passes m: renewal 8 days off leaves `between 8 and 10`, 11 days off enters it.
    assert hulls["days_until(account.renewal) between 8 and 10"] == [(day(8), day(8)), (day(11), day(11))]
    assert hulls["days_since(account.onboarded) > 6"] == [(day(-6), day(-6))]  # 6 days, then 7
    assert hulls["days_since(account.onboarded) == 3"] == [(day(-2), day(-2)), (day(-3), day(-3))]


def test_a_date_fields_ranges_hold_every_date_whose_comparison_moves_that_way_and_no_other() -> None:
    """Every comparison form, bound on either side, whole and fractional bounds, steps of 1-3 days,
    each polarity: the ranges hold exactly the dates whose comparison reads differently on the two
    days (None), or goes from false to true (True), or from true to false (False)."""
    from dsl import nodes as n

    ops = {n.BinOp.EQ: lambda a, b: a == b, n.BinOp.NE: lambda a, b: a != b, n.BinOp.LT: lambda a, b: a < b,
           n.BinOp.LE: lambda a, b: a <= b, n.BinOp.GT: lambda a, b: a > b, n.BinOp.GE: lambda a, b: a >= b}
    mirror = {n.BinOp.LT: n.BinOp.GT, n.BinOp.LE: n.BinOp.GE, n.BinOp.GT: n.BinOp.LT, n.BinOp.GE: n.BinOp.LE}
    moved = {None: lambda was, now: was != now, True: lambda was, now: now and not was,
             False: lambda was, now: was and not now}
    for func, field in (("days_since", "onboarded"), ("days_until", "renewal")):
        call = n.Call(func=func, args=[n.Ref(path=["account", field])])

        def count(f: dt.date, day: dt.date) -> int:
            return (day - f).days if func == "days_since" else (f - day).days

        atoms: list[tuple[Any, Any]] = []
        for b in (3.0, 3.5, -2.0):
            for op, holds in ops.items():
                atoms.append((n.Binary(op=op, left=call, right=n.Number(value=b)),
                              lambda c, holds=holds, b=b: holds(c, b)))
                atoms.append((n.Binary(op=mirror.get(op, op), left=n.Number(value=b), right=call),
                              lambda c, holds=holds, b=b: holds(c, b)))
        atoms.append((n.Between(value=call, low=n.Number(value=2.0), high=n.Number(value=4.5)),
                      lambda c: 2 <= c <= 4.5))
        days = [START + dt.timedelta(days=k) for k in range(-20, 21)]
        for atom, holds in atoms:
            for step in (1, 2, 3):
                today = START + dt.timedelta(days=step)
                for polarity, moves in moved.items():
                    hull = changes._date_hull(CATALOG, atom, START, today, polarity)
                    assert hull is not None, format_expr(atom)
                    near = {d for d in days if any(lo <= d <= hi for lo, hi in hull[1])}
                    changed = {d for d in days if moves(holds(count(d, START)), holds(count(d, today)))}
                    assert changed <= near, (format_expr(atom), step, polarity, sorted(changed - near))
                    # Tight: a date in a range that does not move is only one a step carries over
                    # both ends of an == (or !=) at once.
                    assert near == changed or atom.kind == "binary" and atom.op in (n.BinOp.EQ, n.BinOp.NE), (
                        format_expr(atom), step, polarity, sorted(near - changed))


def test_a_count_that_can_only_grow_is_moved_only_by_points_entering_its_window() -> None:
    project = load_text(SOURCE + """
trigger few "Few fundings"
  when count(funding, 9 days) < 2
  then start growth
""", "changes.play")
    plans = {p.play: p for p in (compile_play(project.catalog, d) for d in project.catalog.plays.values())}
    sides = {format_expr(v): changes._sides(v, p) for v, _, p, _ in changes.time_rules(project.catalog, plans).windowed}
    assert sides["happened(funding, within 5 days)"] == (0,)  # becomes true only as a point enters
    assert sides["happened(funding, within 2 days)"] == (1,)  # under `not`: moves only as a point leaves
    assert sides["count(funding, 9 days) < 2"] == (0, 1)  # becomes true as points leave: both, not proven
    assert sides["growth(seats, 7 days) >= 20%"] == (0, 1)
    assert sides["days_since(funding) == 8"] == (0, 1)


def test_a_day_later_an_account_is_decided_again_only_for_the_plays_whose_rules_the_day_moved(
        store: Store, tmp_path: Path) -> None:
    """a5 entered `expand` (quiet_renewal: renewal 7 days away). On 06-02 the renewal is 6 days away:
    only `renewing` moved, so only its play, `renewal`, is decided again; a full sweep decides both."""
    clear(store)
    load(store, tmp_path, "accounts", [{"id": i, "usage": 0.5, "health": 80, "admin": f"{i}@example.com",
                                        "renewal": "2026-06-08" if i == "a5" else "2026-06-20"} for i in IDS])
    first = enrollment.record(store, CATALOG, PLANS, START, KNOBS, incremental=True)
    assert [(e.play, e.account_id) for e in first.enrolled] == [("expand", "a5")]
    day = START + dt.timedelta(days=1)
    assert sorted(d.play for d in decision_set(store, CATALOG, PLANS, day, KNOBS)
                  if d.account_id == "a5") == ["expand", "renewal"]
    assert decided(store, "a5") == ["expand"]  # the first sweep's
    result = enrollment.record(store, CATALOG, PLANS, day, KNOBS, incremental=True)
    assert (result.full, result.scope) == (False, 1)
    assert [(e.play, e.account_id) for e in result.enrolled] == [("renewal", "a5")]
    assert decided(store, "a5") == ["renewal"]


def test_a_dated_comparison_counts_only_where_its_trigger_and_gate_can_hold(store: Store, tmp_path: Path) -> None:
    clear(store)
    renewal = (START + dt.timedelta(days=10)).isoformat()
    load(store, tmp_path, "accounts", [
        {"id": "a1", "usage": 0.5, "health": 95, "admin": "1@example.com", "renewal": renewal},
        {"id": "a2", "usage": 0.9, "health": 95, "admin": "2@example.com", "renewal": renewal},  # trigger: usage
        {"id": "a3", "usage": 0.5, "health": 50, "admin": "3@example.com", "renewal": renewal},  # gate: no case
    ])
    enrollment.record(store, CATALOG, PLANS, START, KNOBS, incremental=True)
    # On 06-02 all three renewals are 9 days away (quiet_renewal's range starts): only a1 can start a play.
    day = START + dt.timedelta(days=1)
    expected = {(d.play, d.account_id) for d in decision_set(store, CATALOG, PLANS, day, KNOBS) if d.enroll}
    result = enrollment.record(store, CATALOG, PLANS, day, KNOBS, incremental=True)
    assert (result.full, result.scope) == (False, 1)
    assert {(e.play, e.account_id) for e in result.enrolled} == expected == {("expand", "a1")}


def test_a_gate_that_starts_passing_with_the_day_brings_its_account_back(store: Store, tmp_path: Path) -> None:
    clear(store)
    renewal = (START + dt.timedelta(days=8)).isoformat()
    load(store, tmp_path, "accounts", [
        {"id": "a4", "usage": 0.5, "health": 80, "admin": "4@example.com", "renewal": renewal},
        {"id": "a5", "usage": 0.5, "health": 50, "admin": "5@example.com", "renewal": renewal},
    ])
    first = enrollment.record(store, CATALOG, PLANS, START, KNOBS, incremental=True)
    # quiet_renewal fires, the gate fails (8 days > 7); renewal_soon starts the (concurrent) renewal play.
    assert [(e.play, e.account_id) for e in first.enrolled] == [("renewal", "a4"), ("renewal", "a5")]
    assert first.reasons["gate_failed"] == 2
    # On 06-02 the renewal is 7 days away: the gate's first case applies, and a4 is healthy enough.
    day = START + dt.timedelta(days=1)
    result = enrollment.record(store, CATALOG, PLANS, day, KNOBS, incremental=True)
    assert (result.full, result.scope) == (False, 1)
    assert [(e.play, e.account_id) for e in result.enrolled] == [("expand", "a4")]
