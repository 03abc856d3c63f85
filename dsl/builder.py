"""Lark parse tree -> AST (dsl.nodes). Positions are attached in one place."""

from __future__ import annotations

import datetime as dt
import textwrap
from typing import Any

from lark import Token, Transformer
from lark.tree import Meta

from dsl import nodes as n
from dsl import steps


class BuildError(Exception):
    """A construct that parses but cannot mean anything (e.g. `31-02-2026`)."""

    def __init__(self, message: str, span: n.Span):
        super().__init__(message)
        self.span = span


_COMPARE = {"==": n.BinOp.EQ, "!=": n.BinOp.NE, "<": n.BinOp.LT, "<=": n.BinOp.LE, ">": n.BinOp.GT, ">=": n.BinOp.GE}
_ARITH = {"+": n.BinOp.ADD, "-": n.BinOp.SUB, "*": n.BinOp.MUL, "/": n.BinOp.DIV}
_UNITS = {
    "hour": n.DurationUnit.HOURS, "hours": n.DurationUnit.HOURS,
    "day": n.DurationUnit.DAYS, "days": n.DurationUnit.DAYS,
    "week": n.DurationUnit.WEEKS, "weeks": n.DurationUnit.WEEKS,
    "month": n.DurationUnit.MONTHS, "months": n.DurationUnit.MONTHS,
    "business day": n.DurationUnit.BUSINESS_DAYS, "business days": n.DurationUnit.BUSINESS_DAYS,
}


def _num(tok: Token) -> float:
    return float(str(tok).replace("_", ""))


def _str(tok: str) -> str:
    """The value of a STRING or LONG_STRING token (or its text, as the formatter reads it)."""
    raw = str(tok)
    if raw.startswith('"""'):
        # A CRLF file's text block means the same as an LF file's (and hashes the same).
        body = raw[3:-3].replace("\r\n", "\n")
        if body.startswith("\n"):
            body = body[1:]
        return textwrap.dedent(body).rstrip() + "\n" if body.strip() else ""
    out, i, inner = [], 0, raw[1:-1]
    while i < len(inner):
        c = inner[i]
        if c == "\\" and i + 1 < len(inner):
            nxt = inner[i + 1]
            out.append({"n": "\n", "t": "\t", '"': '"', "\\": "\\"}.get(nxt, "\\" + nxt))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


