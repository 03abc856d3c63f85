"""The reference evaluator: the rules of a catalog over ONE account, in plain Python.

This module is the executable form of docs/semantics.md. The SQL compiler in
engine/ is checked against it by a differential test, so every rule here is
written to be reproducible set-wise in SQL (no dependence on list order, no
short-circuit that could hide an error, no float-format tricks).

Values are plain Python: `float`/`int` for numbers (percent as fractions),
`str` for text and enum values, `datetime.date`, `bool`, and `None` for an
empty value. Logic is three-valued: `None` is "empty" (SQL's NULL).
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from dsl import nodes as n
from dsl.catalog import Catalog
from dsl.functions import FUNCTIONS, Function, form_of

Value = float | int | str | bool | dt.date | None


class EvalError(Exception):
    """An expression that cannot be evaluated (ill-typed, unknown name, cycle).

    The checker should reject all of these first; the evaluator still never
    lets a raw Python exception escape.
    """


@dataclass
class Account:
    """A snapshot of one account: what a rule may read.

    `fields`: field name -> value (None or absent = empty).
    `metrics`: metric name -> [(date, value)], at most one point per date.
    `events`: event name -> dates it occurred on (repeats allowed).
    """

    fields: dict[str, Value] = field(default_factory=dict)
    metrics: dict[str, list[tuple[dt.date, float]]] = field(default_factory=dict)
    events: dict[str, list[dt.date]] = field(default_factory=dict)


# --------------------------------------------------------------------------
# Value helpers


def is_number(v: object) -> TypeGuard[int | float]:
    # bool is an int subclass in Python; in the language it is not a number.
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def kind_of(v: object) -> str:
    """The language's name for a value's type, for error messages."""
    if v is None:
        return "empty"
    if isinstance(v, bool):
        return "true/false"
    if is_number(v):
        return "number"
    if isinstance(v, str):
        return "text"
    if isinstance(v, dt.date):
        return "date"
    return type(v).__name__


def normalize(v: object, what: str) -> Value:
    """An input value as the evaluator sees it.

    datetimes compare by day (UTC), so they become dates; NaN is empty (SQLite
    stores NaN as NULL, so the two evaluators could not agree otherwise);
    Decimals become floats.
    """
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(dt.timezone.utc)
        return v.date()
    if isinstance(v, dt.date):
        return v
    if isinstance(v, decimal.Decimal):
        v = float(v)
    if isinstance(v, float):
        return None if math.isnan(v) else v
    if isinstance(v, int):
        return v
    raise EvalError(f"{what} holds a {type(v).__name__}, which is not a value the rules can read")


def compare(op: n.BinOp, left: Value, right: Value) -> bool | None:
    """`left op right` with SQL's null rule. Text and true/false: only == and !=."""
    if left is None or right is None:
        return None
    if is_number(left) and is_number(right):
        pass
    elif isinstance(left, dt.date) and isinstance(right, dt.date):
        pass
    elif (isinstance(left, str) and isinstance(right, str)) or (
        isinstance(left, bool) and isinstance(right, bool)
    ):
        # Ordering text would depend on the database's collation, so the
        # language only tests text (and enum values) for equality.
        if op not in (n.BinOp.EQ, n.BinOp.NE):
            raise EvalError(f"cannot use '{op.value}' on {kind_of(left)}; only == and != compare {kind_of(left)}")
    else:
        raise EvalError(f"cannot compare {kind_of(left)} ({left!r}) with {kind_of(right)} ({right!r})")
    match op:
        case n.BinOp.EQ:
            return left == right
        case n.BinOp.NE:
            return left != right
        case n.BinOp.LT:
            return left < right  # type: ignore[operator]
        case n.BinOp.LE:
            return left <= right  # type: ignore[operator]
        case n.BinOp.GT:
            return left > right  # type: ignore[operator]
        case n.BinOp.GE:
            return left >= right  # type: ignore[operator]
    raise EvalError(f"'{op.value}' is not a comparison")


