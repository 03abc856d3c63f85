"""Presentation only: diagnostics, test results and summaries as text, JSON,
GitHub annotations or JUnit XML. Nothing here reads files or decides exit
codes; cli/main.py does that and hands plain data in.

Text output is built from rich `Text` objects (never markup strings), so a
`[` or `:smile:` in a user's file is printed as written, and colour appears
only when the console is a terminal.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape as xml_escape
from xml.sax.saxutils import quoteattr

from rich.cells import cell_len
from rich.console import Console
from rich.text import Text

from dsl.diagnostics import Diagnostic, Severity

TAB_WIDTH = 4
# A snippet wider than this is cut around the caret: a 1 MB line must not
# become a 1 MB terminal line (or a multi-second render).
MAX_SNIPPET_CELLS = 120
ELLIPSIS = "…"

STYLE = {
    Severity.ERROR: "bold red",
    Severity.WARNING: "bold yellow",
    "gutter": "bold blue",
    "help": "cyan",
    "pass": "bold green",
    "fail": "bold red",
    "dim": "dim",
    "title": "bold",
}


def console(stderr: bool = False) -> Console:
    """A console for one command run. Colour only on a TTY (rich's detection,
    which also honours NO_COLOR / FORCE_COLOR); no wrapping, no markup, no
    emoji codes, no highlighting of numbers — user text is shown as written."""
    return Console(stderr=stderr, soft_wrap=True, highlight=False, markup=False, emoji=False)


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


# ---------------------------------------------------------------- counts


@dataclass(frozen=True)
class Counts:
    errors: int
    warnings: int
    files: int

    @classmethod
    def of(cls, diagnostics: Sequence[Diagnostic], files: int) -> Counts:
        errors = sum(1 for d in diagnostics if d.severity == Severity.ERROR)
        return cls(errors=errors, warnings=len(diagnostics) - errors, files=files)

    def line(self) -> str:
        return f"{plural(self.errors, 'error')}, {plural(self.warnings, 'warning')} in {plural(self.files, 'file')}"

    def as_json(self) -> dict[str, int]:
        return {"errors": self.errors, "warnings": self.warnings, "files": self.files}


# ---------------------------------------------------------------- snippets


def source_line(source: str | None, line: int) -> str | None:
    """Line `line` (1-based) of `source`, split on "\\n" only — the parser
    counts lines that way, so str.splitlines (which also splits on \\x0c,
    \\x1c, U+2028, ...) would point at the wrong line. A CR before the LF
    (CRLF files) is not part of the line."""
    if not source or line < 1:  # unreadable or empty file: nothing to show
        return None
    start = 0
    for _ in range(line - 1):
        nl = source.find("\n", start)
        if nl < 0:
            return None
        start = nl + 1
    end = source.find("\n", start)
    text = source[start:] if end < 0 else source[start:end]
    if start >= len(source) and line > 1:
        return None
    return text.removesuffix("\r")


def _cell(ch: str) -> str:
    """How one source character is drawn: tabs are expanded by the caller;
    control and format characters (NUL, ESC, bidi overrides, ...) get a
    visible stand-in, so a file can neither drive the terminal nor hide text,
    and the caret stays under the right place."""
    if ch == "\t":
        return ch
    code = ord(ch)
    if code < 0x20:
        return chr(0x2400 + code)  # the Control Pictures block: NUL -> U+2400
    if code == 0x7F:
        return "\u2421"
    if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
        return "\ufffd"
    return ch


def snippet(line_text: str, start_col: int, end_col: int) -> tuple[str, str]:
    """The displayed source line and the caret line under columns
    [start_col, end_col) (1-based, characters, end exclusive).

    Columns count characters; display positions count terminal cells, so a
    tab advances to the next tab stop and a wide character (CJK, emoji)
    takes two cells. The caret line is computed from the same drawing, so
    it lines up whatever the line holds."""
    cells: list[tuple[str, int]] = []  # (drawn text, width) per source character
    pos = 0
    for ch in line_text:
        drawn = _cell(ch)
        if drawn == "\t":
            width = TAB_WIDTH - pos % TAB_WIDTH
            drawn = " " * width
        else:
            width = max(cell_len(drawn), 0)
        cells.append((drawn, width))
        pos += width
    n = len(cells)
    start = max(0, min(start_col - 1, n))
    end = max(start + 1, min(end_col - 1, n))  # at least one caret, even at end of line

    # Cut a long line to a window that keeps the caret in view.
    lo, hi = 0, n
    total = sum(w for _, w in cells)
    if total > MAX_SNIPPET_CELLS:
        lo = start
        width = 0
        while lo > 0 and width < MAX_SNIPPET_CELLS // 3:
            lo -= 1
            width += cells[lo][1]
        hi = lo
        width = 0
        while hi < n and width < MAX_SNIPPET_CELLS:
            width += cells[hi][1]
            hi += 1
        end = min(end, max(hi, start + 1))

    shown = ELLIPSIS if lo > 0 else ""
    caret_pad = 1 if lo > 0 else 0
    for i in range(lo, hi):
        shown += cells[i][0]
    if hi < n:
        shown += ELLIPSIS
    pad = caret_pad + sum(cells[i][1] for i in range(lo, start))
    span_width = sum(cells[i][1] for i in range(start, min(end, n))) if start < n else 1
    span_width = max(1, span_width)
    caret = " " * pad + "^" + "~" * (span_width - 1)
    return shown.rstrip(), caret


def format_diagnostic(d: Diagnostic, source: str | None) -> Text:
    """One diagnostic as rustc/clang-style text:

        file:line:col: error[PB201]: message
          4 |   when account.helth_score > 60
            |        ^~~~~~~~~~~~~~~~~~~
          = help: detail
    """
    r = d.range
    out = Text()
    out.append(f"{r.file}:{r.start.line}:{r.start.column}: ", style="bold")
    out.append(f"{d.severity.value}[{d.code}]", style=STYLE[d.severity])
    out.append(": ")
    out.append(d.summary, style="bold")
    text = source_line(source, r.start.line)
    if text is not None:
        end_col = r.end.column if r.end.line == r.start.line else len(text) + 1
        shown, caret = snippet(text, r.start.column, end_col)
        gutter = str(r.start.line)
        out.append("\n")
        out.append(f" {gutter} | ", style=STYLE["gutter"])
        out.append(shown)
        out.append("\n")
        out.append(f" {' ' * len(gutter)} | ", style=STYLE["gutter"])
        out.append(caret, style=STYLE[d.severity])
    if d.detail:
        out.append("\n")
        out.append("  = help: ", style=STYLE["help"])
        out.append(d.detail)
    return out


def check_text(diagnostics: Sequence[Diagnostic], sources: dict[str, str], counts: Counts) -> Iterable[Text]:
    for d in diagnostics:
        yield format_diagnostic(d, sources.get(d.range.file))
        yield Text("")
    style = STYLE[Severity.ERROR] if counts.errors else STYLE[Severity.WARNING] if counts.warnings else STYLE["pass"]
    yield Text(counts.line(), style=style)


# ---------------------------------------------------------------- JSON


def diagnostic_json(d: Diagnostic) -> dict[str, Any]:
    return d.model_dump(mode="json")


def json_document(diagnostics: Sequence[Diagnostic], counts: Counts, **extra: Any) -> str:
    """The one JSON document a command prints in `--format json`."""
    doc: dict[str, Any] = {"diagnostics": [diagnostic_json(d) for d in diagnostics], "summary": counts.as_json()}
    doc.update(extra)
    return json.dumps(doc, indent=2, ensure_ascii=False)


def usage_error_json(message: str, exit_code: int, kind: str = "usage") -> str:
    """A usage or internal error in JSON mode: still one document with the
    usual keys, so a consumer's parser never meets plain text."""
    return json.dumps(
        {
            "diagnostics": [],
            "summary": {"errors": 0, "warnings": 0, "files": 0},
            "error": {"kind": kind, "message": message, "exit_code": exit_code},
        },
        indent=2,
        ensure_ascii=False,
    )


