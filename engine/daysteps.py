"""A backtest's conditions over spans of days in which nothing they read changes.

    segs = Segments(conn, scratch, catalog, versions, start, end)
    query = segs.where(expr, variant)   # INSERT ... SELECT (variant, account, since, until) of the spans it holds
    # None: the condition reads something this path cannot step (min/max windows); evaluate it per day

A window's value changes only on the days a point enters it (its date) or
leaves it (its date + N), so per account it is a step function: one row per
span of days with the running sums at the span's start (`steps`, one sort of
the series, no join of series rows to days). A condition's spans are the
account's versions (engine/backtest.py) cut by the steps of the windows it
reads; each span is evaluated once, at its first day.

A condition that reads the day itself (`today`, `N days ago`, `days_until`,
`days_since`) changes truth only where such a value crosses what it is
compared with: `days_until(account.renewal_date) between 76 and 90` on the
days 90 and 75 before the renewal. The spans are cut at those days (a few
candidates around each crossing, in whole days), so again one evaluation per
span. A day-reading form this cannot place (`days_until(x) * 2 > y`) makes
the spans single days: slower, still right.

Sums are running sums, which can differ from the reference's direct sums in
the last bit of a double; engine/dayties.py makes the answers the same (a
comparison near its threshold is decided by the reference's own SQL).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import UnaryExpression

from dsl import nodes as n
from dsl.catalog import Catalog
from dsl.functions import Function, form_of
from engine.enroll import Scratch
from engine.schema import Base
from engine.sqlcompile import SQLCompiler, dialect_for
from engine.sqlfunctions import Window

# Window kinds (engine/sqlfunctions.py) with a step form, and the columns their rows carry.
STEPPED = {"count": ("v",), "avg": ("v",), "sum": ("v",), "latest": ("v",), "last": ("v",),
           "ends": ("n", "first", "last")}
_ORDINAL = {"latest", "last", "ends"}  # values read back from the series row at a running count
# The running sums each kind reads: s, c (sum and count of non-null values), n (points in the window),
# hi, lo (points entered, left: the ordinals of the window's last point and of the one before its first).
_SUMS = {"count": ("n",), "avg": ("s", "c"), "sum": ("s", "c"), "latest": ("hi",), "last": ("hi",),
         "ends": ("hi", "lo")}
_CLAMP = 10**8  # days: beyond any date either database holds, so a crossing there is never in range

Key = tuple[str, str, str, float | None]  # (series, kind, name, days) as SQLCompiler.window_key


# ---------------------------------------------------------------- dates as day numbers


def day_number(dialect: str, day: Any) -> Any:
    """Days since 1970-01-01 (an integer) of a date expression."""
    if dialect == "sqlite":
        return sa.cast(sa.func.julianday(day) - 2440587.5, sa.BigInteger)
    return sa.type_coerce(sa.cast(day, sa.Date) - sa.literal(dt.date(1970, 1, 1), sa.Date), sa.BigInteger)


def day_of(dialect: str, number: Any) -> Any:
    if dialect == "sqlite":
        return sa.type_coerce(sa.func.date(number + 2440587.5), sa.Date)
    return sa.type_coerce(sa.literal(dt.date(1970, 1, 1), sa.Date) + sa.cast(number, sa.Integer), sa.Date)


def plus_days(dialect: str, day: Any, days: int) -> Any:
    if dialect == "sqlite":
        return sa.type_coerce(sa.func.date(day, f"{days:+d} days"), sa.Date)
    return sa.type_coerce(day + sa.literal(days, sa.Integer), sa.Date)


def greatest(dialect: str, a: Any, b: Any) -> Any:
    return sa.func.max(a, b) if dialect == "sqlite" else sa.func.greatest(a, b)


def least(dialect: str, a: Any, b: Any) -> Any:
    return sa.func.min(a, b) if dialect == "sqlite" else sa.func.least(a, b)


# ---------------------------------------------------------------- one window as steps


def steps(conn: Connection, scratch: Scratch, key: Key, start: dt.date, end: dt.date) -> sa.Table:
    """(account_id, p, q, columns of STEPPED[kind]): the window's value on the days [p, q), start..end.

    Every account with a row in reach has rows covering all of [start, end]
    (a span with nothing in the window reads as no row would); an account
    without one has none, which the caller's outer join reads the same way."""
    series, kind, name, days = key
    dialect = conn.dialect.name
    metrics, events = Base.metadata.tables["metric_points"], Base.metadata.tables["events"]
    table, series_col, day_col = (metrics, "metric", "date") if series == "metric" else (events, "event", "occurred_on")
    d = table.c[day_col]
    lo, hi = sa.literal(start, sa.Date), sa.literal(end, sa.Date)
    after = sa.literal(end + dt.timedelta(days=1), sa.Date)
    out = scratch.table("_pb_bt_steps", sa.Column("account_id", sa.Text), sa.Column("p", sa.Date),
                        sa.Column("q", sa.Date), *(sa.Column(c, _col_type(kind, c)) for c in STEPPED[kind]))
    width = None if days is None else math.ceil(days)
    if width is not None and width <= 0:
        return out  # a window of no days never holds a row
    value = table.c.value if series == "metric" else sa.cast(sa.null(), sa.Float)
    # SQLite: `+date` keeps the planner off the (metric, date, account) index, so the primary key
    # (metric, account, date) hands the points over already in the order the windows sort them by.
    dated: Any = (UnaryExpression(d, operator=operators.custom_op("+"), type_=sa.Date)
                  if dialect == "sqlite" and series == "metric" else d)
    where = [table.c[series_col] == name, dated <= hi]
    if width is not None:
        where.append(dated > plus_days(dialect, lo, -width))
    cols: list[Any] = [table.c.account_id.label("a"), d.label("d"), value.label("v")]
    if kind in _ORDINAL:
        rows: Any = scratch.table("_pb_bt_rows", sa.Column("a", sa.Text), sa.Column("d", sa.Date),
                                  sa.Column("v", sa.Float), sa.Column("k", sa.BigInteger))
        k = sa.func.row_number().over(partition_by=table.c.account_id, order_by=(d, table.c.id) if series == "event"
                                      else d)
        conn.execute(sa.insert(rows).from_select(["a", "d", "v", "k"], sa.select(*cols, k).where(*where)))
        index(conn, rows, "ak", "a", "k")
        analyze(conn, rows)
    else:
        rows = sa.select(*cols).where(*where).cte("r")
    enter = sa.case((rows.c.d < lo, lo), else_=rows.c.d)
    nonnull = sa.case((rows.c.v.is_(None), 0), else_=1)
    # Each kind sums only the changes it reads: a window function per running sum is most of a step
    # query's cost on SQLite.
    sums = _SUMS[kind]
    entered = {"s": sa.func.coalesce(rows.c.v, 0.0), "c": nonnull, "n": sa.literal(1), "hi": sa.literal(1),
               "lo": sa.literal(0)}
    left = {"s": -sa.func.coalesce(rows.c.v, 0.0), "c": -nonnull, "n": sa.literal(-1), "hi": sa.literal(0),
            "lo": sa.literal(1)}
    zero = {"s": sa.literal(0.0), "c": sa.literal(0), "n": sa.literal(0), "hi": sa.literal(0), "lo": sa.literal(0)}
    parts: list[Any] = [
        sa.select(rows.c.a, enter.label("p"), *(entered[x].label("d" + x) for x in sums)),
        sa.select(rows.c.a, lo.label("p"), *(zero[x] for x in sums)).group_by(rows.c.a),
    ]
    if width is not None:
        leave = plus_days(dialect, rows.c.d, width)
        parts.append(sa.select(rows.c.a, leave, *(left[x] for x in sums)).where(leave <= hi))
    ev = sa.union_all(*parts).subquery("ev")
    g = (sa.select(ev.c.a, ev.c.p, *(sa.func.sum(ev.c["d" + x]).label("d" + x) for x in sums))
         .group_by(ev.c.a, ev.c.p).subquery("g"))

    def run(c: Any) -> Any:
        return sa.func.sum(c).over(partition_by=g.c.a, order_by=g.c.p, rows=(None, 0))

    running = sa.select(g.c.a, g.c.p, sa.func.coalesce(sa.func.lead(g.c.p).over(partition_by=g.c.a, order_by=g.c.p),
                                                       after).label("q"),
                        *(run(g.c["d" + x]).label(x) for x in sums)).subquery("st")
    st = running.c
    src: Any = running
    if kind == "count":
        values: list[Any] = [st.n]
    elif kind == "avg":
        values = [sa.case((st.c > 0, sa.cast(st.s, sa.Float) / st.c))]
    elif kind == "sum":
        values = [sa.case((st.c > 0, st.s))]
    else:
        # A point read back by its ordinal: an equi-join on (a, k), which PostgreSQL can hash or merge
        # (a correlated look-up per step row was an index probe each).
        def at(k: Any, column: str) -> Any:
            nonlocal src
            r = rows.alias(f"k{len(values_at)}")
            values_at.append(r)
            src = src.outerjoin(r, sa.and_(r.c.a == st.a, r.c.k == k))
            return r.c[column]

        values_at: list[Any] = []
        if kind == "latest":
            values = [at(st.hi, "v")]
        elif kind == "last":
            values = [at(st.hi, "d")]
        else:  # ends: the number of points in the window, its first and last point's values
            values = [st.hi - st.lo, at(st.lo + 1, "v"), at(st.hi, "v")]
    conn.execute(sa.insert(out).from_select(["account_id", "p", "q", *STEPPED[kind]],
                                            sa.select(st.a, st.p, st.q, *values).select_from(src)))
    index(conn, out, "ap", "account_id", "p")
    analyze(conn, out)
    return out