def and3(values: Iterable[bool | None]) -> bool | None:
    """SQL AND over any number of operands: false wins, then empty."""
    vs = list(values)
    if any(v is False for v in vs):
        return False
    if any(v is None for v in vs):
        return None
    return True


def or3(values: Iterable[bool | None]) -> bool | None:
    """SQL OR: true wins, then empty."""
    vs = list(values)
    if any(v is True for v in vs):
        return True
    if any(v is None for v in vs):
        return None
    return False


def ago(today: dt.date, days: float) -> dt.date:
    """`N days ago`: dates have no time of day, so a fraction of a day is dropped (36 hours ago = 1 day ago)."""
    try:
        return today - dt.timedelta(days=math.floor(days))
    except OverflowError:
        raise EvalError(f"{days:g} days ago is outside the calendar") from None


def in_window(today: dt.date, when: dt.date, days: float) -> bool:
    """A window of N days holds the dates in (today - N, today]."""
    age = (today - when).days
    return 0 <= age < days


# --------------------------------------------------------------------------
# The evaluator


Key = tuple[str, str]  # (kind, name) of a named rule: ("score", "expansion")


class Evaluator:
    """Evaluates expressions and named rules for one account on one day.

    Named rules (lets, scores, gates, ...) are computed once and cached;
    `observed` records every outcome seen, which the test runner turns into
    coverage.
    """

    def __init__(self, catalog: Catalog, account: Account, today: dt.date):
        self.catalog = catalog
        self.account = account
        self.today = today
        self._memo: dict[Key, Value] = {}
        self._active: list[Key] = []  # named rules being computed, for cycle errors
        self.observed: dict[Key, set[str]] = {}
        self._points_cache: dict[str, list[tuple[dt.date, float]]] = {}

    # ------------------------------------------------------------ named rules
    def _named(self, kind: str, name: str, compute: Callable[[], Value]) -> Value:
        key = (kind, name)
        if key in self._memo:
            return self._memo[key]
        if key in self._active:
            chain = self._active[self._active.index(key):] + [key]
            raise EvalError("a rule depends on itself: " + " -> ".join(f"{k} {m}" for k, m in chain))
        self._active.append(key)
        try:
            value = compute()
        finally:
            self._active.pop()
        self._memo[key] = value
        return value

    def _observe(self, kind: str, name: str, outcome: str) -> None:
        self.observed.setdefault((kind, name), set()).add(outcome)

    def field_value(self, name: str) -> Value:
        """`account.<name>`: a declared or given field, else a `let` derived field."""
        let = self.catalog.entity_let("account", name)
        if let is not None:
            return self._named("let", name, lambda: self.eval_expr(let.value))
        if name in self.account.fields:
            return normalize(self.account.fields[name], f"account.{name}")
        if self.catalog.entity_field("account", name) is not None:
            return None  # declared but not given: empty
        raise EvalError(f"account has no field '{name}'")

    def score_value(self, name: str) -> float | int | None:
        score = self._decl(self.catalog.scores, "score", name)
        value = self._named("score", name, lambda: self._compute_score(score))
        return value  # type: ignore[return-value]

    def _compute_score(self, score: n.ScoreDecl) -> Value:
        if score.formula is not None:
            value = self.eval_expr(score.formula)
            if value is not None and not is_number(value):
                raise EvalError(f"score {score.name} is {kind_of(value)}, not a number")
            return value
        if score.points:
            return sum(self.points_line(rule)[0] for rule in score.points)
        raise EvalError(f"score {score.name} has neither a formula nor points")

    def points_line(self, rule: n.PointsRule) -> tuple[float, int | None]:
        """The points one line gives, and the index of the case that matched (None: otherwise)."""
        # Every case is evaluated (no short-circuit) so an ill-typed later case
        # is an error whatever the data, as it is in SQL.
        truths = [self.condition(case.when) for case in rule.cases]
        for i, t in enumerate(truths):
            if t is True:
                return rule.cases[i].points, i
        return rule.otherwise, None

    def band_of(self, name: str) -> str | None:
        score = self._decl(self.catalog.scores, "score", name)
        value = self.score_value(name)
        band = band_for(score, value)
        return band.name if band else None

    def route_of(self, name: str) -> str | None:
        route = self._decl(self.catalog.routes, "route", name)
        return self._named("route", name, lambda: self.route_choice(route)[0])  # type: ignore[return-value]

    def route_choice(self, route: n.RouteDecl) -> tuple[str | None, int | None]:
        """The target, and the index of the case that chose it."""
        truths = [(i, self.condition(c.when)) for i, c in enumerate(route.cases) if c.when is not None]
        for i, t in truths:
            if t is True:
                return route.cases[i].target, i
        for i, c in enumerate(route.cases):
            if c.when is None:
                return c.target, i
        return None, None

    def gate_passes(self, name: str) -> bool:
        gate = self._decl(self.catalog.gates, "gate", name)
        result = bool(self._named("gate", name, lambda: self.gate_detail(gate)[0]))
        self._observe("gate", name, "passes" if result else "fails")
        return result

    def gate_detail(self, gate: n.GateDecl) -> tuple[bool, list[bool], list[list[bool | None]]]:
        """(passes, which cases apply, each case's requirement truths)."""
        applies: list[bool] = []
        reqs: list[list[bool | None]] = []
        for case in gate.cases:
            applies.append(case.when is None or self.condition(case.when) is True)
            reqs.append([self.condition(r.when) for r in case.requires])
        has_when = any(c.when is not None for c in gate.cases)
        if has_when and not any(a for a, c in zip(applies, gate.cases) if c.when is not None):
            return False, applies, reqs  # no readiness rules for this kind of account
        passes = all(t is True for a, ts in zip(applies, reqs) if a for t in ts)
        return passes, applies, reqs

    def trigger_fires(self, name: str) -> bool:
        trigger = self._decl(self.catalog.triggers, "trigger", name)
        result = self._named("trigger", name, lambda: self.condition(trigger.when) is True)
        self._observe("trigger", name, "fires" if result else "does not fire")
        return bool(result)

    def would_start(self, play: str) -> bool:
        """A trigger starting the play fires, and its gate passes (or it is ungated / has no gate)."""
        decl = self._decl(self.catalog.plays, "play", play)
        # Evaluate every trigger and the gate, so coverage does not depend on order.
        fired = [self.trigger_fires(t.name) for t in self.catalog.triggers_starting(play)]
        gate_ok = self.play_gate_passes(decl)
        result = any(fired) and gate_ok
        self._observe("play", play, "starts" if result else "does not start")
        return result

    def play_gate_passes(self, play: n.PlayDecl) -> bool:
        if play.ungated or play.gate is None:
            return True
        return self.gate_passes(play.gate)

    def _decl(self, table: dict, kind: str, name: str):  # noqa: ANN202 - one of the decl types
        decl = table.get(name)
        if decl is None:
            raise EvalError(f"there is no {kind} named '{name}'")
        return decl

    # ------------------------------------------------------------ expressions
    def condition(self, expr: n.Expr) -> bool | None:
        """An expression used as a condition: true, false or empty."""
        value = self.eval_expr(expr)
        if value is None or isinstance(value, bool):
            return value
        raise EvalError(f"a condition must be true or false, but this is {kind_of(value)} ({value!r})")

    def eval_expr(self, expr: n.Expr) -> Value:
        method = _DISPATCH.get(type(expr))
        if method is None:
            raise EvalError(f"cannot evaluate a {type(expr).__name__}")
        try:
            return method(self, expr)
        except EvalError:
            raise
        except RecursionError:
            raise EvalError("expression is nested too deeply to evaluate") from None
        except (ArithmeticError, ValueError, TypeError) as e:  # never a raw traceback
            raise EvalError(f"cannot evaluate: {e}") from None

    def _number(self, expr: n.Number) -> Value:
        return expr.value

    def _percent(self, expr: n.Percent) -> Value:
        return expr.value

    def _string(self, expr: n.String) -> Value:
        return expr.value

    def _bool(self, expr: n.Bool) -> Value:
        return expr.value

    def _symbol(self, expr: n.Symbol) -> Value:
        return expr.name  # a bare name is an enum value, compared as text

    def _duration(self, expr: n.Duration) -> Value:
        return expr.days  # a duration used as a value is its number of days

    def _date(self, expr: n.DateLit) -> Value:
        return expr.value

    def _ago(self, expr: n.Ago) -> Value:
        return ago(self.today, expr.duration.days)

    def _today(self, expr: n.Today) -> Value:
        return self.today

    def _ref(self, expr: n.Ref) -> Value:
        head, rest = expr.path[0], expr.path[1:]
        if len(rest) != 1:
            raise EvalError(f"'{expr.dotted}' is not a value the rules can read")
        name = rest[0]
        match head:
            case "account":
                return self.field_value(name)
            case "score":
                return self.score_value(name)
            case "band":
                return self.band_of(name)
            case "route":
                return self.route_of(name)
            case "gate":
                return self.gate_passes(name)
            case "trigger":
                return self.trigger_fires(name)
        raise EvalError(f"unknown reference '{expr.dotted}'")

    def _unary(self, expr: n.Unary) -> Value:
        v = self.eval_expr(expr.operand)
        if expr.op is n.UnOp.NOT:
            if v is None:
                return None
            if isinstance(v, bool):
                return not v
            raise EvalError(f"'not' needs true or false, not {kind_of(v)}")
        if v is None:
            return None
        if is_number(v):
            return -v
        raise EvalError(f"cannot negate {kind_of(v)}")

    def _binary(self, expr: n.Binary) -> Value:
        if expr.op in (n.BinOp.AND, n.BinOp.OR):
            # Both sides are always evaluated: the answer never depends on it,
            # and an error on one side must not hide behind the other.
            truths = [self.condition(expr.left), self.condition(expr.right)]
            return and3(truths) if expr.op is n.BinOp.AND else or3(truths)
        left, right = self.eval_expr(expr.left), self.eval_expr(expr.right)
        if expr.op in n.COMPARISONS:
            return compare(expr.op, left, right)
        return arithmetic(expr.op, left, right)

    def _in(self, expr: n.InList) -> Value:
        v = self.eval_expr(expr.value)
        items = [self.eval_expr(i) for i in expr.items]
        # SQL's IN: true on a match; else empty if the value or any item is empty.
        hits = [compare(n.BinOp.EQ, v, i) for i in items]
        found = or3(hits) if v is not None else None
        if expr.negated:
            return None if found is None else not found
        return found

    def _between(self, expr: n.Between) -> Value:
        v, low, high = (self.eval_expr(e) for e in (expr.value, expr.low, expr.high))
        # Exactly `v >= low and v <= high`, with the three-valued `and`.
        return and3([compare(n.BinOp.GE, v, low), compare(n.BinOp.LE, v, high)])

    def _is_empty(self, expr: n.IsEmpty) -> Value:
        empty = self.eval_expr(expr.value) is None
        return not empty if expr.negated else empty

    def _call(self, expr: n.Call) -> Value:
        form = self.form(expr)
        if form.series is not None:
            return form.compute(self.today, self.series(expr))
        values = [self.eval_expr(a) for a in expr.args]
        for i, v in enumerate(values):
            if v is not None and not _is_kind(v, form.params[i]):
                raise EvalError(f"{expr.func}(...) needs {_wanted(expr.func, i)}, not {kind_of(v)}")
        if any(v is None for v in values):
            return None  # an empty argument makes the call empty
        return form.compute(self.today, *values)

    def form(self, expr: n.Call) -> Function:
        """The registry form `expr` means, with the right number of arguments."""
        form = form_of(expr)
        if form is None:
            raise EvalError(f"unknown function '{expr.func}'")
        if len(expr.args) != len(form.params):
            raise EvalError(f"{expr.func}(...) takes {len(form.params)} argument(s), not {len(expr.args)}")
        return form

    # ------------------------------------------------------------ series
    def event_dates(self, arg: n.Expr, func: str) -> list[dt.date]:
        """The dates (at or before today) of the event an argument names."""
        if not isinstance(arg, n.Symbol):
            raise EvalError(f"{func}(...) needs an event name as its first argument")
        name = arg.name
        if name not in self.catalog.events and name not in self.account.events:
            raise EvalError(f"there is no event named '{name}'")
        dates = []
        for raw in self.account.events.get(name, []):
            d = normalize(raw, f"event {name}")
            if not isinstance(d, dt.date):
                raise EvalError(f"event {name} has a {kind_of(d)} where a date belongs")
            if d <= self.today:  # what happens after the evaluation day has not happened yet
                dates.append(d)
        return dates

    def metric_points(self, arg: n.Expr, func: str) -> list[tuple[dt.date, float]]:
        """The metric's points at or before today, ordered by date."""
        if not isinstance(arg, n.Symbol):
            raise EvalError(f"{func}(...) needs a metric name as its first argument")
        name = arg.name
        if name in self._points_cache:
            return self._points_cache[name]
        if name not in self.catalog.metrics and name not in self.account.metrics:
            raise EvalError(f"there is no metric named '{name}'")
        seen: set[dt.date] = set()
        points: list[tuple[dt.date, float]] = []
        for raw in self.account.metrics.get(name, []):
            try:
                raw_d, raw_v = raw
            except (TypeError, ValueError):
                raise EvalError(f"metric {name} has a point {raw!r}; a point is (date, value)") from None
            d, v = normalize(raw_d, f"metric {name}"), normalize(raw_v, f"metric {name}")
            if not isinstance(d, dt.date) or not is_number(v):
                raise EvalError(f"metric {name} has a point ({d!r}, {v!r}); a point is (date, number)")
            if d in seen:
                # One point per day: "the latest point" must not depend on input order.
                raise EvalError(f"metric {name} has two points on {d.isoformat()}")
            seen.add(d)
            if d <= self.today:
                points.append((d, v))
        points.sort(key=lambda p: p[0])
        self._points_cache[name] = points
        return points

    def window_days(self, arg: n.Expr, func: str) -> float:
        days = self.eval_expr(arg)
        if not is_number(days):
            raise EvalError(f"{func}(...) needs a window such as '30 days', not {kind_of(days)}")
        return float(days)

    def series(self, expr: n.Call) -> list:
        """What a window function reads: its event's dates or its metric's points (by date),
        at or before today and, when it takes a window, in it."""
        form = self.form(expr)
        if form.series == "event":
            items: list = self.event_dates(expr.args[0], expr.func)
        else:
            items = self.metric_points(expr.args[0], expr.func)
        if not form.windowed:
            return items
        days = self.window_days(expr.args[1], expr.func)
        day = (lambda d: d) if form.series == "event" else (lambda p: p[0])
        return [x for x in items if in_window(self.today, day(x), days)]


