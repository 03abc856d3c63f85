"""`playbook fmt`: one canonical layout for `.play` files, comments kept.

The text is generated from the AST (dsl.nodes), never by editing the source,
so formatting cannot change meaning: `parse(fmt(x)).module == parse(x).module`.
The layout, in short:

- 2-space indentation; one blank line between top-level declarations (runs
  of `metric`/`event` one-liners stay together); inside a play, its header
  clauses in a fixed order, a blank line, then the steps in source order; a
  test's `today`, then its `given` lines, then its `expect`s. A blank line the
  author put between two sibling items is kept (at most one, never at the
  start of a block).
- columns aligned unless `FormatOptions.align` is off: entity field names,
  `let` names, metric names, band ranges, route arrows, require labels, step
  timings up to `day -90`, and end-of-line comments of consecutive lines.
- a trigger's `when` that is an `and`/`or` chain is written one condition per
  line, each continuation line starting with the operator, operands in one
  column; a play's `exit when` likewise, when too long or commented inside.
  A formula, `let`, gate `when` or `require` that is too long is broken in
  parentheses, one operand per line, operators first.
- numbers minimal (80, 0.4, 80%), durations in their unit (`1 day`,
  `2 business days`), strings re-escaped, template bodies as triple-quoted blocks
  under `body` (a plain string when a block could not say the same text).
- defaults that carry no information are left out (`priority 0`,
  `otherwise 0` in points); `per day` on a metric is always written; `day 0`
  is written `immediately` (the parser makes the same AST of both); in a
  calendar, `holidays` lines come before its own dates.
- comments: an own-line comment goes before the item that followed it in
  the source, at that item's indentation (blank lines between a comment and
  what follows are kept, at most one); an end-of-line comment stays at the
  end of its item's line (when several land on one line, all but the last go
  above it); comments after the last item stay at the end.

A few things the AST does not keep are read back from the source, each
verified or limited to its own line: the lines of clauses that have no node
(`kind`, `reenter`, `else`...), a holiday's label, the unit of `reenter after`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dsl import nodes as n
from dsl.steps import source as action_source
from dsl.builder import _str as string_value  # the lexer's own reading of a string token
from dsl.diagnostics import Diagnostic, make
from dsl.parser import lark_parser, parse
from dsl.printer import (
    format_date, format_duration, format_expr, format_number, format_string, precedence, print_expr, spine,
)


@dataclass(frozen=True)
class FormatOptions:
    indent: int = 2  # spaces per level
    align: bool = True  # line up columns of sibling lines
    width: int = 88  # lines longer than this get their `and`/`or` chains broken


@dataclass
class FormatResult:
    text: str | None  # None when the file has syntax errors
    diagnostics: list[Diagnostic] = field(default_factory=list)


def format_source(text: str, file: str = "<input>", options: FormatOptions | None = None) -> FormatResult:
    """Format one file's text; a file that does not parse is left alone."""
    options = options or FormatOptions()
    text = normalize_newlines(text)
    result = parse(text, file)
    if result.diagnostics:
        return FormatResult(None, result.diagnostics)
    source = _Source(text, result.module.comments)
    try:
        lines = _Layout(options, source).module(result.module)
        return FormatResult(_render(lines, source, options.align), [])
    except (RecursionError, ValueError) as e:  # pathological nesting or numbers
        span = n.Span(file=file)
        return FormatResult(None, [make("PB005", f"cannot format this file: {e or 'nested too deeply'}", span)])


