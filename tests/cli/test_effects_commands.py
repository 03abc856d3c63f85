"""`playbook outbox`, `playbook tasks` (what plays did) and `playbook --version`."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from cli_helpers import run_cli
from engine.schema import Base
from engine.store import Store

T = Base.metadata.tables
AT = dt.datetime(2026, 6, 1, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def url(tmp_path: Path) -> str:
    """Two accounts; three messages and two tasks written by two plays."""
    url = f"sqlite:///{tmp_path / 'effects.db'}"
    with Store.open(url) as store, store.begin() as conn:
        conn.execute(T["accounts"].insert(), [{"id": "acc-1"}, {"id": "acc-2"}])
        conn.execute(T["outbox"].insert(), [
            {"idempotency_key": "k1", "channel": "email", "recipient": "ann@acme.example", "subject": "Hello",
             "status": "sent", "account_id": "acc-1", "play": "usage_limit", "created_at": AT},
            {"idempotency_key": "k2", "channel": "email", "recipient": "bob@beta.example", "subject": "Seats",
             "status": "pending", "account_id": "acc-2", "play": "team_growth", "created_at": AT},
            {"idempotency_key": "k3", "channel": "email", "recipient": "ann@acme.example", "subject": "Again",
             "status": "pending", "account_id": "acc-1", "play": "usage_limit",
             "created_at": AT + dt.timedelta(days=2)},
        ])
        conn.execute(T["tasks"].insert(), [
            {"idempotency_key": "t1", "account_id": "acc-1", "play": "usage_limit", "assignee": "usr-1",
             "title": "Call Ann", "status": "open", "created_at": AT},
            {"idempotency_key": "t2", "account_id": "acc-2", "play": "team_growth", "assignee": "usr-2",
             "title": "Call Bob", "status": "done", "created_at": AT},
        ])
    return url


def test_outbox_lists_messages_newest_first_as_json(url: str) -> None:
    r = run_cli("outbox", "--db", url, "--format", "json")
    assert r.code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["total"] == 3
    assert [m["subject"] for m in doc["rows"]] == ["Again", "Seats", "Hello"]
    assert doc["rows"][0]["created_at"] == "2026-06-03T09:00:00+00:00"


@pytest.mark.parametrize(("args", "subjects"), [
    (("--account", "acc-1"), ["Again", "Hello"]),
    (("--play", "team_growth"), ["Seats"]),
    (("--status", "pending"), ["Again", "Seats"]),
    (("--account", "acc-1", "--status", "sent"), ["Hello"]),
    (("--limit", "1"), ["Again"]),
])
def test_outbox_filters_by_account_play_status(url: str, args: tuple[str, ...], subjects: list[str]) -> None:
    r = run_cli("outbox", "--db", url, "--format", "json", *args)
    assert [m["subject"] for m in json.loads(r.stdout)["rows"]] == subjects


def test_tasks_table_names_the_rows_and_says_what_it_left_out(url: str) -> None:
    r = run_cli("tasks", "--db", url, "--limit", "1")
    assert r.code == 0, r.stderr
    assert "Tasks, 2026" in r.stdout and "Call" in r.stdout
    assert "1 of 2 rows shown; --limit 0 for all" in r.stdout
    done = json.loads(run_cli("tasks", "--db", url, "--status", "done", "--format", "json").stdout)
    assert [t["title"] for t in done["rows"]] == ["Call Bob"]


LONG_SUBJECT = "Good news about the API rate boost your team asked for last quarter"


@pytest.mark.parametrize("width", [80, 120, 200])
def test_outbox_table_fits_the_terminal_one_line_a_row_recipient_whole(url: str, width: int,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    with Store.open(url) as store, store.begin() as conn:
        conn.execute(T["outbox"].insert(), [
            {"idempotency_key": "k4", "channel": "email", "recipient": "aisha.dubois@zearca131.example",
             "subject": LONG_SUBJECT, "status": "cancelled", "account_id": "acc-0000248", "play": "renewal_expansion",
             "created_at": AT + dt.timedelta(days=3)}])
    monkeypatch.setenv("COLUMNS", str(width))
    r = run_cli("outbox", "--db", url)
    assert r.code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert max(len(line) for line in lines) <= width
    [row] = [line for line in lines if "acc-0000248" in line]  # one line, not wrapped
    assert "aisha.dubois@zearca131.example" in row and "cancelled" in row
    if width == 80:
        assert "Good news about" in row and LONG_SUBJECT not in row and "…" in row
        assert lines[-1] == "not shown at 80 columns: created_at, play (a wider terminal or --format json)"
    else:
        assert "renewal_expansion" in row and not lines[-1].startswith("not shown")
    if width == 200:
        assert LONG_SUBJECT in row


def test_tasks_table_at_80_columns_keeps_one_line_a_row(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with Store.open(url) as store, store.begin() as conn:
        conn.execute(T["accounts"].insert(), [{"id": "acc-0000248"}])
        conn.execute(T["tasks"].insert(), [
            {"idempotency_key": "t3", "account_id": "acc-0000248", "play": "renewal_expansion",
             "assignee": "usr-csm-0001", "title": "Prepare the renewal expansion proposal with the stakeholders",
             "status": "open", "created_at": AT, "due": AT + dt.timedelta(days=5)}])
    monkeypatch.setenv("COLUMNS", "80")
    lines = run_cli("tasks", "--db", url).stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    [row] = [line for line in lines if "acc-0000248" in line]
    assert "usr-csm-0001" in row and "Prepare the" in row and "…" in row


def test_an_unknown_status_is_a_usage_error_with_a_suggestion(url: str) -> None:
    r = run_cli("tasks", "--db", url, "--status", "opne")
    assert r.code == 2
    assert "no tasks row has status 'opne': did you mean 'open'?" in r.stderr


@pytest.mark.parametrize("command", ["outbox", "tasks"])
def test_a_misspelt_play_is_a_usage_error_with_a_suggestion(url: str, command: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no playbooks/ here: the plays in the store are what is known
    r = run_cli(command, "--db", url, "--play", "usage_limt")
    assert r.code == 2
    assert ("no play 'usage_limt' in the rules (playbooks/) or among the plays that ran. "
            "Did you mean 'usage_limit'?") in r.stderr


def test_an_unknown_play_with_nothing_close_names_a_few_known_plays(url: str, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "p.play").write_text("".join(
        f'play p{i:02} "P"\n  ungated\n  day 1 stage "A"\n' for i in range(30)))
    monkeypatch.chdir(tmp_path)
    r = run_cli("outbox", "--db", url, "--play", "zzz")
    assert r.code == 2
    assert r.stderr.rstrip().endswith("Known plays: p00, p01, p02, p03, p04, p05, p06, p07, p08, p09 and 22 more.")


def test_a_play_the_rules_define_that_wrote_nothing_yet_matches_no_rows(url: str, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "p.play").write_text('play quiet "Quiet"\n  ungated\n  day 1 stage "A"\n')
    monkeypatch.chdir(tmp_path)
    r = run_cli("outbox", "--db", url, "--play", "quiet")
    assert r.code == 0, r.stderr
    assert "no outbox rows match" in r.stdout


def test_reading_what_plays_did_never_creates_a_store(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such.db"
    for command in ("outbox", "tasks"):
        r = run_cli(command, "--db", f"sqlite:///{missing}")
        assert r.code == 2 and "no store at" in r.stderr
    assert not missing.parent.exists()


def test_version_prints_the_installed_version() -> None:
    from importlib.metadata import version

    r = run_cli("--version")
    assert r.code == 0 and r.stdout == f"playbook {version('playbook')}\n"


def test_a_status_matches_whatever_its_case_and_no_match_says_so(url: str) -> None:
    r = run_cli("outbox", "--db", url, "--status", "SENT", "--format", "json")
    assert [m["subject"] for m in json.loads(r.stdout)["rows"]] == ["Hello"]
    r = run_cli("outbox", "--db", url, "--account", "nobody")
    assert r.code == 0 and r.stdout == "no outbox rows match\n"