_RUNTIME_WORDS = {"number": "a number", "percent": "a number", "date": "a date", "event": "an event",
                  "metric": "a metric", "text": "text", "bool": "true or false"}


def _is_kind(v: Value, kinds: tuple[str, ...]) -> bool:
    """Whether a value fits an argument of these kinds (a percent is a number once read)."""
    if is_number(v):
        return "number" in kinds or "percent" in kinds
    if isinstance(v, bool):
        return "bool" in kinds
    if isinstance(v, str):
        return "text" in kinds
    return isinstance(v, dt.date) and "date" in kinds


def _wanted(func: str, i: int) -> str:
    """What argument i of `func` may be, in words; the first over every form (`a date or an event`)."""
    forms = [f for f in FUNCTIONS[func] if len(f.params) > i and (i == 0 or f.series is None)]
    return " or ".join(dict.fromkeys(_RUNTIME_WORDS[k] for f in forms for k in f.params[i]))


def arithmetic(op: n.BinOp, left: Value, right: Value) -> Value:
    if left is None or right is None:
        if left is not None and not is_number(left) or right is not None and not is_number(right):
            raise EvalError(f"'{op.value}' needs numbers")
        return None
    if not (is_number(left) and is_number(right)):
        # Dates have no arithmetic in the language: days_since/days_until and
        # `N days ago` say the same thing without time-zone or unit questions.
        raise EvalError(f"'{op.value}' needs numbers, not {kind_of(left)} and {kind_of(right)}")
    a, b = float(left), float(right)
    match op:
        case n.BinOp.ADD:
            result = a + b
        case n.BinOp.SUB:
            result = a - b
        case n.BinOp.MUL:
            result = a * b
        case n.BinOp.DIV:
            if b == 0:
                return None  # division by zero is empty
            result = a / b  # always real division, never integer division
        case _:
            raise EvalError(f"'{op.value}' is not arithmetic")
    if math.isinf(result) or math.isnan(result):
        raise EvalError("number too large")
    return result


