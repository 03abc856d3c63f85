"""The language's functions in SQL: one table per dialect, keyed by function name.

The registry (dsl/functions.py) says what each function means; a row here
says how one dialect computes it. A value form is SQL over its compiled
arguments. A window form (first argument a metric or an event) is a
subquery with one row per account, aggregated from that series' rows in the
window, and the call's value read from that row; the compiler joins it once
per (kind, series, window), and an account without a row gets what the
registry's `compute([])` says (0 for a count, empty for an average).

A function missing from a dialect's table is an error when a rule using it
is compiled; tests/engine/test_sqlcompile.py holds every registry form to a
row here and to the reference evaluator, on both databases.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import re

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import ColumnElement

from engine.rollups import EPOCH
from engine.schema import KEPT, Base

Column = ColumnElement[Any]


@dataclass(frozen=True)
class SeriesRows:
    """The rows of one metric or event, at or before today and in the window, for one window call."""

    table: sa.Table  # metric_points or events
    series_column: str  # the column naming the series: "metric" or "event"
    day_column: str  # "date" or "occurred_on"
    series: str  # the metric's or event's name
    where: tuple[Column, ...]  # series, today, window and account restrictions
    alias: str  # a unique name for the subquery
    # The same restrictions one by one, for a rollup form (Window.rollup).
    today: Any = None  # the last day read
    cutoff: Any = None  # days after it are in the window (None: no window)
    only: Any = None  # the accounts to read (None: all)

    @property
    def account_id(self) -> Column:
        return self.table.c.account_id

    @property
    def day(self) -> Column:
        return self.table.c[self.day_column]

    @property
    def value(self) -> Column:
        return self.table.c.value  # metrics only

    def per_account(self, alias: str | None = None, **columns: Column) -> sa.Subquery:
        """One row per account with these aggregate columns."""
        labelled = [c.label(name) for name, c in columns.items()]
        return (sa.select(self.account_id, *labelled).where(*self.where)
                .group_by(self.account_id).subquery(alias or self.alias))


@dataclass(frozen=True)
class Rollup:
    """A metric window form read from the rollup (engine/rollups.py): subquery and value, as in Window."""

    subquery: Callable[[SeriesRows], sa.Subquery]
    value: Callable[[sa.Subquery, Column], Column]


@dataclass(frozen=True)
class Window:
    """A window form in SQL: the per-account subquery, and the call's value from its row."""

    # Calls of functions with the same kind, on the same series and window,
    # share one subquery (happened and count both read a count).
    kind: str
    subquery: Callable[[SeriesRows], sa.Subquery]
    value: Callable[[sa.Subquery, Column], Column]  # (the row, today) -> the value
    # Over a metric, what the compiler uses (the scan above stays for the
    # backtest's per-day rows, engine/backtest.py).
    rollup: Rollup | None = None


@dataclass(frozen=True)
class SQLFunction:
    """A function in one dialect: SQL for its value form, its window form, or both (min, max)."""

    value: Callable[..., Column] | None = None  # (today, *compiled arguments) -> SQL
    window: Window | None = None


def aggregate(agg: Callable[[SeriesRows], Column]) -> Callable[[SeriesRows], sa.Subquery]:
    """A subquery of one aggregate `v` over the window's rows."""
    return lambda rows: rows.per_account(v=agg(rows))


def ends(rows: SeriesRows) -> sa.Subquery:
    """The number of points and the first and last point's values, by date.

    Found by aggregating dates and reading those two rows back by primary
    key: no window function, so no sort of the whole series. Read back as
    scalar subqueries, not joins: SQLite then sees a plain aggregate it
    builds an automatic index on when the rule left-joins it; with joins
    inside, in a query with many windows (scorecard, sweep), it scanned the
    whole subquery per account.
    """
    span = rows.per_account(rows.alias + "s", d0=sa.func.min(rows.day), d1=sa.func.max(rows.day),
                            n=sa.func.count())

    def point(suffix: str, day: Column) -> Column:
        t = rows.table.alias(rows.alias + suffix)
        return sa.select(t.c.value).where(
            t.c[rows.series_column] == rows.series, t.c.account_id == span.c.account_id,
            t.c[rows.day_column] == day).scalar_subquery()

    return sa.select(span.c.account_id, span.c.n, point("f", span.c.d0).label("first"),
                     point("l", span.c.d1).label("last")).subquery(rows.alias)


