"""Progress of long commands: stderr only, one line per phase when not on a terminal, nothing for quick work."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from cli import progress as progress_module
from cli.main import run
from cli.progress import Progress

ROOT = Path(__file__).resolve().parents[2]
RULES = str(ROOT / "playbooks")
DAY = "2026-06-01"


def test_quick_work_shows_nothing() -> None:
    out = io.StringIO()
    with Progress("playbook x", stream=out) as p:
        p.update("reading the rules")
        p.update("evaluating", done=5, total=10)
    assert out.getvalue() == ""


def test_work_that_lasts_shows_one_line_per_phase_when_not_a_terminal(monkeypatch) -> None:
    monkeypatch.setattr(progress_module, "DELAY", 0.05)
    out = io.StringIO()
    with Progress("playbook x", stream=out) as p:
        p.update("reading the rules")
        time.sleep(0.3)  # the first phase outlasts the delay
        p.update("writing", done=0, total=20_000)
        p.update("writing", done=10_000, total=20_000)
        p.update("analyze", done=0, total=1)
    assert out.getvalue().splitlines() == ["playbook x: reading the rules ...", "playbook x: writing (20,000) ...",
                                           "playbook x: analyze ..."]


def test_phases_go_to_stderr_and_stdout_stays_one_document(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(progress_module, "DELAY", 0.0)
    url = f"sqlite:///{tmp_path}/s.db"
    assert run(["demo-data", "--accounts", "20", "--today", DAY, "--db", url, "--rules", RULES,
                "--format", "json"]) == 0
    demo = capsys.readouterr()
    assert json.loads(demo.out)["accounts"] == 20
    assert "playbook demo-data: accounts (20) ..." in demo.err.splitlines()
    assert run(["scorecard", "--rules", RULES, "--db", url, "--today", DAY, "--format", "json"]) == 0
    scorecard = capsys.readouterr()
    assert len(json.loads(scorecard.out)["rows"]) == 20
    assert scorecard.err.splitlines() == ["playbook scorecard: reading the rules ...",
                                          "playbook scorecard: evaluating the rules over the accounts ..."]
    users = tmp_path / "users.csv"
    users.write_text("id,email,name\nu1,ann@example.com,Ann\n")
    assert run(["import", f"users={users}", "--db", url, "--rules", RULES, "--format", "json"]) == 0
    imported = capsys.readouterr()
    assert json.loads(imported.out)["imported"] is True
    assert imported.err.splitlines() == [f"playbook import: importing {users} ..."]


@pytest.mark.parametrize("command", [["plan"], ["sweep", "--dry-run"]])
def test_plan_and_sweep_dry_run_report_their_phase(command, tmp_path, monkeypatch, capsys) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    assert run(["demo-data", "--accounts", "20", "--today", DAY, "--db", url, "--rules", RULES]) == 0
    capsys.readouterr()
    monkeypatch.setattr(progress_module, "DELAY", 0.0)
    assert run([*command, "--rules", RULES, "--db", url, "--today", DAY, "--format", "json"]) == 0
    captured = capsys.readouterr()
    json.loads(captured.out)
    assert any(line.endswith(" ...") and "playbook " in line for line in captured.err.splitlines())