def normalize_newlines(text: str) -> str:
    """Drop a BOM and turn CRLF into LF (a CR inside `\"\"\"` text is not content)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    return text.replace("\r\n", "\n")


# ---------------------------------------------------------------- source facts


class _Source:
    """Line-level facts about the source: where code and comments are."""

    def __init__(self, text: str, comments: list[n.Comment]):
        self.lines = text.split("\n")
        self.comments = sorted(comments, key=lambda c: c.line)
        self._comment_at = {c.line: c for c in comments}

    def code(self, line: int) -> str:
        """The line's text without its comment, stripped."""
        if not 1 <= line <= len(self.lines):
            return ""
        text = self.lines[line - 1]
        c = self._comment_at.get(line)
        return (text[: c.column - 1] if c else text).strip()

    def is_blank(self, line: int) -> bool:
        return 1 <= line <= len(self.lines) and not self.lines[line - 1].strip()

    def own_line(self, c: n.Comment) -> bool:
        return not self.lines[c.line - 1][: c.column - 1].strip()

    def last_line(self, span: n.Span) -> int:
        """The last line holding code of `span` (a statement's span runs on to the next line)."""
        for line in range(span.end.line, span.start.line - 1, -1):
            code = self.lines[line - 1] if line <= len(self.lines) else ""
            if line == span.end.line:
                code = code[: span.end.column - 1]
            c = self._comment_at.get(line)
            if c and (line != span.end.line or c.column < span.end.column):
                code = code[: c.column - 1]
            if code.strip():
                return line
        return span.start.line

    def first_word(self, line: int) -> str:
        m = re.match(r"[A-Za-z_]+", self.code(line))
        return m.group() if m else ""

    def keyword_lines(self, first: int, last: int, words: set[str]) -> dict[str, int]:
        """The last line in [first, last] starting with each of `words`."""
        found: dict[str, int] = {}
        for line in range(first, last + 1):
            w = self.first_word(line)
            if w in words:
                found[w] = line
        return found

    def code_lines(self, first: int, last: int) -> list[int]:
        return [line for line in range(first, last + 1) if self.code(line)]


_STRING_TOKEN = re.compile(lark_parser().get_terminal("STRING").pattern.to_regexp())


def _holiday_label(code: str) -> str | None:
    """The label after a holiday's date, which the AST does not keep."""
    rest = code[len("YYYY-MM-DD"):].strip()
    return string_value(rest) if _STRING_TOKEN.fullmatch(rest) else None


def _written_duration(code: str, days: float) -> n.Duration | None:
    """`reenter after 2 weeks` as written; the AST keeps only the days."""
    text = code.split("after", 1)[-1].strip()
    parsed = parse(f"entity e\n  let d = {text}\n")
    entity = parsed.module.declarations[0] if not parsed.diagnostics else None
    if not isinstance(entity, n.EntityDecl):
        return None
    value = entity.lets[0].value
    return value if isinstance(value, n.Duration) and value.days == days else None


# ---------------------------------------------------------------- output lines


@dataclass
class _Line:
    """One output line and the source lines it stands for (to place comments)."""

    indent: int
    text: str
    first: int | None = None  # source line its item starts on: own-line comments before it go here
    last: int | None = None  # source line its item ends on: that line's end comment goes here
    verbatim: bool = False  # a line of `\"\"\"` text: printed exactly, no comment may precede it

    @property
    def blank(self) -> bool:
        return not self.text and not self.verbatim


_BLANK = _Line(0, "")

# Step timings up to this long (`day -90`) share a column; `immediately` or
# `business day 10 at 10:00` would push every action far right.
_TIMING_COLUMN = 8

# One-line declarations of these kinds stay together, without a blank line.
_GROUPED = (n.MetricDecl, n.EventDecl)

_PLAY_CLAUSES = ("kind", "owner", "priority", "gate", "ungated", "concurrent", "reenter", "exit", "anchor",
                 "window", "calendar", "holdout")