# ---------------------------------------------------------------- SARIF

def sarif_document(diagnostics: Sequence[Diagnostic]) -> str:
    """SARIF 2.1.0, for code-scanning dashboards (GitHub's among them).

    Columns count characters, as everywhere in playbook: the run says so with
    `columnKind: unicodeCodePoints` (SARIF's default is UTF-16 units).
    """
    rules = sorted({d.code for d in diagnostics})
    results = []
    for d in diagnostics:
        text = d.summary + (f"\n{d.detail}" if d.detail else "")
        region = {"startLine": d.range.start.line, "startColumn": d.range.start.column,
                  "endLine": d.range.end.line, "endColumn": d.range.end.column}
        results.append({
            "ruleId": d.code,
            "ruleIndex": rules.index(d.code),
            "level": "error" if d.severity == Severity.ERROR else "warning",
            "message": {"text": text},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": d.range.file}, "region": region}}],
        })
    doc = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            # Each code's meaning is in docs/diagnostics.md; codes are never reused.
            "tool": {"driver": {"name": "playbook", "rules": [{"id": code} for code in rules]}},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False)


# ---------------------------------------------------------------- GitHub


def _gh_data(s: str) -> str:
    # https://github.com/actions/toolkit/blob/main/packages/core/src/command.ts
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_prop(s: str) -> str:
    return _gh_data(s).replace(":", "%3A").replace(",", "%2C")


