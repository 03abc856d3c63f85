"""Window sums at a threshold: the spans a backtest's sliding sums cannot decide alone.

    ties = Ties(conn, scratch, catalog, end)
    query = ties.split(spans, windows, metrics, expr, variant)  # the spans it decides; the rest go to ties.open

engine/daysteps.py takes a window's sum over a sliding RANGE frame (PostgreSQL) or
as the difference of two running totals (SQLite, daysteps.ranked); the
reference (today's engine, `backtest_by_day`) adds the window's values
directly. In doubles the two can differ in the last bits, so where a
comparison's sides are equal (`avg(m, 30 days) >= 80` with an average of
exactly 80 by one and 79.99999999999999 by the other) the two paths can
disagree. Two cases never disagree, and the rest are decided by the
reference's own SQL:

* Exact series. Where every value of the account's series is a multiple of
  1/1024 and twice their absolute sum stays under 2^43, every sum of them
  (running or direct, in any order) is exact in a double, and an average is
  one correctly rounded division of the same two numbers on both paths: the
  same bits. Whole-numbered series (minutes, seats, counts) are this case;
  they cost nothing here.
* Comparisons away from their threshold. Otherwise a comparison reading an
  `avg` or `sum` window is *near* when |L - R| <= 1e-9 (|L| + |R| + S), S
  the absolute sum of the account's values of each such series. Summing N
  terms in doubles errs by at most N 2^-53 times their absolute sum; the
  sliding sums add at most twice each value, two running totals each at most
  the account's points, the direct sum each value in the window once, so all
  stay within 1e-9 S of the true sum up to about a million points per
  account and series (and a window value scaled by up
  to about a thousand in the comparison). A span with no near comparison
  reads the same on both paths.

A span where some comparison is near (rare: it takes a tie to the last
decimal) is left *open*: `backtest` re-evaluates its days with the
reference's per-day SQL for those accounts only (engine/backtest.py,
`_decide_open`), so its answer is the reference's, bit for bit on SQLite.
On PostgreSQL a float8 sum adds in scan order; the per-day SQL reads each
account's points by date through an index either way.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dsl import nodes as n
from dsl.catalog import Catalog
from dsl.functions import Function
from engine import daysteps as steps
from engine.enroll import Scratch
from engine.schema import Base
from engine.sqlcompile import dialect_for
from engine.sqlfunctions import Window

FLOAT_KINDS = frozenset({"avg", "sum"})  # window kinds whose value is a sum of doubles
RELATIVE = 1e-9  # the band, relative to the magnitudes involved (module docstring)
EXACT_SCALE = 1024  # values that are multiples of 1/EXACT_SCALE ...
EXACT_LIMIT = 2.0**43  # ... while twice their absolute sum stays under this: 2^43 * 1024 = 2^53


def float_metrics(windows: dict[steps.Key, str]) -> list[str]:
    """The metrics a condition reads through avg or sum windows."""
    return sorted({name for series, kind, name, _ in windows if series == "metric" and kind in FLOAT_KINDS})


class NearCompiler(steps.SpanCompiler):
    """The span compiler that also collects, for each comparison reading an avg or sum window, when it
    is near its threshold (`nears`); `scales` names each metric's columns `<prefix>s` (absolute sum)
    and `<prefix>x` (1: exact)."""

    scales: dict[str, str]
    nears: list[Any]
    _reads: set[str]

    def _window(self, e: n.Call, form: Function, window: Window) -> Any:
        if form.series == "metric" and window.kind in FLOAT_KINDS:
            assert isinstance(e.args[0], n.Symbol)
            self._reads.add(e.args[0].name)
        return super()._window(e, form, window)

    def _compared(self, e: n.Node, value: n.Expr, others: list[n.Expr], compile_: Any) -> Any:
        outer, self._reads = self._reads, set()
        try:
            out = compile_(e)
            read = self._reads
            if read:
                self._near(read, self.compile(value), [self.compile(o) for o in others])
        finally:
            self._reads = outer | self._reads
        return out

    def _near(self, read: set[str], value: Any, others: list[Any]) -> None:
        cols = self.accounts.c
        loose = sa.or_(*(cols[self.scales[m] + "x"] == 0 for m in sorted(read)))
        spread: Any = sa.literal(0.0)
        for m in sorted(read):
            spread = spread + sa.case((cols[self.scales[m] + "x"] == 0, cols[self.scales[m] + "s"]), else_=0.0)
        v = sa.cast(value, sa.Float)
        for other in others:
            o = sa.cast(other, sa.Float)
            band = sa.func.abs(v - o) <= RELATIVE * (sa.func.abs(v) + sa.func.abs(o) + spread)
            self.nears.append(sa.func.coalesce(sa.and_(loose, band), sa.false()))

    def _binary(self, e: n.Binary) -> Any:
        if e.op not in n.COMPARISONS:
            return super()._binary(e)
        return self._compared(e, e.left, [e.right], super()._binary)

    def _between(self, e: n.Between) -> Any:
        return self._compared(e, e.value, [e.low, e.high], super()._between)

    def _in(self, e: n.InList) -> Any:
        return self._compared(e, e.value, list(e.items), super()._in)

    def near(self) -> Any:
        """True where some comparison compiled so far is near its threshold."""
        return sa.or_(*self.nears) if self.nears else sa.false()


class Ties:
    """One backtest's scales (per metric, built once) and its open spans (variant, account, since, until)."""

    def __init__(self, conn: Connection, scratch: Scratch, catalog: Catalog, end: dt.date):
        self.conn, self.scratch, self.catalog, self.end = conn, scratch, catalog, end
        self.scale_tables: dict[str, sa.Table] = {}
        self.open = scratch.table("_pb_bt_open", sa.Column("variant", sa.Integer), sa.Column("account_id", sa.Text),
                                  sa.Column("since", sa.Date), sa.Column("until", sa.Date))

    def scales(self, metric: str) -> sa.Table:
        """(account_id, s: the absolute sum of its values up to the end, x: 1 if its sums are exact)."""
        if metric in self.scale_tables:
            return self.scale_tables[metric]
        p = Base.metadata.tables["metric_points"]
        value = p.c.value
        multiple = sa.case((value.is_(None), 1), (value * EXACT_SCALE == sa.func.round(value * EXACT_SCALE), 1),
                           else_=0)
        total = sa.func.coalesce(sa.func.sum(sa.func.abs(value)), 0.0)
        exact = sa.case((sa.and_(sa.func.min(multiple) == 1, 2 * total < EXACT_LIMIT), 1), else_=0)
        t = self.scratch.table("_pb_bt_scale", sa.Column("account_id", sa.Text, primary_key=True),
                               sa.Column("s", sa.Float), sa.Column("x", sa.Integer))
        self.conn.execute(sa.insert(t).from_select(
            ["account_id", "s", "x"],
            sa.select(p.c.account_id, total, exact)
            .where(p.c.metric == metric, p.c.date <= sa.literal(self.end, sa.Date)).group_by(p.c.account_id)))
        self.scale_tables[metric] = t
        return t

    def split(self, spans: Any, windows: dict[steps.Key, str], metrics: list[str], expr: n.Expr,
              variant: int) -> sa.Select:
        """The spans where `expr` holds and no comparison is near (a query of (variant, id, day, next)); the
        near ones are written to `open`. `spans` and `windows` as daysteps.span_compiler takes them."""
        src: Any = spans
        columns: list[Any] = []
        prefixes: dict[str, str] = {}
        for j, metric in enumerate(metrics):
            t = self.scales(metric).alias(f"sc{j}")
            src = src.outerjoin(t, t.c.account_id == spans.c.id)
            prefixes[metric] = f"sc{j}_"
            columns += [sa.func.coalesce(t.c.s, 0.0).label(f"sc{j}_s"), sa.func.coalesce(t.c.x, 1).label(f"sc{j}_x")]
        rel = sa.select(spans, *columns).select_from(src).subquery("spans")
        nc = NearCompiler(self.catalog, self.end, dialect_for(self.conn.dialect.name))
        nc.windows, nc.probe, nc.accounts = dict(windows), False, rel  # type: ignore[assignment]
        nc.scales, nc.nears, nc._reads = prefixes, [], set()
        holds = sa.func.coalesce(nc.compile(expr), sa.false())
        near = nc.near()
        marked = self.scratch.table("_pb_bt_marked", sa.Column("account_id", sa.Text), sa.Column("since", sa.Date),
                                    sa.Column("until", sa.Date), sa.Column("near", sa.Integer))
        self.conn.execute(sa.insert(marked).from_select(
            ["account_id", "since", "until", "near"],
            sa.select(rel.c.id, rel.c.day, rel.c.next, sa.case((near, 1), else_=0)).where(sa.or_(holds, near))))
        m = marked.c
        self.conn.execute(sa.insert(self.open).from_select(
            ["variant", "account_id", "since", "until"],
            sa.select(sa.literal(variant), m.account_id, m.since, m.until).where(m.near == 1)))
        return sa.select(sa.literal(variant), m.account_id, m.since, m.until).where(m.near == 0)


__all__ = ["FLOAT_KINDS", "NearCompiler", "Ties", "float_metrics"]