class _Layout:
    """Builds the output lines of each declaration kind (`_<decl>` methods)."""

    def __init__(self, options: FormatOptions, source: _Source):
        self.o = options
        self.src = source

    def module(self, module: n.Module) -> list[_Line]:
        out: list[_Line] = []
        decls = module.declarations
        width = _metric_widths(decls)
        for i, decl in enumerate(decls):
            if i and not (isinstance(decls[i - 1], _GROUPED) and isinstance(decl, _GROUPED)):
                out.append(_BLANK)
            if isinstance(decl, n.MetricDecl):
                out.append(self.header("metric", decl, self.pad([decl.name, f"per {decl.per}"], [width[i]])))
                continue
            out += self._declaration(decl)
        return out

    def _declaration(self, decl: n.Declaration) -> list[_Line]:
        match decl:
            case n.EntityDecl():
                return self._entity(decl)
            case n.EventDecl():
                return self._event(decl)
            case n.CalendarDecl():
                return self._calendar(decl)
            case n.SourceDecl():
                return self._source(decl)
            case n.TriggerDecl():
                return self._trigger(decl)
            case n.ScoreDecl():
                return self._score(decl)
            case n.GateDecl():
                return self._gate(decl)
            case n.RouteDecl():
                return self._route(decl)
            case n.TemplateDecl():
                return self._template(decl)
            case n.PlayDecl():
                return self._play(decl)
            case n.TestDecl():
                return self._test(decl)
        raise TypeError(f"fmt has no layout for {type(decl).__name__}")

    # ------------------------------------------------------------ helpers
    def line(self, depth: int, text: str, first: int | None = None, last: int | None = None) -> _Line:
        return _Line(depth * self.o.indent, text, first, last if last is not None else first)

    def node_line(self, depth: int, text: str, node: n.Node) -> _Line:
        """A line standing for `node` (its span gives the source lines)."""
        if node.span == n.NO_SPAN:
            return self.line(depth, text)
        return self.line(depth, text, node.span.start.line, self.src.last_line(node.span))

    def header(self, keyword: str, decl: n.Node, name: str, title: str | None = None) -> _Line:
        text = f"{keyword} {name}" + (f" {format_string(title)}" if title is not None else "")
        return self.line(0, text, decl.span.start.line)

    def pad(self, cells: list[str], widths: list[int]) -> str:
        """Cells joined by one space, each padded to its column when aligning."""
        if self.o.align:
            cells = [c.ljust(w) for c, w in zip(cells, widths)] + cells[len(widths):]
        return " ".join(cells).rstrip()

    @staticmethod
    def widths(rows: list[list[str]], columns: int, cap: int | None = None) -> list[int]:
        """Column widths over the rows that have a next cell; cells longer than `cap` don't widen it."""
        return [
            max((len(r[i]) for r in rows if len(r) > i + 1 and (cap is None or len(r[i]) <= cap)), default=0)
            for i in range(columns)
        ]

    def expression(self, depth: int, head: str, expr: n.Expr, first: int, *, tail: str = "",
                   style: str = "paren", always: bool = False) -> list[_Line]:
        """`head expr tail`, its top chain broken one operand per line when too
        long, when comments sit between its operands, or `always`.

        style "continue": an `and`/`or` chain, each line after the first
        starting with the operator, operands in one column (no parentheses).
        style "paren": any chain, wrapped in parentheses, operators first and
        lined up under the first operand.
        """
        single = self.line(depth, f"{head} {format_expr(expr)}{tail}", first, self.src.last_line(expr.span))
        head_op, rest = spine(expr)
        if not rest or (style == "continue" and rest[0][0] not in (n.BinOp.AND, n.BinOp.OR)):
            return [single]
        start, last_start = expr.span.start.line, rest[-1][1].span.start.line
        commented = any(start <= c.line < last_start for c in self.src.comments)
        too_long = single.indent + len(single.text) > self.o.width
        if not (too_long or commented or always):
            return [single]
        prec = precedence(expr)
        if style == "continue":
            column = len(head) + 1  # operands line up under the first one
            opening, closing = "", ""
        else:
            column = len(head) + 2  # operators line up under the first operand
            opening, closing = "(", ")"
        out = [self.line(depth, f"{head} {opening}{print_expr(head_op, prec)}", first,
                         self.src.last_line(head_op.span))]
        for i, (op, operand) in enumerate(rest):
            end = closing + tail if i == len(rest) - 1 else ""
            line = self.node_line(depth, f"{op.value} {print_expr(operand, prec + 1)}{end}", operand)
            line.indent += column - (len(op.value) + 1 if style == "continue" else 0)
            out.append(line)
        return out

    # ------------------------------------------------------------ data
    def _entity(self, d: n.EntityDecl) -> list[_Line]:
        rows = [[f.name, _type(f.type)] for f in d.fields]
        widths = self.widths(rows, 1)
        out = [self.header("entity", d, d.name)]
        out += [self.node_line(1, "field " + self.pad(r, widths), f) for r, f in zip(rows, d.fields)]
        width = max((len(let.name) for let in d.lets), default=0) if self.o.align else 0
        for let in d.lets:
            out += self.expression(1, f"let {let.name.ljust(width)} =", let.value, let.span.start.line)
        return out

    def _event(self, d: n.EventDecl) -> list[_Line]:
        return [self.header("event", d, d.name)]

    def _calendar(self, d: n.CalendarDecl) -> list[_Line]:
        out = [self.header("calendar", d, d.name, d.title)]
        out += [self.line(1, f"holidays {r.code}", r.span.start.line) for r in d.regions]
        # Dates have no node: the k-th date line under the header is the k-th date.
        lines = [line for line in self.src.code_lines(d.span.start.line + 1, self.src.last_line(d.span))
                 if self.src.first_word(line) != "holidays"]
        for i, day in enumerate(d.holidays):
            line = lines[i] if i < len(lines) else None
            label = _holiday_label(self.src.code(line)) if line else None
            text = format_date(day) + (f" {format_string(label)}" if label is not None else "")
            out.append(self.line(1, text, line))
        return out

    def _source(self, d: n.SourceDecl) -> list[_Line]:
        out = [self.line(0, " ".join(["source", d.name, "from", d.system, *([d.object] if d.object else [])]),
                         d.span.start.line)]
        if d.query is not None:
            out += self._body(d.query, d.query_span, "query")
        if d.incremental is not None:
            out.append(self._span_line(1, f"incremental by {_column(d.incremental)}", d.incremental_span))
        if d.dated is not None:
            out.append(self._span_line(1, f"dated by {_column(d.dated)}", d.dated_span))
        if d.named is not None:
            out.append(self._span_line(1, f"named by {_column(d.named)}", d.named_span))
        targets = [m.target for m in d.mappings]
        width = max(map(len, targets), default=0) if self.o.align else 0
        out += [self.node_line(1, f"{t.ljust(width)} = {_column(m.column)}", m) for t, m in zip(targets, d.mappings)]
        return out

    # ------------------------------------------------------------ rules
    def _trigger(self, d: n.TriggerDecl) -> list[_Line]:
        out = [self.header("trigger", d, d.name, d.title)]
        out += self.expression(1, "when", d.when, d.when.span.start.line, style="continue", always=True)
        then = ", ".join(f"start {a.play}" for a in d.then)
        first = d.then[0].span.start.line if d.then else None
        last = self.src.last_line(d.then[-1].span) if d.then else None
        out.append(self.line(1, f"then {then}", first, last))
        return out

    def _score(self, d: n.ScoreDecl) -> list[_Line]:
        out = [self.header("score", d, d.name, d.title)]
        if d.formula is not None:
            out += self.expression(1, "=", d.formula, d.formula.span.start.line)
        for rule in d.points:
            cases = [f"{format_number(c.points)} if {format_expr(c.when)}" for c in rule.cases]
            if rule.otherwise != 0:
                cases.append(f"otherwise {format_number(rule.otherwise)}")
            out.append(self.node_line(1, "points " + ", ".join(cases), rule))
        rows = [[b.name, _band_range(b)] + ([format_string(b.label)] if b.label is not None else []) for b in d.bands]
        widths = self.widths(rows, 2)
        out += [self.node_line(1, "band " + self.pad(r, widths), b) for r, b in zip(rows, d.bands)]
        return out

    def _gate(self, d: n.GateDecl) -> list[_Line]:
        out = [self.header("gate", d, d.name, d.title)]
        for case in d.cases:
            depth = 1
            if case.when is not None:
                out += self.expression(1, "when", case.when, case.span.start.line)
                depth = 2
            rows = [[f"require {format_expr(r.when)}"] + ([format_string(r.label)] if r.label is not None else [])
                    for r in case.requires]
            fits = [depth * self.o.indent + len(" ".join(row)) <= self.o.width for row in rows]
            widths = self.widths([row for row, ok in zip(rows, fits) if ok], 1)
            for row, ok, r in zip(rows, fits, case.requires):
                if ok:
                    out.append(self.node_line(depth, self.pad(row, widths), r))
                else:
                    label = f" {row[1]}" if len(row) > 1 else ""
                    out += self.expression(depth, "require", r.when, r.span.start.line, tail=label)
        return out

    def _route(self, d: n.RouteDecl) -> list[_Line]:
        rows = [[f"when {format_expr(c.when)}" if c.when is not None else "otherwise", f"-> {c.target}"]
                for c in d.cases]
        widths = self.widths(rows, 1)
        return [self.header("route", d, d.name, d.title)] + [
            self.node_line(1, self.pad(r, widths), c) for r, c in zip(rows, d.cases)
        ]

    def _template(self, d: n.TemplateDecl) -> list[_Line]:
        out = [self.header("template", d, d.name)]
        if d.subject:
            out.append(self._span_line(1, f"subject {format_string(d.subject)}", d.subject_span))
        if d.body or not d.subject:
            out += self._body(d.body, d.body_span)
        return out

    def _span_line(self, depth: int, text: str, span: n.Span) -> _Line:
        if span == n.NO_SPAN:
            return self.line(depth, text)
        return self.line(depth, text, span.start.line, span.end.line)

    def _body(self, body: str, span: n.Span, keyword: str = "body") -> list[_Line]:
        """A `\"\"\"` block indented under `keyword`, or a plain string if a block cannot say it."""
        inner = " " * (2 * self.o.indent)
        raw = '"""\n' + "".join(inner + ln + "\n" if ln else "\n" for ln in body[:-1].split("\n")) + inner + '"""'
        if not body or string_value(raw) != body:
            return [self._span_line(1, f"{keyword} {format_string(body)}", span)]
        lines = raw.split("\n")
        first, last = (None, None) if span == n.NO_SPAN else (span.start.line, span.end.line)
        out = [self.line(1, f"{keyword} " + lines[0], first, first)]
        out += [_Line(0, text, verbatim=True) for text in lines[1:-1]]
        out.append(_Line(2 * self.o.indent, lines[-1].strip(), None, last))
        return out

    # ------------------------------------------------------------ plays
    def _play(self, d: n.PlayDecl) -> list[_Line]:
        at = self.src.keyword_lines(d.span.start.line + 1, self.src.last_line(d.span), set(_PLAY_CLAUSES))
        clauses: list[_Line] = []

        def clause(word: str, text: str, node: n.Node | None = None) -> None:
            if node is not None and node.span != n.NO_SPAN:
                clauses.append(self.line(1, text, at.get(word, node.span.start.line), self.src.last_line(node.span)))
            else:
                clauses.append(self.line(1, text, at.get(word)))

        if d.kind is not None:
            clause("kind", f"kind {d.kind}")
        if d.owner is not None:
            clause("owner", f"owner {d.owner.dotted}", d.owner)
        if d.priority != 0:
            clause("priority", f"priority {d.priority}")
        if d.gate is not None:
            clause("gate", f"gate {d.gate}")
        if d.ungated:
            clause("ungated", "ungated")
        if d.concurrent:
            clause("concurrent", "concurrent")
        if d.reenter_days is not None:
            written = _written_duration(self.src.code(at["reenter"]), d.reenter_days) if "reenter" in at else None
            shown = written or n.Duration(amount=d.reenter_days, unit=n.DurationUnit.DAYS)
            clause("reenter", f"reenter after {format_duration(shown)}")
        if d.exit is not None:
            clauses += self.expression(1, "exit when", d.exit, at.get("exit", d.exit.span.start.line), style="continue")
        if d.anchor is not None:
            clause("anchor", f"anchor {d.anchor.dotted}", d.anchor)
        if d.window is not None:
            clause("window", _window(d.window), d.window)
        if d.calendar is not None:
            clause("calendar", f"calendar {d.calendar}")
        if d.holdout is not None:
            # A missing `%` stays missing: the checker's PB313 asks a person which share was meant.
            clause("holdout", f"holdout {format_number(d.holdout.percent)}" + ("%" if d.holdout.unit else ""), d.holdout)

        timings = [_timing(s.timing) for s in d.steps]
        simple = [[t, ""] for t, s in zip(timings, d.steps) if not isinstance(s.action, n.BranchStep)]
        widths = self.widths(simple, 1, cap=_TIMING_COLUMN)
        steps: list[_Line] = []
        for t, s in zip(timings, d.steps):
            if isinstance(s.action, n.BranchStep):
                steps.append(self.line(1, t, s.span.start.line, self.src.last_line(s.timing.span)))
                steps += self._branch(2, s.action)
                continue
            text = self.pad([t, action_source(s.action)], widths)
            if s.unless is not None:
                text += f" unless {format_expr(s.unless)}"
            if s.label is not None:
                text += f" as {s.label}"
            steps.append(self.node_line(1, text, s))
        gap = [_BLANK] if clauses and steps else []
        return [self.header("play", d, d.name, d.title)] + clauses + gap + steps

    def _branch(self, depth: int, b: n.BranchStep) -> list[_Line]:
        out = [self.line(depth, f"if {format_expr(b.condition)}", b.span.start.line, self.src.last_line(b.condition.span))]
        out += self._actions(depth + 1, b.then)
        if b.otherwise:
            # `else` has no node: it is the last `else` line before the first else-action.
            stop = b.otherwise[0].span.start.line - 1
            start = b.then[-1].span.start.line + 1 if b.then else stop
            else_line = self.src.keyword_lines(start, stop, {"else"}).get("else")
            out.append(self.line(depth, "else", else_line))
            out += self._actions(depth + 1, b.otherwise)
        return out

    def _actions(self, depth: int, actions: list[n.StepAction]) -> list[_Line]:
        out: list[_Line] = []
        for a in actions:
            if isinstance(a, n.BranchStep):
                out += self._branch(depth, a)
            else:
                out.append(self.node_line(depth, action_source(a), a))
        return out

    # ------------------------------------------------------------ tests
    def _test(self, d: n.TestDecl) -> list[_Line]:
        out = [self.line(0, f"test {format_string(d.name)}", d.span.start.line)]
        if d.today is not None:
            line = self.src.keyword_lines(d.span.start.line + 1, self.src.last_line(d.span), {"today"}).get("today")
            out.append(self.line(1, f"today {format_date(d.today)}", line))
        out += [self.node_line(1, _given(g), g) for g in d.given]
        out += [self.node_line(1, _expect(e), e) for e in d.expect]
        return out


