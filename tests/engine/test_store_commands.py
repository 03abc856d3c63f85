"""Reading commands never create a store; faults of the environment exit 4, not 3 (issue 8, items 2 and 3)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from cli.common import EXIT_UNREACHABLE, EXIT_USAGE
from cli.main import run
from engine import store as store_module
from store_backends import PG_URL, pg_reason

ROOT = Path(__file__).resolve().parents[2]
RULES = str(ROOT / "playbooks")
DAY = "2026-06-01"
READERS = {
    "scorecard": ["scorecard", "--rules", RULES, "--today", DAY],
    "why": ["why", "acc-0000001", "--rules", RULES, "--today", DAY],
    "plan": ["plan", "--rules", RULES, "--today", DAY],
    "sweep --dry-run": ["sweep", "--rules", RULES, "--dry-run", "--today", DAY],
    "report funnel": ["report", "funnel"],
    "report all": ["report", "all", "--rules", RULES, "--today", DAY],
}


@pytest.fixture(autouse=True)
def no_waits(monkeypatch):
    monkeypatch.setattr(store_module, "RETRY_DELAYS", (0.0, 0.0))


@pytest.mark.parametrize("command", READERS)
def test_a_reading_command_on_a_mistyped_path_creates_nothing_and_exits_2(command, tmp_path, capsys) -> None:
    url = f"sqlite:///{tmp_path}/wrong/dir/x.db"
    assert run([*READERS[command], "--db", url]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"no store at {url}" in err and "playbook demo-data" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", READERS)
def test_a_reading_command_on_a_store_without_accounts_exits_2(command, tmp_path, capsys) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    store_module.Store.open(url).close()
    assert run([*READERS[command], "--db", url]) == EXIT_USAGE
    assert "holds no accounts" in capsys.readouterr().err


@pytest.mark.parametrize("command", READERS)
def test_a_closed_port_exits_4_with_the_cause(command, capsys) -> None:
    url = "postgresql://postgres:secret@127.0.0.1:1/test"
    assert run([*READERS[command], "--db", url]) == EXIT_UNREACHABLE
    err = capsys.readouterr().err
    assert "cannot reach the store at postgresql://postgres:***@127.0.0.1:1/test: " in err
    assert "Connection refused" in err and "secret" not in err and "internal error" not in err


@pytest.mark.parametrize("command", ["scorecard", "plan"])
def test_a_missing_postgresql_database_exits_4_in_json_too(command, capsys) -> None:
    if reason := pg_reason():
        pytest.skip(reason)
    assert run([*READERS[command], "--db", "postgresql://postgres@127.0.0.1:5432/pb_missing", "--format",
                "json"]) == EXIT_UNREACHABLE
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["kind"] == "unreachable" and error["exit_code"] == EXIT_UNREACHABLE
    assert 'database "pb_missing" does not exist' in error["message"]


def test_import_into_a_read_only_file_exits_4(tmp_path, capsys) -> None:
    store_module.Store.open(f"sqlite:///{tmp_path}/s.db").close()
    users = tmp_path / "users.csv"
    users.write_text("id,email,name\nu1,ann@example.com,Ann\n")
    url = f"sqlite:///file:{tmp_path}/s.db?mode=ro&uri=true"
    assert run(["import", f"users={users}", "--db", url, "--rules", RULES]) == EXIT_UNREACHABLE
    err = capsys.readouterr().err
    assert "readonly database" in err and "internal error" not in err


def test_a_writing_command_on_a_closed_port_exits_4(capsys) -> None:
    assert run(["demo-data", "--accounts", "5", "--db", "postgresql://127.0.0.1:1/test"]) == EXIT_UNREACHABLE
    assert "Connection refused" in capsys.readouterr().err


@pytest.fixture(scope="module")
def pg_reader():
    """A demo store in its own schema, and a URL of a role that may only read it."""
    if reason := pg_reason():
        pytest.skip(reason)
    tag = uuid.uuid4().hex[:10]
    schema, role = f"pb_ro_{tag}", f"pb_reader_{tag}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    assert run(["demo-data", "--accounts", "40", "--today", DAY, "--db", url, "--rules", RULES]) == 0
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE ROLE "{role}" LOGIN'))
        conn.execute(sa.text(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"'))
        conn.execute(sa.text(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"'))
    try:
        yield url.replace("postgres@", f"{role}@")
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            conn.execute(sa.text(f'DROP OWNED BY "{role}"'))
            conn.execute(sa.text(f'DROP ROLE "{role}"'))
        admin.dispose()


@pytest.mark.parametrize("command", READERS)
def test_reading_commands_work_with_a_read_only_postgresql_role(command, pg_reader, capsys) -> None:
    assert run([*READERS[command], "--db", pg_reader, "--format", "json"]) == 0, capsys.readouterr().err
    json.loads(capsys.readouterr().out)


def test_reading_commands_work_on_a_sqlite_file_opened_read_only(tmp_path, capsys) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    assert run(["demo-data", "--accounts", "40", "--today", DAY, "--db", url, "--rules", RULES]) == 0
    before = (tmp_path / "s.db").read_bytes()
    for command in READERS.values():
        assert run([*command, "--db", url, "--format", "json"]) == 0, capsys.readouterr().err
    assert (tmp_path / "s.db").read_bytes() == before


RULES_V1 = """\
entity account
  field arr money?
  field legacy_score number?

