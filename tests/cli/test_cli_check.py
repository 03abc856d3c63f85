"""`playbook check`: exit codes, formats, usage errors, the guard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli import rules as cli_rules
from cli import render
from cli_helpers import GOLDEN, run_cli, run_subprocess

CHECK = GOLDEN / "check"
CLEAN = Path(__file__).with_name("fixtures") / "clean"


def test_clean_folder_exits_0() -> None:
    result = run_cli("check", str(CLEAN))
    assert result.code == 0, result.stdout
    assert result.stdout.strip().endswith("0 errors, 0 warnings in 2 files")


def test_errors_exit_1_and_are_sorted() -> None:
    result = run_cli("check", "--format", "json", str(CHECK / "syntax_errors.play"), str(CHECK / "crlf.play"))
    assert result.code == 1
    doc = json.loads(result.stdout)
    # Syntax errors (PB0xx) first: a finding that may follow from one never comes before it.
    keys = [(int(d["code"][2:]) >= 100, d["range"]["file"], d["range"]["start"]["line"], d["range"]["start"]["column"])
            for d in doc["diagnostics"]]
    assert keys == sorted(keys)
    assert doc["summary"] == {"errors": len(keys), "warnings": 0, "files": 2}


@pytest.mark.parametrize(
    "args",
    [
        ["check", "/no/such/folder"],
        ["check", "--bogus"],
        ["check", "--format", "xml"],
        ["check", "--strict=maybe"],
        ["nosuchcommand"],
    ],
)
def test_bad_usage_exits_2_with_a_message_on_stderr(args: list[str]) -> None:
    result = run_cli(*args)
    assert result.code == 2
    assert result.stdout == ""
    assert "error" in result.stderr and "Traceback" not in result.stderr


def test_no_play_files_is_bad_usage(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    result = run_cli("check", str(tmp_path))
    assert result.code == 2
    assert "no .play files" in result.stderr


def test_default_path_is_playbooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_cli("check").code == 2  # no playbooks/ here
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "a.play").write_text((CHECK / "clean.play").read_text())
    result = run_cli("check")
    assert result.code == 0, result.stdout


@pytest.mark.parametrize("args", [["check", "/no/such/folder"], ["check", "--bogus"], ["check", "--format=json", "--strict=x"]])
def test_usage_error_in_json_mode_is_still_one_json_document(args: list[str]) -> None:
    result = run_cli(*args, "--format", "json") if "--format=json" not in args else run_cli(*args)
    assert result.code == 2
    doc = json.loads(result.stdout)
    assert doc["diagnostics"] == [] and doc["error"]["kind"] == "usage" and doc["error"]["exit_code"] == 2


def test_json_is_alone_on_stdout() -> None:
    result = run_cli("check", "--format", "json", str(CHECK))
    doc = json.loads(result.stdout)
    assert result.code == 1
    assert len(doc["diagnostics"]) == doc["summary"]["errors"] + doc["summary"]["warnings"]
    assert doc["summary"]["files"] == len(list(CHECK.glob("*.play")))


def test_github_annotations() -> None:
    result = run_cli("check", "--format", "github", str(CHECK / "unknown_field.play"))
    assert result.code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"::error file={CHECK / 'unknown_field.play'},line=11,col=16,endLine=11,endColumn=27,title=PB102::"
        "unknown field 'helth_score'%0Aaccount has no field 'helth_score'. Did you mean 'health_score'?"
    )
    assert lines[-1] == "1 error, 0 warnings in 1 file"


def test_github_escapes_properties_and_data() -> None:
    from dsl.diagnostics import Diagnostic

    d = Diagnostic.model_validate({
        "code": "PB1", "severity": "warning", "summary": "50% of a\nb", "detail": None,
        "range": {"file": "a,b:c.play", "start": {"line": 1, "column": 2}, "end": {"line": 1, "column": 3}},
    })
    assert render.github_annotation(d) == (
        "::warning file=a%2Cb%3Ac.play,line=1,col=2,endLine=1,endColumn=3,title=PB1::50%25 of a%0Ab"
    )


def _warning_only(tmp_path: Path) -> Path:
    text = (CHECK / "clean.play").read_text().replace("  then start p\n", "  then start p\n\nplay unused\n  ungated\n  day 1 task account.csm \"x\"\n")
    f = tmp_path / "w.play"
    f.write_text(text)
    return f


def test_warnings_exit_0_unless_strict(tmp_path: Path) -> None:
    f = _warning_only(tmp_path)
    plain = run_cli("check", "--format", "json", str(f))
    doc = json.loads(plain.stdout)
    assert plain.code == 0 and doc["summary"]["warnings"] >= 1 and doc["summary"]["errors"] == 0
    strict = run_cli("check", "--strict", "--format", "json", str(f))
    sdoc = json.loads(strict.stdout)
    assert strict.code == 1
    assert sdoc["summary"]["warnings"] == 0 and sdoc["summary"]["errors"] == doc["summary"]["warnings"]


def test_internal_errors_are_one_line_exit_3(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: object) -> None:
        raise RuntimeError("simulated bug\nsecond line")

    monkeypatch.setattr(cli_rules, "check", boom)
    monkeypatch.delenv("PLAYBOOK_DEBUG", raising=False)
    result = run_cli("check", str(CLEAN))
    assert result.code == 3
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "internal error: RuntimeError: simulated bug" in result.stderr
    jresult = run_cli("check", "--format", "json", str(CLEAN))
    assert json.loads(jresult.stdout)["error"]["kind"] == "internal"


def test_text_has_no_colour_when_not_a_tty() -> None:
    result = run_cli("check", str(CHECK / "unknown_field.play"))
    assert "\x1b[" not in result.stdout


def test_snippet_tabs_wide_characters_and_long_lines() -> None:
    assert render.snippet("\tab", 2, 3) == ("    ab", "    ^")
    assert render.snippet("x\ty", 3, 4) == ("x   y", "    ^")
    assert render.snippet("中文 x", 4, 5) == ("中文 x", "     ^")
    assert render.snippet("a\x00b", 2, 3) == ("a\u2400b", " ^")
    shown, caret = render.snippet("x" * 100_000 + " bad", 100_002, 100_005)
    assert len(shown) < 200 and shown[caret.index("^"):].startswith("bad")
    assert render.snippet("", 1, 1) == ("", "^")


def test_source_line_splits_on_newline_only() -> None:
    src = "a\x0cb\r\nc\u2028d\n"
    assert render.source_line(src, 1) == "a\x0cb"
    assert render.source_line(src, 2) == "c\u2028d"
    assert render.source_line(src, 3) is None  # past the last line: nothing to show
    assert render.source_line("a\n\nb", 2) == ""


def test_real_console_script_on_bad_files() -> None:
    result = run_subprocess("check", str(CHECK))
    assert result.code == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout.rstrip().splitlines()[-1].endswith(f"in {len(list(CHECK.glob('*.play')))} files")
