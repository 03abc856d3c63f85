"""A backtest's conditions over spans of days in which nothing they read changes.

    segs = Segments(conn, scratch, catalog, versions, start, end)
    query = segs.where(expr, variant)   # INSERT ... SELECT (variant, account, since, until) of the spans it holds
    # None: the condition reads something this path cannot step (min/max windows); evaluate it per day

A window's value changes only on the days a point enters it (its date) or
leaves it (its date + N), so per account it is a step function: one row per
span of days with the window's aggregates at the span's start (`steps`, one window pass over
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

Sums are sliding sums over a RANGE frame (PostgreSQL adds the frame again for
each point; SQLite's metric windows take the difference of two running totals,
`ranked`), which can differ from the reference's direct sums in the last bit of
a double; engine/dayties.py makes the answers the same (a
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

from dsl import nodes as n
from dsl.catalog import Catalog
from dsl.functions import Function, form_of
from engine import schema
from engine.enroll import Scratch
from engine.rollups import date_sql, day_sql
from engine.sqlcompile import SQLCompiler, dialect_for
from engine.sqlfunctions import Window

# Window kinds (engine/sqlfunctions.py) with a step form, and the columns their rows carry.
STEPPED = {"count": ("v",), "avg": ("v",), "sum": ("v",), "latest": ("v",), "last": ("v",),
           "ends": ("n", "first", "last")}
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
    """The window's steps (`step_rows`) written to a scratch table, for conditions that share them."""
    out = scratch.table("_pb_bt_steps", sa.Column("account_id", sa.Text), sa.Column("p", sa.Date),
                        sa.Column("q", sa.Date), *(sa.Column(c, _col_type(key[1], c)) for c in STEPPED[key[1]]))
    made = _rows_sql(conn.dialect, key, start, end, "", ranked=ranked(conn, scratch, key, start, end))
    if made is None:
        return out  # a window of no days never holds a row
    sql, binds = made
    qi = conn.dialect.identifier_preparer.quote
    columns = f"account_id, p, q, {', '.join(qi(c) for c in STEPPED[key[1]])}"
    conn.execute(sa.text(f"INSERT INTO {qi(out.name)} ({columns}) {sql}").bindparams(*binds))
    return _finish(conn, out)


def step_rows(dialect: Any, key: Key, start: dt.date, end: dt.date, tag: str,
              numbers: bool = False, ranked: sa.Table | None = None) -> sa.Subquery | None:
    """The window's steps as a subquery named `tag` (its parameters are named after it too), for a
    condition that is the only reader of this window: joined to the versions in the condition's own
    query, the steps are never written (at 100,000 accounts, 10.5 million rows and an index per window).
    The caller joins them as required (no span without a step holds), so the steps with nothing in the
    window, which read as no step would, are left out. None for a window of no days.

    `numbers` (SQLite): p and q stay day numbers, as the window pass computes them; the caller joins
    them to the versions' day numbers and turns only its output rows back into dates (`date()` twice
    per step row was about 0.8 s CPU per million step rows, 10.5 million of them per window at 100,000).

    `ranked` (SQLite): the window's points numbered (`ranked`), read by lookups instead of a window pass."""
    made = _rows_sql(dialect, key, start, end, tag, empty=False, numbers=numbers, ranked=ranked)
    if made is None:
        return None
    sql, binds = made
    kind = key[1]
    ends = sa.BigInteger if numbers else sa.Date
    return (sa.text(sql).bindparams(*binds)
            .columns(sa.column("account_id", sa.Text), sa.column("p", ends), sa.column("q", ends),
                     *(sa.column(c, _col_type(kind, c)) for c in STEPPED[kind])).subquery(tag))


