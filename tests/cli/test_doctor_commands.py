"""`playbook doctor` from the command line: the JSON document (golden), exit 1 on a fail, 0
without one, usage errors (2) and an unreachable store (4)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from cli_helpers import GOLDEN, assert_golden, run_cli
from doctor_data import RULES, catalog, seed
from engine.store import Store


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("doctor")
    (folder / "rules").mkdir()
    (folder / "rules" / "doctor.play").write_text(RULES)
    url = f"sqlite:///{folder}/store.db"
    with Store.open(url, catalog=catalog()) as store:
        seed(store)
    return url, str(folder / "rules")


def test_doctor_json_is_the_golden_document_and_exits_1_on_a_fail(seeded: tuple[str, str]) -> None:
    url, rules = seeded
    r = run_cli("doctor", "--db", url, "--rules", rules, "--today", "2026-06-01", "--format", "json")
    assert r.code == 1, r.stderr
    assert json.loads(r.stdout)["report"] == "doctor"  # not the rules' diagnostics (also exit 1)
    assert_golden(GOLDEN / "doctor" / "seeded.json", r.stdout)
    doc = json.loads(r.stdout)
    assert doc["summary"]["fail"] > 0
    assert {f["check"] for f in doc["findings"]} == {c["name"] for c in doc["checks"]}


def test_doctor_exits_0_when_the_checks_run_have_no_fail(seeded: tuple[str, str]) -> None:
    url, rules = seeded
    r = run_cli("doctor", "--db", url, "--rules", rules, "--today", "2026-06-01", "--check", "qualified_stalling",
                "--check", "expansion_cac", "--cost", "4800", "--format", "json")
    assert r.code == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    cac = [f for f in doc["findings"] if f["check"] == "expansion_cac"]
    assert [f["status"] for f in cac] == ["pass"]


def test_doctor_table_names_the_fail_and_its_advice(seeded: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    url, rules = seeded
    r = run_cli("doctor", "--db", url, "--rules", rules, "--today", "2026-06-01", "--check", "gates")
    assert r.code == 1
    assert "FAIL" in r.stdout and "criteria too strict" in r.stdout
    assert "ready (segment == smb)" in r.stdout


def test_an_unknown_check_is_bad_usage(seeded: tuple[str, str]) -> None:
    url, rules = seeded
    r = run_cli("doctor", "--db", url, "--rules", rules, "--check", "gatez")
    assert r.code == 2 and "gatez" in r.stderr


def test_a_missing_store_is_bad_usage(tmp_path: Path, seeded: tuple[str, str]) -> None:
    r = run_cli("doctor", "--db", f"sqlite:///{tmp_path}/none.db", "--rules", seeded[1])
    assert r.code == 2, r.stderr


def test_an_unreachable_store_is_exit_4(seeded: tuple[str, str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    r = run_cli("doctor", "--db", f"postgresql+psycopg://u@127.0.0.1:{port}/x", "--rules", seeded[1])
    assert r.code == 4, r.stderr


def test_the_health_threshold_setting_is_used_and_named(seeded: tuple[str, str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    url, rules = seeded
    monkeypatch.setenv("PLAYBOOK_DOCTOR_HEALTH_THRESHOLD", "60")
    r = run_cli("doctor", "--db", url, "--rules", rules, "--today", "2026-06-01", "--check", "whitespace",
                "--format", "json")
    [f] = json.loads(r.stdout)["findings"]
    assert (f["details"]["healthy"], f["details"]["health_threshold_from"]) == (
        30, "setting PLAYBOOK_DOCTOR_HEALTH_THRESHOLD")
    monkeypatch.setenv("PLAYBOOK_DOCTOR_HEALTH_THRESHOLD", "high")
    r = run_cli("doctor", "--db", url, "--rules", rules, "--check", "whitespace")
    assert r.code == 2 and "PLAYBOOK_DOCTOR_HEALTH_THRESHOLD or [doctor]" in r.stderr, r.stderr