def github_annotation(d: Diagnostic) -> str:
    """`::error file=F,line=L,col=C,endLine=..,endColumn=..,title=CODE::message`."""
    r = d.range
    level = "error" if d.severity == Severity.ERROR else "warning"
    props = ",".join(
        f"{k}={_gh_prop(str(v))}"
        for k, v in (
            ("file", r.file),
            ("line", r.start.line),
            ("col", r.start.column),
            ("endLine", r.end.line),
            ("endColumn", r.end.column),
            ("title", d.code),
        )
    )
    message = d.summary + (f"\n{d.detail}" if d.detail else "")
    return f"::{level} {props}::{_gh_data(message)}"


def github_test_failure(file: str, line: int, name: str, details: str) -> str:
    return f"::error file={_gh_prop(file)},line={line},title={_gh_prop('test failed: ' + name)}::{_gh_data(details or name)}"


def github_error(title: str, message: str) -> str:
    """An error that belongs to no file line (bad usage, a server that cannot be reached)."""
    return f"::error title={_gh_prop(title)}::{_gh_data(message)}"


def github_notice(file: str, line: int, title: str, message: str) -> str:
    return f"::notice file={_gh_prop(file)},line={line},title={_gh_prop(title)}::{_gh_data(message)}"


# ---------------------------------------------------------------- tests


def test_summary_line(results: Sequence[Any]) -> str:
    """`N tests, P passed, F failed` (the line dsl.testing ends its text with)."""
    from dsl.testing import summary

    return summary(list(results))


def test_text(text: str) -> Iterable[Text]:
    """dsl.testing's text, with PASS / FAIL / ERROR and the summary coloured."""
    lines = text.rstrip("\n").split("\n")
    for i, line in enumerate(lines):
        if line.startswith("PASS"):
            yield Text.assemble(("PASS", STYLE["pass"]), line[4:])
        elif line.startswith(("FAIL", "ERROR")):
            word = "FAIL" if line.startswith("FAIL") else "ERROR"
            yield Text.assemble((word, STYLE["fail"]), line[len(word):])
        elif i == len(lines) - 1:
            failed = " 0 failed" not in line or ", error" in line
            yield Text(line, style=STYLE["fail"] if failed else STYLE["pass"])
        else:
            yield Text(line)


def coverage_note(items: Sequence[tuple[str, str, str, int]]) -> Text:
    """Triggers, plays and gates no test exercised: a note, not a failure."""
    out = Text()
    out.append("note", style="bold cyan")
    out.append(f": {plural(len(items), 'declaration')} never exercised by a test:")
    for kind, name, file, line in items:
        out.append(f"\n  {kind} {name}", style="bold")
        out.append(f"  ({file}:{line})", style=STYLE["dim"])
    return out


# ---------------------------------------------------------------- JUnit