def _rows_sql(dialect_: Any, key: Key, start: dt.date, end: dt.date, tag: str,
              empty: bool = True, numbers: bool = False,
              ranked: sa.Table | None = None) -> tuple[str, tuple[Any, ...]] | None:
    """SELECT (account_id, p, q, columns of STEPPED[kind]): the window's value on the days [p, q), start..end.

    Every account with a row in reach has rows covering all of [start, end]
    (a span with nothing in the window reads as no row would); an account
    without one has none, which the caller's outer join reads the same way.

    One window pass over the series in (account, day) order, with RANGE frames
    over days: each point i gives the step where it enters (its day d, the
    window (d - N, d]) and the one where it leaves (d + N, the window
    (d, d + N]); the step's end q is the next day any point enters or leaves
    (the next point's day, the first point of the window + N, the first point
    after d + N). A leave on a day some point enters gives no row (events are
    counted per day first: no two rows of an account share a day); the points
    before `start` give one row, the last, at `start`; an account whose first
    point comes after `start` gets an empty row from `start` to it (a grouped
    read of its own). No sort but the window's, no join."""
    series, kind, name, days = key
    dialect = dialect_.name
    width = None if days is None else math.ceil(days)
    if width is not None and width <= 0:
        return None
    table, series_col, day_col = (("metric_points", "metric", "date") if series == "metric"
                                  else ("events", "event", "occurred_on"))
    sqlite = dialect == "sqlite"
    value = "value" if series == "metric" else "CAST(NULL AS FLOAT)" if sqlite else "CAST(NULL AS DOUBLE PRECISION)"
    if sqlite:
        # Day numbers: SQLite's RANGE frames want a number. `+date` keeps the planner on the primary key.
        dated = f"+{day_col}" if series == "metric" else day_col
        day = day_sql(dialect, dated)
        lo, hi = day_sql(dialect, f":{tag}lo"), day_sql(dialect, f":{tag}hi")
        since = f"{dated} > date(:{tag}lo, '-{width} days')" if width is not None else "1 = 1"

        def offset(k: int) -> str:
            return str(k)

        def as_date(x: str) -> str:
            return date_sql(dialect, x)

        def least_(*xs: str) -> str:
            return f"min({', '.join(xs)})"

        def greatest_(*xs: str) -> str:
            return f"max({', '.join(xs)})"
    else:
        # Dates, so the (metric, account, date) key hands the points over in the windows' order.
        dated = day_col
        day = day_col
        lo, hi = f"CAST(:{tag}lo AS DATE)", f"CAST(:{tag}hi AS DATE)"
        since = f"{dated} > CAST(:{tag}lo AS DATE) - {width}" if width is not None else "1 = 1"

        def offset(k: int) -> str:
            return f"INTERVAL '{k} days'"

        def as_date(x: str) -> str:
            return x

        def least_(*xs: str) -> str:
            return f"least({', '.join(xs)})"

        def greatest_(*xs: str) -> str:
            return f"greatest({', '.join(xs)})"
    after = f"({hi} + 1)"
    # Per frame: the aggregates each kind reads (s, c: sum and count of values; n: points; f, l: the first
    # and last point's value; ld: the last point's day). Events come one row per day with their count `k`.
    points = "count(*)" if series == "metric" else "sum(k)"
    # SQLite's avg() is its sum() over the frame (the same running double, added and subtracted alike)
    # divided by the count of values, NULL for none: the same value as sum / count, one function, not two.
    mean = {"a": "avg(v)"} if sqlite else {"s": "sum(v)", "c": "count(v)"}
    aggs = {"count": {"n": points}, "avg": mean, "sum": {"s": "sum(v)"},
            "latest": {"l": "last_value(v)"}, "last": {"ld": "last_value(d)"},
            "ends": {"n": points, "f": "first_value(v)", "l": "last_value(v)"}}[kind]
    # The current row is the last of its frame e (no two rows share a day): its last value is its own, one
    # window function less (in SQLite each costs a step per row: at 10,000 accounts the headcount growth
    # pass took 2.0 s CPU with count alone over e, 3.1 s with the three first and last values as well).
    own = {"last_value(v)": "v", "last_value(d)": "d"}
    cols = [f"{own[agg]} AS e_{k}" if agg in own else f"{agg} OVER e AS e_{k}" for k, agg in aggs.items()]
    if not sqlite:  # PostgreSQL computes lag() in the frame's own pass: cheaper there than a grouped read
        cols.append("lag(d) OVER e AS pd")
    frames = []
    if width is None:
        frames.append("e AS (PARTITION BY a ORDER BY d RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)")
        cols.append("lead(d) OVER e AS nd")
    else:
        frames.append(f"e AS (PARTITION BY a ORDER BY d RANGE BETWEEN {offset(width - 1)} PRECEDING AND CURRENT ROW)")
        frames.append(f"l AS (PARTITION BY a ORDER BY d RANGE BETWEEN {offset(1)} FOLLOWING AND {offset(width)} "
                      "FOLLOWING)")
        frames.append(f"nw AS (PARTITION BY a ORDER BY d RANGE BETWEEN {offset(width)} FOLLOWING AND UNBOUNDED "
                      "FOLLOWING)")
        cols += [f"{agg} OVER l AS l_{k}" for k, agg in aggs.items()]
        # The next point's day where it matters: the first in (d, d + N]; past d + N the step ends earlier
        # anyway (at e0 + N, or at fw for the leave row). Not lead(d): in SQLite each window function
        # outside a frame's aggregates is one more pass over the sorted points.
        cols += ["first_value(d) OVER l AS nd", "first_value(d) OVER e AS e0", "first_value(d) OVER nw AS fw"]

    def values(prefix: str) -> list[str]:
        """The step's columns (STEPPED[kind]) from one frame's aggregates; None: the empty window."""
        if prefix == "":
            return {"count": ["0"], "avg": ["NULL"], "sum": ["NULL"], "latest": ["NULL"], "last": ["NULL"],
                    "ends": ["0", "NULL", "NULL"]}[kind]
        if kind == "count":
            return [f"{prefix}n"]
        if kind == "avg":
            return [f"{prefix}a" if sqlite else f"CASE WHEN {prefix}c > 0 THEN CAST({prefix}s AS FLOAT) / {prefix}c END"]
        if kind == "sum":
            return [f"{prefix}s"]
        if kind == "latest":
            return [f"{prefix}l"]
        if kind == "last":
            return [as_date(f"{prefix}ld")]
        return [f"{prefix}n", f"{prefix}f", f"{prefix}l"]

    # t = 0: the step where the point enters (the last point on or before `start` enters at `start`).
    enter_q = (least_("coalesce(w.nd, " + after + ")", after) if width is None
               else least_("coalesce(w.nd, " + after + ")", f"w.e0 + {width}", after))
    parts = [(0, f"(w.d > {lo} OR w.nd IS NULL OR w.nd > {lo})", greatest_("w.d", lo), enter_q, values("w.e_"))]
    # t = 1: where it leaves, unless a point enters that day.
    if width is not None:
        leave_q = least_(f"coalesce(w.fw, {after})", f"coalesce(w.nd + {width}, {after})", after)
        parts.append((1, f"w.d + {width} <= {hi} AND (w.fw IS NULL OR w.fw <> w.d + {width})",
                      f"w.d + {width}", leave_q, values("w.l_")))
    if not sqlite and empty:  # t = 2: nothing in the window from `start` to the account's first point
        parts.append((2, f"w.pd IS NULL AND w.d > {lo}", lo, "w.d", values("")))
    n_cols = len(STEPPED[kind])

    def pick(i: int) -> str:
        # one CASE per column over the kinds of row
        whens = " ".join(f"WHEN {t} THEN {vals[i]}" for t, _, _, _, vals in parts)
        return f"CASE k.t {whens} END"

    where = " OR ".join(f"(k.t = {t} AND {cond})" for t, cond, _, _, _ in parts)
    p_sql = "CASE k.t " + " ".join(f"WHEN {t} THEN {p}" for t, _, p, _, _ in parts) + " END"
    q_sql = "CASE k.t " + " ".join(f"WHEN {t} THEN {q}" for t, _, _, q, _ in parts) + " END"
    kinds = " UNION ALL ".join(f"SELECT {t} AS t" for t, *_ in parts)
    filtered = f"FROM {table} WHERE {series_col} = :{tag}name AND {dated} <= :{tag}hi AND {since}"
    # One row per day: a metric has one point a day (its key); events are counted per day, so the
    # frames hold no two rows of one day.
    pts = (f"SELECT account_id AS a, {day} AS d, {value} AS v {filtered}" if series == "metric"
           else f"SELECT account_id AS a, {day} AS d, {value} AS v, count(*) AS k {filtered} "
                f"GROUP BY account_id, {dated}")
    qi = dialect_.identifier_preparer.quote
    labels = [qi(c) for c in STEPPED[kind]]
    binds: tuple[Any, ...] = (sa.bindparam(f"{tag}name", name), sa.bindparam(f"{tag}lo", start, type_=sa.Date),
                              sa.bindparam(f"{tag}hi", end, type_=sa.Date))
    ends = (lambda x: x) if numbers and sqlite else as_date
    if ranked is not None and width is not None:
        sql = _ranked_sql(qi, ranked, kind, width, lo, hi, ends, labels)
        if not empty:  # the series' name is read by the points' INSERT only
            binds = binds[1:]
    else:
        sql = (f"SELECT w.a AS account_id, {ends(p_sql)} AS p, {ends(q_sql)} AS q, "
               f"{', '.join(f'{pick(i)} AS {labels[i]}' for i in range(n_cols))} "
               f"FROM (SELECT a, d, {', '.join(cols)} FROM ({pts}) pts "
               f"WINDOW {', '.join(frames)}) w CROSS JOIN ({kinds}) k WHERE {where}")
    if not sqlite or not empty:
        return sql, binds
    # An account whose first point comes after `start`: nothing in the window from `start` to it. A
    # grouped read in key order: in SQLite lag() would be one more pass over the sorted points (at
    # 100,000 accounts this read takes 1.3 s CPU; on PostgreSQL 7 s wall, against next to nothing for lag).
    first = f"min({day})"
    nothing = ", ".join(f"{v} AS {labels[i]}" for i, v in enumerate(values("")))
    sql += (f" UNION ALL SELECT account_id, {as_date(lo)}, {as_date(first)}, {nothing} {filtered} "
            f"GROUP BY account_id HAVING {first} > {lo}")
    return sql, binds


