"""dsl.formatter: canonical, idempotent, meaning-preserving, comments kept.

Golden files: tests/dsl/golden/fmt/identity/*.play format to themselves;
tests/dsl/golden/fmt/cases/NAME.in.play formats to NAME.out.play.
Regenerate the .out files with PLAYBOOK_UPDATE_GOLDEN=1 (then review the diff).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsl import nodes as n
from dsl.formatter import FormatOptions, format_source, normalize_newlines
from dsl.parser import parse
from test_printer import expressions  # pytest puts tests/dsl on sys.path

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden" / "fmt"
IDENTITY = sorted((GOLDEN / "identity").glob("*.play"))
CASES = sorted((GOLDEN / "cases").glob("*.in.play"))
UPDATE = os.environ.get("PLAYBOOK_UPDATE_GOLDEN") == "1"


def read(path: Path) -> str:
    return path.read_bytes().decode("utf-8")  # exact: keeps BOM and CRLF


def fmt(text: str, options: FormatOptions | None = None) -> str:
    result = format_source(text, "<test>", options)
    assert result.diagnostics == [] and result.text is not None, result.diagnostics
    return result.text


def corpus() -> list[Path]:
    """Every .play we can find: fixtures, golden inputs, and the real playbooks (read at run time)."""
    paths = sorted((ROOT / "tests" / "dsl" / "fixtures").glob("*.play"))
    paths += IDENTITY + CASES + sorted((ROOT / "playbooks").rglob("*.play"))
    return [p for p in paths if not parse(read(p)).diagnostics]


CORPUS = corpus()


def _id(p: Path) -> str:
    return str(p.relative_to(ROOT))


# ---------------------------------------------------------------- golden


@pytest.mark.parametrize("path", IDENTITY, ids=_id)
def test_identity_corpus_formats_to_itself(path: Path) -> None:
    text = read(path)
    assert fmt(text) == text


@pytest.mark.parametrize("path", CASES, ids=_id)
def test_case_formats_to_expected(path: Path) -> None:
    expected_path = path.with_name(path.name.replace(".in.play", ".out.play"))
    got = fmt(read(path))
    if UPDATE:
        expected_path.write_bytes(got.encode("utf-8"))
    assert got == read(expected_path)
    assert fmt(got) == got  # expected outputs are themselves canonical


def test_golden_folders_are_not_empty() -> None:
    assert len(IDENTITY) >= 3 and len(CASES) >= 5


# ---------------------------------------------------------------- guarantees over every file


@pytest.mark.parametrize("path", CORPUS, ids=_id)
def test_idempotent(path: Path) -> None:
    once = fmt(read(path))
    assert fmt(once) == once


@pytest.mark.parametrize("path", CORPUS, ids=_id)
def test_meaning_preserved(path: Path) -> None:
    text = read(path)
    assert parse(fmt(text)).module == parse(normalize_newlines(text)).module


@pytest.mark.parametrize("path", CORPUS, ids=_id)
def test_every_comment_kept(path: Path) -> None:
    text = read(path)

    def comments(t: str) -> list[str]:
        return sorted(c.text.rstrip() for c in parse(t).module.comments)

    assert comments(fmt(text)) == comments(normalize_newlines(text))


@pytest.mark.parametrize("path", CORPUS, ids=_id)
@pytest.mark.parametrize("options", [FormatOptions(align=False), FormatOptions(indent=4), FormatOptions(width=40)],
                         ids=["no-align", "indent-4", "width-40"])
def test_options_keep_the_guarantees(path: Path, options: FormatOptions) -> None:
    text = read(path)
    once = fmt(text, options)
    assert fmt(once, options) == once
    assert parse(once).module == parse(normalize_newlines(text)).module


def test_output_is_lf_without_trailing_whitespace_outside_templates() -> None:
    for path in CORPUS:
        out = fmt(read(path))
        assert "\r" not in out and not out.startswith("\ufeff") and out.endswith("\n")
        assert "\n\n\n" not in out


# ---------------------------------------------------------------- behaviour


def test_syntax_errors_are_not_formatted() -> None:
    result = format_source("trigger t\n  when account.x >\n  then start p\n", "bad.play")
    assert result.text is None
    assert result.diagnostics and result.diagnostics[0].range.file == "bad.play"


def test_empty_and_comment_only_files() -> None:
    assert fmt("") == ""
    assert fmt("\n\n") == ""
    assert fmt("# just a note\n\n\n# another\n") == "# just a note\n\n# another\n"


def test_comment_with_and_or_words_survives() -> None:
    # Regression: the grammar read ` and ` inside a comment as a continuation.
    text = "entity account\n  # health and usage, this or that\n  field x int  # a or b\n"
    assert fmt(text) == text


def test_trigger_when_chain_is_one_condition_per_line() -> None:
    out = fmt("trigger t\n  when account.a > 1 and account.b > 2\n  then start p\n")
    assert out == "trigger t\n  when account.a > 1\n   and account.b > 2\n  then start p\n"


def test_no_alignment_option() -> None:
    text = "route r\n  when account.arr < 10 -> low\n  otherwise -> high\n"
    assert fmt(text, FormatOptions(align=False)) == text
    aligned = "otherwise".ljust(len("when account.arr < 10"))
    assert fmt(text) == f"route r\n  when account.arr < 10 -> low\n  {aligned} -> high\n"


def test_indent_option() -> None:
    assert fmt("entity account\n  field x int\n", FormatOptions(indent=4)) == "entity account\n    field x int\n"


def test_reenter_keeps_its_unit_or_falls_back_to_days() -> None:
    assert "reenter after 2 weeks" in fmt("play p\n  reenter after 2 weeks\n  day 1 stage \"x\"\n")
    assert "reenter after 1 month" in fmt("play p\n  reenter after 1 months\n  day 1 stage \"x\"\n")


def test_holiday_labels_are_kept() -> None:
    text = 'calendar us\n  2026-12-25 "Christmas #1"  # note\n  2026-01-01\n'
    assert fmt(text) == text


# ---------------------------------------------------------------- properties


@settings(max_examples=200, deadline=None)
@given(expressions, st.booleans(), st.sampled_from(["", "  # why", "  # this and that"]))
def test_any_condition_formats_stably(expr: n.Expr, as_trigger: bool, comment: str) -> None:
    from dsl.printer import format_expr

    if as_trigger:
        text = f"trigger t\n  when {format_expr(expr)}{comment}\n  then start p\n"
    else:
        text = f"play p\n  exit when {format_expr(expr)}{comment}\n  day 1 stage \"x\"\n"
    once = fmt(text)
    assert fmt(once) == once
    assert parse(once).module == parse(text).module
    assert comment.strip() in once