# ---------------------------------------------------------------- clause text


def _metric_widths(decls: list[n.Declaration]) -> dict[int, int]:
    """Name column of each metric: names line up over a run of metrics, like fields."""
    widths: dict[int, int] = {}
    run: list[int] = []
    for i, d in enumerate(decls + [None]):
        if isinstance(d, n.MetricDecl):
            run.append(i)
            continue
        for j in run:
            widths[j] = max(len(decls[k].name) for k in run)
        run = []
    return widths


_BARE_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _column(name: str) -> str:
    """A source column as written: bare when it is a name, quoted otherwise (`"Seats Active"`)."""
    return name if _BARE_COLUMN.fullmatch(name) else format_string(name)


def _type(t: n.TypeRef) -> str:
    opt = "?" if t.nullable else ""
    if t.name is n.TypeName.ENUM:
        return f"enum({', '.join(t.values)}){opt}"
    text = t.name.value + opt
    if t.low is not None and t.high is not None:
        text += f" {format_number(t.low)}..{format_number(t.high)}"
    return text


def _band_range(b: n.Band) -> str:
    low = "" if b.low is None else (">" if not b.low_inclusive else "") + format_number(b.low)
    high = "" if b.high is None else ("<" if not b.high_inclusive else "") + format_number(b.high)
    return f"{low}..{high}"