def ends_grouped(rows: SeriesRows) -> sa.Subquery:
    """`ends` in one grouped scan, for PostgreSQL: the first and last point as the
    smallest and largest [day, value] array of each account's window.

    Why: PostgreSQL reads a point back by key (`ends`, the rollup form) as a
    correlated subplan, about 26 us per account; here the window's points are
    read once, in parallel, and hash-aggregated. Days are unique per account,
    so the arrays compare by day alone.
    """
    day = sa.cast(sa.type_coerce(rows.day - sa.cast(sa.literal(EPOCH.isoformat()), sa.Date), sa.Integer), sa.Float)
    point = postgresql.array([day, sa.cast(rows.value, sa.Float)])

    def value(agg: Column) -> Column:
        return sa.type_coerce(agg, postgresql.ARRAY(sa.Float))[2]

    return rows.per_account(n=sa.func.count(), first=value(sa.func.min(point)), last=value(sa.func.max(point)))



def latest_point(rows: SeriesRows) -> sa.Subquery:
    """The last point's value only (`ends` without the first point)."""
    span = rows.per_account(rows.alias + "s", d1=sa.func.max(rows.day))
    t = rows.table.alias(rows.alias + "l")
    last = sa.select(t.c.value).where(
        t.c[rows.series_column] == rows.series, t.c.account_id == span.c.account_id,
        t.c[rows.day_column] == span.c.d1).scalar_subquery()
    return sa.select(span.c.account_id, last.label("v")).subquery(rows.alias)


# ---------------------------------------------------------------- rollup forms
#
# A metric window read from the rollup: one row per account whose series
# reaches into the window (`metric_series`: its newest KEPT points). When
# the window lies within the row's points ("covered"), the value is
# computed from the row alone; otherwise from primary-key seeks into
# `metric_points` on (metric, account, date). Both databases read every
# metric window this way (PostgreSQL with JIT off, `_kept_pg`). Why this shape:
# docs/engine.md, "Metric windows".

METRIC_SERIES = "metric_series"


def _series(rows: SeriesRows) -> tuple[sa.Table | Any, list[Column]]:
    """The rollup's rows of this metric that can have a point in the window (none after its latest)."""
    s = Base.metadata.tables[METRIC_SERIES].alias(rows.alias + "r")
    where: list[Column] = [s.c.metric == rows.series]
    if rows.cutoff is not None:
        where.append(s.c.last_date > rows.cutoff)
    if rows.only is not None:
        where.append(s.c.account_id.in_(rows.only))
    return s, where


def _cut(rows: SeriesRows) -> Column:
    """The window's start as a day number (p<i>_day): points after it are in the window."""
    return sa.literal((rows.cutoff - EPOCH).days, sa.Integer)


def _covered(rows: SeriesRows, s: Any) -> Column:
    """Every point of the window is in the row: none after today (not a past day), and the row
    holds the whole series or its oldest kept point is at or before the window's start.
    NULL (not covered) for a row without kept points."""
    return sa.and_(s.c.kept.isnot(None), s.c.last_date <= rows.today,
                   sa.or_(s.c.kept < KEPT, s.c[f"p{KEPT - 1}_day"] <= _cut(rows)))