# ---------------------------------------------------------------- SQLite: a metric window by lookups

RANKED = frozenset({"count", "avg", "sum", "latest", "last", "ends"})  # kinds `ranked` serves
_SUMMED = frozenset({"avg", "sum"})  # kinds that read the running sums


def ranked(conn: Connection, scratch: Scratch, key: Key, start: dt.date, end: dt.date) -> sa.Table | None:
    """SQLite, a metric window of N days: the points in reach (after start - N, up to end), numbered
    in (account, day) order: r (the rowid, consecutive within an account), a (the account's rowid in
    `accounts`), d (day number), v, and for avg and sum the running total s and count c of the account's
    values up to the point. None where this does not apply (the window pass of `_rows_sql` then).

    Why: in SQLite each window frame is a co-routine of its own, about 0.5 us per point per frame plus
    0.1-0.2 us per function, and the window pass took three frames (the window before a point, the one
    after it, the first point past it) and five to nine functions: most of a condition's query. Here the
    edges of each point's windows are two seeks of the (a, d) index, and the points they name are read by
    rowid (about 0.1 us each): at 10,000 x 365, headcount growth's steps 2.75 -> 1.5 s CPU (sqlite3)."""
    series, kind, name, days = key
    if conn.dialect.name != "sqlite" or series != "metric" or kind not in RANKED or days is None:
        return None
    width = math.ceil(days)
    if width <= 0:
        return None
    summed = kind in _SUMMED
    extra = [sa.Column("s", sa.Float), sa.Column("c", sa.BigInteger)] if summed else []
    out = scratch.table("_pb_bt_points", sa.Column("r", sa.Integer, primary_key=True), sa.Column("a", sa.BigInteger),
                        sa.Column("d", sa.BigInteger), sa.Column("v", sa.Float), *extra)
    qi = conn.dialect.identifier_preparer.quote
    day = day_sql("sqlite", "mp.date")
    # A running total (total(): 0.0, not NULL, before the first value) and count over the account's points
    # so far, in the order the rows are written: one window pass with one frame for both.
    running = (", total(mp.value) OVER w, count(mp.value) OVER w" if summed else "")
    window = " WINDOW w AS (PARTITION BY ac.rowid ORDER BY mp.date ROWS UNBOUNDED PRECEDING)" if summed else ""
    # Accounts by rowid, each one's points by the metric_points key: written in (a, d) order, no sort, so the
    # rowids r are consecutive per account. `+mp.date` keeps the planner on the key (not the date index).
    conn.execute(sa.text(
        f"INSERT INTO {qi(out.name)} (a, d, v{', s, c' if summed else ''}) "
        f"SELECT ac.rowid, {day}, mp.value{running} FROM {qi(schema.ENTITY_TABLES['account'])} ac "
        f"JOIN metric_points mp ON mp.metric = :name AND mp.account_id = ac.id AND +mp.date <= :hi "
        f"AND +mp.date > date(:lo, '-{width} days'){window} ORDER BY ac.rowid, mp.date")
        .bindparams(sa.bindparam("name", name), sa.bindparam("lo", start, type_=sa.Date),
                    sa.bindparam("hi", end, type_=sa.Date)))
    index(conn, out, "ad", "a", "d")
    return out


