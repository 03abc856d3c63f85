"""`playbook outcome` and `playbook import outcomes=FILE` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.main import run


@pytest.fixture()
def db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    url = f"sqlite:///{tmp_path}/store.db"
    assert run(["demo-data", "--accounts", "5", "--db", url, "--today", "2026-06-01", "--format", "json"]) == 0
    capsys.readouterr()
    return url


def test_outcome_records_and_a_second_call_updates(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["outcome", "acc-0000001", "won", "--amount", "12000", "--reason", "expansion", "--champion", "Ann",
            "--approver", "CFO", "--at", "2026-06-01", "--db", db]
    assert run(args) == 0
    assert capsys.readouterr().out.startswith("Recorded won $12,000 ARR for acc-0000001")
    assert run([*args, "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["created"], out["amount"], out["key"]) == (False, 12000.0, "account:acc-0000001:won:2026-06-01")


def test_outcome_for_an_unknown_account_is_bad_usage(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["outcome", "nobody", "lost", "--db", db]) == 2
    assert "no account 'nobody' in the store" in capsys.readouterr().err


def test_outcome_refuses_an_unknown_kind(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["outcome", "acc-0000001", "maybe", "--db", db]) == 2
    assert "won" in capsys.readouterr().err


def test_import_outcomes_is_all_or_nothing_naming_row_and_column(db: str, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("account_id,outcome,amount\nacc-0000001,won,100\nacc-0000002,won,lots\n")
    assert run(["import", f"outcomes={bad}", "--db", db, "--format", "json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert [(e["file"], e["row"], e["column"]) for e in out["errors"]] == [(str(bad), 3, "amount")]
    good = tmp_path / "good.csv"
    good.write_text("account_id,outcome,amount,closed_at\nacc-0000001,won,100,2026-05-01\n"
                    "acc-0000002,churned,50,2026-05-02\n")
    assert run(["import", f"outcomes={good}", "--db", db, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["files"][0]["created"] == 2


def test_import_outcomes_with_other_kinds_is_refused(db: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "o.csv"
    f.write_text("account_id,outcome\n")
    assert run(["import", f"outcomes={f}", f"users={f}", "--db", db]) == 2
    assert "import outcomes on their own" in capsys.readouterr().err


def test_import_outcomes_into_a_missing_store_leaves_nothing(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "o.csv"
    f.write_text("account_id,outcome\nacc-1,won\n")
    assert run(["import", f"outcomes={f}", "--db", f"sqlite:///{tmp_path}/new/store.db"]) == 1
    assert "no account 'acc-1'" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
