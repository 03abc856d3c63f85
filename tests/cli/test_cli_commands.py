"""`playbook fmt`, `test`, `compile`, `summary`: outputs and exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cli import main as cli_main
from cli.common import EXIT_UNREACHABLE
from cli_helpers import GOLDEN, ROOT, run_cli

CLEAN = Path(__file__).with_name("fixtures") / "clean"
CHECK = GOLDEN / "check"


@pytest.fixture
def clean(tmp_path: Path) -> Path:
    dest = tmp_path / "clean"
    shutil.copytree(CLEAN, dest)
    return dest


# ---------------------------------------------------------------- fmt


@pytest.fixture
def formatter() -> None:
    pytest.importorskip("dsl.formatter")


@pytest.mark.usefixtures("formatter")
def test_fmt_check_lists_files_and_changes_nothing(clean: Path) -> None:
    from dsl.formatter import format_source

    before = {p: p.read_bytes() for p in clean.glob("*.play")}
    expected = sorted(str(p) for p, b in before.items() if format_source(b.decode(), str(p)).text != b.decode())
    result = run_cli("fmt", "--check", str(clean))
    assert {p: p.read_bytes() for p in clean.glob("*.play")} == before
    listed = sorted(line.removeprefix("would reformat ") for line in result.stdout.splitlines()
                    if line.startswith("would reformat "))
    assert listed == expected
    assert result.code == (1 if expected else 0)


@pytest.mark.usefixtures("formatter")
def test_fmt_rewrites_then_is_clean(clean: Path) -> None:
    messy = clean / "messy.play"
    messy.write_text("entity   thing\n  field    x    int\n")
    messy.chmod(0o640)
    assert run_cli("fmt", str(clean)).code == 0
    assert run_cli("fmt", "--check", str(clean)).code == 0
    assert messy.stat().st_mode & 0o777 == 0o640  # the rename keeps the file's mode
    assert not list(clean.glob(".*.tmp"))  # no temporary file left behind
    assert run_cli("check", str(clean)).code == 0


@pytest.mark.usefixtures("formatter")
def test_fmt_refuses_files_with_syntax_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.play"
    shutil.copy(CHECK / "syntax_errors.play", bad)
    before = bad.read_bytes()
    result = run_cli("fmt", str(tmp_path))
    assert result.code == 1
    assert bad.read_bytes() == before
    assert "error[PB002]" in result.stdout and "not formatted" in result.stdout
    doc = json.loads(run_cli("fmt", "--check", "--format", "json", str(tmp_path)).stdout)
    assert doc["changed"] == [] and doc["summary"]["errors"] >= 1


@pytest.mark.usefixtures("formatter")
def test_fmt_is_atomic_when_the_write_fails(clean: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    messy = clean / "messy.play"
    messy.write_text("entity   thing\n  field    x    int\n")
    before = messy.read_bytes()

    def broken_fsync(_fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli_main.os, "fsync", broken_fsync)
    result = run_cli("fmt", str(messy))
    assert result.code == 3 and "No space left" in result.stderr
    assert messy.read_bytes() == before  # old content intact
    assert not list(clean.glob(".*.tmp"))


def test_fmt_unknown_path_is_usage() -> None:
    assert run_cli("fmt", "/no/such/place").code == 2


# ---------------------------------------------------------------- test


def test_test_passes_on_clean_fixture() -> None:
    result = run_cli("test", str(CLEAN))
    assert result.code == 0
    assert result.stdout.count("PASS") == 2
    assert "2 tests, 2 passed, 0 failed" in result.stdout


def _failing(clean: Path) -> Path:
    f = clean / "usage.play"
    f.write_text(f.read_text().replace("expect band health == high", "expect band health == medium"))
    (clean / "extra.play").write_text('gate never_tested\n  require account.arr > 1\n')
    return clean


def test_test_failure_names_test_inputs_and_exits_1(clean: Path) -> None:
    result = run_cli("test", str(_failing(clean)))
    assert result.code == 1
    out = result.stdout
    assert "FAIL" in out and "healthy account at 85% usage enters usage_limit" in out
    assert "expect band health == medium" in out
    assert "2 tests, 1 passed, 1 failed" in out
    assert "never exercised" in out and "gate never_tested" in out


def test_test_json_junit_github(clean: Path) -> None:
    folder = str(_failing(clean))
    doc = json.loads(run_cli("test", "--format", "json", folder).stdout)
    assert doc["summary"]["tests"] == 2 and doc["summary"]["failed"] == 1
    assert {t["status"] for t in doc["tests"]} == {"passed", "failed"}
    assert any(c["name"] == "never_tested" and not c["outcomes"] for c in doc["coverage"])

    junit = run_cli("test", "--format", "junit", folder)
    assert junit.code == 1
    root = ET.fromstring(junit.stdout)
    assert root.get("tests") == "2" and root.get("failures") == "1"
    assert len(root.findall(".//failure")) == 1

    gh = run_cli("test", "--format", "github", folder).stdout.splitlines()
    assert any(line.startswith("::error file=") and "title=test failed%3A healthy" in line for line in gh)
    assert any(line.startswith("::notice ") and "never_tested" in line for line in gh)


def test_test_refuses_to_run_on_check_errors() -> None:
    result = run_cli("test", str(CHECK / "unknown_field.play"))
    assert result.code == 1
    assert "PB102" in result.stdout and "tests not run" in result.stderr
    doc = json.loads(run_cli("test", "--format", "json", str(CHECK / "unknown_field.play")).stdout)
    assert doc["tests"] == [] and doc["summary"]["errors"] >= 1


def test_test_keeps_its_format_when_the_files_have_check_errors() -> None:
    bad = str(CHECK / "unknown_field.play")
    junit = run_cli("test", "--format", "junit", bad)
    assert junit.code == 1
    root = ET.fromstring(junit.stdout)  # the whole of stdout is one JUnit document
    failures = root.findall(".//failure")
    assert failures and int(root.get("failures")) == len(failures)
    assert all("PB" in f.get("message") and "unknown_field.play:" in f.get("message") for f in failures)
    github = run_cli("test", "--format", "github", bad)
    *annotations, counts = github.stdout.splitlines()
    assert github.code == 1 and counts.startswith("1 error")
    assert annotations and all(line.startswith("::error file=") for line in annotations)


def test_a_usage_error_still_comes_out_in_the_format_asked_for() -> None:
    junit = run_cli("test", "--format", "junit", "/no/such/place")
    assert junit.code == 2
    [failure] = ET.fromstring(junit.stdout).findall(".//failure")
    assert "no such file or folder: /no/such/place" in failure.get("message")
    github = run_cli("test", "--format", "github", "/no/such/place")
    assert github.code == 2
    assert github.stdout.splitlines() == ["::error title=playbook test::no such file or folder: /no/such/place"]


def test_test_bad_today_is_usage() -> None:
    assert run_cli("test", "--today", "tomorrow", str(CLEAN)).code == 2


# ---------------------------------------------------------------- compile


def test_compile_one_plan() -> None:
    result = run_cli("compile", "usage_limit", str(CLEAN))
    assert result.code == 0
    plan = json.loads(result.stdout)
    assert plan["play"] == "usage_limit" and plan["schema_version"] == 1 and len(plan["hash"]) == 16


def test_compile_all() -> None:
    result = run_cli("compile", "--all", str(CLEAN))
    assert result.code == 0
    assert [p["play"] for p in json.loads(result.stdout)["plans"]] == ["usage_limit"]


def test_compile_unknown_name_suggests_and_exits_2() -> None:
    result = run_cli("compile", "usage_limt", str(CLEAN))
    assert result.code == 2
    assert json.loads(result.stdout)["error"]["message"] == "no play named 'usage_limt'; did you mean 'usage_limit'?"


def test_compile_broken_files_exit_1_with_diagnostics() -> None:
    result = run_cli("compile", "usage_limit", str(CHECK / "unknown_field.play"))
    assert result.code == 1
    assert json.loads(result.stdout)["summary"]["errors"] >= 1


# ---------------------------------------------------------------- summary


def test_summary_of_clean_fixture() -> None:
    result = run_cli("summary", str(CLEAN))
    assert result.code == 0, result.stdout
    out = result.stdout
    for needle in ("0 errors, 0 warnings in 2 files", "2 tests, 2 passed, 0 failed", "usage_ceiling", "usage_limit",
                   "high 80..100", "Play usage_limit", "day 14", "low_touch"):
        assert needle in out, needle


def test_summary_json_matches_plans() -> None:
    doc = json.loads(run_cli("summary", "--format", "json", str(CLEAN)).stdout)
    plan = json.loads(run_cli("compile", "usage_limit", str(CLEAN)).stdout)
    assert doc["plays"][0]["plan_hash"] == plan["hash"]
    assert doc["triggers"][0]["starts"] == ["usage_limit"]
    assert doc["tests"]["passed"] == 2


def test_summary_exits_1_on_errors() -> None:
    result = run_cli("summary", str(CHECK / "unknown_field.play"))
    assert result.code == 1 and "not run" in result.stdout


@pytest.mark.skipif(not (ROOT / "playbooks").is_dir(), reason="no shipped playbooks")
def test_shipped_playbooks_check_and_test_clean() -> None:
    result = run_cli("summary", str(ROOT / "playbooks"))
    assert result.code == 0, result.stdout


# ---------------------------------------------------------------- install


def test_a_missing_dependency_is_an_environment_fault_naming_the_package_not_a_bug() -> None:
    # `holidays` blocked as if an install older than pyproject.toml lacked it.
    code = ("import sys; sys.modules['holidays'] = None; sys.argv = ['playbook', 'check', 'playbooks']; "
            "from cli.main import main; main()")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PLAYBOOK_DEBUG", None)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == EXIT_UNREACHABLE, proc.stderr
    assert proc.stderr.startswith("playbook check: error: the package that provides 'holidays' is not installed")
    assert "bug" not in proc.stderr and "Traceback" not in proc.stderr