def _ranked_sql(qi: Any, points: sa.Table, kind: str, width: int, lo: str, hi: str, ends: Any,
                labels: list[str]) -> str:
    """`_rows_sql`'s rows from the numbered points: for each point x, the step where it enters (on its day
    d, the window (d - N, d]: the points lo..x, lo the account's first after d - N) and the one where it
    leaves (d + N, the window (d, d + N]: x+1..hi, hi its last on or before d + N; no row if hi enters
    that day). A step ends where the next point enters (x+1, or hi+1 for the leave) or the first point
    of its window leaves (lo + N; x+1 + N). Steps that end before `start` are left out."""
    t = qi(points.name)
    after = f"({hi} + 1)"
    enter_p, leave_p = f"max(x.d, {lo})", f"x.d + {width}"
    enter_q = f"min(coalesce(nx.d, {after}), lo.d + {width}, {after})"
    leave_q = f"min(coalesce(nx.d + {width}, {after}), coalesce(fw.d, {after}), {after})"
    held = "hi.r > x.r"  # the leave step's window holds a point

    def when(x: str) -> str:
        return f"CASE WHEN {held} THEN {x} END"

    enter_n, leave_n = "x.r - lo.r + 1", "hi.r - x.r"
    enter_c, leave_c = "x.c - lo.c + (lo.v IS NOT NULL)", "hi.c - x.c"
    enter_s, leave_s = "x.s - lo.s + coalesce(lo.v, 0.0)", "hi.s - x.s"
    enter, leave = {
        "count": ([enter_n], [leave_n]),
        "avg": ([f"CASE WHEN {enter_c} > 0 THEN ({enter_s}) / ({enter_c}) END"],
                [f"CASE WHEN {leave_c} > 0 THEN ({leave_s}) / ({leave_c}) END"]),
        "sum": ([f"CASE WHEN {enter_c} > 0 THEN {enter_s} END"], [f"CASE WHEN {leave_c} > 0 THEN {leave_s} END"]),
        "latest": (["x.v"], [when("hi.v")]),
        "last": ([date_sql("sqlite", "x.d")], [when(date_sql("sqlite", "hi.d"))]),
        "ends": ([enter_n, "lo.v", "x.v"], [leave_n, when("nx.v"), when("hi.v")]),
    }[kind]
    values = ", ".join(f"CASE k.t WHEN 0 THEN {e} ELSE {l_} END AS {label}"
                       for e, l_, label in zip(enter, leave, labels, strict=True))
    return (f"SELECT ac.id AS account_id, {ends(f'CASE k.t WHEN 0 THEN {enter_p} ELSE {leave_p} END')} AS p, "
            f"{ends(f'CASE k.t WHEN 0 THEN {enter_q} ELSE {leave_q} END')} AS q, {values} "
            f"FROM {t} x "
            f"JOIN {t} lo ON lo.r = (SELECT r FROM {t} WHERE a = x.a AND d > x.d - {width} ORDER BY d LIMIT 1) "
            f"JOIN {t} hi ON hi.r = (SELECT r FROM {t} WHERE a = x.a AND d <= x.d + {width} ORDER BY d DESC "
            "LIMIT 1) "
            f"LEFT JOIN {t} nx ON nx.r = x.r + 1 AND nx.a = x.a "
            f"LEFT JOIN {t} fw ON fw.r = hi.r + 1 AND fw.a = x.a "
            f"JOIN {qi(schema.ENTITY_TABLES['account'])} ac ON ac.rowid = x.a "
            "CROSS JOIN (SELECT 0 AS t UNION ALL SELECT 1 AS t) k "
            f"WHERE CASE k.t WHEN 0 THEN {enter_q} > {enter_p} "
            f"ELSE {leave_p} <= {hi} AND hi.d <> {leave_p} AND {leave_q} > max({leave_p}, {lo}) END")


def _finish(conn: Connection, out: sa.Table) -> sa.Table:
    if conn.dialect.name == "sqlite":
        # SQLite joins the versions to the steps by this index (it has no hash join). PostgreSQL hash-joins
        # the two (a seq scan of the steps, filtered by the condition first): given the index, it chose a
        # nested loop over it instead, slower, and building it took 16-18 s at 100,000 accounts.
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

    today_is_fixed = False
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
