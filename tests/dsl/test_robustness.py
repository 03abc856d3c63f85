"""No input makes the toolchain raise: parse, load, check, format, test.

The issue's quality bar: empty, binary, NUL bytes, a 1 MB line, 10,000
nested parentheses, a BOM, CRLF, tabs, any unicode — and near-misses of
real files, which reach much deeper into the parser and checker than
random text does. Each property runs the whole pipeline a command runs.
A handful of subprocess runs of the real `playbook check` close the loop:
no "Traceback", exit code 0 or 1.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dsl.checker import check
from dsl.parser import parse
from dsl.project import Project, load, load_text

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = (Path(__file__).with_name("fixtures") / "everything.play").read_text(encoding="utf-8")
HAVE_FORMATTER = importlib.util.find_spec("dsl.formatter") is not None
HAVE_TESTING = importlib.util.find_spec("dsl.testing") is not None

# Enough examples to find real bugs, few enough for a suite that runs often;
# CI can raise them with HYPOTHESIS_PROFILE=thorough.
settings.register_profile(
    "default", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

TODAY = dt.date(2026, 6, 1)


def pipeline(project: Project, text: str | None = None, file: str = "<input>") -> None:
    """Everything a command does with a project; any exception fails the property."""
    check(project)
    if HAVE_TESTING:
        from dsl.testing import render_text, run_tests

        render_text(run_tests(project.catalog, today=TODAY))
    if HAVE_FORMATTER and text is not None:
        from dsl.formatter import format_source

        result = format_source(text, file)
        if result.text is not None:
            # A formatted file parses to the same meaning and formats to itself.
            again = format_source(result.text, file)
            assert again.text == result.text, "formatting is not idempotent"


def run_text(text: str) -> None:
    parse(text)
    pipeline(load_text(text), text)


# ---------------------------------------------------------------- texts

# Characters the lexer has opinions about, so random text hits real tokens.
_ALPHABET = st.sampled_from(list(" \t\r\n\"#()[]{},.:=<>!%+-*/?\\_0123456789aeinrtdsx\x00\ufeff\u2028é中🚀"))
_TOKENS = st.sampled_from([
    "entity", "field", "let", "metric", "event", "calendar", "trigger", "when", "then", "start",
    "score", "points", "band", "gate", "require", "route", "otherwise", "template", "subject",
    "body", "play", "day", "business", "immediately", "email", "task", "stage", "wait", "up", "to",
    "for", "if", "else", "test", "given", "expect", "account", "account.arr", "account.x", "no",
    "today", "ago", "days", "80%", "90", "-90", "2026-01-01", "10:00", '"x"', '"""\nhi\n"""',
    "{{ name }}", "and", "or", "not", "in", "between", "is", "empty", "==", ">=", "<", "->", "..",
    "..<", "(", ")", "[", "]", ",", "=", "\n", "\n  ", "\n    ", "\t", " ", "#c\n", "enum(a, b)",
    "number 0..100", "date?", "usage_limit", "days_since(account.renewal_date)",
])


@settings(max_examples=200)
@given(st.text())
@example("")
@example("\ufeff")
@example("\x00" * 10)
@example("\r\n" * 5)
@example("entity account\n\tfield x int\n  field y int\n")
@example("trigger t\n  when " + "(" * 10_000 + "1" + ")" * 10_000 + "\n  then start p\n")
@example("trigger t\n  when " + "not " * 5_000 + "true\n  then start p\n")
@example("trigger t\n  when " + "1 + " * 5_000 + "1\n  then start p\n")
@example("trigger t\n  when " + "- " * 5_000 + "1\n  then start p\n")
@example("score s\n  = " + "x" * 1_000_000 + "\n")
@example('template t\n  subject "' + "a" * 1_000_000 + '"\n  body "b"\n')
@example('"""' + "\n" * 1000)
@example("\ufeff" + FIXTURE.replace("\n", "\r\n"))
@example(FIXTURE.replace("  ", "\t"))
def test_any_text(text: str) -> None:
    run_text(text)


