"""One rules loader and one spelling of the rules and store options on every command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import run_cli

BROKEN = 'entity account\n  field arr money?\n\ntrigger t "T"\n  when account.nope > 3\n  then start p\n'

# Every command that reads .play files, with what else it needs to get that far.
RULE_COMMANDS: list[tuple[str, ...]] = [
    ("check",), ("test",), ("summary",), ("compile", "--all"), ("fmt", "--check"),
    ("scorecard",), ("why", "acc-1"), ("plan",), ("sweep", "--dry-run"), ("demo-data",),
    ("import", "accounts=accounts.csv"), ("simulate",), ("demo",),
]
# Commands that write or need the rules to work: they refuse rules with errors.
REFUSING = [c for c in RULE_COMMANDS if c[0] not in ("check", "test", "summary", "compile", "fmt")]


@pytest.fixture(autouse=True)
def in_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "accounts.csv").write_text("id\nacc-1\n")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.play").write_text(BROKEN)


@pytest.mark.parametrize("command", RULE_COMMANDS, ids=lambda c: c[0])
def test_every_command_takes_rules_and_names_a_missing_path_alike(command: tuple[str, ...]) -> None:
    r = run_cli(*command, "--rules", "no/such/dir")
    assert r.code == 2, r.stderr
    assert "error: no such file or folder: no/such/dir" in r.stderr


@pytest.mark.parametrize("command", REFUSING, ids=lambda c: c[0])
def test_every_command_refuses_rules_with_errors_alike(command: tuple[str, ...], tmp_path: Path) -> None:
    r = run_cli(*command, "--rules", "broken", "--db", f"sqlite:///{tmp_path / 's.db'}")
    assert r.code == 1, r.stderr
    assert "x.play:5:16: error[PB102]: unknown field 'nope'" in r.stderr
    assert "playbook: the rules have errors (2 errors, 0 warnings in 1 file); run `playbook check`" in r.stderr


@pytest.mark.parametrize("command", [("plan",), ("sweep", "--dry-run"), ("demo-data",)], ids=lambda c: c[0])
def test_rules_errors_are_one_json_document_in_json_mode(command: tuple[str, ...], tmp_path: Path) -> None:
    r = run_cli(*command, "--rules", "broken", "--db", f"sqlite:///{tmp_path / 's.db'}", "--format", "json")
    assert r.code == 1
    assert json.loads(r.stdout)["summary"]["errors"] == 2


@pytest.mark.parametrize("command", ["scorecard", "why", "plan", "sweep", "demo-data", "import", "simulate", "demo",
                                     "worker", "dev"])
def test_every_store_command_spells_the_store_option_db(command: str) -> None:
    r = run_cli(command, "--help")
    assert r.code == 0
    assert "--db" in r.stdout and "--rules" in r.stdout
