"""`plan`: the enrollment plan (+ / = / -, by route, ARR) and the diff of two rule sets,
on SQLite and PostgreSQL; `plan --against REV` on a temporary git repository."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine_support import Seed
from store_backends import BACKENDS, fresh_store
from dsl.compiler import compile_play, compile_plans
from dsl.project import load, load_text
from engine import enroll
from engine.demo_data import generate
from engine.plan import enrollment_plan, merge, rule_diff, rules_at
from engine.store import Store

TODAY = dt.date(2026, 6, 1)
SHIPPED = Path(__file__).resolve().parents[2] / "playbooks"

BASE = """\
entity account
  field arr money?
  field health number?
  field usage percent?
  field seats int?
  field admin contact?

gate healthy "Healthy"
  require account.health >= 70  "health 70+"

route touch
  when account.arr < 10000 -> low_touch
  otherwise -> high_touch

trigger busy "Busy"
  when account.usage > 80%
  then start upsell

trigger full "Full"
  when account.seats >= 10
  then start growth

play upsell "Upsell"
  priority 80
  gate healthy
  reenter after 90 days
  day 1 email account.admin template hello

play growth "Growth"
  priority 50
  gate healthy
  day 1 stage "Qualified"

template hello
  subject "Hello"
  body "Hello"