@given(st.text(alphabet=_ALPHABET, max_size=400))
def test_lexer_characters(text: str) -> None:
    run_text(text)


@given(st.lists(_TOKENS, max_size=80).map(" ".join))
def test_token_soup(text: str) -> None:
    run_text(text)


@given(st.lists(_TOKENS, max_size=80).map("".join))
def test_token_soup_glued(text: str) -> None:
    run_text(text)


# ---------------------------------------------------------------- mutations of a real file

_EDIT = st.tuples(
    st.sampled_from(["delete", "duplicate", "insert", "swap_lines", "delete_line"]),
    st.floats(0, 1, allow_nan=False, exclude_max=True),
    st.integers(1, 12),
    st.sampled_from(list(" \t\n\r\"#()[],.=<>%-:0a\x00中") + ["and", "day", "  ", "\n  ", "{{", "}}", '"""']),
)


def _mutate(text: str, edits: list[tuple[str, float, int, str]]) -> str:
    for kind, where, size, piece in edits:
        if not text:
            text = piece
            continue
        i = int(where * len(text))
        if kind == "delete":
            text = text[:i] + text[i + size:]
        elif kind == "duplicate":
            text = text[:i] + text[i:i + size] + text[i:]
        elif kind == "insert":
            text = text[:i] + piece + text[i:]
        else:
            lines = text.split("\n")
            j = int(where * len(lines))
            if kind == "delete_line":
                del lines[j]
            elif j + 1 < len(lines):
                lines[j], lines[j + 1] = lines[j + 1], lines[j]
            text = "\n".join(lines)
    return text


@settings(max_examples=250)
@given(st.lists(_EDIT, min_size=1, max_size=6))
def test_mutations_of_the_everything_fixture(edits: list[tuple[str, float, int, str]]) -> None:
    run_text(_mutate(FIXTURE, edits))


def _shipped() -> list[Path]:
    return sorted((ROOT / "playbooks").glob("*.play"))


@pytest.mark.skipif(not _shipped(), reason="no shipped playbooks yet")
@settings(max_examples=100)
@given(st.data())
def test_mutations_of_the_shipped_playbooks(data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(_shipped()))
    edits = data.draw(st.lists(_EDIT, min_size=1, max_size=4))
    run_text(_mutate(path.read_text(encoding="utf-8"), edits))


# ---------------------------------------------------------------- files (bytes, via project.load)