def _by_points_in_window(rows: SeriesRows, s: Any, leaf: Callable[[int], str]) -> Column:
    """Of a covered row, `leaf(m)` where m is the number of kept points before the latest that
    are in the window: the kept days descend, so those are p1..pm, and m is found by a binary
    search over them (4 comparisons for 16 points; a kept day that is not there is NULL, out).

    Written as SQL text, one element: as SQLAlchemy elements the aggregates' sixteen sums of up
    to sixteen terms were about a thousand objects built (and walked for the cache key) at every
    evaluation, most of the client's SQL-building time in an incremental sweep."""
    alias, cut = _alias(s), (rows.cutoff - EPOCH).days

    def node(lo: int, hi: int) -> str:  # m is in [lo, hi]
        if lo == hi:
            return leaf(lo)
        mid = (lo + hi + 1) // 2
        return f"CASE WHEN {alias}.p{mid}_day > {cut} THEN {node(mid, hi)} ELSE {node(lo, mid - 1)} END"

    return sa.literal_column(f"({node(0, KEPT - 1)})", sa.Float)


_PLAIN = re.compile(r"[a-z_][a-z0-9_]*")


def _alias(s: Any) -> str:
    """The rollup alias's name, for SQL text (plain, so it needs no quoting)."""
    if not _PLAIN.fullmatch(s.name):
        raise ValueError(f"rollup alias {s.name!r} is not a plain identifier")
    return str(s.name)


def _kept_first(rows: SeriesRows, s: Any) -> Column:
    """Of a covered row, the oldest point in the window before the latest (none: NULL)."""
    alias = _alias(s)
    return _by_points_in_window(rows, s, lambda m: f"{alias}.p{m}_value" if m else "NULL")


def _kept_aggregate(kind: str, rows: SeriesRows, s: Any, postgresql: bool = False) -> Column:
    """Of a covered row, the aggregate of the window's points: the latest and the m kept
    before it in the window, over their values oldest first.

    Computed as SQLite's aggregates compute it, so the value is the same to the bit: SQLite
    (3.40) sums a double from 0.0 in the order the rows come (by date in a key-range read) and
    divides that sum by the count; NULL values are skipped. PostgreSQL's avg and sum of
    float8 (float8_accum, float8pl) add in the order its plan reads the rows, also from 0.0,
    and divide by the count: oldest first is the order of a scan by date, and any plan's
    order is as good (`postgresql`: its spelling of a truth as 0/1 and of min/max).
    """
    alias = _alias(s)
    values = [f"{alias}.last_value"] + [f"{alias}.p{i}_value" for i in range(1, KEPT)]  # newest first
    zero, inf = (("CAST(0.0 AS DOUBLE PRECISION)", "CAST('Infinity' AS DOUBLE PRECISION)") if postgresql
                 else ("0.0", "9e999"))  # SQLite reads a literal past the largest double as infinity

    def present(t: str) -> str:
        return f"CAST(({t} IS NOT NULL) AS INTEGER)" if postgresql else f"({t} IS NOT NULL)"

    def over(m: int) -> str:
        terms = values[:m + 1][::-1]
        count = " + ".join(present(t) for t in terms)
        if kind in ("min", "max"):
            if len(terms) == 1:
                return terms[0]
            # SQLite's min(a, b, ...) is NULL if any argument is: an empty value never wins.
            none = inf if kind == "min" else f"-{inf}"
            pick = {"min": "least", "max": "greatest"}[kind] if postgresql else kind
            picked = ", ".join(f"coalesce({t}, {none})" for t in terms)
            return f"CASE WHEN ({count}) = 0 THEN NULL ELSE {pick}({picked}) END"
        total = zero
        for t in terms:
            total = f"({total} + coalesce({t}, {zero}))"
        if kind == "sum":
            return f"CASE WHEN ({count}) = 0 THEN NULL ELSE {total} END"
        return f"({total} / CAST(nullif({count}, 0) AS {'DOUBLE PRECISION' if postgresql else 'FLOAT'}))"

    return _by_points_in_window(rows, s, over)


def _points(rows: SeriesRows, s: Any, suffix: str) -> tuple[Any, list[Column]]:
    """`metric_points` of the series' account (a correlated subquery's FROM and WHERE)."""
    p = rows.table.alias(rows.alias + suffix)
    return p, [p.c.metric == rows.series, p.c.account_id == s.c.account_id]


