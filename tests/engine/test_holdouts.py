"""Holdouts: a stable assignment by (play, account id), and a sweep on SQLite and PostgreSQL
that records held-out accounts as decisions and never starts them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from dsl.checker import check
from dsl.compiler import compile_play
from dsl.project import load_text
from engine.enroll import decision_set
from engine.enrollment import record
from engine.holdouts import bucket, held_out
from engine.plan import enrollment_plan
from engine.schema import Base
from engine.store import Store
from engine_support import Seed
from store_backends import fresh_store

TODAY = dt.date(2026, 6, 1)
IDS = [f"acct-{i:05d}" for i in range(10_000)]

SOURCE = """\
entity account
  field usage percent?
  field admin contact?
  field csm user?

trigger busy
  when account.usage > 80%
  then start upsell, start nudge

play upsell "Upsell"
  priority 80
  ungated
  holdout 10%
  day 1 task account.csm "Call them"

play nudge "Nudge"
  priority 10
  ungated
  day 1 task account.csm "Nudge them"
"""

PROJECT = load_text(SOURCE, "holdouts.play")
CATALOG = PROJECT.catalog
PLANS = [compile_play(CATALOG, p) for p in CATALOG.plays.values()]
ENR, DEC = Base.metadata.tables["enrollments"], Base.metadata.tables["enrollment_decisions"]


def test_the_catalog_is_clean() -> None:
    assert PROJECT.diagnostics == [] and [d for d in check(PROJECT) if d.severity.value == "error"] == []


# ---------------------------------------------------------------- assignment


def test_the_bucket_is_pinned_so_every_machine_and_version_agrees() -> None:
    # SHA-256 of "upsell\0acct-0", first 8 bytes big-endian, mod 10,000: changing the recipe moves accounts
    # between groups of running experiments, so these values must never change.
    assert [bucket("upsell", f"acct-{i}") for i in range(3)] == [4547, 1731, 1476]
    assert bucket("growth", "acct-0") == 9309 and bucket("upsell", "ü-1") == 8222


def test_assignment_is_the_same_every_time() -> None:
    first = [held_out("upsell", a, 10) for a in IDS]
    assert first == [held_out("upsell", a, 10) for a in IDS]


@pytest.mark.parametrize("percent", [1, 10, 12.5, 50])
def test_the_share_held_out_is_close_to_the_declared_one(percent: float) -> None:
    n = sum(held_out("upsell", a, percent) for a in IDS)
    expected = len(IDS) * percent / 100
    sd = (len(IDS) * percent / 100 * (1 - percent / 100)) ** 0.5
    assert abs(n - expected) <= 4 * sd, (n, expected)


def test_raising_the_share_keeps_the_accounts_already_held_out() -> None:
    ten = {a for a in IDS if held_out("upsell", a, 10)}
    fifteen = {a for a in IDS if held_out("upsell", a, 15)}
    assert ten < fifteen


def test_each_play_holds_out_its_own_accounts() -> None:
    a = {x for x in IDS if held_out("upsell", x, 10)}
    b = {x for x in IDS if held_out("nudge", x, 10)}
    assert 0 < len(a & b) < len(a) / 3  # about 1% of ids are in both, by chance


def test_no_holdout_holds_out_nobody() -> None:
    assert not any(held_out("upsell", a, None) or held_out("upsell", a, 0) for a in IDS[:1000])


# ---------------------------------------------------------------- the sweep


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with fresh_store(request.param, tmp_path_factory.mktemp("holdouts"), CATALOG) as s:
        Seed(s).clear()
        table = s.table("account")
        with s.begin() as conn:
            conn.execute(table.insert(), [{"id": a, "usage": 0.9, "admin": f"{a}@example.com"} for a in IDS])
        yield s


def test_a_sweep_holds_out_the_hashed_accounts_records_them_and_starts_none(store: Store) -> None:
    expected = {a for a in IDS if held_out("upsell", a, 10)}
    result = record(store, CATALOG, PLANS, TODAY)
    with store.connect() as conn:
        stored = set(conn.execute(sa.select(DEC.c.account_id).where(DEC.c.play == "upsell",
                                                                    DEC.c.decision == "held_out")).scalars())
        started = set(conn.execute(sa.select(ENR.c.account_id).where(ENR.c.play == "upsell")).scalars())
        nudged = set(conn.execute(sa.select(ENR.c.account_id).where(ENR.c.play == "nudge")).scalars())
    assert stored == expected
    assert abs(len(stored) - 1_000) <= 120
    assert started == set(IDS) - expected and not (started & stored)
    assert nudged == set()  # a held-out account takes upsell's turn: nudge does not start instead
    assert result.reasons["held_out"] == len(expected)
    assert {e.account_id for e in result.enrolled if e.play == "upsell"} == started

    # The next sweep: the treated are already enrolled, the held out are held out again (never started).
    again = record(store, CATALOG, PLANS, TODAY + dt.timedelta(days=1))
    assert again.enrolled == [] and again.reasons["held_out"] == len(expected)
    with store.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(ENR)
                            .where(ENR.c.account_id.in_(sorted(expected)[:500]))).scalar_one() == 0


def test_decisions_say_held_out_and_why(store: Store) -> None:
    some = sorted(a for a in IDS if held_out("upsell", a, 10))[:3]
    Seed(store).clear()
    with store.begin() as conn:
        conn.execute(store.table("account").insert(), [{"id": a, "usage": 0.9} for a in some])
    ds = {(d.account_id, d.play): d for d in decision_set(store, CATALOG, PLANS, TODAY)}
    d = ds[(some[0], "upsell")]
    assert (d.enroll, d.held_out, d.decision, d.codes) == (False, True, "held_out", ["held_out"])
    assert "upsell's holdout (10% of accounts by a stable hash)" in d.reasons[0].detail
    assert ds[(some[0], "nudge")].codes == ["lower_priority"]


def test_the_plan_counts_the_held_out_apart_from_the_skipped(store: Store) -> None:
    Seed(store).clear()
    with store.begin() as conn:
        conn.execute(store.table("account").insert(), [{"id": a, "usage": 0.9} for a in IDS[:2000]])
    with store.connect() as conn:
        plan = {p.play: p for p in enrollment_plan(conn, CATALOG, PLANS, TODAY).plays}
    out = sum(held_out("upsell", a, 10) for a in IDS[:2000])
    assert plan["upsell"].held_out.accounts == out and plan["upsell"].enroll.accounts == 2000 - out
    assert "held_out" not in plan["upsell"].skipped
    assert plan["upsell"].to_json()["held_out"] == {"accounts": out, "arr": 0.0}
    assert plan["upsell"].to_json()["holdout"] == 10.0 and "held_out" not in plan["nudge"].to_json()
