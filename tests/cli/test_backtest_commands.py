"""`playbook backtest` from the command line: the table, --vary, --against, JSON and the error
messages, as golden files (tests/cli/golden/backtest/). UPDATE_GOLDEN=1 rewrites them."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from cli_helpers import GOLDEN, assert_golden, run_cli
from dsl.project import load_text
from engine import rollups, schema
from engine.history import HISTORY
from engine.store import Store

RULES = """\
entity account
  field plan          text
  field usage_percent percent?
  field renewal_date  date?

metric engagement_minutes per day
event funding_announced

trigger usage_ceiling "Usage ceiling"
  when account.usage_percent > {threshold}
  then start p

trigger funded "Funding"
  when happened(funding_announced, within 10 days)
  then start p

trigger engaged "Engaged"
  when avg(engagement_minutes, 7 days) >= 50
  then start p

trigger renewal "Renewal close"
  when days_until(account.renewal_date) between 10 and 30
  then start p

play p "P"
  ungated
  day 1 stage "Qualified"
"""
OLD, NEW = "70%", "80%"  # the threshold at the committed revision, and in the working tree
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
DIR = GOLDEN / "backtest"
UTC = dt.timezone.utc


def at(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(9), UTC)


def seed(url: str) -> None:
    """Ten accounts known from 2025-12-01; usage raised for some in January; points, events, outcomes."""
    catalog = load_text(RULES.format(threshold=NEW), "rules.play").catalog
    accounts = schema.entity_table(catalog.account, "account")
    start = dt.date(2026, 1, 1)
    rows, hist, points, events, outcomes = [], [], [], [], []
    for i in range(10):
        aid = f"acc{i}"
        rows.append({"id": aid, "name": f"Account {i}", "plan": "Growth", "usage_percent": 0.6 + 0.04 * i,
                     "renewal_date": start + dt.timedelta(days=20 + 9 * i)})
        hist.append({"account_id": aid, "field": "*", "valid_from": at(dt.date(2025, 12, 1)), "valid_to": None,
                     "value_number": None, "value_text": None})
        if i % 3 == 0:  # until mid-January these accounts used less
            hist.append({"account_id": aid, "field": "usage_percent", "valid_from": at(dt.date(2025, 12, 1)),
                         "valid_to": at(dt.date(2026, 1, 10 + i)), "value_number": 0.5, "value_text": None})
        for d in range(-10, 60, 2):
            points.append({"metric": "engagement_minutes", "account_id": aid, "date": start + dt.timedelta(days=d),
                           "value": float(20 + (i * 7 + d * 3) % 60)})
        if i % 2 == 0:
            day = start + dt.timedelta(days=5 * i)
            events.append({"key": f"{aid}-f", "account_id": aid, "event": "funding_announced",
                           "occurred_at": at(day), "occurred_on": day})
        if i in (4, 8, 9):
            outcomes.append({"account_id": aid, "outcome": "won" if i != 9 else "lost",
                             "at": at(dt.date(2026, 2, 20)), "key": f"o{i}", "amount": 12000.0})
    with Store.open(url, catalog=catalog) as store, store.engine.begin() as conn:
        conn.execute(sa.insert(accounts), rows)
        conn.execute(sa.insert(HISTORY), hist)
        conn.execute(sa.insert(schema.MetricPoint.__table__), points)
        conn.execute(sa.insert(schema.Event.__table__), events)
        conn.execute(sa.insert(schema.Outcome.__table__), outcomes)
        rollups.rebuild(conn)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A git repository whose committed rules say 70% and whose working tree says 80%; a seeded store."""
    root = tmp_path_factory.mktemp("bt")
    rules = root / "rules"
    rules.mkdir()
    (rules / "rules.play").write_text(RULES.format(threshold=OLD))
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run([*GIT, "-C", str(root), "add", "rules"], check=True)
    subprocess.run([*GIT, "-C", str(root), "commit", "-q", "-m", "rules at 70%"], check=True)
    (rules / "rules.play").write_text(RULES.format(threshold=NEW))
    url = f"sqlite:///{root}/store.db"
    seed(url)
    return rules, url


def backtest(repo: tuple[Path, str], *args: str) -> tuple[int, str, str]:
    rules, url = repo
    r = run_cli("backtest", "--rules", str(rules), "--db", url, "--today", "2026-06-01", *args)
    root = str(rules.parent)
    return r.code, r.stdout.replace(root, "<repo>"), r.stderr.replace(root, "<repo>")


RANGE = ("--from", "2026-01-01", "--to", "2026-02-28")


def test_the_table_per_trigger(repo: tuple[Path, str]) -> None:
    code, out, err = backtest(repo, *RANGE)
    assert code == 0, err
    assert_golden(DIR / "table.txt", out)


def test_vary_puts_the_thresholds_side_by_side(repo: tuple[Path, str]) -> None:
    code, out, err = backtest(repo, *RANGE, "--trigger", "engaged",
                              "--vary", "usage_ceiling.usage_percent=70%,80%,90%")
    assert code == 0, err
    assert_golden(DIR / "vary.txt", out)


def test_against_a_revision_replays_its_rules(repo: tuple[Path, str]) -> None:
    code, out, err = backtest(repo, *RANGE, "--trigger", "usage_ceiling", "--against", "HEAD")
    assert code == 0, err
    assert_golden(DIR / "against.txt", out)
    _, now, _ = backtest(repo, *RANGE, "--trigger", "usage_ceiling")
    assert now != out  # 80% in the working tree fires on fewer accounts than 70% at HEAD


def test_json_is_one_document(repo: tuple[Path, str]) -> None:
    code, out, err = backtest(repo, *RANGE, "--vary", "engaged.engagement_minutes=40,50", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    labels = [t["label"] for t in doc["triggers"]]
    assert labels == ["usage_ceiling", "funded", "engagement_minutes=40", "engagement_minutes=50", "renewal"]
    assert_golden(DIR / "vary.json", out)


ERRORS = {
    "bad_date": ("--from", "2026-13-01", "--to", "2026-02-28"),
    "unknown_trigger_in_vary": (*RANGE, "--vary", "usage_celing.usage_percent=70%"),
    "not_a_threshold": (*RANGE, "--vary", "renewal.renewal_date=5"),
    "percent_without_sign": (*RANGE, "--vary", "usage_ceiling.usage_percent=70"),
    "unknown_revision": (*RANGE, "--against", "no-such-rev"),
    "reversed_dates": ("--from", "2026-02-28", "--to", "2026-01-01"),
    "not_in_the_past": ("--from", "2026-05-01", "--to", "2026-06-01"),
}


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_bad_input_is_a_clear_message_and_exit_2(repo: tuple[Path, str], name: str) -> None:
    code, out, err = backtest(repo, *ERRORS[name])
    assert code == 2 and out == "" and "Traceback" not in err
    assert_golden(DIR / f"error_{name}.txt", err)