@settings(max_examples=100)
@given(st.binary(max_size=2000))
@example(b"")
@example(b"\xff\xfe\x00\x00")
@example(b"\xef\xbb\xbf")  # a BOM alone
@example(b"\xef\xbb\xbfentity account\r\n  field x int\r\n")
@example(b"entity account\n  field x\x00 int\n")
@example(bytes(range(256)))
@example("entity é\n".encode("latin-1"))
def test_any_bytes_as_a_file(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    folder = tmp_path_factory.mktemp("bytes")
    f = folder / "x.play"
    f.write_bytes(data)
    project = load([folder])
    assert len(project.modules) == 1
    try:
        text: str | None = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    pipeline(project, text, str(f))


def test_unreadable_file_is_a_diagnostic(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can read anything")
    f = tmp_path / "secret.play"
    f.write_text("entity account\n")
    f.chmod(0)
    project = load([tmp_path])
    assert [d.code for d in project.diagnostics] == ["PB001"]
    check(project)


def test_surrogates_and_private_use(tmp_path: Path) -> None:
    # Lone surrogates cannot come from a UTF-8 file, but can from an editor
    # integration passing text in; they must not crash anything either.
    run_text('play p\n  day 1 stage "\ud800"\n')
    run_text("entity \U0010ffff\n")


# ---------------------------------------------------------------- the real command


def _playbook_check(folder: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PLAYBOOK_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "check", *extra, str(folder)],
        capture_output=True, text=True, encoding="utf-8", errors="replace", env=env, timeout=120,
    )


HOSTILE_FILES: dict[str, bytes] = {
    "empty.play": b"",
    "binary.play": bytes(range(256)) * 16,
    "nul.play": b"entity account\n  field x int\x00\x00\n" + b"\x00" * 100,
    "long_line.play": b"trigger t\n  when account.x > " + b"1" * 1_000_000 + b"\n  then start p\n",
    "parens.play": b"trigger t\n  when " + b"(" * 10_000 + b"1" + b")" * 10_000 + b"\n  then start p\n",
    "bom_crlf.play": "\ufeff".encode() + FIXTURE.replace("\n", "\r\n").encode(),
    "tabs.play": FIXTURE.replace("  ", "\t").encode(),
    "mixed_indent.play": b"entity account\n\t field x int\n \tfield y int\n",
    "unicode.play": "entity 账户\n  field 名字 text\nplay ♞ \"🚀\"\n  day 1 stage \"\u202eevil\"\n".encode(),
    "unclosed.play": b'template t\n  subject "x\n  body """\nnever closed\n',
}


@pytest.mark.parametrize("fmt", ["text", "json", "github"])
def test_real_command_on_hostile_files(tmp_path: Path, fmt: str) -> None:
    for name, data in HOSTILE_FILES.items():
        (tmp_path / name).write_bytes(data)
    proc = _playbook_check(tmp_path, "--format", fmt)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.returncode in (0, 1), proc.stderr
    assert proc.stderr == ""


@pytest.mark.parametrize("name", sorted(HOSTILE_FILES))
def test_real_command_on_each_hostile_file(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(HOSTILE_FILES[name])
    proc = _playbook_check(tmp_path)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.returncode in (0, 1), proc.stderr


# ---------------------------------------------------------------- time: no input may hang the parser

_HANG_CASES = {
    # Found by this suite: LONG_STRING was /"""(.|\n)*?"""/s, 2^lines backtracking when unclosed.
    "unclosed_long_string": '"""' + "\n" * 2000,
    "unclosed_long_string_in_template": 'template t\n  subject "s"\n  body """\n' + "  x\n" * 2000,
    "many_blank_lines": "entity a\n" + "\n" * 5000 + "  field x int\n",
    "many_comment_lines": "entity a\n" + "# c and d\n" * 5000 + "  field x int\n",
    "long_string": 'template t\n  subject "' + "a" * 200_000 + '\n  body "b"\n',
}
_CRLF_BLANK_LINES = "entity a\r\n" + "\r\n" * 60 + "  field x int\r\n"


def _parses_within(text: str, seconds: float) -> bool:
    # Bytes in, bytes read: a text-mode stdin would turn CRLF into LF.
    code = "import sys; from dsl.parser import parse; parse(sys.stdin.buffer.read().decode())"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        subprocess.run([sys.executable, "-c", code], input=text.encode(), env=env, timeout=seconds, check=True,
                       capture_output=True)
    except subprocess.TimeoutExpired:
        return False
    return True


@pytest.mark.parametrize("name", sorted(_HANG_CASES))
def test_no_input_hangs_the_parser(name: str) -> None:
    assert _parses_within(_HANG_CASES[name], 20), f"{name}: parse took over 20 s"


# Found by this suite: _NL read each blank CRLF line two ways (2^lines backtracking).
def test_crlf_blank_lines_do_not_hang() -> None:
    assert _parses_within(_CRLF_BLANK_LINES, 10)


def test_line_endings_and_bom_do_not_change_meaning() -> None:
    lf = parse(FIXTURE)
    for variant in (FIXTURE.replace("\n", "\r\n"), "\ufeff" + FIXTURE):
        other = parse(variant)
        assert other.diagnostics == lf.diagnostics == []
        assert other.module == lf.module