def band_for(score: n.ScoreDecl, value: Value) -> n.Band | None:
    """The first declared band whose range holds the value."""
    if value is None:
        return None
    if not is_number(value):
        raise EvalError(f"score {score.name} is {kind_of(value)}, not a number")
    for band in score.bands:
        if band.low is not None and not (value >= band.low if band.low_inclusive else value > band.low):
            continue
        if band.high is not None and not (value <= band.high if band.high_inclusive else value < band.high):
            continue
        return band
    return None


# Keyed by node class; each method takes its key's node, which a dict's type
# cannot say, so the table holds them as taking any node (eval_expr looks up
# by the node's own class).
_DISPATCH: dict[type, Callable[[Evaluator, Any], Value]] = {
    n.Number: Evaluator._number,
    n.Percent: Evaluator._percent,
    n.String: Evaluator._string,
    n.Bool: Evaluator._bool,
    n.Symbol: Evaluator._symbol,
    n.Duration: Evaluator._duration,
    n.DateLit: Evaluator._date,
    n.Ago: Evaluator._ago,
    n.Today: Evaluator._today,
    n.Ref: Evaluator._ref,
    n.Unary: Evaluator._unary,
    n.Binary: Evaluator._binary,
    n.InList: Evaluator._in,
    n.Between: Evaluator._between,
    n.IsEmpty: Evaluator._is_empty,
    n.Call: Evaluator._call,
}


# --------------------------------------------------------------------------
# Entry points (one call = one fresh evaluator)


def eval_expr(expr: n.Expr, account: Account, catalog: Catalog | None = None, today: dt.date | None = None) -> Value:
    return Evaluator(catalog or Catalog(), account, today or dt.date.today()).eval_expr(expr)


def trigger_fires(name: str, account: Account, catalog: Catalog, today: dt.date) -> bool:
    return Evaluator(catalog, account, today).trigger_fires(name)


def score_value(name: str, account: Account, catalog: Catalog, today: dt.date) -> float | int | None:
    return Evaluator(catalog, account, today).score_value(name)


def band_of(name: str, account: Account, catalog: Catalog, today: dt.date) -> str | None:
    return Evaluator(catalog, account, today).band_of(name)


def route_of(name: str, account: Account, catalog: Catalog, today: dt.date) -> str | None:
    return Evaluator(catalog, account, today).route_of(name)


def gate_passes(name: str, account: Account, catalog: Catalog, today: dt.date) -> bool:
    return Evaluator(catalog, account, today).gate_passes(name)


def would_start(play: str, account: Account, catalog: Catalog, today: dt.date) -> bool:
    return Evaluator(catalog, account, today).would_start(play)