def _window(w: n.SendWindow) -> str:
    text = f"window {w.start} to {w.end}"
    if w.weekdays_only:
        text += " weekdays"
    if w.timezone is not None:
        text += f" in {w.timezone.dotted}"
    return text


def _timing(t: n.Timing) -> str:
    if t.business:
        text = f"business day {t.day}"
    elif t.day == 0 and t.at is None:
        return "immediately"  # same AST as `day 0`; the word reads better
    else:
        text = f"day {t.day}"
    return text + (f" at {t.at}" if t.at is not None else "")


def _given(g: n.Given) -> str:
    if isinstance(g, n.GivenAccount):
        return "given account " + ", ".join(f"{f.name}={format_expr(f.value)}" for f in g.fields)
    if isinstance(g, n.GivenMetric):
        points = ", ".join(f"{format_expr(p.value)} at {format_expr(p.at)}" for p in g.points)
        return f"given metric {g.metric} {points}"
    return f"given event {g.event} " + ", ".join(format_expr(a) for a in g.at)


def _expect(e: n.Expectation) -> str:
    no = "no " if getattr(e, "negated", False) else ""
    if isinstance(e, n.ExpectStart):
        return f"expect {no}start {e.play}"
    if isinstance(e, n.ExpectTrigger):
        return f"expect {no}trigger {e.trigger}"
    if isinstance(e, n.ExpectGate):
        return f"expect gate {e.gate} {'fails' if e.negated else 'passes'}"
    return f"expect {e.what} {e.name} {e.op.value} {format_expr(e.value)}"