def _last_point(rows: SeriesRows, s: Any) -> tuple[Column, Column]:
    """The date and value of the last point at or before today: the rollup's own,
    unless points after today exist (an evaluation of a past day)."""
    current = s.c.last_date <= rows.today
    p, on = _points(rows, s, "d")
    day = sa.select(sa.func.max(p.c.date)).where(*on, p.c.date <= rows.today).correlate_except(p).scalar_subquery()
    q, on = _points(rows, s, "v")
    value = (sa.select(q.c.value).where(*on, q.c.date <= rows.today).order_by(q.c.date.desc()).limit(1)
             .correlate_except(q).scalar_subquery())
    return sa.case((current, s.c.last_date), else_=day), sa.case((current, s.c.last_value), else_=value)


def _after_cutoff(rows: SeriesRows, p: Any) -> list[Column]:
    return [p.c.date > rows.cutoff] if rows.cutoff is not None else []


def rollup_aggregate(kind: str, postgresql: bool = False) -> Rollup:
    """avg, sum, min, max over the window: from the row when covered, else each account's
    points in the window, read as one key range."""
    def build(rows: SeriesRows) -> sa.Subquery:
        s, where = _series(rows)
        p, on = _points(rows, s, "p")
        seek = (sa.select(getattr(sa.func, kind)(p.c.value))
                .where(*on, *_after_cutoff(rows, p), p.c.date <= rows.today).correlate_except(p).scalar_subquery())
        v = sa.case((_covered(rows, s), _kept_aggregate(kind, rows, s, postgresql)), else_=seek)
        return sa.select(s.c.account_id, v.label("v")).where(*where).subquery(rows.alias)

    return Rollup(build, lambda sub, today: sub.c.v)


def rollup_latest(rows: SeriesRows) -> sa.Subquery:
    s, where = _series(rows)
    _, value = _last_point(rows, s)
    return sa.select(s.c.account_id, value.label("v")).where(*where).subquery(rows.alias)


def rollup_ends(rows: SeriesRows) -> sa.Subquery:
    """The last point in the window, and the first point in it before that one
    (none when the window holds fewer than two points): from the row when covered,
    else one seek each."""
    s, where = _series(rows)
    last_day, last = _last_point(rows, s)
    p, on = _points(rows, s, "f")
    seek = (sa.select(p.c.value).where(*on, *_after_cutoff(rows, p), p.c.date < last_day)
            .order_by(p.c.date).limit(1).correlate_except(p).scalar_subquery())
    first = sa.case((_covered(rows, s), _kept_first(rows, s)), else_=seek)
    return sa.select(s.c.account_id, first.label("first"), last.label("last")).where(*where).subquery(rows.alias)


def _rollup_growth(sub: sa.Subquery, today: Column) -> Column:
    # `first` once: SQLite flattens the subquery, and each mention of it would seek again.
    # (nullif typed: untyped, SQLAlchemy casts the divisor to NUMERIC on PostgreSQL.)
    return sa.cast(sub.c.last, sa.Float) / sa.func.nullif(sub.c.first, 0, type_=sa.Float) - 1


def _growth(sub: sa.Subquery, today: Column) -> Column:
    return sa.case((sa.and_(sub.c.n >= 2, sub.c.first != 0), sa.cast(sub.c.last, sa.Float) / sub.c.first - 1),
                   else_=sa.null())


def _least_greatest(kind: str) -> Callable[[Column, Column, Column], Column]:
    def sql(today: Column, a: Column, b: Column) -> Column:
        # Not LEAST/GREATEST: PostgreSQL's skip empty inputs; ours make the result empty.
        pick = a < b if kind == "min" else a > b
        return sa.case((sa.or_(a.is_(None), b.is_(None)), sa.null()), (pick, a), else_=b)

    return sql


def _metric_aggregate(kind: str) -> Window:
    return Window(kind, aggregate(lambda rows: getattr(sa.func, kind)(rows.value)), lambda sub, today: sub.c.v,
                  rollup=rollup_aggregate(kind))


