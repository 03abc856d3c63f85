"""Enrollment decisions on SQLite and PostgreSQL: every skip reason, cooldown,
priority, the contact frequency cap, and recording a sweep."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from engine_support import Seed
from store_backends import fresh_store
from dsl.checker import check
from dsl.compiler import compile_play
from dsl.project import load_text
from engine.enroll import Code, Scratch, Settings, decide, decision_set
from engine import enrollment
from engine.enrollment import record
from engine.schema import Base
from engine import store as store_module
from engine.store import Store, StoreUnreachable

TODAY = dt.date(2026, 6, 1)

SOURCE = """\
entity account
  field segment enum(smb, ent)?
  field arr money?
  field health number?
  field usage percent?
  field seats int?
  field admin contact?
  field csm user?

event funding

gate healthy "Healthy"
  require account.health >= 70  "health 70+"

route touch
  when account.arr < 10000 -> low_touch
  otherwise -> high_touch

trigger busy "Busy: over 80% of the plan"
  when account.usage > 80%
  then start upsell

trigger funded "Funded in the last 30 days"
  when happened(funding, within 30 days)
  then start growth

trigger full "Ten seats or more"
  when account.seats >= 10
  then start survey

play upsell "Upsell"
  priority 80
  gate healthy
  reenter after 90 days
  day 1 email account.admin template hello

play growth "Growth"
  priority 50
  gate healthy
  day 1 task account.csm "Call them"

play survey "Survey"
  ungated
  concurrent
  day 1 email account.admin template hello

template hello
  subject "Hello"
  body "Hello"
