"""`playbook report ...` from the command line: tables, JSON, HTML, golden files, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import GOLDEN, assert_golden, run_cli
from report_data import ENTITY, SEEDS_STAGES, TRIGGER_RULES, seed_arr_history, seed_book, seed_funnel, seed_holdouts, CATALOG
from dsl.project import load_text
from engine.store import Store

STAGES = ",".join(SEEDS_STAGES)


@pytest.fixture(scope="module")
def funnel_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('funnel')}/store.db"
    with Store.open(url) as store:
        seed_funnel(store)
    return url


@pytest.fixture(scope="module")
def book(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("book")
    (folder / "rules").mkdir()
    (folder / "rules" / "account.play").write_text(ENTITY)
    url = f"sqlite:///{folder}/store.db"
    with Store.open(url, catalog=CATALOG) as store:
        seed_book(store)
    return url, str(folder / "rules")


def test_the_seeds_funnel_as_a_table(funnel_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    r = run_cli("report", "funnel", "--db", funnel_db, "--stages", STAGES)
    assert r.code == 0, r.stderr
    assert_golden(GOLDEN / "report" / "funnel_seeds.txt", r.stdout)


def test_the_seeds_funnel_as_json(funnel_db: str) -> None:
    r = run_cli("report", "funnel", "--db", funnel_db, "--stages", STAGES, "--format", "json")
    assert r.code == 0, r.stderr
    assert_golden(GOLDEN / "report" / "funnel_seeds.json", r.stdout)
    doc = json.loads(r.stdout)
    assert [s["step_conversion_percent"] for s in doc["stages"]][1:] == ["60%", "67%", "63%", "60%", "50%"]
    assert doc["overall_conversion_percent"] == "7.5%"


def test_every_report_as_tables(book: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    url, rules = book
    r = run_cli("report", "all", "--db", url, "--rules", rules, "--today", "2026-09-15", "--cost", "9000")
    assert r.code == 0, r.stderr
    assert_golden(GOLDEN / "report" / "all_book.txt", r.stdout)


def test_every_report_as_one_json_document(book: tuple[str, str]) -> None:
    url, rules = book
    r = run_cli("report", "all", "--db", url, "--rules", rules, "--today", "2026-09-15", "--format", "json")
    assert r.code == 0, r.stderr
    doc = json.loads(r.stdout)["reports"]
    assert sorted(doc) == ["funnel", "plays", "revenue", "sla", "triggers"]
    assert doc["revenue"]["overall"]["nrr_percent"] == "104.5%"
    assert doc["triggers"]["rows"][2]["band"] == "too permissive"


def test_html_goes_to_the_file_named(book: tuple[str, str], tmp_path: Path) -> None:
    url, _ = book
    out = tmp_path / "plays.html"
    r = run_cli("report", "plays", "--db", url, "--format", "html", "--out", str(out))
    assert (r.code, r.stdout) == (0, "")
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and 'data-field="plays.plays.0.attempts"' in page
    assert "http://" not in page and "https://" not in page  # nothing to fetch


@pytest.mark.parametrize(("args", "message"), [
    (["funnel", "--since", "2026-02-30"], "--since wants a date"),
    (["funnel", "--since", "2026-03-01", "--until", "2026-02-01"], "must come after --since"),
    (["funnel", "--stages", "A,,B"], "--stages wants stage names"),
    (["funnel", "--stages", "A,B,A"], "a stage is listed twice: A"),
    (["triggers", "--eligible", "0"], "--eligible wants a number of accounts above 0"),
])
def test_bad_options_are_bad_usage(funnel_db: str, args: list[str], message: str) -> None:
    r = run_cli("report", *args, "--db", funnel_db)
    assert r.code == 2 and message in r.stderr, r.stderr


def test_a_missing_store_is_bad_usage_with_json_when_asked(tmp_path: Path) -> None:
    r = run_cli("report", "plays", "--db", f"sqlite:///{tmp_path}/none.db", "--format", "json")
    assert r.code == 2
    assert json.loads(r.stdout)["error"]["kind"] == "usage"
    assert not (tmp_path / "none.db").exists()


@pytest.fixture(scope="module")
def arr_history(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("arr_history")
    (folder / "rules").mkdir()
    (folder / "rules" / "account.play").write_text(ENTITY)
    url = f"sqlite:///{folder}/store.db"
    with Store.open(url, catalog=CATALOG) as store:
        seed_arr_history(store)
    return url, str(folder / "rules")


def test_revenue_of_a_past_quarter_from_the_field_history(arr_history: tuple[str, str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    url, rules = arr_history
    args = ("report", "revenue", "--db", url, "--rules", rules, "--today", "2026-09-15", "--since", "2026-04-01",
            "--until", "2026-07-01", "--cost", "3000")
    r = run_cli(*args)
    assert r.code == 0, r.stderr
    assert_golden(GOLDEN / "report" / "revenue_history.txt", r.stdout)
    r = run_cli(*args, "--format", "json")
    assert r.code == 0, r.stderr
    assert_golden(GOLDEN / "report" / "revenue_history.json", r.stdout)
    assert json.loads(r.stdout)["overall"]["nrr_percent"] == "75.5%"


@pytest.fixture(scope="module")
def trigger_history(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("trigger_history")
    (folder / "rules").mkdir()
    (folder / "rules" / "rules.play").write_text(TRIGGER_RULES)
    url = f"sqlite:///{folder}/store.db"
    with Store.open(url, catalog=load_text(TRIGGER_RULES, "rules.play").catalog) as store:
        seed_arr_history(store)
    return url, str(folder / "rules")


def test_trigger_quarters_without_sweeps_come_from_the_field_history(trigger_history: tuple[str, str],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    url, rules = trigger_history
    args = ("report", "triggers", "--db", url, "--rules", rules, "--today", "2026-09-15", "--history")
    r = run_cli(*args)
    assert r.code == 0, r.stderr
    assert_golden(GOLDEN / "report" / "triggers_history.txt", r.stdout)
    r = run_cli(*args, "--format", "json")
    assert r.code == 0, r.stderr
    assert_golden(GOLDEN / "report" / "triggers_history.json", r.stdout)
    doc = json.loads(r.stdout)
    assert {row["source"] for row in doc["rows"]} == {"history"} and all(row["from_history"] for row in doc["rows"])
    r = run_cli(*args, "--format", "html")
    assert 'data-field="triggers.rows.0.source">history</td>' in r.stdout and 'data-source="history"' in r.stdout


def test_trigger_quarters_from_the_field_history_only_with_history(trigger_history: tuple[str, str]) -> None:
    url, rules = trigger_history
    r = run_cli("report", "triggers", "--db", url, "--rules", rules, "--today", "2026-09-15", "--format", "json")
    assert r.code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["rows"] == []
    assert doc["notes"] == ["quarters before the first sweep are not shown: --history evaluates them from the "
                            "field history"]


def test_a_revenue_field_the_rules_lack_is_named(funnel_db: str, tmp_path: Path) -> None:
    (tmp_path / "a.play").write_text("entity account\n  field segment text?\n")
    r = run_cli("report", "revenue", "--db", funnel_db, "--rules", str(tmp_path))
    assert r.code == 2 and "no field 'arr' for the ARR base" in r.stderr, r.stderr


def test_sla_report_counts_the_deals_entering_each_stage_with_an_sla(funnel_db: str) -> None:
    r = run_cli("report", "sla", "--db", funnel_db, "--format", "json")
    assert r.code == 0, r.stderr
    doc = json.loads(r.stdout)
    # The seeds' stage names share Qualified with the built-in pipeline: 600 deals, no owner, no breach.
    assert [(x["stage"], x["owner"], x["entered"], x["breaches"]) for x in doc["rows"]] == [
        ("Qualified", None, 600, 0)]


@pytest.fixture(scope="module")
def holdouts_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('holdouts')}/store.db"
    with Store.open(url) as store:
        seed_holdouts(store)
    return url


def test_holdouts_as_a_table(holdouts_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    r = run_cli("report", "holdouts", "--db", holdouts_db)
    assert r.code == 0, r.stderr
    assert_golden(GOLDEN / "report" / "holdouts.txt", r.stdout)


def test_holdouts_as_json(holdouts_db: str) -> None:
    r = run_cli("report", "holdouts", "--db", holdouts_db, "--format", "json")
    assert r.code == 0, r.stderr
    assert_golden(GOLDEN / "report" / "holdouts.json", r.stdout)
    doc = json.loads(r.stdout)
    assert [p["play"] for p in doc["plays"]] == ["nudge", "upsell"] and doc["min_group"] == 30


def test_holdouts_in_html_name_their_json_fields(holdouts_db: str) -> None:
    r = run_cli("report", "holdouts", "--db", holdouts_db, "--format", "html")
    assert r.code == 0, r.stderr
    assert '<section id="holdouts">' in r.stdout
    assert 'data-field="holdouts.plays.1.treated.accounts">41<' in r.stdout
    assert "nudge: not enough data" in r.stdout


def test_holdouts_on_a_store_without_any(funnel_db: str) -> None:
    r = run_cli("report", "holdouts", "--db", funnel_db)
    assert r.code == 0, r.stderr
    assert "No play has held an account out yet" in r.stdout