# ---------------------------------------------------------------- comments


def _render(lines: list[_Line], src: _Source, align: bool) -> str:
    """Lines to text, each comment placed by the rules in the module docstring."""
    leading: dict[int, list[tuple[n.Comment, bool]]] = {}
    trailing: dict[int, list[n.Comment]] = {}
    tail: list[n.Comment] = []
    for c in src.comments:
        target = None if src.own_line(c) else _end_target(lines, c.line)
        if target is not None:
            trailing.setdefault(target, []).append(c)
            continue
        target = _next_target(lines, c.line)
        if target is None:
            tail.append(c)
        else:
            leading.setdefault(target, []).append((c, True))
    for i, cs in trailing.items():  # one comment per line: earlier ones move above it
        leading.setdefault(i, []).extend((c, False) for c in cs[:-1])
        trailing[i] = cs[-1:]

    out: list[_Out] = []
    for i, line in enumerate(lines):
        group = leading.get(i, [])
        if line.first is not None and i and lines[i - 1].indent >= line.indent:
            # A blank line the author put above a sibling item (or its comments) stays.
            top = min([line.first] + [c.line for c, from_source in group if from_source])
            if src.is_blank(top - 1):
                _blank(out)
        for k, (c, from_source) in enumerate(group):
            out.append(_Out(line.indent, c.text.rstrip(), comment_line=True))
            upto = group[k + 1][0].line if k + 1 < len(group) and group[k + 1][1] else line.first
            if from_source and upto is not None and _has_blank(src, c.line + 1, upto - 1):
                _blank(out)
        if line.blank:
            _blank(out)
        else:
            comment = trailing[i][0].text.rstrip() if i in trailing else None
            out.append(_Out(0 if line.verbatim else line.indent, line.text, comment, verbatim=line.verbatim))
    if tail:
        last_code = max((ln.last for ln in lines if ln.last is not None), default=0)
        # Right under the last line (as deep as it at most, never deeper than
        # written), or at column 1 once a blank line separates it.
        indent = next((ln.indent for ln in reversed(lines) if ln.text), 0)
        previous = last_code
        for c in tail:
            if previous and _has_blank(src, previous + 1, c.line - 1):
                _blank(out)
                indent = 0
            indent = min(indent, c.column - 1)
            out.append(_Out(indent, c.text.rstrip(), comment_line=True))
            previous = c.line
    if align:
        _align_comments(out)
    return "".join(o.render() + "\n" for o in out)


