"""The function registry: every function of the language, one row per form.

A row says what a form takes (the kinds of dsl/types.py per argument), what
it gives, how it is written in messages, and what it means (`compute`, the
reference meaning of docs/semantics.md). The checker types calls from it,
the reference evaluator (dsl/evaluator.py) evaluates them with it, and the
SQL compiler (engine/sqlfunctions.py holds one SQL table per dialect) and
its differential test draw their functions from it. Adding a function is a
row here, a row per dialect there and a line in docs/semantics.md
(docs/extending.md).

A form whose first argument names a metric or an event is a *window
function*: the evaluator reads the series (the points or dates at or before
today, in the window when the form takes one) and `compute` gets that list;
with nothing to read, `compute([])` is also what SQL gives an account that
has no row. Any other form gets its arguments' values, never an empty one:
an empty argument makes the call empty.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dsl import nodes as n
from dsl.types import BOOL, NUMBER, PERCENT, Type

if TYPE_CHECKING:
    from dsl.evaluator import Value

# Accepted kinds of one argument (see dsl/types.py `accepts`).
Kinds = tuple[str, ...]
NUM: Kinds = ("number", "percent")
DATE: Kinds = ("date",)
METRIC: Kinds = ("metric",)
EVENT: Kinds = ("event",)
WINDOW: Kinds = ("duration",)

Points = list[tuple[dt.date, float]]  # a metric's points in the window, by date


@dataclass(frozen=True)
class Function:
    """One form of a function (`min` has two: over a metric's window, and of two numbers)."""

    name: str
    params: tuple[Kinds, ...]
    result: Type
    doc: str  # how it is written, for messages: "count(event, N days)"
    # The meaning: compute(today, *values) for a value form; compute(today,
    # series) for a window function (its points, or its dates, in the window).
    compute: Callable[..., Value]
    within: bool = False  # the window argument reads `within N days` (the printer puts the word back)

    @property
    def series(self) -> str | None:
        """"metric" or "event" when the first argument names one (a window function), else None."""
        if self.params and self.params[0] in (METRIC, EVENT):
            return self.params[0][0]
        return None

    @property
    def windowed(self) -> bool:
        """Whether the second argument is a window (`30 days`)."""
        return len(self.params) > 1 and self.params[1] == WINDOW

    def empty_series(self, today: dt.date) -> Value:
        """A window function's value when nothing is in the window (a count is 0, an average empty)."""
        return self.compute(today, [])


def round_half_away(x: float) -> float:
    """round() as SQL's numeric ROUND does it (2.5 -> 3, -2.5 -> -3), not Python's banker's rounding.

    Going through repr() rounds the value a person sees: round(2.675 * 100)
    behaves like the decimal they wrote, as PostgreSQL's float8 -> numeric cast does.
    """
    if abs(x) >= 2**52:  # already whole; also keeps Decimal within its precision
        return float(x)
    d = decimal.Decimal(repr(float(x))).quantize(decimal.Decimal(1), rounding=decimal.ROUND_HALF_UP)
    return float(d)


def _values(points: Points) -> list[float]:
    return [v for _, v in points]


def _avg(today: dt.date, points: Points) -> Value:
    # fsum: exact, so independent of the order the points come in.
    return math.fsum(_values(points)) / len(points) if points else None


def _sum(today: dt.date, points: Points) -> Value:
    return math.fsum(_values(points)) if points else None  # no point in the window: empty, not 0


def _growth(today: dt.date, points: Points) -> Value:
    if len(points) < 2 or points[0][1] == 0:
        return None
    return points[-1][1] / points[0][1] - 1


def _extreme(pick: Callable[[Any], Any]) -> Callable[[dt.date, Points], Value]:
    return lambda today, points: pick(_values(points)) if points else None


REGISTRY: tuple[Function, ...] = (
    Function("days_since", (DATE,), NUMBER, "days_since(date)", lambda today, d: (today - d).days),
    Function("days_since", (EVENT,), NUMBER, "days_since(event)",
             lambda today, dates: (today - max(dates)).days if dates else None),
    Function("days_until", (DATE,), NUMBER, "days_until(date)", lambda today, d: (d - today).days),
    Function("happened", (EVENT, WINDOW), BOOL, "happened(event, within N days)",
             lambda today, dates: bool(dates), within=True),  # never empty
    Function("count", (EVENT, WINDOW), NUMBER, "count(event, N days)", lambda today, dates: len(dates)),
    Function("avg", (METRIC, WINDOW), NUMBER, "avg(metric, N days)", _avg),
    Function("sum", (METRIC, WINDOW), NUMBER, "sum(metric, N days)", _sum),
    Function("min", (METRIC, WINDOW), NUMBER, "min(metric, N days)", _extreme(min)),
    Function("min", (NUM, NUM), NUMBER, "min(a, b)", lambda today, a, b: min(a, b)),
    Function("max", (METRIC, WINDOW), NUMBER, "max(metric, N days)", _extreme(max)),
    Function("max", (NUM, NUM), NUMBER, "max(a, b)", lambda today, a, b: max(a, b)),
    Function("latest", (METRIC,), NUMBER, "latest(metric)", lambda today, points: points[-1][1] if points else None),
    Function("growth", (METRIC, WINDOW), PERCENT, "growth(metric, N days)", _growth),
    Function("abs", (NUM,), NUMBER, "abs(number)", lambda today, x: abs(x)),
    Function("round", (NUM,), NUMBER, "round(number)", lambda today, x: round_half_away(x)),
)

# name -> its forms, in registry order.
FUNCTIONS: dict[str, tuple[Function, ...]] = {}
for _f in REGISTRY:
    FUNCTIONS[_f.name] = (*FUNCTIONS.get(_f.name, ()), _f)
del _f


def form_of(call: n.Call) -> Function | None:
    """The form a call means (None: no such function).

    A call whose first argument is a bare name reads a series when the
    function has a window form; otherwise it takes values. Among those, the
    form with the call's number of arguments (else the first, whose arity the
    caller reports).
    """
    forms = FUNCTIONS.get(call.func)
    if not forms:
        return None
    names_series = bool(call.args) and isinstance(call.args[0], n.Symbol)
    wanted = [f for f in forms if (f.series is not None) == names_series] or list(forms)
    return next((f for f in wanted if len(f.params) == len(call.args)), wanted[0])