class Builder(Transformer):
    """Every rule method gets (meta, children); `__default__` fails loudly."""

    def __init__(self, file: str, line_delta: int = 0, offset_delta: int = 0):
        super().__init__(visit_tokens=False)
        self.file = file
        self.line_delta = line_delta
        self.offset_delta = offset_delta

    # Lark calls rule callbacks as f(children) unless wrapped; we want meta on all.
    def _call_userfunc(self, tree, new_children=None):
        children = new_children if new_children is not None else tree.children
        f = getattr(self, tree.data, None)
        if f is None:
            return self.__default__(tree.data, children, tree.meta)
        return f(tree.meta, children)

    def __default__(self, data, children, meta):  # noqa: D401
        kind = steps.KINDS.get(data)
        if kind is None:
            raise NotImplementedError(f"builder has no rule for {data!r}")
        # A step kind (dsl/steps.py): its row gets plain values, not tokens.
        values = [_str(c) if isinstance(c, Token) and c.type in ("STRING", "LONG_STRING")
                  else str(c) if isinstance(c, Token) else c for c in children]
        return kind.node(**kind.build(values), span=self.span(meta))

    # ------------------------------------------------------------ positions
    def span(self, meta: Meta) -> n.Span:
        if getattr(meta, "empty", True):
            return n.Span(file=self.file)
        return n.Span(
            file=self.file,
            start=n.Position(line=meta.line + self.line_delta, column=meta.column, offset=meta.start_pos + self.offset_delta),
            end=n.Position(line=meta.end_line + self.line_delta, column=meta.end_column, offset=meta.end_pos + self.offset_delta),
        )

    def tok_span(self, tok: Token) -> n.Span:
        # lark types a token's position optional (for tokens made by hand); the lexer's have one.
        assert tok.line is not None and tok.column is not None and tok.start_pos is not None
        assert tok.end_line is not None and tok.end_column is not None and tok.end_pos is not None
        return n.Span(
            file=self.file,
            start=n.Position(line=tok.line + self.line_delta, column=tok.column, offset=tok.start_pos + self.offset_delta),
            end=n.Position(line=tok.end_line + self.line_delta, column=tok.end_column, offset=tok.end_pos + self.offset_delta),
        )

    # ------------------------------------------------------------ top level
    def start(self, meta, ch):
        return list(ch)

    def entity(self, meta, ch):
        name, *items = ch
        return n.EntityDecl(
            name=str(name),
            fields=[i for i in items if isinstance(i, n.FieldDecl)],
            lets=[i for i in items if isinstance(i, n.LetDecl)],
            span=self.span(meta),
        )

    def field(self, meta, ch):
        return n.FieldDecl(name=str(ch[0]), type=ch[1], span=self.span(meta))

    def simple_type(self, meta, ch):
        name = str(ch[0])
        nullable = any(isinstance(c, Token) and c.type == "OPTIONAL" for c in ch)
        nums = [c for c in ch if isinstance(c, float)]
        try:
            tname = n.TypeName(name)
        except ValueError:
            raise BuildError(f"unknown type '{name}'", self.tok_span(ch[0])) from None
        return n.TypeRef(
            name=tname, nullable=nullable,
            low=nums[0] if nums else None, high=nums[1] if nums else None,
            span=self.span(meta),
        )

    def enum_type(self, meta, ch):
        values = [str(c) for c in ch if isinstance(c, Token) and c.type == "NAME"]
        nullable = any(isinstance(c, Token) and c.type == "OPTIONAL" for c in ch)
        return n.TypeRef(name=n.TypeName.ENUM, values=values, nullable=nullable, span=self.span(meta))

    def let(self, meta, ch):
        return n.LetDecl(name=str(ch[0]), value=ch[1], span=self.span(meta))

    def metric(self, meta, ch):
        return n.MetricDecl(name=str(ch[0]), per=str(ch[1]) if len(ch) > 1 else "day", span=self.span(meta))

    def event(self, meta, ch):
        return n.EventDecl(name=str(ch[0]), span=self.span(meta))

    def calendar(self, meta, ch):
        items = ch[1:]
        title = _str(items.pop(0)) if items and isinstance(items[0], Token) and items[0].type == "STRING" else None
        return n.CalendarDecl(name=str(ch[0]), title=title,
                              regions=[i for i in items if isinstance(i, n.HolidayRegion)],
                              holidays=[i for i in items if not isinstance(i, n.HolidayRegion)], span=self.span(meta))

    def source(self, meta, ch):
        name, system, *rest = ch
        obj = str(rest.pop(0)) if rest and isinstance(rest[0], Token) else None
        decl = n.SourceDecl(name=str(name), system=str(system), object=obj, span=self.span(meta))
        for item in rest:
            match item:
                case n.SourceMapping():
                    decl.mappings.append(item)
                case ("query", text, span):
                    decl.query, decl.query_span = text, span
                case ("incremental", column, span):
                    decl.incremental, decl.incremental_span = column, span
                case ("dated", column, span):
                    decl.dated, decl.dated_span = column, span
                case ("named", column, span):
                    decl.named, decl.named_span = column, span
        return decl

    def source_query(self, meta, ch):
        return ("query", _str(ch[0]), self.span(meta))

    def source_incremental(self, meta, ch):
        tok = ch[0]
        return ("incremental", _str(tok) if tok.type == "STRING" else str(tok), self.span(meta))

    def source_dated(self, meta, ch):
        tok = ch[0]
        return ("dated", _str(tok) if tok.type == "STRING" else str(tok), self.span(meta))

    def source_named(self, meta, ch):
        tok = ch[0]
        return ("named", _str(tok) if tok.type == "STRING" else str(tok), self.span(meta))

    def source_map(self, meta, ch):
        ref, col = ch
        # `event.NAME.PROPERTY` is the one three-part target: a property of the event.
        if len(ref.path) != 2 and not (len(ref.path) == 3 and ref.path[0] == "event"):
            raise BuildError(f"'{'.'.join(ref.path)}' is not an entity field: write ENTITY.FIELD = column",
                             ref.span)
        return n.SourceMapping(entity=ref.path[0], field=ref.path[1],
                               prop=ref.path[2] if len(ref.path) == 3 else None,
                               column=_str(col) if col.type == "STRING" else str(col), span=self.span(meta))

    def holiday_region(self, meta, ch):
        return n.HolidayRegion(country=str(ch[0]), subdivision=str(ch[2]) if len(ch) > 2 else None,
                               span=self.span(meta))

    def holiday(self, meta, ch):
        return self._date(ch[0])

    # ------------------------------------------------------------ rules
    def trigger(self, meta, ch):
        name = str(ch[0])
        rest = ch[1:]
        title = None
        if rest and isinstance(rest[0], Token) and rest[0].type == "STRING":
            title = _str(rest[0])
            rest = rest[1:]
        return n.TriggerDecl(name=name, title=title, when=rest[0], then=list(rest[1:]), span=self.span(meta))

    def action(self, meta, ch):
        return n.Action(play=str(ch[0]), span=self.span(meta))

    def score(self, meta, ch):
        name, rest = str(ch[0]), ch[1:]
        title = None
        if rest and isinstance(rest[0], Token):
            title, rest = _str(rest[0]), rest[1:]
        formula = None
        points: list[n.PointsRule] = []
        bands: list[n.Band] = []
        for item in rest:
            if isinstance(item, n.PointsRule):
                points.append(item)
            elif isinstance(item, n.Band):
                bands.append(item)
            else:
                formula = item[1]
        return n.ScoreDecl(name=name, title=title, formula=formula, points=points, bands=bands, span=self.span(meta))

    def formula(self, meta, ch):
        return ("formula", ch[0])

    def points(self, meta, ch):
        cases = [c for c in ch if isinstance(c, n.PointsCase)]
        rest = [c for c in ch if isinstance(c, float)]
        return n.PointsRule(cases=cases, otherwise=rest[0] if rest else 0, span=self.span(meta))

    def points_case(self, meta, ch):
        return n.PointsCase(points=ch[0], when=ch[1], span=self.span(meta))

    def band(self, meta, ch):
        name, rng = str(ch[0]), ch[1]
        label = _str(ch[2]) if len(ch) > 2 else None
        return n.Band(name=name, label=label, span=self.span(meta), **rng)

    def band_range(self, meta, ch):
        out: dict[str, Any] = {}
        for part in ch:
            out.update(part)
        return out

    def band_low(self, meta, ch):
        return {"low": ch[-1], "low_inclusive": len(ch) == 1}

    def band_high(self, meta, ch):
        return {"high": ch[-1], "high_inclusive": len(ch) == 1}

    def signed_number(self, meta, ch):
        value = _num(ch[-1])
        value = -value if len(ch) == 2 else value
        return value

    def gate(self, meta, ch):
        name, rest = str(ch[0]), ch[1:]
        title = None
        if rest and isinstance(rest[0], Token):
            title, rest = _str(rest[0]), rest[1:]
        cases: list[n.GateCase] = []
        loose = [r for r in rest if isinstance(r, n.Requirement)]
        if loose:
            cases.append(n.GateCase(when=None, requires=loose, span=loose[0].span))
        cases += [r for r in rest if isinstance(r, n.GateCase)]
        return n.GateDecl(name=name, title=title, cases=cases, span=self.span(meta))

    def require(self, meta, ch):
        return n.Requirement(when=ch[0], label=_str(ch[1]) if len(ch) > 1 else None, span=self.span(meta))

    def gate_case(self, meta, ch):
        return n.GateCase(when=ch[0], requires=list(ch[1:]), span=self.span(meta))

    def route(self, meta, ch):
        name, rest = str(ch[0]), ch[1:]
        title = None
        if rest and isinstance(rest[0], Token):
            title, rest = _str(rest[0]), rest[1:]
        return n.RouteDecl(name=name, title=title, cases=list(rest), span=self.span(meta))

    def route_case(self, meta, ch):
        return n.RouteCase(when=ch[0], target=str(ch[1]), span=self.span(meta))

    def route_otherwise(self, meta, ch):
        return n.RouteCase(when=None, target=str(ch[0]), span=self.span(meta))

    def template(self, meta, ch):
        name = str(ch[0])
        parts = dict(c for c in ch[1:])
        subject, subject_span = parts.get("subject", ("", n.NO_SPAN))
        body, body_span = parts.get("body", ("", n.NO_SPAN))
        return n.TemplateDecl(
            name=name, subject=subject, body=body,
            subject_span=subject_span, body_span=body_span, span=self.span(meta),
        )

    def subject(self, meta, ch):
        return ("subject", (_str(ch[0]), self.tok_span(ch[0])))

    def body(self, meta, ch):
        return ("body", (_str(ch[0]), self.tok_span(ch[0])))

    # ------------------------------------------------------------ plays
    def play(self, meta, ch):
        name, rest = str(ch[0]), ch[1:]
        title = None
        if rest and isinstance(rest[0], Token):
            title, rest = _str(rest[0]), rest[1:]
        fields: dict[str, Any] = {}
        steps: list[n.Step] = []
        for item in rest:
            if isinstance(item, n.Step):
                steps.append(item)
            else:
                fields.update(item)
        return n.PlayDecl(name=name, title=title, steps=steps, span=self.span(meta), **fields)

    def play_kind(self, meta, ch):
        return {"kind": str(ch[0])}

    def play_owner(self, meta, ch):
        return {"owner": ch[0]}

    def play_priority(self, meta, ch):
        return {"priority": int(ch[0])}

    def play_gate(self, meta, ch):
        return {"gate": str(ch[0])}

    def play_ungated(self, meta, ch):
        return {"ungated": True}

    def play_concurrent(self, meta, ch):
        return {"concurrent": True}

    def play_reenter(self, meta, ch):
        return {"reenter_days": ch[0].days}

    def play_exit(self, meta, ch):
        return {"exit": ch[0]}

    def play_anchor(self, meta, ch):
        return {"anchor": ch[0]}

    def play_window(self, meta, ch):
        times = [self._time(c) for c in ch if isinstance(c, Token) and c.type == "TIME"]
        weekdays = any(isinstance(c, Token) and c.type == "WEEKDAYS" for c in ch)
        tz = next((c for c in ch if isinstance(c, n.Ref)), None)
        return {"window": n.SendWindow(start=times[0], end=times[1], weekdays_only=weekdays, timezone=tz, span=self.span(meta))}

    def play_calendar(self, meta, ch):
        return {"calendar": str(ch[0])}

    def play_holdout(self, meta, ch):
        return {"holdout": n.Holdout(percent=_num(ch[0]), span=self.span(meta))}

    def play_holdout_unitless(self, meta, ch):
        return {"holdout": n.Holdout(percent=_num(ch[0]), unit=False, span=self.span(meta))}

    def step(self, meta, ch):
        timing, action, *mods = ch
        unless = next((m[1] for m in mods if m[0] == "unless"), None)
        label = next((m[1] for m in mods if m[0] == "label"), None)
        return n.Step(timing=timing, action=action, unless=unless, label=label, span=self.span(meta))

    def branch_step(self, meta, ch):
        return n.Step(timing=ch[0], action=ch[1], span=self.span(meta))

    def step_unless(self, meta, ch):
        return ("unless", ch[0])

    def step_label(self, meta, ch):
        return ("label", str(ch[0]))

    def day_timing(self, meta, ch):
        at = self._time(ch[1]) if len(ch) > 1 else None
        return n.Timing(day=int(ch[0]), at=at, span=self.span(meta))

    def business_timing(self, meta, ch):
        at = self._time(ch[1]) if len(ch) > 1 else None
        return n.Timing(day=int(_num(ch[0])), business=True, at=at, span=self.span(meta))

    def immediate_timing(self, meta, ch):
        return n.Timing(day=0, span=self.span(meta))

    def opportunity_amount(self, meta, ch):
        return ("amount", ch[0])

    def opportunity_owner(self, meta, ch):
        return ("owner", ch[0])

    def then_block(self, meta, ch):
        return list(ch)

    def else_block(self, meta, ch):
        return list(ch)

    # ------------------------------------------------------------ tests
    def test(self, meta, ch):
        name = _str(ch[0])
        today = None
        given, expect = [], []
        for item in ch[1:]:
            if isinstance(item, dt.date):
                today = item
            elif isinstance(item, (n.GivenAccount, n.GivenMetric, n.GivenEvent)):
                given.append(item)
            else:
                expect.append(item)
        return n.TestDecl(name=name, today=today, given=given, expect=expect, span=self.span(meta))

    def test_today(self, meta, ch):
        return self._date(ch[0])

    def given_account(self, meta, ch):
        return n.GivenAccount(fields=list(ch), span=self.span(meta))

    def given_field(self, meta, ch):
        return n.GivenField(name=str(ch[0]), value=ch[1], span=self.span(meta))

    def given_metric(self, meta, ch):
        return n.GivenMetric(metric=str(ch[0]), points=list(ch[1:]), span=self.span(meta))

    def given_point(self, meta, ch):
        return n.GivenPoint(value=ch[0], at=ch[1], span=self.span(meta))

    def given_event(self, meta, ch):
        return n.GivenEvent(event=str(ch[0]), at=list(ch[1:]), span=self.span(meta))

    def expect_start(self, meta, ch):
        negated = isinstance(ch[0], Token) and ch[0].type == "NO"
        return n.ExpectStart(play=str(ch[-1]), negated=negated, span=self.span(meta))

    def expect_trigger(self, meta, ch):
        negated = isinstance(ch[0], Token) and ch[0].type == "NO"
        return n.ExpectTrigger(trigger=str(ch[-1]), negated=negated, span=self.span(meta))

    def expect_gate(self, meta, ch):
        return n.ExpectGate(gate=str(ch[0]), negated=str(ch[1]) == "fails", span=self.span(meta))

    def expect_value(self, meta, ch):
        what, name, op, value = ch
        return n.ExpectValue(what=what, name=str(name), op=_COMPARE[str(op)], value=value, span=self.span(meta))

    def kind_score(self, meta, ch):
        return "score"

    def kind_band(self, meta, ch):
        return "band"

    def kind_route(self, meta, ch):
        return "route"

    def kind_field(self, meta, ch):
        return "field"

    # ------------------------------------------------------------ expressions
    def or_op(self, meta, ch):
        return n.Binary(op=n.BinOp.OR, left=ch[0], right=ch[1], span=self.span(meta))

    def and_op(self, meta, ch):
        return n.Binary(op=n.BinOp.AND, left=ch[0], right=ch[1], span=self.span(meta))

    def not_op(self, meta, ch):
        return n.Unary(op=n.UnOp.NOT, operand=ch[1], span=self.span(meta))

    def compare(self, meta, ch):
        return n.Binary(op=_COMPARE[str(ch[1])], left=ch[0], right=ch[2], span=self.span(meta))

    def arith(self, meta, ch):
        return n.Binary(op=_ARITH[str(ch[1])], left=ch[0], right=ch[2], span=self.span(meta))

    def neg(self, meta, ch):
        operand = ch[1]
        if isinstance(operand, (n.Number, n.Percent)):  # fold `-5` into a literal
            return type(operand)(value=-operand.value, span=self.span(meta))
        return n.Unary(op=n.UnOp.NEG, operand=operand, span=self.span(meta))

    def in_list(self, meta, ch):
        negated = len(ch) == 3
        return n.InList(value=ch[0], items=ch[-1], negated=negated, span=self.span(meta))

    def list(self, meta, ch):
        return [c for c in ch if c is not None]

    def between(self, meta, ch):
        return n.Between(value=ch[0], low=ch[1], high=ch[2], span=self.span(meta))

    def is_empty(self, meta, ch):
        return n.IsEmpty(value=ch[0], negated=len(ch) == 2, span=self.span(meta))

    def number(self, meta, ch):
        return n.Number(value=_num(ch[0]), span=self.span(meta))

    def percent(self, meta, ch):
        return n.Percent(value=_num(ch[0]) / 100, span=self.span(meta))

    def duration(self, meta, ch):
        unit = " ".join(str(ch[1]).split())
        return n.Duration(amount=_num(ch[0]), unit=_UNITS[unit], span=self.span(meta))

    def ago(self, meta, ch):
        return n.Ago(duration=ch[0], span=self.span(meta))

    def string(self, meta, ch):
        return n.String(value=_str(ch[0]), span=self.span(meta))

    def true(self, meta, ch):
        return n.Bool(value=True, span=self.span(meta))

    def false(self, meta, ch):
        return n.Bool(value=False, span=self.span(meta))

    def date(self, meta, ch):
        return n.DateLit(value=self._date(ch[0]), span=self.span(meta))

    def today(self, meta, ch):
        return n.Today(span=self.span(meta))

    def ref(self, meta, ch):
        return n.Ref(path=[str(c) for c in ch], span=self.span(meta))

    def symbol(self, meta, ch):
        return n.Symbol(name=str(ch[0]), span=self.span(meta))

    def call(self, meta, ch):
        return n.Call(func=str(ch[0]), args=[c for c in ch[1:] if c is not None], span=self.span(meta))

    # ------------------------------------------------------------ helpers
    def _date(self, tok: Token) -> dt.date:
        try:
            return dt.date.fromisoformat(str(tok))
        except ValueError:
            raise BuildError(f"'{tok}' is not a calendar date (YYYY-MM-DD)", self.tok_span(tok)) from None

    def _time(self, tok: Token) -> str:
        hours, minutes = (int(p) for p in str(tok).split(":"))
        if hours > 23 or minutes > 59:
            raise BuildError(f"'{tok}' is not a time of day (HH:MM, 00:00 to 23:59)", self.tok_span(tok))
        return f"{hours:02d}:{minutes:02d}"
