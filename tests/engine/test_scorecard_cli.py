"""`playbook scorecard` as a user sees it: CSV safe for spreadsheets, a table readable at 80 columns."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
import sqlalchemy as sa

from cli.main import run
from dsl.project import load
from engine.store import Store

ROOT = Path(__file__).resolve().parents[2]
RULES = str(ROOT / "playbooks")
DAY = "2026-06-01"
FORMULA = '=HYPERLINK("http://evil.example","click")'


def demo_store(folder: Path) -> str:
    db = f"sqlite:///{folder}/s.db"
    assert run(["demo-data", "--accounts", "30", "--today", DAY, "--db", db, "--rules", RULES]) == 0
    return db


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> str:
    return demo_store(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> str:
    """Demo accounts, plus copies of the first one under ids a spreadsheet would run."""
    db = demo_store(tmp_path_factory.mktemp("formulas"))
    with Store.open(db, catalog=load([RULES]).catalog) as store, store.begin() as conn:
        accounts = store.table("account")
        first = dict(conn.execute(sa.select(accounts).order_by(accounts.c.id).limit(1)).mappings().one())
        for bad in (FORMULA, "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"):
            conn.execute(accounts.insert().values({**first, "id": bad}))
    return db


def test_csv_cells_that_start_like_a_formula_are_neutralised(url, capsys) -> None:
    assert run(["scorecard", "--rules", RULES, "--db", url, "--today", DAY, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    ids = {r["account_id"] for r in rows}
    assert {"'" + FORMULA, "'+1+1", "'-2+3", "'@SUM(A1)", "'\tx", "'\rx"} <= ids
    assert not any(i.startswith(("=", "+", "-", "@", "\t", "\r")) for i in ids)
    assert any(r["health_score"] and r["health_score"][0].isdigit() for r in rows)  # numbers untouched


def test_csv_quotes_only_cells_that_need_it_so_shell_tools_read_ids_as_they_are(demo, capsys) -> None:
    assert run(["scorecard", "--rules", RULES, "--db", demo, "--today", DAY, "--format", "csv"]) == 0
    header, first = capsys.readouterr().out.splitlines()[:2]
    assert header.startswith("account_id,segment,")
    assert first.split(",")[0].startswith("acc-")  # what `cut -d, -f1` gives `playbook why`


def scorecard_at(width: int, url: str, monkeypatch, capsys) -> list[str]:
    monkeypatch.setenv("COLUMNS", str(width))
    assert run(["scorecard", "--rules", RULES, "--db", url, "--today", DAY]) == 0
    return capsys.readouterr().out.splitlines()


def test_the_table_fits_80_columns_with_every_id_whole(demo, monkeypatch, capsys) -> None:
    lines = scorecard_at(80, demo, monkeypatch, capsys)
    assert max(len(line) for line in lines) <= 80
    ids = [line.split("│")[1].strip() for line in lines if line.startswith("│ acc-")]
    assert len(ids) == 30 and all(len(i) == len("acc-0000001") for i in ids)
    assert lines[-1] == "not shown at 80 columns: segment, triggers (a wider terminal or --format csv)"


def test_a_wide_terminal_gets_every_column(demo, monkeypatch, capsys) -> None:
    lines = scorecard_at(200, demo, monkeypatch, capsys)
    header = next(line for line in lines if "account" in line)
    assert [h.strip() for h in header.strip("┃").split("┃")] == [
        "account", "segment", "health", "activation", "readiness", "triggers", "motion", "est. ACV"]
    assert not any(line.startswith("not shown") for line in lines)
