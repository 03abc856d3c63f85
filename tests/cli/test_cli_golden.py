"""Golden files for `playbook check`: every tests/cli/golden/check/NAME.play
is checked; the text output must equal NAME.txt and the JSON output NAME.json.

Regenerate after an intended change of wording:
    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/cli/test_cli_golden.py
and review the diff before committing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import GOLDEN, assert_golden, run_cli

CASES = sorted(p.name.removesuffix(".play") for p in (GOLDEN / "check").glob("*.play"))


@pytest.fixture(autouse=True)
def _in_golden_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    # Relative paths in the output, so golden files do not depend on the checkout's location.
    monkeypatch.chdir(GOLDEN / "check")


@pytest.mark.parametrize("name", CASES)
def test_check_text(name: str) -> None:
    result = run_cli("check", f"{name}.play")
    assert result.stderr == ""
    assert "Traceback" not in result.stdout
    assert_golden(Path(f"{name}.txt"), result.stdout)


@pytest.mark.parametrize("name", CASES)
def test_check_json(name: str) -> None:
    result = run_cli("check", "--format", "json", f"{name}.play")
    doc = json.loads(result.stdout)  # the whole of stdout is one document
    assert_golden(Path(f"{name}.json"), result.stdout)
    errors = [d for d in doc["diagnostics"] if d["severity"] == "error"]
    assert doc["summary"]["errors"] == len(errors)
    assert result.code == (1 if errors else 0)
    for d in doc["diagnostics"]:
        r = d["range"]
        assert r["file"] == f"{name}.play"
        assert (r["end"]["line"], r["end"]["column"]) > (r["start"]["line"], r["start"]["column"])
        assert set(d) >= {"code", "severity", "summary", "detail", "range", "fix"}


def test_every_case_has_its_golden_files() -> None:
    for name in CASES:
        assert (GOLDEN / "check" / f"{name}.txt").exists(), name
        assert (GOLDEN / "check" / f"{name}.json").exists(), name