@dataclass
class _Out:
    """A rendered line: code with maybe an end-of-line comment, a comment line, or blank."""

    indent: int
    text: str
    comment: str | None = None
    comment_line: bool = False
    verbatim: bool = False
    column: int = 0  # where the end-of-line comment starts, once aligned

    @property
    def code(self) -> str:
        return " " * self.indent + self.text if self.text else ""

    def render(self) -> str:
        if self.comment is None:
            return self.code
        return self.code + " " * max(2, self.column - len(self.code)) + self.comment


def _blank(out: list[_Out]) -> None:
    if out and out[-1].text:  # never two blank lines, never one at the top
        out.append(_Out(0, ""))


def _align_comments(out: list[_Out]) -> None:
    """End-of-line comments of consecutive code lines at one depth share a column."""
    run: list[_Out] = []
    for o in out + [_Out(0, "")]:
        if run and (not o.text or o.comment_line or o.verbatim or o.indent != run[0].indent):
            column = max(len(r.code) for r in run if r.comment is not None) + 2 if any(
                r.comment is not None for r in run) else 0
            for r in run:
                r.column = column
            run = []
        if o.text and not o.comment_line and not o.verbatim:
            run.append(o)


def _has_blank(src: _Source, first: int, last: int) -> bool:
    return any(src.is_blank(line) for line in range(first, last + 1))


def _end_target(lines: list[_Line], line: int) -> int | None:
    """The output line whose item ends on `line`, else the tightest one spanning it."""
    exact = [i for i, ln in enumerate(lines) if ln.last == line]
    if exact:
        return exact[-1]
    spanning = [(ln.last - ln.first, i) for i, ln in enumerate(lines)
                if ln.first is not None and ln.last is not None and ln.first <= line <= ln.last]
    return min(spanning, key=lambda s: (s[0], -s[1]))[1] if spanning else None


def _next_target(lines: list[_Line], line: int) -> int | None:
    """The output line of the first item that starts after `line`."""
    best: tuple[int, int] | None = None
    for i, ln in enumerate(lines):
        if ln.first is not None and ln.first > line and (best is None or ln.first < best[0]):
            best = (ln.first, i)
    return best[1] if best else None
