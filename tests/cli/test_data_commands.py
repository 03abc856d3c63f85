"""`playbook demo-data` and `playbook import` from the command line."""

from __future__ import annotations

import json

from cli.main import run


def db(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/store.db"


def test_demo_data_writes_accounts_and_refuses_a_full_store(tmp_path, capsys):
    assert run(["demo-data", "--accounts", "50", "--db", db(tmp_path), "--today", "2026-06-01", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["accounts"] == 50 and out["metric_points"] > 0
    assert run(["demo-data", "--accounts", "50", "--db", db(tmp_path)]) == 2
    assert "--replace" in capsys.readouterr().err
    assert run(["demo-data", "--accounts", "20", "--db", db(tmp_path), "--replace", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["accounts"] == 20


def test_import_reports_every_bad_row_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "users.csv"
    bad.write_text("id,email,name\nu1,not-an-email,Ann\nu2,bob@example.com,Bob\n")
    assert run(["import", f"users={bad}", "--db", db(tmp_path), "--format", "json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["imported"] is False
    assert [(e["row"], e["column"]) for e in out["errors"]] == [(2, "email")]
    good = tmp_path / "users2.csv"
    good.write_text("id,email,name\nu1,ann@example.com,Ann\nu2,bob@example.com,Bob\n")
    for _ in range(2):  # a re-import is idempotent
        assert run(["import", f"users={good}", "--db", db(tmp_path), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["files"][0]["rows"] == 2 and out["files"][0]["updated"] == 2


def test_import_names_a_bad_argument(tmp_path, capsys):
    assert run(["import", "bogus=x.csv", "--db", db(tmp_path)]) == 2
    assert "KIND=FILE" in capsys.readouterr().err


def test_a_failed_import_into_a_new_store_leaves_no_store_nor_folder_behind(tmp_path, capsys):
    bad = tmp_path / "users.csv"
    bad.write_text("id,email,name\nu1,not-an-email,Ann\n")
    url = f"sqlite:///{tmp_path}/new/deeper/store.db"
    assert run(["import", f"users={bad}", "--db", url]) == 1
    assert "nothing was written" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_a_failed_import_into_an_existing_store_keeps_it(tmp_path, capsys):
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text("id,email,name\nu1,ann@example.com,Ann\n")
    bad.write_text("id,email,name\nu2,not-an-email,Bob\n")
    assert run(["import", f"users={good}", "--db", db(tmp_path)]) == 0
    assert run(["import", f"users={bad}", "--db", db(tmp_path)]) == 1
    capsys.readouterr()
    assert (tmp_path / "store.db").is_file()
    assert run(["import", f"users={good}", "--db", db(tmp_path), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["files"][0]["updated"] == 1