_COUNT = Window("count", aggregate(lambda rows: sa.func.count()), lambda sub, today: sub.c.v)


# The same SQL on both databases.
_SHARED: dict[str, SQLFunction] = {
    "happened": SQLFunction(window=Window("count", _COUNT.subquery, lambda sub, today: sub.c.v > 0)),
    "count": SQLFunction(window=_COUNT),
    "avg": SQLFunction(window=_metric_aggregate("avg")),
    "sum": SQLFunction(window=_metric_aggregate("sum")),
    "min": SQLFunction(value=_least_greatest("min"), window=_metric_aggregate("min")),
    "max": SQLFunction(value=_least_greatest("max"), window=_metric_aggregate("max")),
    "latest": SQLFunction(window=Window("latest", latest_point, lambda sub, today: sub.c.v,
                                        rollup=Rollup(rollup_latest, lambda sub, today: sub.c.v))),
    "growth": SQLFunction(window=Window("ends", ends, _growth, rollup=Rollup(rollup_ends, _rollup_growth))),
    "abs": SQLFunction(value=lambda today, x: sa.func.abs(x)),
}


def _days_since(days_between: Callable[[Column, Column], Column]) -> SQLFunction:
    last = Window("last", aggregate(lambda rows: sa.func.max(rows.day)), lambda sub, today: days_between(today, sub.c.v))
    return SQLFunction(value=lambda today, d: days_between(today, d), window=last)


def _sqlite_days(later: Column, earlier: Column) -> Column:
    # Dates are ISO text in SQLite; julianday() makes them day numbers.
    return sa.cast(sa.func.round(sa.func.julianday(later) - sa.func.julianday(earlier)), sa.Integer)


def _postgres_days(later: Column, earlier: Column) -> Column:
    return sa.type_coerce(sa.cast(later, sa.Date) - sa.cast(earlier, sa.Date), sa.Integer)


SQLITE: dict[str, SQLFunction] = {
    **_SHARED,
    "days_since": _days_since(_sqlite_days),
    "days_until": SQLFunction(value=lambda today, d: _sqlite_days(d, today)),
    # SQLite's round() rounds half away from zero, as the language does.
    "round": SQLFunction(value=lambda today, x: sa.func.round(x)),
}

def _kept_pg(kind: str) -> SQLFunction:
    """A metric aggregate on PostgreSQL: the SQLite form (covered rows from the row, others by a
    range read), spelled for PostgreSQL (`rollup_aggregate(postgresql=True)`).

    Why: PostgreSQL used to scan the window's points instead (`Window.subquery`); with JIT
    off for the candidates (engine/evaluate.py `without_jit`) the row's CASE tree is cheap,
    and `power_user_emergence` at 1,000,000 accounts took 2.68 s against the scan's 3.29 s
    (EXPLAIN ANALYZE, load ~4); at 100,000 0.16 s of backend CPU against 0.79 s. With JIT
    on, compiling the CASE tree cost about what the row saved (docs/engine.md). An account
    whose window is not covered costs a correlated range read (about 25 us), as `growth`'s
    seek does."""
    window = _metric_aggregate(kind)
    return SQLFunction(value=_SHARED[kind].value, window=Window(window.kind, window.subquery, window.value,
                                                                rollup=rollup_aggregate(kind, postgresql=True)))


POSTGRESQL: dict[str, SQLFunction] = {
    **_SHARED,
    **{kind: _kept_pg(kind) for kind in ("avg", "sum", "min", "max")},
    "growth": SQLFunction(window=Window("ends", ends_grouped, _growth,
                                        rollup=Rollup(rollup_ends, _rollup_growth))),
    "days_since": _days_since(_postgres_days),
    "days_until": SQLFunction(value=lambda today, d: _postgres_days(d, today)),
    # numeric round() rounds half away from zero; float8 round() would round half to even.
    "round": SQLFunction(value=lambda today, x: sa.cast(sa.func.round(sa.cast(x, sa.Numeric)), sa.Float)),
}