def junit_xml(suite: str, cases: Sequence[tuple[str, str, float, str | None]], total_time: float | None = None) -> str:
    """JUnit XML of (classname, name, seconds, failure text or None)."""
    failures = sum(1 for c in cases if c[3] is not None)
    if total_time is None:
        total_time = sum(c[2] for c in cases)
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<testsuites tests="{len(cases)}" failures="{failures}" time="{total_time:.3f}">',
        f'  <testsuite name={quoteattr(suite)} tests="{len(cases)}" failures="{failures}" errors="0" '
        f'time="{total_time:.3f}">',
    ]
    for classname, name, seconds, failure in cases:
        head = f"    <testcase classname={quoteattr(classname)} name={quoteattr(name)} time=\"{seconds:.3f}\""
        if failure is None:
            lines.append(head + "/>")
        else:
            first = failure.splitlines()[0] if failure.strip() else "failed"
            lines.append(head + ">")
            lines.append(f"      <failure message={quoteattr(_xml_safe(first))}>{xml_escape(_xml_safe(failure))}</failure>")
            lines.append("    </testcase>")
    lines += ["  </testsuite>", "</testsuites>"]
    return "\n".join(lines)


def _xml_safe(s: str) -> str:
    """XML 1.0 cannot hold most control characters, even escaped."""
    return "".join(ch if ch in "\t\n\r" or ord(ch) >= 0x20 and ch not in "\ufffe\uffff" else "\ufffd" for ch in s)


# ---------------------------------------------------------------- CSV for spreadsheets

# A cell starting with one of these is run as a formula by Excel, LibreOffice
# and Google Sheets (=HYPERLINK(...) from an imported account name).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: text starting like a formula gets
    a leading `'` (OWASP's advice for CSV injection); numbers stay numbers."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


# ---------------------------------------------------------------- the scorecard table


@dataclass(frozen=True)
class Column:
    """A column of a terminal table: `key` names the value in a row's cells."""

    key: str
    header: str
    numeric: bool = False  # right-aligned, never wrapped
    wrap: bool = False  # may wrap onto more lines (down to `min_width`)
    min_width: int = 0
    cut: bool = False  # free text on one line, cut with an ellipsis to the room left (down to `min_width`)


# Rich's default box: one border left, then " value │" per column.
_BORDER, _PER_COLUMN = 1, 3


def _need(c: Column, rows: Sequence[dict[str, str]]) -> int:
    """The cells a column takes at least: its widest cell, or its minimum if it may wrap or be cut."""
    widest = max([cell_len(c.header), *(cell_len(r[c.key]) for r in rows)])
    return (min(widest, max(c.min_width, cell_len(c.header))) if c.wrap or c.cut else widest) + _PER_COLUMN


def fit_columns(columns: Sequence[Column], by_priority: Sequence[str], rows: Sequence[dict[str, str]],
                width: int) -> list[Column]:
    """The columns that fit in `width` cells, taken in `by_priority` order and
    kept in table order. A column that cannot wrap needs its widest cell; the
    first one (the id) is always kept, however narrow the terminal."""
    chosen: set[str] = set()
    used = _BORDER
    by_key = {c.key: c for c in columns}
    for i, key in enumerate(by_priority):
        cost = _need(by_key[key], rows)
        if i == 0 or used + cost <= width:
            chosen.add(key)
            used += cost
    return [c for c in columns if c.key in chosen]


def cut_to_fit(columns: Sequence[Column], rows: Sequence[dict[str, str]], width: int) -> list[dict[str, str]]:
    """`rows` with the cells of `cut` columns shortened (ending in an ellipsis) to the room
    the other columns leave in `width`: one line per row, and a wider terminal shows more."""
    from rich.text import Text

    cut = [c for c in columns if c.cut]
    if not cut:
        return list(rows)
    room = (width - _BORDER - sum(_need(c, rows) for c in columns if not c.cut)) // len(cut) - _PER_COLUMN
    rooms = {c.key: max(room, c.min_width, cell_len(c.header)) for c in cut}
    shortened = []
    for r in rows:
        row = dict(r)
        for key, cells in rooms.items():
            text = Text(row[key])
            text.truncate(cells, overflow="ellipsis")
            row[key] = text.plain
        shortened.append(row)
    return shortened


def table_of(title: str, columns: Sequence[Column], rows: Sequence[dict[str, str]]) -> Any:
    """A rich Table of `rows`: cells of columns that cannot wrap are never cut."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for c in columns:
        if c.wrap:
            table.add_column(c.header, overflow="fold", min_width=c.min_width or None)
        else:
            widest = max([cell_len(c.header), *(cell_len(r[c.key]) for r in rows)])
            table.add_column(c.header, justify="right" if c.numeric else "left", no_wrap=True, min_width=widest)
    for r in rows:
        table.add_row(*(r[c.key] for c in columns))
    return table
