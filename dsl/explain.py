"""Explanations: why a rule did or did not fire, condition by condition.

An `Explanation` is a tree: every sub-condition (each operand of and/or,
each comparison) with its source text, its value and its truth (true /
false / empty), the values it read (fields, windows), and for named rules
(triggers, gates, scores, bands, routes, plays) the parts they are made of.
Values come from the same `Evaluator` that decides the outcome, so an
explanation can never disagree with the result it explains.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
from typing import Any

from pydantic import BaseModel

from dsl import nodes as n
from dsl import printer
from dsl.evaluator import EvalError, Evaluator, Value, band_for, in_window, is_number
from dsl.functions import form_of
from dsl.types import PERCENT


class Truth(str, enum.Enum):
    TRUE = "true"
    FALSE = "false"
    EMPTY = "empty"


def truth_of(value: Value) -> Truth:
    if value is None:
        return Truth.EMPTY
    return Truth.TRUE if value is True else Truth.FALSE


class Explanation(BaseModel):
    """One line of a "why": a condition (has `truth`) or a value read (has `shown`)."""

    kind: str  # condition, value, trigger, gate, gate_case, requirement, score, points_line, points_case, band, route, route_case, play, note
    text: str  # source text, e.g. `account.usage_percent >= 80%`
    value: Any = None  # the raw value (JSON-able: number, text, date, bool, null)
    shown: str = ""  # the value as a person reads it: `85%`, `empty`, `2026-01-02`
    truth: Truth | None = None  # set on conditions and named yes/no rules
    note: str | None = None  # e.g. "2 points in the window" or "does not apply"
    children: list[Explanation] = []


# --------------------------------------------------------------------------
# Showing values and expressions


def fmt_number(x: float | int) -> str:
    """A computed number for reading: 6 decimals at most (0.333333), no `.0`."""
    if isinstance(x, int):
        return str(x)
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    s = f"{x:.6f}".rstrip("0").rstrip(".")
    return s if s not in ("0", "-0") else f"{x:.6g}"


def show(value: Value, percent: bool = False) -> str:
    """A value as the rules' author would write it."""
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "true" if value else "false"
    if is_number(value):
        return fmt_number(round(value * 100, 10)) + "%" if percent else fmt_number(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def format_expr(e: n.Expr) -> str:
    """Source text of an expression, from the shared printer (so it reads like `playbook fmt`)."""
    try:
        return printer.format_expr(e)
    except (TypeError, ValueError) as err:  # an explanation must not crash on a node the printer lacks
        raise EvalError(f"cannot print an expression: {err}") from None


def json_value(v: Value) -> Any:
    return v.isoformat() if isinstance(v, dt.date) else v


# --------------------------------------------------------------------------
# Explaining expressions


_LITERALS = (n.Number, n.Percent, n.String, n.Bool, n.Symbol, n.Duration, n.DateLit, n.Ago, n.Today)


class Explainer:
    """Builds explanations with an Evaluator (whose cache makes re-reading values cheap)."""

    def __init__(self, ev: Evaluator):
        self.ev = ev

    # ------------------------------------------------------------ helpers
    def _is_percent(self, e: n.Expr) -> bool:
        """Whether a value reads best as a percent: percent fields, percent literals, growth."""
        if isinstance(e, n.Percent):
            return True
        if isinstance(e, n.Call):
            form = form_of(e)
            return form is not None and form.result == PERCENT
        if isinstance(e, n.Ref) and len(e.path) == 2 and e.path[0] == "account":
            f = self.ev.catalog.entity_field("account", e.path[1])
            return f is not None and f.type.name is n.TypeName.PERCENT
        return False

    def value_node(self, e: n.Expr, value: Value, kind: str = "value") -> Explanation:
        return Explanation(kind=kind, text=format_expr(e), value=json_value(value),
                           shown=show(value, self._is_percent(e)))

    # ------------------------------------------------------------ expressions
    def expr(self, e: n.Expr, as_condition: bool = True) -> Explanation:
        """Explain `e`. Conditions get a truth; other expressions a shown value."""
        value = self.ev.eval_expr(e)
        is_cond = isinstance(value, bool) or (as_condition and value is None)
        node = self.value_node(e, value, "condition" if is_cond else "value")
        if is_cond:
            node.truth = truth_of(value)
        node.children = self._parts(e)
        node.note = self._note(e)
        return node

    def _parts(self, e: n.Expr) -> list[Explanation]:
        match e:
            case n.Binary() if e.op in (n.BinOp.AND, n.BinOp.OR):
                return [self.expr(op) for op in _flatten(e, e.op)]
            case n.Unary() if e.op is n.UnOp.NOT:
                return [self.expr(e.operand)]
            case n.Unary():
                return self._operands([e.operand])
            case n.Binary():
                return self._operands([e.left, e.right])
            case n.InList():
                return self._operands([e.value, *e.items])
            case n.Between():
                return self._operands([e.value, e.low, e.high])
            case n.IsEmpty():
                return self._operands([e.value])
            case n.Call():
                form = form_of(e)
                # A window function's first argument names its series: nothing to show.
                return self._operands(e.args[1:] if form is not None and form.series else e.args)
            case n.Ref() if len(e.path) == 2 and e.path[0] == "account":
                let = self.ev.catalog.entity_let("account", e.path[1])
                if let is not None:  # a derived field: show what it is made of
                    inner = self.expr(let.value, as_condition=False)
                    inner.text = f"= {inner.text}"
                    return [inner]
        return []

    def _operands(self, operands: list[n.Expr]) -> list[Explanation]:
        """The values an operator read; literals say nothing the text does not."""
        out = []
        for op in operands:
            if isinstance(op, _LITERALS):
                continue
            out.append(self.expr(op, as_condition=False))
        return out

    def _note(self, e: n.Expr) -> str | None:
        """What a window or event function looked at."""
        if not isinstance(e, n.Call) or not e.args or not isinstance(e.args[0], n.Symbol):
            return None
        form = form_of(e)
        if form is None or form.series is None:
            return None
        name = e.args[0].name
        try:
            if form.series == "event":
                dates = self.ev.event_dates(e.args[0], e.func)
                if not dates:
                    return f"{name} never happened" + self._future(name, len(dates), events=True)
                note = f"{name} last on {max(dates).isoformat()}, {len(dates)} time(s) in all"
                if form.windowed:
                    note += self._outside(e, [(d, d.isoformat()) for d in dates])
                return note + self._future(name, len(dates), events=True)
            points = self.ev.series(e)
            if not form.windowed:  # the whole series (latest): its last point says it
                if not points:
                    return f"no {name} point" + self._future(name, 0)
                d, v = points[-1]
                return f"{name} = {fmt_number(v)} on {d.isoformat()}"
            every = self.ev.metric_points(e.args[0], e.func)
            shown = ", ".join(f"{fmt_number(v)} on {d.isoformat()}" for d, v in points[:6])
            more = f", ... ({len(points)} points)" if len(points) > 6 else ""
            note = f"{name}: {shown}{more}" if points else f"no {name} point in the window"
            outside = self._outside(e, [(d, f"{fmt_number(v)} on {d.isoformat()}") for d, v in every])
            return note + outside + self._future(name, len(every))
        except EvalError:
            return None

    def _outside(self, e: n.Call, items: list[tuple[dt.date, str]]) -> str:
        """`; outside the 60-day window (...): 100 on 2026-04-02 (60 days ago)`: the points a
        window left out, and why (a window of N days holds the dates in (today - N, today])."""
        days = self.ev.window_days(e.args[1], e.func)
        left_out = [(d, text) for d, text in items if not in_window(self.ev.today, d, days)]
        if not left_out:
            return ""
        after = self.ev.today - dt.timedelta(days=math.ceil(days))
        shown = ", ".join(f"{text} ({(self.ev.today - d).days} days ago)" for d, text in left_out[-3:])
        more = f" and {len(left_out) - 3} older" if len(left_out) > 3 else ""
        return (f"; outside the {fmt_number(days)}-day window, which holds the dates after "
                f"{after.isoformat()}: {shown}{more}")

    def _future(self, name: str, counted: int, events: bool = False) -> str:
        """Points or occurrences dated after today are ignored: the future has not happened."""
        raw = (self.ev.account.events if events else self.ev.account.metrics).get(name, [])
        later = len(raw) - counted
        return f"; {later} dated after today, ignored (the future has not happened)" if later > 0 else ""

    # ------------------------------------------------------------ named rules
    def trigger(self, name: str) -> Explanation:
        t = self.ev.catalog.triggers[name] if name in self.ev.catalog.triggers else None
        fires = self.ev.trigger_fires(name)  # raises EvalError for an unknown trigger
        assert t is not None
        plays = ", ".join(a.play for a in t.then)
        return Explanation(kind="trigger", text=f"trigger {name}", value=fires, truth=truth_of(fires),
                           note=("fires" if fires else "does not fire") + f"; starts {plays}",
                           children=[self.expr(t.when)])

    def gate(self, name: str) -> Explanation:
        passes = self.ev.gate_passes(name)
        g = self.ev.catalog.gates[name]
        _, applies, _ = self.ev.gate_detail(g)
        children = []
        for case, applied in zip(g.cases, applies):
            reqs = []
            for r in case.requires:
                node = self.expr(r.when)
                node.kind = "requirement"
                if r.label:
                    node.note = f'"{r.label}"' + (f"; {node.note}" if node.note else "")
                reqs.append(node)
            if case.when is None:
                children.extend(reqs)  # requirements outside a `when` always apply
                continue
            head = self.expr(case.when)
            head.kind = "gate_case"
            head.text = f"when {head.text}"
            head.note = "applies" if applied else "does not apply"
            head.children = head.children + reqs
            children.append(head)
        note = "passes" if passes else "fails"
        if any(c.when is not None for c in g.cases) and not any(
            a for a, c in zip(applies, g.cases) if c.when is not None
        ):
            note += ": no `when` case applies to this account"
        return Explanation(kind="gate", text=f"gate {name}", value=passes, truth=truth_of(passes),
                           note=note, children=children)

    def score(self, name: str) -> Explanation:
        value = self.ev.score_value(name)
        s = self.ev.catalog.scores[name]
        children: list[Explanation] = []
        if s.formula is not None:
            formula = self.expr(s.formula, as_condition=False)
            formula.text = f"= {formula.text}"
            children.append(formula)
        for rule in s.points:
            got, matched = self.ev.points_line(rule)
            cases = []
            for i, case in enumerate(rule.cases):
                node = self.expr(case.when)
                node.kind = "points_case"
                node.text = f"{fmt_number(case.points)} if {node.text}"
                if i == matched:
                    node.note = "matched"
                cases.append(node)
            line = ", ".join(c.text for c in cases) + f", otherwise {fmt_number(rule.otherwise)}"
            note = f"first true case: {fmt_number(got)} points" if matched is not None \
                else f"no case is true: otherwise {fmt_number(got)} points"
            children.append(Explanation(kind="points_line", text=f"points {line}", value=got,
                                        shown=fmt_number(got), note=note, children=cases))
        return Explanation(kind="score", text=f"score {name}", value=json_value(value),
                           shown=show(value), children=children)

    def band(self, name: str) -> Explanation:
        band = self.ev.band_of(name)
        s = self.ev.catalog.scores[name]
        value = self.ev.score_value(name)
        chosen = band_for(s, value)
        note = f"score {show(value)} is in band {band} ({_band_range(chosen)})" if chosen else \
            f"score {show(value)} is in no band ({', '.join(f'{b.name} {_band_range(b)}' for b in s.bands)})"
        return Explanation(kind="band", text=f"band {name}", value=band, shown=show(band), note=note,
                           children=[self.score(name)])

    def route(self, name: str) -> Explanation:
        target = self.ev.route_of(name)
        r = self.ev.catalog.routes[name]
        _, chosen = self.ev.route_choice(r)
        children = []
        for i, case in enumerate(r.cases):
            if case.when is None:
                node = Explanation(kind="route_case", text=f"otherwise -> {case.target}")
            else:
                node = self.expr(case.when)
                node.kind = "route_case"
                node.text = f"when {node.text} -> {case.target}"
            if i == chosen:
                node.note = "chosen"
            children.append(node)
        return Explanation(kind="route", text=f"route {name}", value=target, shown=show(target),
                           children=children)

    def play(self, name: str) -> Explanation:
        starts = self.ev.would_start(name)
        p = self.ev.catalog.plays[name]
        children = [self.trigger(t.name) for t in self.ev.catalog.triggers_starting(name)]
        if not children:
            children.append(Explanation(kind="note", text=f"no trigger starts {name}"))
        if p.ungated:
            children.append(Explanation(kind="note", text="ungated: no gate to pass"))
        elif p.gate is None:
            children.append(Explanation(kind="note", text="no gate"))
        else:
            children.append(self.gate(p.gate))
        return Explanation(kind="play", text=f"play {name}", value=starts, truth=truth_of(starts),
                           note="starts" if starts else "does not start", children=children)

    def field(self, name: str) -> Explanation:
        return self.expr(n.Ref(path=["account", name]), as_condition=False)


def _flatten(e: n.Expr, op: n.BinOp) -> list[n.Expr]:
    """`a and b and c` parses as `(a and b) and c`; a reader sees three conditions."""
    if isinstance(e, n.Binary) and e.op is op:
        return _flatten(e.left, op) + _flatten(e.right, op)
    return [e]


def _band_range(b: n.Band | None) -> str:
    if b is None:
        return ""
    low = "" if b.low is None else (">" if not b.low_inclusive else "") + fmt_number(b.low)
    high = "" if b.high is None else ("<" if not b.high_inclusive else "") + fmt_number(b.high)
    return f"{low}..{high}"


# --------------------------------------------------------------------------
# Entry points and rendering


def explain(expr: n.Expr, ev: Evaluator) -> Explanation:
    """Why `expr` has its value for the evaluator's account and day."""
    return Explainer(ev).expr(expr)


def render(e: Explanation, indent: int = 0) -> list[str]:
    """Indented text lines. Values a condition read are shown inline after it."""
    pad = "  " * indent
    leaves = [c for c in e.children if c.truth is None and not c.children and c.kind == "value"]
    nested = [c for c in e.children if not any(c is leaf for leaf in leaves)]
    if e.truth is not None:
        line = f"{pad}{e.truth.value:<5}  {e.text}"
    elif e.kind in ("note", "route_case") and not e.shown:
        line = f"{pad}{e.text}"
    else:
        line = f"{pad}{e.text} = {e.shown}"
    if leaves:
        line += "   [" + ", ".join(f"{c.text} = {c.shown}" + (f" ({c.note})" if c.note else "")
                                for c in leaves) + "]"
    if e.note:
        line += f"   ({e.note})"
    lines = [line]
    for c in nested:
        lines += render(c, indent + 1)
    return lines


def to_json(e: Explanation) -> str:
    return json.dumps(e.model_dump(mode="json"), indent=2)
