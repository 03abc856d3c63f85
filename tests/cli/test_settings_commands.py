"""Every command that decides reads the same settings: `plan` and `why` preview what
`sweep` (the CLI and the worker's SweepWorkflow activity) decides, and "today" is
the team's date everywhere."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_helpers import run_cli
from engine.schema import Base
from engine.store import Store
from workflows.sweep import DecideRequest, Playbooks, SweepActivities

TODAY = dt.date(2026, 6, 1)

RULES = """\
entity account
  field arr money?
  field health number?
  field usage percent?
  field admin contact?
  field csm user?

gate healthy "Healthy"
  require account.health >= 70  "health 70+"

route touch
  when account.arr < 10000 -> low_touch
  otherwise -> high_touch

trigger busy "Busy: over 80% of the plan"
  when account.usage > 80%
  then start upsell

play upsell "Upsell"
  priority 80
  gate healthy
  day 1 email account.admin template hello

template hello
  subject "Hello"
  body "Hello"
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("TIME_ZONE", "EMAIL_CAP", "EMAIL_CAP_DAYS", "ROUTE", "DATABASE_URL", "SETTINGS_FILE"):
        monkeypatch.delenv(f"PLAYBOOK_{name}", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """Rules, and a store where `capped` got 3 emails this week and `free` none."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "upsell.play").write_text(RULES)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    pb = Playbooks.load([rules])
    with Store.open(url, catalog=pb.catalog) as store, store.begin() as conn:
        for aid in ("capped", "free"):
            conn.execute(store.table("account").insert().values(
                id=aid, admin=f"{aid}@example.com", arr=5000, health=80, usage=0.9))
        for k in range(3):
            conn.execute(Base.metadata.tables["outbox"].insert().values(
                idempotency_key=f"k{k}", channel="email", recipient="capped@example.com", subject="s", body="b",
                status="sent", created_at=dt.datetime.combine(TODAY - dt.timedelta(days=k), dt.time(10),
                                                              dt.timezone.utc)))
    yield rules, url


def _plan(rules: Path, url: str) -> dict[str, object]:
    r = run_cli("plan", "--rules", str(rules), "--db", url, "--today", TODAY.isoformat(), "--format", "json")
    assert r.code == 0, r.stderr
    play = json.loads(r.stdout)["plays"][0]
    return {"enroll": play["enroll"]["accounts"], "skipped": play["skipped"]}


def _sweep_dry_run(rules: Path, url: str) -> dict[str, object]:
    r = run_cli("sweep", str(rules), "--db", url, "--dry-run", "--today", TODAY.isoformat(), "--format", "json")
    assert r.code == 0, r.stderr
    decisions = json.loads(r.stdout)["decisions"]
    skipped: dict[str, int] = {}
    for d in decisions:
        for reason in d["reasons"]:
            skipped[reason["code"]] = skipped.get(reason["code"], 0) + 1
    return {"enroll": sum(d["decision"] == "enroll" for d in decisions), "skipped": skipped}


def _worker_decide(rules: Path, url: str) -> dict[str, object]:
    """The decide activity of SweepWorkflow, as a worker runs it (settings read at each sweep)."""
    pb = Playbooks.load([rules])
    with Store.open(url, catalog=pb.catalog) as store:
        acts = SweepActivities(None, store, pb)  # type: ignore[arg-type]  # decide needs no client
        now = dt.datetime.combine(TODAY, dt.time(12), dt.timezone.utc)
        res = asyncio.run(acts.decide(DecideRequest(now=now, dry_run=True)))
    assert res.today == TODAY
    return {"enroll": res.enrolled, "skipped": res.reasons}


def _why(rules: Path, url: str, account: str) -> str:
    r = run_cli("why", account, "--rules", str(rules), "--db", url, "--today", TODAY.isoformat(), "--format", "json")
    assert r.code == 0, r.stderr
    return r.stdout


def test_plan_sweep_and_the_worker_decide_alike_with_the_default_cap(project: tuple[Path, str]) -> None:
    rules, url = project
    expected = {"enroll": 1, "skipped": {"frequency_cap": 1}}
    assert _plan(rules, url) == expected
    assert _sweep_dry_run(rules, url) == expected
    assert _worker_decide(rules, url) == expected


def test_plan_sweep_and_the_worker_decide_alike_with_a_cap_set_by_env(
        project: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    rules, url = project
    monkeypatch.setenv("PLAYBOOK_EMAIL_CAP", "4")
    expected = {"enroll": 2, "skipped": {}}
    assert _plan(rules, url) == expected
    assert _sweep_dry_run(rules, url) == expected
    assert _worker_decide(rules, url) == expected
    assert "frequency_cap" not in _why(rules, url, "capped")


def test_a_cap_in_the_settings_file_applies_to_every_command(project: tuple[Path, str], tmp_path: Path) -> None:
    rules, url = project
    (tmp_path / ".playbook").mkdir(exist_ok=True)
    # A one-day window: of the three emails only today's counts, so nobody is capped.
    (tmp_path / ".playbook" / "settings.toml").write_text("email_cap_days = 1\n")
    expected = {"enroll": 2, "skipped": {}}
    assert _plan(rules, url) == expected
    assert _sweep_dry_run(rules, url) == expected
    assert _worker_decide(rules, url) == expected
    assert "frequency_cap" not in _why(rules, url, "capped")


def test_the_email_cap_is_no_longer_a_flag_of_one_command(project: tuple[Path, str]) -> None:
    rules, url = project
    r = run_cli("plan", "--rules", str(rules), "--db", url, "--email-cap", "9")
    assert r.code == 2 and "No such option: --email-cap" in r.stderr


def test_a_bad_setting_is_a_usage_error_naming_it(project: tuple[Path, str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    rules, url = project
    monkeypatch.setenv("PLAYBOOK_EMAIL_CAP", "lots")
    for args in (("plan", "--rules", str(rules), "--db", url), ("sweep", str(rules), "--db", url, "--dry-run"),
                 ("why", "capped", "--rules", str(rules), "--db", url)):
        r = run_cli(*args)
        assert r.code == 2, (args, r.stderr)
        assert "settings: email_cap (PLAYBOOK_EMAIL_CAP" in r.stderr


def test_every_command_evaluates_the_team_date_near_midnight(
        project: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """13:30 UTC on May 31 is 01:30 on June 1 in Auckland: test, why, plan and sweep all say June 1."""
    import engine.settings

    rules, url = project
    (rules / "tests.play").write_text('test "busy at 90%"\n  given account usage=90%\n  expect trigger busy\n')
    monkeypatch.setenv("PLAYBOOK_TIME_ZONE", "Pacific/Auckland")
    monkeypatch.setattr(engine.settings, "clock", lambda: dt.datetime(2026, 5, 31, 13, 30, tzinfo=dt.UTC))
    team_day = "2026-06-01"
    r = run_cli("test", str(rules), "--format", "json")
    assert r.code == 0, r.stdout + r.stderr
    assert [t["today"] for t in json.loads(r.stdout)["tests"]] == [team_day]
    r = run_cli("why", "capped", "--rules", str(rules), "--db", url, "--format", "json")
    assert r.code == 0 and json.loads(r.stdout)["today"] == team_day
    r = run_cli("plan", "--rules", str(rules), "--db", url, "--format", "json")
    assert r.code == 0 and json.loads(r.stdout)["today"] == team_day
    r = run_cli("sweep", str(rules), "--db", url, "--dry-run", "--format", "json")
    assert r.code == 0 and json.loads(r.stdout)["today"] == team_day


@pytest.mark.parametrize("command", [
    ("test",), ("summary",), ("why", "capped"), ("plan",), ("scorecard",), ("sweep", "--dry-run"), ("demo-data",)])
def test_every_command_refuses_a_bad_today_with_the_same_message(command: tuple[str, ...]) -> None:
    r = run_cli(*command, "--today", "31/05/2026")
    assert r.code == 2
    assert "--today wants a date such as 2026-06-01 (YYYY-MM-DD), not '31/05/2026'" in r.stderr


def test_the_store_url_can_come_from_the_settings_file(project: tuple[Path, str], tmp_path: Path) -> None:
    rules, url = project
    (tmp_path / ".playbook").mkdir(exist_ok=True)
    (tmp_path / ".playbook" / "settings.toml").write_text(f'database_url = "{url}"\n')
    r = run_cli("plan", "--rules", str(rules), "--today", TODAY.isoformat(), "--format", "json")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["accounts"] == 2


def test_a_bad_settings_file_is_a_usage_error_even_where_only_the_store_url_is_read(tmp_path: Path) -> None:
    (tmp_path / ".playbook").mkdir(exist_ok=True)
    (tmp_path / ".playbook" / "settings.toml").write_text("database_ulr = 'sqlite:///x.db'\n")
    r = run_cli("outbox")
    assert r.code == 2
    assert "settings: settings file .playbook/settings.toml: unknown setting 'database_ulr'; " \
           "did you mean 'database_url'?" in r.stderr


def test_plan_why_and_sweep_report_the_settings_they_decided_with(
        project: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    rules, url = project
    monkeypatch.setenv("PLAYBOOK_EMAIL_CAP", "4")
    monkeypatch.setenv("PLAYBOOK_TIME_ZONE", "Europe/Berlin")
    expected = {"time_zone": "Europe/Berlin", "email_cap": 4, "email_cap_days": 7, "route": "touch"}
    day = ("--today", TODAY.isoformat())
    for args in (("plan", "--rules", str(rules)), ("why", "capped", "--rules", str(rules)),
                 ("sweep", str(rules), "--dry-run")):
        r = run_cli(*args, "--db", url, *day, "--format", "json")
        assert r.code == 0, r.stderr
        assert json.loads(r.stdout)["settings"] == expected, args
    text = run_cli("plan", "--rules", str(rules), "--db", url, *day).stdout
    assert "(email cap 4 per 7 days, route touch, time zone Europe/Berlin)" in text.splitlines()[0]
