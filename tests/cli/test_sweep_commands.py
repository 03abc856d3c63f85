"""`playbook sweep --dry-run`, `plan` and `why` on a play with a holdout: the held out are counted apart."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from cli_helpers import run_cli
from engine.holdouts import held_out
from engine.store import Store
from workflows.sweep import Playbooks

TODAY = dt.date(2026, 6, 1)
RULES = """\
entity account
  field usage percent?
  field csm user?

trigger busy
  when account.usage > 80%
  then start upsell

play upsell "Upsell"
  ungated
  holdout 20%
  day 1 task account.csm "Call them"
"""
IDS = [f"a{k:03d}" for k in range(200)]
HELD = sorted(a for a in IDS if held_out("upsell", a, 20))


@pytest.fixture()
def project(tmp_path: Path) -> tuple[str, str]:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "upsell.play").write_text(RULES)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    pb = Playbooks.load([rules])
    with Store.open(url, catalog=pb.catalog) as store, store.begin() as conn:
        conn.execute(store.table("account").insert(), [{"id": a, "usage": 0.9} for a in IDS])
    return str(rules), url


def test_the_hash_holds_out_about_the_declared_share_of_these_ids() -> None:
    assert 25 <= len(HELD) <= 55  # 20% of 200 is 40, sd 5.7


def test_sweep_dry_run_counts_the_held_out(project: tuple[str, str]) -> None:
    rules, url = project
    r = run_cli("sweep", rules, "--db", url, "--dry-run", "--today", TODAY.isoformat())
    assert r.code == 0, r.stderr
    assert f"{200 - len(HELD)} would be enrolled, {len(HELD)} skipped ({len(HELD)} of them held out)" in r.stdout
    r = run_cli("sweep", rules, "--db", url, "--dry-run", "--today", TODAY.isoformat(), "--format", "json")
    held = sorted(d["account_id"] for d in json.loads(r.stdout)["decisions"] if d["decision"] == "held_out")
    assert held == HELD


def test_plan_shows_the_held_out_line(project: tuple[str, str]) -> None:
    rules, url = project
    r = run_cli("plan", "--rules", rules, "--db", url, "--today", TODAY.isoformat())
    assert r.code == 0, r.stderr
    assert f"{len(HELD):>7,} held out (20% holdout)" in r.stdout
    r = run_cli("plan", "--rules", rules, "--db", url, "--today", TODAY.isoformat(), "--format", "json")
    [play] = json.loads(r.stdout)["plays"]
    assert play["held_out"]["accounts"] == len(HELD) and play["enroll"]["accounts"] == 200 - len(HELD)


def test_why_says_an_account_is_held_out(project: tuple[str, str]) -> None:
    rules, url = project
    r = run_cli("why", HELD[0], "--rules", rules, "--db", url, "--today", TODAY.isoformat())
    assert r.code == 0, r.stderr
    assert "held out" in r.stdout and "upsell's holdout (20% of accounts by a stable hash)" in r.stdout


def test_summary_names_the_holdout(project: tuple[str, str]) -> None:
    rules, _ = project
    r = run_cli("summary", rules)
    assert r.code == 0, r.stdout
    assert "holdout 20%" in r.stdout
    assert json.loads(run_cli("summary", "--format", "json", rules).stdout)["plays"][0]["holdout"] == 20.0