"""
# The pull request: a lower usage threshold, a stricter seat trigger.
CHANGED = BASE.replace("account.usage > 80%", "account.usage > 70%").replace("account.seats >= 10", "account.seats >= 20")


def rules(source: str):
    catalog = load_text(source, "plan.play").catalog
    return catalog, [compile_play(catalog, p) for p in catalog.plays.values()]


CATALOG, PLANS = rules(BASE)


def seed_accounts(seed: Seed) -> None:
    seed.accounts(
        {"id": "a1", "arr": 5000, "health": 80, "usage": 0.85},   # + upsell, low touch
        {"id": "a2", "arr": 40000, "health": 90, "usage": 0.95},  # + upsell, high touch
        {"id": "a3", "arr": 20000, "health": 90, "usage": 0.75},  # only under CHANGED
        {"id": "a4", "arr": 30000, "health": 50, "usage": 0.90},  # gate fails
        {"id": "a5", "arr": 12000, "health": 90, "seats": 12},    # + growth; not under CHANGED
        {"id": "a6", "arr": 8000, "health": 90, "usage": 0.90},   # running upsell, still qualifies
        {"id": "a7", "arr": 9000, "health": 90, "usage": 0.10},   # running upsell, no longer qualifies
    )
    seed.enrollment("a6", "upsell", "running", started=TODAY - dt.timedelta(days=3))
    seed.enrollment("a7", "upsell", "running", started=TODAY - dt.timedelta(days=3))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with fresh_store(request.param, tmp_path_factory.mktemp("plan"), CATALOG) as s:
        seed = Seed(s)
        seed.clear()
        seed_accounts(seed)
        yield s


def test_enrollment_plan_by_play_and_route(store: Store) -> None:
    with store.connect() as conn:
        p = enrollment_plan(conn, CATALOG, PLANS, TODAY).to_json()
    plays = {x["play"]: x for x in p["plays"]}
    up = plays["upsell"]
    assert up["enroll"] == {"accounts": 2, "arr": 45000}
    assert up["by_route"] == {"high_touch": {"accounts": 1, "arr": 40000}, "low_touch": {"accounts": 1, "arr": 5000}}
    assert up["running"] == {"accounts": 1, "arr": 8000}
    assert up["no_longer_qualify"] == {"accounts": 1, "arr": 9000}
    assert up["skipped"] == {"already_enrolled": 1, "gate_failed": 1}
    assert plays["growth"]["enroll"] == {"accounts": 1, "arr": 12000}
    assert p["enroll"] == {"accounts": 3, "arr": 57000} and p["changes"] is True and p["accounts"] == 7


def test_rule_diff_per_trigger_and_play(store: Store) -> None:
    with store.connect() as conn:
        d = rule_diff(conn, (CATALOG, PLANS), rules(CHANGED), TODAY, before="main", after="branch")
    t = {c.name: c for c in d.triggers}
    assert (t["busy"].status, t["busy"].added, t["busy"].removed, t["busy"].before, t["busy"].after) == \
        ("changed", 1, 0, 4, 5)
    assert t["busy"].examples_added == ["a3"]
    assert (t["full"].added, t["full"].removed, t["full"].examples_removed) == (0, 1, ["a5"])
    p = {c.name: c for c in d.plays}
    assert (p["upsell"].added, p["upsell"].removed, p["upsell"].added_arr) == (1, 0, 20000)
    assert (p["growth"].added, p["growth"].removed, p["growth"].removed_arr) == (0, 1, 12000)
    assert d.changes


@pytest.mark.parametrize("kind", BACKENDS)
def test_rule_diff_reads_both_rule_sets_side_by_side_on_demo_data(
        kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The pull request of the issue: the shipped rules with the usage ceiling
    # lowered, on demo data. Ten rows per fetch keep each side's query open
    # while the other runs, as on a store with more candidates than a fetch
    # batch (20,000 demo accounts): SQLite aborts a reading statement when its
    # connection writes a temporary table, and refuses to drop one while any
    # statement reads.
    monkeypatch.setattr(enroll, "STREAM_BATCH", 10)
    shutil.copytree(SHIPPED, tmp_path / "rules")
    triggers = tmp_path / "rules" / "triggers.play"
    text = triggers.read_text()
    assert "account.usage_percent > 80%\n  then start usage_limit" in text
    triggers.write_text(text.replace("account.usage_percent > 80%\n  then start usage_limit",
                                     "account.usage_percent > 70%\n  then start usage_limit"))
    old, new = load([SHIPPED]), load([tmp_path / "rules"])
    with fresh_store(kind, tmp_path, old.catalog) as store:
        generate(old.catalog, 300, seed=7, today=TODAY, store=store)
        with store.connect() as conn:
            d = rule_diff(conn, (old.catalog, compile_plans(old)), (new.catalog, compile_plans(new)), TODAY)
            ceiling = next(c for c in d.triggers if c.name == "usage_ceiling")
            assert ceiling.added > 0 and ceiling.removed == 0
            assert next(c for c in d.plays if c.name == "usage_limit").changed
            # Nothing is left behind on the connection: the same diff again gives the same answer.
            again = rule_diff(conn, (old.catalog, compile_plans(old)), (new.catalog, compile_plans(new)), TODAY)
            assert [c.to_json() for c in again.plays] == [c.to_json() for c in d.plays]


def test_rule_diff_of_identical_rules_is_empty(store: Store) -> None:
    with store.connect() as conn:
        d = rule_diff(conn, (CATALOG, PLANS), rules(BASE), TODAY)
    assert not d.changes
    assert [(c.name, c.status, c.before) for c in d.triggers] == [("busy", "same", 4), ("full", "same", 1)]


def test_added_and_removed_triggers(store: Store) -> None:
    extra = BASE.replace("play upsell", 'trigger whale "Whale"\n  when account.arr >= 30000\n  then start upsell\n\nplay upsell')
    with store.connect() as conn:
        d = rule_diff(conn, (CATALOG, PLANS), rules(extra), TODAY)
        back = rule_diff(conn, rules(extra), (CATALOG, PLANS), TODAY)
    whale = next(c for c in d.triggers if c.name == "whale")
    assert (whale.status, whale.added, whale.removed) == ("added", 2, 0)  # a2, a4
    gone = next(c for c in back.triggers if c.name == "whale")
    assert (gone.status, gone.added, gone.removed) == ("removed", 0, 2)


def test_merge_walks_two_sorted_streams() -> None:
    a = [("a", 1), ("a", 2), ("c", 3)]
    b = [("b", 4), ("c", 5), ("d", 6)]
    assert list(merge(a, b)) == [("a", [1, 2], []), ("b", [], [4]), ("c", [3], [5]), ("d", [], [6])]


# ---------------------------------------------------------------- git + CLI


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false",
                           *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    """Two commits: BASE, then CHANGED; the working tree holds CHANGED."""
    r = tmp_path / "repo"
    (r / "rules").mkdir(parents=True)
    git(r, "init", "-q")
    (r / "rules" / "plan.play").write_text(BASE)
    git(r, "add", "rules")
    git(r, "commit", "-q", "-m", "base")
    (r / "rules" / "plan.play").write_text(CHANGED)
    git(r, "commit", "-q", "-am", "lower the usage threshold")
    return r


def test_rules_at_reads_a_revision_without_touching_the_tree(repo: Path, tmp_path: Path) -> None:
    (repo / "rules" / "plan.play").write_text(CHANGED + "\n# uncommitted\n")
    project = rules_at([repo / "rules"], "HEAD~1", tmp_path / "old")
    assert "account.usage > 80%" in next(iter(project.sources.values()))
    assert (repo / "rules" / "plan.play").read_text().endswith("# uncommitted\n")
    assert git(repo, "status", "--porcelain") == " M rules/plan.play\n"


@pytest.fixture()
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/cli.db"
    with Store.open(url, catalog=CATALOG) as s:
        seed_accounts(Seed(s))
    return url


def cli(*args: str):
    from cli.main import run
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(list(args))
    return code, out.getvalue(), err.getvalue()


def test_cli_plan_against_a_revision(repo: Path, sqlite_url: str) -> None:
    base = ["plan", "--rules", str(repo / "rules"), "--db", sqlite_url, "--today", "2026-06-01"]
    code, out, err = cli(*base, "--against", "HEAD~1", "--detailed-exitcode", "--format", "json")
    assert code == 2, err
    doc = json.loads(out)
    assert (doc["before"], doc["after"], doc["changes"]) == ("HEAD~1", "working tree", True)
    assert [(t["name"], t["added"], t["removed"]) for t in doc["triggers"]] == [("busy", 1, 0), ("full", 0, 1)]
    code, out, _ = cli(*base, "--against", "HEAD~1")
    assert code == 0
    assert "  ~ busy                         +1      -0      (4 -> 5)" in out
    assert "      now:      a3" in out
    code, out, _ = cli(*base, "--against", "HEAD", "--detailed-exitcode")
    assert code == 0 and "No change" in out
    code, out, err = cli(*base, "--against", "no-such-rev", "--detailed-exitcode")
    assert code == 1 and "no-such-rev" in err


def test_cli_plan_and_detailed_exitcode(repo: Path, sqlite_url: str) -> None:
    code, out, err = cli("plan", "--rules", str(repo / "rules"), "--db", sqlite_url, "--today", "2026-06-01",
                         "--detailed-exitcode")
    assert code == 2, err
    assert "  +       3 to enroll                 ARR $65,000" in out  # the working tree: usage > 70%
    assert "Plan: 3 to enroll (ARR $65,000), 1 running and still qualify, 1 running and no longer qualify." in out


def test_cli_scorecard_and_why_smoke(repo: Path, sqlite_url: str) -> None:
    # The repo's rules have no readiness score: the options name what to use.
    code, out, err = cli("scorecard", "--rules", str(repo / "rules"), "--db", sqlite_url, "--today", "2026-06-01")
    assert code == 2 and "no score named 'readiness'" in err
    code, out, err = cli("why", "a1", "--rules", str(repo / "rules"), "--db", sqlite_url, "--today", "2026-06-01")
    assert code == 0, err
    assert "starts now     upsell \"Upsell\"  (triggered by busy; route low_touch)" in out