trigger busy "Busy"
  when account.legacy_score > 5
  then start upsell

play upsell "Upsell"
  priority 80
  ungated
  day 1 stage "Qualified"
"""
# The working tree drops `legacy_score` and triggers on `arr` instead.
RULES_V2 = RULES_V1.replace("  field legacy_score number?\n", "").replace("account.legacy_score > 5",
                                                                          "account.arr > 1000")


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false",
                    *args], cwd=repo, check=True, capture_output=True)


def test_plan_against_rules_that_declare_a_field_the_store_lacks_reads_it_as_empty(tmp_path, capsys) -> None:
    repo = tmp_path / "repo"
    (repo / "rules").mkdir(parents=True)
    git(repo, "init", "-q")
    (repo / "rules" / "r.play").write_text(RULES_V1)
    git(repo, "add", "rules")
    git(repo, "commit", "-q", "-m", "v1")
    (repo / "rules" / "r.play").write_text(RULES_V2)
    accounts = tmp_path / "accounts.csv"
    accounts.write_text("id,name,arr\na1,A,5000\na2,B,500\n")
    url = f"sqlite:///{tmp_path}/s.db"
    rules = str(repo / "rules")
    assert run(["import", f"accounts={accounts}", "--db", url, "--rules", rules]) == 0
    capsys.readouterr()
    cwd = os.getcwd()
    os.chdir(repo)
    try:
        code = run(["plan", "--rules", "rules", "--db", url, "--today", DAY, "--against", "HEAD", "--format", "json"])
    finally:
        os.chdir(cwd)
    out, err = capsys.readouterr()
    assert code == 0, err
    busy = next(t for t in json.loads(out)["triggers"] if t["name"] == "busy")
    assert (busy["before"], busy["after"]) == (0, 1)
    assert "no column for account.legacy_score (declared by the rules at HEAD" in err
    assert "legacy_score" not in {c["name"] for c in sa.inspect(sa.create_engine(url)).get_columns("accounts")}


def test_a_postgresql_url_naming_a_schema_that_does_not_exist_exits_4(tmp_path, capsys) -> None:
    if reason := pg_reason():
        pytest.skip(reason)
    users = tmp_path / "users.csv"
    users.write_text("id,email,name\nu1,ann@example.com,Ann\n")
    url = f"{PG_URL}?options=-csearch_path%3Dpb_no_such_schema_{uuid.uuid4().hex[:8]}"
    assert run(["import", f"users={users}", "--db", url, "--rules", RULES]) == EXIT_UNREACHABLE
    err = capsys.readouterr().err
    assert "no schema has been selected to create in" in err and "internal error" not in err


def test_a_writing_command_that_cannot_create_the_folder_exits_4(tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert run(["demo-data", "--accounts", "5", "--db", f"sqlite:///{blocker}/sub/s.db", "--rules", RULES]) \
        == EXIT_UNREACHABLE
    err = capsys.readouterr().err
    assert f"cannot create the folder {blocker}/sub" in err and "internal error" not in err