"""

PROJECT = load_text(SOURCE, "enroll.play")
CATALOG = PROJECT.catalog
PLANS = [compile_play(CATALOG, p) for p in CATALOG.plays.values()]
DAYS = lambda k: TODAY - dt.timedelta(days=k)  # noqa: E731


def test_the_catalog_is_clean() -> None:
    assert [d for d in check(PROJECT) if d.severity.value == "error"] == []


def acc(aid: str, **kw: object) -> dict[str, object]:
    return {"id": aid, "admin": f"{aid}@example.com", "arr": 5000, **kw}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with fresh_store(request.param, tmp_path_factory.mktemp("enroll"), CATALOG) as s:
        yield s


@pytest.fixture()
def seed(store: Store) -> Seed:
    s = Seed(store)
    s.clear()
    return s


def by_key(store: Store, settings: Settings | None = None) -> dict[tuple[str, str], tuple[bool, list[str]]]:
    return {(d.account_id, d.play): (d.enroll, d.codes) for d in decision_set(store, CATALOG, PLANS, TODAY, settings)}


def test_a_triggered_healthy_account_is_enrolled_with_its_trigger_and_route(store: Store, seed: Seed) -> None:
    seed.accounts(acc("a1", usage=0.9, health=80), acc("quiet", usage=0.5, health=90))
    [d] = decision_set(store, CATALOG, PLANS, TODAY)
    assert (d.account_id, d.play, d.enroll, d.triggers, d.route, d.arr) == ("a1", "upsell", True, ("busy",), "low_touch", 5000)
    assert d.workflow_id == "play:upsell:a1"
    assert d.plan_hash == next(p.hash for p in PLANS if p.play == "upsell")


def test_gate_failed_names_the_unmet_requirement(store: Store, seed: Seed) -> None:
    seed.accounts(acc("a2", usage=0.9, health=50), acc("a2e", usage=0.9))  # health empty: not met either
    ds = {d.account_id: d for d in decision_set(store, CATALOG, PLANS, TODAY)}
    assert ds["a2"].codes == ["gate_failed"] and not ds["a2"].enroll
    assert ds["a2"].reasons[0].detail == "gate healthy: not met: health 70+"
    assert ds["a2e"].codes == ["gate_failed"]


def test_ungated_play_starts_on_an_unhealthy_account(store: Store, seed: Seed) -> None:
    seed.accounts(acc("a10", usage=0.9, health=10, seats=12))
    assert by_key(store) == {("a10", "upsell"): (False, ["gate_failed"]), ("a10", "survey"): (True, [])}


def test_already_enrolled_pending_or_running(store: Store, seed: Seed) -> None:
    seed.accounts(acc("r", usage=0.9, health=80), acc("p", usage=0.9, health=80))
    seed.enrollment("r", "upsell", "running", started=DAYS(3))
    seed.enrollment("p", "upsell", "pending", started=DAYS(0))
    got = by_key(store)
    assert got[("r", "upsell")] == (False, ["already_enrolled"])
    assert got[("p", "upsell")] == (False, ["already_enrolled"])


def test_cooldown_counts_from_the_end_of_the_last_run(store: Store, seed: Seed) -> None:
    seed.accounts(*(acc(a, usage=0.9, health=80) for a in ("ended30", "ended90", "ended120", "started30")))
    seed.enrollment("ended30", "upsell", "completed", started=DAYS(44), ended=DAYS(30))
    seed.enrollment("ended90", "upsell", "completed", started=DAYS(104), ended=DAYS(90))  # exactly 90: may re-enter
    seed.enrollment("ended120", "upsell", "exited", started=DAYS(134), ended=DAYS(120))
    seed.enrollment("started30", "upsell", "failed", started=DAYS(30))  # no end recorded: from the start
    ds = {d.account_id: d for d in decision_set(store, CATALOG, PLANS, TODAY)}
    assert ds["ended30"].codes == ["cooldown"]
    assert "may re-enter from 2026-07-31" in ds["ended30"].reasons[0].detail
    assert ds["ended90"].enroll and ds["ended120"].enroll
    assert ds["started30"].codes == ["cooldown"]


def test_a_play_without_reenter_runs_once(store: Store, seed: Seed) -> None:
    seed.accounts(acc("a9", health=80))
    seed.event("a9", "funding", DAYS(5))
    seed.enrollment("a9", "growth", "completed", started=DAYS(400), ended=DAYS(380))
    assert by_key(store) == {("a9", "growth"): (False, ["no_reentry"])}


def test_priority_decides_between_plays_ties_by_name(store: Store, seed: Seed) -> None:
    seed.accounts(acc("a6", usage=0.9, health=80))
    seed.event("a6", "funding", DAYS(5))
    ds = {d.play: d for d in decision_set(store, CATALOG, PLANS, TODAY)}
    assert ds["upsell"].enroll
    assert ds["growth"].codes == ["lower_priority"]
    assert ds["growth"].reasons[0].detail == "upsell (priority 80) starts instead (priority 50)"
    # Equal priorities: the first name wins.
    tied = [p.model_copy(update={"priority": 10}) for p in PLANS]
    ds = {d.play: d for d in decision_set(store, CATALOG, tied, TODAY)}
    assert ds["growth"].enroll and ds["upsell"].codes == ["lower_priority"]


def test_one_expansion_play_at_a_time_but_concurrent_plays_run_beside(store: Store, seed: Seed) -> None:
    seed.accounts(acc("a8", health=80, usage=0.1), acc("a11", health=80, seats=10))
    seed.event("a8", "funding", DAYS(5))
    seed.event("a11", "funding", DAYS(5))
    seed.enrollment("a8", "upsell", "running", started=DAYS(3))
    got = by_key(store)
    assert got[("a8", "growth")] == (False, ["in_other_play"])
    assert got[("a11", "growth")] == (True, [])
    assert got[("a11", "survey")] == (True, [])  # concurrent: no lower_priority, no in_other_play
    # A running concurrent play blocks nothing.
    seed.enrollment("a11", "survey", "running", started=DAYS(1))
    assert by_key(store)[("a11", "growth")] == (True, [])


def test_frequency_cap_across_plays_passes_the_turn_to_a_play_without_email(store: Store, seed: Seed) -> None:
    seed.accounts(acc("a7", usage=0.9, health=80), acc("old", usage=0.9, health=80))
    seed.event("a7", "funding", DAYS(5))
    for k in (0, 2, 6):  # three emails in the last 7 days, from any play
        seed.email("a7@example.com", DAYS(k))
    for k in (7, 10, 12):  # outside the window
        seed.email("old@example.com", DAYS(k))
    seed.email("old@example.com", DAYS(1), status="failed")  # never delivered
    got = by_key(store)
    assert got[("a7", "upsell")] == (False, ["frequency_cap"])
    assert got[("a7", "growth")] == (True, [])  # tasks only: not capped, and upsell no longer competes
    assert got[("old", "upsell")] == (True, [])
    assert by_key(store, Settings(email_cap=4))[("a7", "upsell")] == (True, [])
    assert by_key(store, Settings(email_cap=2, email_cap_days=30))[("old", "upsell")] == (False, ["frequency_cap"])


def test_every_reason_that_applies_is_reported(store: Store, seed: Seed) -> None:
    seed.accounts(acc("many", usage=0.9, health=50))
    seed.enrollment("many", "upsell", "completed", started=DAYS(20), ended=DAYS(10))
    seed.enrollment("many", "growth", "running", started=DAYS(2))
    for k in range(3):
        seed.email("many@example.com", DAYS(k))
    assert by_key(store)[("many", "upsell")] == (False, ["gate_failed", "cooldown", "in_other_play", "frequency_cap"])


def test_decisions_stream_in_account_order_and_can_be_restricted(store: Store, seed: Seed) -> None:
    ids = ["b", "a", "B", "a-1", "é", "Z"]
    seed.accounts(*(acc(a, usage=0.9, health=80) for a in ids))
    with store.connect() as conn:
        got = [d.account_id for d in decide(conn, CATALOG, PLANS, TODAY)]
        assert got == sorted(ids)  # code point order on both databases
        assert [d.account_id for d in decide(conn, CATALOG, PLANS, TODAY, account_ids=["b"])] == ["b"]


def test_record_stores_decisions_and_pending_enrollments_once(store: Store, seed: Seed) -> None:
    seed.accounts(acc("a1", usage=0.9, health=80), acc("a2", usage=0.9, health=50))
    now = dt.datetime(2026, 6, 1, 6, 0, tzinfo=dt.timezone.utc)
    result = record(store, CATALOG, PLANS, TODAY, now=now)
    assert [(e.workflow_id, e.trigger, e.route) for e in result.enrolled] == [("play:upsell:a1", "busy", "low_touch")]
    assert (result.decisions, result.accounts, result.skipped, result.reasons) == (2, 2, 1, {"gate_failed": 1})
    t = Base.metadata.tables
    with store.connect() as conn:
        rows = conn.execute(sa.select(t["enrollment_decisions"]).order_by("account_id")).mappings().all()
        assert [(r["account_id"], r["play"], r["decision"], r["trigger"]) for r in rows] == [
            ("a1", "upsell", "enrolled", "busy"), ("a2", "upsell", "skipped", "busy")]
        assert rows[1]["reasons"]["reasons"] == [{"code": "gate_failed", "detail": "gate healthy: not met: health 70+"}]
        enr = conn.execute(sa.select(t["enrollments"])).mappings().one()
        assert (enr["status"], enr["workflow_id"], enr["plan_hash"]) == ("pending", "play:upsell:a1", result.enrolled[0].plan_hash)
        assert enr["started_at"] == now
    again = record(store, CATALOG, PLANS, TODAY, now=now)
    assert again.enrolled == [] and again.skipped == 2
    assert again.reasons == {"already_enrolled": 1, "gate_failed": 1}


def test_record_counts_skipped_candidates_and_their_reasons_apart(store: Store, seed: Seed) -> None:
    seed.accounts(acc("a1", usage=0.9, health=80),
                  acc("a2", usage=0.9, health=50, seats=12),  # upsell skipped, survey enrolled
                  acc("a3", usage=0.9, health=50))  # upsell skipped for three reasons
    seed.enrollment("a3", "growth", "running", started=DAYS(2))
    for k in range(3):
        seed.email("a3@example.com", DAYS(k))
    result = record(store, CATALOG, PLANS, TODAY)
    assert (result.decisions, result.accounts, len(result.enrolled), result.skipped) == (4, 3, 2, 2)
    assert result.reasons == {"gate_failed": 2, "in_other_play": 1, "frequency_cap": 1}


def test_an_enrollment_goes_from_pending_to_running_to_ended(store: Store, seed: Seed) -> None:
    seed.accounts(acc("a1", usage=0.9, health=80), acc("a4", usage=0.9, health=80, seats=12))
    now = dt.datetime(2026, 6, 1, 6, 0, tzinfo=dt.timezone.utc)
    new = record(store, CATALOG, PLANS, TODAY, now=now).enrolled
    assert [(e.account_id, e.play) for e in new] == [("a1", "upsell"), ("a4", "survey"), ("a4", "upsell")]
    first, more = enrollment.pending(store, 0, 2)
    assert [r.id for r in first] == [e.id for e in new[:2]] and more
    rest, more = enrollment.pending(store, first[-1].id, 2)
    assert [r.id for r in rest] == [new[2].id] and not more
    enrollment.record_starts(store, [
        enrollment.Start(new[0].id, "running", run_id="r1", plan_hash="h2"),
        enrollment.Start(new[1].id, "running", run_id="r2", note="joined"),
        enrollment.Start(new[2].id, "failed", ended_at=now, note="not started: no anchor")])
    assert [(r.id, r.run_id) for r in enrollment.running(store)] == [(new[0].id, "r1"), (new[1].id, "r2")]
    assert enrollment.active_plays(store, "a4") == ["survey"]
    t = Base.metadata.tables["enrollments"]
    with store.connect() as conn:
        got = {r.id: r for r in conn.execute(sa.select(t))}
    assert (got[new[0].id].plan_hash, got[new[2].id].status) == ("h2", "failed")
    assert got[new[1].id].reason["note"] == "joined" and got[new[1].id].reason["triggers"] == ["full"]
    later = now + dt.timedelta(days=1)
    enrollment.record_ends(store, [enrollment.End(new[0].id, "completed", later),
                                   enrollment.End(new[2].id, "lost", later)])  # not running: left as it is
    assert [r.id for r in enrollment.running(store)] == [new[1].id]
    assert enrollment.cancel_open(store, later, "stopped") == 1
    with store.connect() as conn:
        got = {r.id: r for r in conn.execute(sa.select(t))}
    assert [got[e.id].status for e in new] == ["completed", "cancelled", "failed"]
    assert got[new[1].id].ended_at == later and got[new[1].id].reason["note"] == "stopped"


def test_codes_are_stable() -> None:
    assert [c.value for c in Code] == ["gate_failed", "already_enrolled", "cooldown", "no_reentry", "in_other_play",
                                       "frequency_cap", "lower_priority", "held_out"]


# ---------------------------------------------------------------- faults of the store


class Faults:
    """Make the store's statements that start with `prefix` fail `times` times, as a
    restarting server or a held lock does (a driver error, raised before the statement runs)."""

    def __init__(self, store: Store, prefix: str, times: int):
        self.store, self.prefix, self.left, self.raised = store, prefix, times, 0
        sa.event.listen(store.engine, "before_cursor_execute", self.before)

    def before(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if self.left and statement.lstrip().startswith(self.prefix):
            self.left -= 1
            self.raised += 1
            if self.store.dialect == "postgresql":
                import psycopg2

                raise psycopg2.OperationalError("terminating connection due to administrator command")
            raise sqlite3.OperationalError("database is locked")

    def remove(self) -> None:
        sa.event.remove(self.store.engine, "before_cursor_execute", self.before)


@pytest.fixture()
def no_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "RETRY_DELAYS", (0.0, 0.0, 0.0))


def stored(store: Store) -> tuple[int, int]:
    return store.count("enrollment_decisions"), store.count("enrollments")


def test_a_transient_fault_while_deciding_is_retried(store: Store, seed: Seed, no_waits: None) -> None:
    seed.accounts(acc("a1", usage=0.9, health=80), acc("a2", usage=0.9, health=50))
    faults = Faults(store, "SELECT accounts.id AS account_id", times=2)  # the decide phase's query
    try:
        result = record(store, CATALOG, PLANS, TODAY)
        assert [d.account_id for d in decision_set(store, CATALOG, PLANS, TODAY)] == ["a1", "a2"]
    finally:
        faults.remove()
    assert faults.raised == 2
    assert [e.account_id for e in result.enrolled] == ["a1"] and stored(store) == (2, 1)


def test_a_lasting_fault_while_recording_is_store_unreachable_and_stores_nothing(
        store: Store, seed: Seed, no_waits: None) -> None:
    seed.accounts(acc("a1", usage=0.9, health=80))
    faults = Faults(store, "INSERT INTO enrollment_decisions", times=100)
    try:
        with pytest.raises(StoreUnreachable) as caught:
            record(store, CATALOG, PLANS, TODAY)
    finally:
        faults.remove()
    assert faults.raised == 1 + len(store_module.RETRY_DELAYS) and caught.value.transient
    assert stored(store) == (0, 0)


def test_scratch_tables_are_unique_on_a_connection_and_named_alike_by_the_next_evaluation(store: Store) -> None:
    with store.connect() as conn:
        with Scratch(conn) as one, Scratch(conn) as two:
            a, b = one.table("pb_x", sa.Column("id", sa.Text)), two.table("pb_x", sa.Column("id", sa.Text))
            assert a.name != b.name
        with Scratch(conn) as again:
            assert again.table("pb_x", sa.Column("id", sa.Text)).name == a.name


def test_a_scratch_table_of_the_same_name_and_columns_is_the_same_object(store: Store) -> None:
    # SQLAlchemy's statement cache knows a table by its object: a new one each time compiles every statement anew.
    with store.connect() as conn:
        with Scratch(conn) as one:
            first = one.table("pb_y", sa.Column("id", sa.Text))
        with Scratch(conn) as two:
            assert two.table("pb_y", sa.Column("id", sa.Text)) is first
        with Scratch(conn) as three:
            other = three.table("pb_y", sa.Column("id", sa.Integer))
            assert (other.name, other is first) == (first.name, False)