def index(conn: Connection, table: sa.Table, suffix: str, *columns: str) -> None:
    """CREATE INDEX <table>_<suffix> without attaching it to the Table object: a scratch table's object
    is shared by later evaluations on the connection (engine/enroll.Scratch), which would create an
    attached index again, twice after two runs ("index ... already exists")."""
    q = conn.dialect.identifier_preparer
    conn.exec_driver_sql(f"CREATE INDEX {q.quote(f'{table.name}_{suffix}')} ON {q.quote(table.name)} "
                         f"({', '.join(q.quote(c) for c in columns)})")


def analyze(conn: Connection, table: sa.Table) -> None:
    """Statistics for a filled scratch table on PostgreSQL, whose autovacuum never sees temporary tables:
    without them a join with millions of step rows is planned as if the table were small."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f'ANALYZE "{table.name}"')


def _col_type(kind: str, column: str) -> Any:
    if kind == "last":
        return sa.Date
    return sa.BigInteger if column == "n" or kind == "count" else sa.Float


# ---------------------------------------------------------------- compiling over spans


_DAY_FREE = {"abs", "round", "min", "max"}


class SpanCompiler(SQLCompiler):
    """Rules over one relation of spans: `accounts` has `id`, `day` (the span's first day, today),
    `next` and the fields; a window reads its step columns `w<i>_<column>` from the same row.

    As a probe (no relation yet), it records the windows a condition reads and
    whether it reads the day itself."""

    day: Any = None
    windows: dict[Key, str]  # key -> column prefix
    reads_today: bool = False
    probe: bool = False

    def _today(self, e: n.Today) -> Any:
        self.reads_today = True
        return self.accounts.c.day if not self.probe else sa.literal(self.today, sa.Date)

    def _ago(self, e: n.Ago) -> Any:
        self.reads_today = True
        if self.probe:
            return sa.literal(self.today, sa.Date)
        return plus_days(self.dialect.name, self.accounts.c.day, -math.floor(e.duration.days))

    def _call(self, e: n.Call) -> Any:
        form, sql = self._function(e)
        if form.series is None and e.func in _DAY_FREE:
            return super()._call(e)
        today = sa.literal(self.today, sa.Date) if self.probe else self.accounts.c.day
        if form.series is None:
            self.reads_today = True
            assert sql.value is not None
            return sql.value(today, *(self.compile(a) for a in e.args))
        assert sql.window is not None
        if sql.window.kind == "last":
            self.reads_today = True
        value = sql.window.value(self._window(e, form, sql.window), today)
        empty = form.empty_series(self.today)
        return value if empty is None else sa.func.coalesce(value, sa.literal(empty))

    def _window(self, e: n.Call, form: Function, window: Window) -> Any:
        assert isinstance(e.args[0], n.Symbol)
        key: Key = (form.series or "", window.kind, e.args[0].name, self._days(e.args[1]) if form.windowed else None)
        prefix = self.windows.setdefault(key, f"w{len(self.windows)}_")
        if self.probe:
            return SimpleNamespace(c=SimpleNamespace(**{c: sa.literal(0) for c in ("v", "n", "first", "last")}))
        return SimpleNamespace(c=SimpleNamespace(**{c: self.accounts.c[prefix + c] for c in STEPPED[window.kind]}))

    def from_clause(self, inner: Any = frozenset(), start: Any = None) -> Any:
        return self.accounts


def span_compiler(catalog: Catalog, end: dt.date, dialect: str, windows: dict[Key, str],
                  accounts: Any = None) -> SpanCompiler:
    c = SpanCompiler(catalog, end, dialect_for(dialect))
    c.windows = windows
    c.probe = accounts is None
    if accounts is not None:
        c.accounts = accounts
    return c


@dataclass
class Probe:
    windows: dict[Key, str]
    reads_today: bool

    @property
    def stepped(self) -> bool:
        return all(k[1] in STEPPED for k in self.windows)


def probe(catalog: Catalog, end: dt.date, dialect: str, expr: n.Expr) -> Probe:
    c = span_compiler(catalog, end, dialect, {})
    c.compile(expr)
    return Probe(c.windows, c.reads_today)


# ---------------------------------------------------------------- where a day-reading condition can change


class Crossings:
    """The day numbers around which a condition's truth may change within a span, from the values
    it compares with the day; None where it reads the day in a way this does not follow."""

    OFFSETS = (-1, 0, 1, 2)  # whole-day candidates around a crossing at a (possibly fractional) day

    def __init__(self, c: SpanCompiler):
        self.c = c
        self.dialect = c.dialect.name

    def _reads_today(self, e: n.Node) -> bool:
        return probe(self.c.catalog, self.c.today, self.dialect, e).reads_today  # type: ignore[arg-type]

    def points(self, e: n.Node) -> list[Any] | None:
        if not self._reads_today(e):
            return []
        if isinstance(e, n.Binary) and e.op in (n.BinOp.AND, n.BinOp.OR):
            return _joined(self.points(e.left), self.points(e.right))
        if isinstance(e, n.Unary) and e.op == n.UnOp.NOT:
            return self.points(e.operand)
        if isinstance(e, n.Binary) and e.op in n.COMPARISONS:
            if self._reads_today(e.right):
                return None if self._reads_today(e.left) else self._crossing(e.right, [e.left])
            return self._crossing(e.left, [e.right])
        if isinstance(e, n.Between):
            return self._crossing(e.value, [e.low, e.high])
        if isinstance(e, n.InList):
            return self._crossing(e.value, list(e.items))
        if isinstance(e, n.Ref) and len(e.path) == 2:
            if e.path[0] == "account":
                let = self.c.catalog.entity_let("account", e.path[1])
                return self.points(let.value) if let is not None else None
            if e.path[0] == "trigger":
                return self.points(self.c.catalog.triggers[e.path[1]].when)
        return None

    def _crossing(self, x: n.Node, others: list[n.Node]) -> list[Any] | None:
        if any(self._reads_today(o) for o in others):
            return None
        line = self._line(x)
        if line is None:
            return None
        form, anchor = line
        out: list[Any] = []
        for other in others:
            k = self.c.compile(other)  # type: ignore[arg-type]
            if form == "date":  # the day (less `anchor` days) compared with a date: it crosses on that date
                base = day_number(self.dialect, k) + anchor
            else:  # days_until (anchor - day) or days_since (day - anchor) compared with a number of days
                whole = sa.cast(sa.case((k > _CLAMP, _CLAMP), (k < -_CLAMP, -_CLAMP), else_=k), sa.BigInteger)
                base = anchor - whole if form == "until" else anchor + whole
            out.extend(base + j for j in self.OFFSETS)
        return out

    def _line(self, x: n.Node) -> tuple[str, Any] | None:
        """("date", shift): the value is the day less `shift` days; ("until"|"since", day number)."""
        if isinstance(x, n.Today):
            return "date", 0
        if isinstance(x, n.Ago):
            return "date", math.floor(x.duration.days)
        if isinstance(x, n.Ref) and len(x.path) == 2 and x.path[0] == "account":
            let = self.c.catalog.entity_let("account", x.path[1])
            return self._line(let.value) if let is not None else None
        if isinstance(x, n.Call) and x.func in ("days_until", "days_since") and len(x.args) == 1:
            form = form_of(x)
            if form is None:
                return None
            if form.series is None:
                if self._reads_today(x.args[0]):
                    return None
                anchor = day_number(self.dialect, self.c.compile(x.args[0]))
            else:  # days_since(event): the day less the last event's date, a column of the span
                sql = self.c.dialect.functions[x.func]
                assert sql.window is not None
                anchor = day_number(self.dialect, self.c._window(x, form, sql.window).c.v)
            return ("until" if x.func == "days_until" else "since"), anchor
        return None


def _joined(a: list[Any] | None, b: list[Any] | None) -> list[Any] | None:
    return None if a is None or b is None else a + b


__all__ = ["STEPPED", "Crossings", "Key", "Probe", "SpanCompiler", "analyze", "day_number", "index", "day_of", "greatest", "least",
           "plus_days", "probe", "span_compiler", "steps"]
