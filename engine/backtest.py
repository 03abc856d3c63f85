"""`playbook backtest`: the rules over each past day with the values known that day.

    result = backtest(conn, catalog, ["usage_ceiling"], dt.date(2026, 1, 1), dt.date(2026, 3, 31))

A day's values: the account fields as known at the end of that day (the
field history, engine/history.py), metric points and events dated up to that
day. Two paths that must agree (tests/engine/test_backtest.py):

* set-wise (`backtest`): the accounts' *versions* are built once (one row per
  account and span of days in which none of its fields changed, from the
  history's intervals), each window a condition reads becomes a step
  function (engine/daysteps.py: one row per span in which its value holds,
  from one window pass over the series), and each condition is one INSERT ...
  SELECT over the versions cut by its windows' steps (and, if it reads the
  day, at the days its comparisons cross): one evaluation per span, never
  per day. A window with no step form (min, max over a window) is evaluated
  over versions x days, aggregated per (account, day). Where a comparison
  reads an avg or sum window near its threshold, the sliding sums may be a
  bit off the reference's direct ones: those spans are decided by day with
  the reference's SQL (engine/dayties.py, `_decide_open`).
* the reference (`backtest_by_day`): today's compiler once per day, reading
  `history.as_of_select(day)` in place of the accounts table.

Both write fire spans (variant, account, first day, day after the last)
into one temporary table, and one summary reads it (the spans merged per
account first, so accounts per day is a running sum of starts and ends): per trigger (and per
`--vary` value) the first fire day of each account, accounts firing per day
and per quarter, and conversions: accounts whose first fire was followed by
a won outcome within `window` days.

`--vary TRIGGER.PARAM=70%,80%`: PARAM names a comparison with a number in
the trigger's condition by what is compared: a field or derived field
(`usage_percent` in `account.usage_percent > 80%`) or a series
(`gated_feature_explored` in `count(gated_feature_explored, 14 days) >= 3`).
Each value replaces that number, in the same unit (a percent for a percent).
"""

from __future__ import annotations

import copy
import datetime as dt
import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from dsl import nodes as n
from dsl.catalog import Catalog
from dsl.functions import Function
from dsl.suggest import closest
from engine import schema
from engine.enroll import Scratch
from engine.history import HISTORY, KNOWN, _NUMBERS, _typed, as_of_select, tracked_fields
from engine.sqlcompile import SQLCompiler, compiler, dialect_for, disjuncts
from engine import daysteps as steps
from engine.dayties import Ties, float_metrics
from engine.sqlfunctions import SeriesRows, Window

DEFAULT_WINDOW = 180  # days from a first fire to a won outcome that still counts as converted


class BacktestError(Exception):
    """Bad input: dates, an unknown trigger or parameter, a value in the wrong unit, no history."""


# ---------------------------------------------------------------- variants (--vary)


@dataclass(frozen=True)
class Variant:
    """One condition to backtest: a trigger as written, or with one number replaced."""

    trigger: str
    when: n.Expr
    param: str | None = None  # e.g. "usage_percent"
    value: str | None = None  # as the user wrote it, e.g. "70%"
    current: bool = True  # the value the rules have

    @property
    def label(self) -> str:
        return self.trigger if self.param is None else f"{self.param}={self.value}"


def _comparisons(expr: n.Node) -> Iterator[tuple[str, n.Number | n.Percent]]:
    """(param name, its number literal) for each comparison of a named thing with a number."""
    if isinstance(expr, n.Binary) and expr.op in n.COMPARISONS:
        for named, lit in ((expr.left, expr.right), (expr.right, expr.left)):
            if isinstance(lit, (n.Number, n.Percent)):
                name = _param_name(named)
                if name is not None:
                    yield name, lit
    for value in expr.__dict__.values():
        children = value if isinstance(value, list) else [value]
        for child in children:
            if isinstance(child, n.Node):
                yield from _comparisons(child)


def _param_name(expr: n.Node) -> str | None:
    if isinstance(expr, n.Ref):
        return expr.path[-1]
    if isinstance(expr, n.Call) and expr.args and isinstance(expr.args[0], n.Symbol):
        return expr.args[0].name
    return None


def params(catalog: Catalog, trigger: str) -> list[str]:
    """The names --vary accepts for a trigger, in the order they appear."""
    return list(dict.fromkeys(name for name, _ in _comparisons(catalog.triggers[trigger].when)))


def _show(lit: n.Number | n.Percent) -> str:
    v = lit.value * 100 if isinstance(lit, n.Percent) else lit.value
    text = f"{v:g}"
    return text + "%" if isinstance(lit, n.Percent) else text


def vary(catalog: Catalog, spec: str) -> list[Variant]:
    """`TRIGGER.PARAM=V1,V2,...` -> one variant per value (BacktestError on anything wrong)."""
    head, eq, values = spec.partition("=")
    trigger, dot, param = head.strip().partition(".")
    if not eq or not dot or not trigger or not param or not values.strip():
        raise BacktestError(f"--vary wants TRIGGER.PARAM=V1,V2 (e.g. usage_ceiling.usage_percent=70%,80%), "
                            f"not {spec!r}")
    if trigger not in catalog.triggers:
        hint = closest(trigger, catalog.triggers)
        raise BacktestError(f"--vary: no trigger '{trigger}'" + (f" (did you mean '{hint}'?)" if hint else ""))
    found = [lit for name, lit in _comparisons(catalog.triggers[trigger].when) if name == param]
    if not found:
        names = params(catalog, trigger)
        hint = closest(param, names)
        have = ", ".join(names) if names else "none: its condition compares nothing with a number"
        raise BacktestError(f"--vary: trigger '{trigger}' has no parameter '{param}'"
                            + (f" (did you mean '{hint}'?)" if hint else "") + f"; its parameters: {have}")
    if len(found) > 1:
        raise BacktestError(f"--vary: '{trigger}.{param}' is compared with a number {len(found)} times in the "
                            "condition; it cannot say which one to vary")
    original = found[0]
    percent = isinstance(original, n.Percent)
    out: list[Variant] = []
    for raw in values.split(","):
        text = raw.strip()
        is_percent = text.endswith("%")
        try:
            number = float(text[:-1] if is_percent else text)
            if not math.isfinite(number):
                raise ValueError(text)
        except ValueError:
            raise BacktestError(f"--vary {trigger}.{param}: {text!r} is not a number") from None
        if percent and not is_percent:
            raise BacktestError(f"--vary {trigger}.{param}: the rule compares with a percent ({_show(original)}); "
                                f"write {text}% (or {number / 100:g} as {number:g}%?) instead of {text}")
        if is_percent and not percent:
            raise BacktestError(f"--vary {trigger}.{param}: the rule compares with a plain number "
                                f"({_show(original)}), not a percent; write {text[:-1]}")
        when = copy.deepcopy(catalog.triggers[trigger].when)
        lit = next(lit for name, lit in _comparisons(when) if name == param)
        lit.value = number / 100 if percent else number
        out.append(Variant(trigger, when, param, text, current=math.isclose(lit.value, original.value)))
    return out


def variants(catalog: Catalog, triggers: Sequence[str] = (), varies: Sequence[str] = ()) -> list[Variant]:
    """The conditions of one run: each trigger named (else every trigger), a varied one once per value."""
    for t in triggers:
        if t not in catalog.triggers:
            hint = closest(t, catalog.triggers)
            raise BacktestError(f"no trigger '{t}'" + (f" (did you mean '{hint}'?)" if hint else ""))
    varied: dict[str, list[Variant]] = {}
    for spec in varies:
        vs = vary(catalog, spec)
        if vs[0].trigger in varied:
            raise BacktestError(f"--vary: trigger '{vs[0].trigger}' is varied twice; vary one parameter per run")
        varied[vs[0].trigger] = vs
    names = list(triggers) or list(catalog.triggers)
    names += [t for t in varied if t not in names]
    out: list[Variant] = []
    for t in names:
        out.extend(varied.get(t) or [Variant(t, catalog.triggers[t].when)])
    return out


# ---------------------------------------------------------------- results


@dataclass
class TriggerResult:
    trigger: str
    label: str
    param: str | None
    value: str | None
    current: bool
    first: dict[str, dt.date] = field(default_factory=dict)  # account -> first fire day
    per_day: dict[dt.date, int] = field(default_factory=dict)  # accounts firing that day
    per_quarter: dict[str, int] = field(default_factory=dict)  # accounts firing at least once in the quarter
    converted: int = 0  # first fire, then a won outcome within the window
    on_days: dict[dt.date, set[str]] = field(default_factory=dict)  # accounts firing on days asked for

    @property
    def accounts(self) -> int:
        return len(self.first)

    def to_json(self, accounts: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "trigger": self.trigger, "label": self.label, "param": self.param, "value": self.value,
            "current": self.current, "accounts_fired": self.accounts, "converted": self.converted,
            "conversion_rate": round(self.converted / self.accounts, 4) if self.accounts else None,
            "per_quarter": self.per_quarter,
            "first_fires_per_day": {d.isoformat(): c for d, c in sorted(Counter(self.first.values()).items())},
            "firing_per_day": {d.isoformat(): c for d, c in sorted(self.per_day.items())}}
        if accounts:
            out["first_fire"] = {a: d.isoformat() for a, d in sorted(self.first.items())}
        return out


@dataclass
class Backtest:
    start: dt.date
    end: dt.date
    window: int  # days
    known_since: dt.date | None  # the first day any account is known (history starts)
    outcomes: int  # won outcomes in the store
    results: list[TriggerResult]

    def to_json(self) -> dict[str, Any]:
        return {"from": self.start.isoformat(), "to": self.end.isoformat(), "conversion_window_days": self.window,
                "history_starts": self.known_since.isoformat() if self.known_since else None,
                "won_outcomes": self.outcomes, "triggers": [r.to_json() for r in self.results]}


# ---------------------------------------------------------------- checks


def check_range(conn: Connection, start: dt.date, end: dt.date, today: dt.date) -> dt.date:
    """The first day an account is known; BacktestError for reversed or future dates or no history."""
    if start > end:
        raise BacktestError(f"--from {start} is after --to {end}")
    if end >= today:
        raise BacktestError(f"--to {end} is not in the past (today is {today}): a backtest replays days that "
                            "are over")
    first = conn.execute(sa.select(sa.func.min(HISTORY.c.valid_from)).where(HISTORY.c.field == KNOWN)).scalar()
    if first is None:
        raise BacktestError("the store keeps no field history (account_field_history is empty): values before "
                            "the first import are unknown; import accounts with `playbook import` to start one")
    if isinstance(first, str):  # SQLite hands a bare aggregate back as text
        first = dt.datetime.fromisoformat(first)
    if first.date() > end:
        raise BacktestError(f"the field history starts {first.date()}, after --to {end}: values before the first "
                            "import are unknown, so no day of this range can be replayed")
    return first.date()


# ---------------------------------------------------------------- the set-wise path


def _days_before(dialect: str, day: ColumnElement[Any], days: int) -> ColumnElement[Any]:
    if dialect == "sqlite":
        return sa.type_coerce(sa.func.date(day, f"-{days} days"), sa.Date)
    return sa.type_coerce(day - sa.literal(days, sa.Integer), sa.Date)


@dataclass(frozen=True)
class _DayRows(SeriesRows):
    """A window's rows for every day at once: grouped by (account, day)."""

    grid_day: Any = None  # the days table's day column

    def per_account(self, alias: str | None = None, **columns: Any) -> sa.Subquery:
        labelled = [c.label(name) for name, c in columns.items()]
        return (sa.select(self.account_id, self.grid_day.label("day"), *labelled).where(*self.where)
                .group_by(self.account_id, self.grid_day).subquery(alias or self.alias))


def _day_ends(rows: _DayRows, first: bool) -> sa.Subquery:
    """`ends` and `latest_point` of engine/sqlfunctions.py, keeping the day."""
    cols: dict[str, Any] = {"d1": sa.func.max(rows.day)}
    if first:
        cols.update(d0=sa.func.min(rows.day), n=sa.func.count())
    span = rows.per_account(rows.alias + "s", **cols)

    def point(suffix: str, day: Any) -> Any:
        t = rows.table.alias(rows.alias + suffix)
        return sa.select(t.c.value).where(t.c[rows.series_column] == rows.series,
                                          t.c.account_id == span.c.account_id,
                                          t.c[rows.day_column] == day).scalar_subquery()

    if first:
        return sa.select(span.c.account_id, span.c.day, span.c.n, point("f", span.c.d0).label("first"),
                         point("l", span.c.d1).label("last")).subquery(rows.alias)
    return sa.select(span.c.account_id, span.c.day, point("l", span.c.d1).label("v")).subquery(rows.alias)


_DAY_FREE = {"abs", "round", "min", "max"}  # value forms that do not read today


class DayCompiler(SQLCompiler):
    """The compiler over (account, day) rows: `today` is the row's day, windows are per (account, day).

    `accounts` is set by the caller to a relation with `id`, `day` and the
    field columns; `days` is the days table; `uses_day` says afterwards
    whether the compiled condition read the day at all."""

    days: Any = None
    uses_day: bool = False
    today_is_fixed = False

    def _today(self, e: n.Today) -> Any:
        self.uses_day = True
        return self.accounts.c.day

    def _ago(self, e: n.Ago) -> Any:
        self.uses_day = True
        return _days_before(self.dialect.name, self.accounts.c.day, math.floor(e.duration.days))

    def _call(self, e: n.Call) -> Any:
        form, sql = self._function(e)
        if form.series is None and e.func in _DAY_FREE:
            return super()._call(e)
        self.uses_day = True
        today = self.accounts.c.day
        if form.series is None:
            assert sql.value is not None
            return sql.value(today, *(self.compile(a) for a in e.args))
        assert sql.window is not None
        value = sql.window.value(self._window(e, form, sql.window), today)
        empty = form.empty_series(self.today)
        return value if empty is None else sa.func.coalesce(value, sa.literal(empty))

    def _window(self, e: n.Call, form: Function, window: Window) -> sa.Subquery:
        assert isinstance(e.args[0], n.Symbol)
        days = self._days(e.args[1]) if form.windowed else None
        key = (form.series or "", window.kind, e.args[0].name, days)
        if key not in self._joins:
            rows = self._rows(form.series or "", e.args[0].name, days)
            if window.kind == "ends":
                sub = _day_ends(rows, first=True)
            elif window.kind == "latest":
                sub = _day_ends(rows, first=False)
            else:
                sub = window.subquery(rows)
            self._joins[key] = sub
        return self._joins[key]

    def _rows(self, series: str, name: str, days: float | None) -> _DayRows:
        table, series_column, day_column = (
            (self._metrics, "metric", "date") if series == "metric" else (self._events, "event", "occurred_on"))
        day = table.c[day_column]
        where = [table.c[series_column] == name, day <= self.days.c.day]
        if days is not None:
            where.append(day > _days_before(self.dialect.name, self.days.c.day, math.ceil(days)))
        return _DayRows(table, series_column, day_column, name, tuple(where), f"w{len(self._joins)}",
                        grid_day=self.days.c.day)

    def from_clause(self, inner: Any = frozenset(), start: Any = None) -> Any:
        src: Any = self.accounts if start is None else start
        for key, sub in self._joins.items():
            on = sa.and_(sub.c.account_id == self.accounts.c.id, sub.c.day == self.accounts.c.day)
            src = src.join(sub, on) if key in inner else src.outerjoin(sub, on)
        return src


def _versions(conn: Connection, scratch: Scratch, catalog: Catalog, start: dt.date, end: dt.date) -> sa.Table:
    """One row per account and span of days [since, until) with unchanged fields, within [start, end]."""
    dialect = conn.dialect.name
    to_date = dialect_for(dialect).to_date
    accounts = schema.entity_table(catalog.account, "account")
    fields = tracked_fields(catalog)
    # ns, nu: since and until as day numbers, for the steps a condition's query joins as numbers (SQLite)
    table = scratch.table("_pb_bt_versions", sa.Column("id", sa.Text), sa.Column("since", sa.Date),
                          sa.Column("until", sa.Date), sa.Column("ns", sa.BigInteger), sa.Column("nu", sa.BigInteger),
                          *(sa.Column(c.name, c.type) for c in accounts.c if c.name in fields))
    h = HISTORY
    after = end + dt.timedelta(days=1)
    lo, hi = sa.literal(start, sa.Date), sa.literal(end, sa.Date)
    # Where a version starts: the day an account is known, each day a replaced value stops or starts
    # holding, and the first day of the range for accounts known before it.
    cut = sa.union(
        sa.select(h.c.account_id, to_date(h.c.valid_from).label("p")),
        sa.select(h.c.account_id, to_date(h.c.valid_to).label("p")).where(h.c.valid_to.isnot(None)),
        sa.select(h.c.account_id, lo.label("p")).where(h.c.field == KNOWN, to_date(h.c.valid_from) <= lo),
    ).subquery("cut")
    known = h.alias("known")
    points = (sa.select(cut.c.account_id, cut.c.p).select_from(
        cut.join(known, sa.and_(known.c.account_id == cut.c.account_id, known.c.field == KNOWN)))
        .where(cut.c.p >= lo, cut.c.p <= hi, cut.c.p >= to_date(known.c.valid_from))).subquery("points")
    spans = sa.select(points.c.account_id, points.c.p, sa.func.lead(points.c.p).over(
        partition_by=points.c.account_id, order_by=points.c.p).label("q")).subquery("spans")
    pg = dialect == "postgresql"
    replaced: list[Any] = [spans.c.account_id, spans.c.p]
    for i, (name, t) in enumerate(fields.items()):
        source = h.c.value_number if t.name in _NUMBERS else h.c.value_text
        replaced.append(sa.func.max(sa.case((h.c.field == name, 1))).label(f"has{i}"))
        replaced.append(sa.func.max(sa.case((h.c.field == name, source))).label(f"v{i}"))
    old = (sa.select(*replaced).select_from(spans.join(h, sa.and_(
        h.c.account_id == spans.c.account_id, h.c.field != KNOWN, h.c.valid_to.isnot(None),
        to_date(h.c.valid_from) <= spans.c.p, to_date(h.c.valid_to) > spans.c.p)))
        .group_by(spans.c.account_id, spans.c.p).subquery("old"))
    columns: list[Any] = [spans.c.account_id, spans.c.p,
                          sa.func.coalesce(spans.c.q, sa.literal(after, sa.Date))]
    names = []
    for i, (name, t) in enumerate(fields.items()):
        if name not in accounts.c:
            continue
        names.append(name)
        value = sa.case((old.c[f"has{i}"] == 1, _typed(pg, t, old.c[f"v{i}"])), else_=accounts.c[name])
        columns.append(sa.type_coerce(value, accounts.c[name].type))
    q = (sa.select(*columns).select_from(
        spans.join(accounts, accounts.c.id == spans.c.account_id)
        .outerjoin(old, sa.and_(old.c.account_id == spans.c.account_id, old.c.p == spans.c.p))))
    conn.execute(sa.insert(table).from_select(["id", "since", "until", *names], q))
    if dialect == "sqlite":
        conn.execute(sa.update(table).values(ns=steps.day_number(dialect, table.c.since),
                                             nu=steps.day_number(dialect, table.c.until)))
        # ns and nu in the index: a step joined by day numbers is matched to its version in the index
        # alone, the row read only for a match that reads fields (one search per step, not two).
        steps.index(conn, table, "id", "id", "since", "ns", "nu")
    else:
        steps.index(conn, table, "id", "id", "since")
    steps.analyze(conn, table)
    return table


_SPAN = ("since", "until", "ns", "nu")  # the versions' columns that are not fields


def _fired_table(scratch: Scratch) -> sa.Table:
    return scratch.table("_pb_bt_fired", sa.Column("variant", sa.Integer), sa.Column("account_id", sa.Text),
                         sa.Column("since", sa.Date), sa.Column("until", sa.Date))


def _days_table(conn: Connection, scratch: Scratch, start: dt.date, end: dt.date) -> sa.Table:
    table = scratch.table("_pb_bt_days", sa.Column("day", sa.Date, primary_key=True), sa.Column("next", sa.Date))
    span = (end - start).days + 1
    rows = [{"day": start + dt.timedelta(days=i), "next": start + dt.timedelta(days=i + 1)} for i in range(span)]
    conn.execute(sa.insert(table), rows)
    return table


def _where(c: SQLCompiler, expr: n.Expr, *columns: Any) -> sa.Select | sa.CompoundSelect:
    """As engine/evaluate.RuleSQL.where: window joins the condition needs are inner; an `or` whose
    branches need different windows is a UNION of one query per branch."""
    branches = disjuncts(expr)
    if len(branches) > 1 and any(c.required_joins(b) for b in branches):
        return sa.union(*(_where_one(c, b, columns) for b in branches))
    return _where_one(c, expr, columns)


def _where_one(c: SQLCompiler, expr: n.Expr, columns: Sequence[Any]) -> sa.Select:
    cond = c.compile(expr)
    return sa.select(*columns).select_from(c.from_clause(c.required_joins(expr))).where(cond)


def backtest(conn: Connection, catalog: Catalog, runs: Sequence[Variant] | Sequence[str], start: dt.date,
             end: dt.date, window: int = DEFAULT_WINDOW, today: dt.date | None = None,
             on_days: Sequence[dt.date] = ()) -> Backtest:
    """Set-wise: each condition one INSERT ... SELECT over spans of days in which nothing it reads changes
    (engine/daysteps.py); a condition reading a window with no step form, over versions x days.

    `on_days`: also list the accounts firing on these days (Backtest.firing)."""
    vs = _as_variants(catalog, runs)
    known = check_range(conn, start, end, today or dt.date.today())
    dialect = conn.dialect.name
    with Scratch(conn) as scratch:
        days = _days_table(conn, scratch, start, end)
        versions = _versions(conn, scratch, catalog, start, end)
        fired = _fired_table(scratch)
        ties = Ties(conn, scratch, catalog, end)
        stepped: dict[steps.Key, sa.Table] = {}
        queries = [(i, branch) for i, v in enumerate(vs) for branch in _branches(catalog, end, dialect, v.when)]
        # A window read by one query only is stepped inside that query (daysteps.step_rows); the others'
        # steps are written once and shared.
        readers = Counter(key for _, branch in queries for key in steps.probe(catalog, end, dialect, branch).windows)
        shared = {key for key, count in readers.items() if count > 1}
        for i, branch in queries:
            q: Any = _spans_query(conn, scratch, catalog, versions, days, stepped, shared, branch, i, start,
                                  end, ties)
            if q is None:  # a window with no step form: versions x days, as before
                q = _grid_query(catalog, end, dialect, versions, days, branch, i)
            conn.execute(sa.insert(fired).from_select(["variant", "account_id", "since", "until"], q))
        _decide_open(conn, catalog, vs, ties.open, days, fired, versions)
        steps.analyze(conn, fired)
        # One query's fire spans are disjoint per account (its versions cut by its steps); only a variant
        # written by several (an `or` of branches) can have spans that overlap.
        several = {i for i, count in Counter(i for i, _ in queries).items() if count > 1}
        return _summarise(conn, scratch, fired, vs, start, end, window, known, on_days, merge=several)


def _branches(catalog: Catalog, end: dt.date, dialect: str, when: n.Expr) -> list[n.Expr]:
    """The queries of one condition: an `or` whose branches need different windows is one per branch."""
    probe = steps.span_compiler(catalog, end, dialect, {})
    branches = disjuncts(when)
    if not (len(branches) > 1 and any(probe.required_joins(b) for b in branches)):
        branches = [when]
    return branches


def _spans_query(conn: Connection, scratch: Scratch, catalog: Catalog, versions: sa.Table, days: sa.Table,
                 stepped: dict[steps.Key, sa.Table], shared: set[steps.Key], expr: n.Expr, variant: int,
                 start: dt.date, end: dt.date, ties: Ties) -> sa.Select | None:
    dialect = conn.dialect.name
    found = steps.probe(catalog, end, dialect, expr)
    if not found.stepped:
        return None
    required = steps.span_compiler(catalog, end, dialect, {}).required_joins(expr)
    sources: dict[steps.Key, Any] = {}
    # Read by this query only, no span without a step holds, and the spans are read once (the cuts
    # of a day-reading condition read them once per candidate day).
    alone = {key: prefix for key, prefix in found.windows.items()
             if key not in shared and key in required and not found.reads_today}
    # SQLite: a metric window's points numbered, for lookups in place of a window pass (daysteps.ranked)
    ranked = {key: steps.ranked(conn, scratch, key, start, end) for key in alone}
    inline = {key: steps.step_rows(conn.dialect, key, start, end, prefix + "t", ranked=ranked[key])
              for key, prefix in alone.items()}
    # SQLite, every window stepped here: the spans' ends stay day numbers until the output (daysteps.step_rows)
    numbers = dialect == "sqlite" and len(alone) == len(found.windows) and None not in inline.values()
    if numbers:
        inline = {key: steps.step_rows(conn.dialect, key, start, end, prefix + "t", numbers=True, ranked=ranked[key])
                  for key, prefix in alone.items()}
    for key, prefix in found.windows.items():
        rows = inline.get(key)
        if rows is not None:
            sources[key] = rows
            continue
        if key not in stepped:
            stepped[key] = steps.steps(conn, scratch, key, start, end)
        sources[key] = stepped[key].alias(prefix + "t")
    spans = _spans(dialect, versions, sources, found.windows, required, numbers)
    if found.reads_today:
        c = steps.span_compiler(catalog, end, dialect, dict(found.windows), spans)
        cuts = steps.Crossings(c).points(expr)
        spans = _per_day(spans, days) if cuts is None else _cut(dialect, spans, cuts)
    metrics = float_metrics(found.windows)
    if metrics:  # a sum of doubles compared: ties are decided by day (engine/dayties.py)
        return ties.split(spans, found.windows, metrics, expr, variant)
    c = steps.span_compiler(catalog, end, dialect, dict(found.windows), spans)
    return sa.select(sa.literal(variant), spans.c.id, spans.c.day, spans.c.next).where(c.compile(expr))


def _spans(dialect: str, versions: sa.Table, sources: dict[steps.Key, Any], windows: dict[steps.Key, str],
           required: set[Any], numbers: bool = False) -> sa.Subquery:
    """The versions cut by each window's steps (`sources`: a table's alias or the steps' subquery):
    (id, fields, day, next, w<i>_<column>). `numbers`: every source's p and q are day numbers (SQLite),
    joined to the versions' ns and nu, and only day and next turned into dates."""
    v = versions
    lo: Any = v.c.ns if numbers else v.c.since
    hi: Any = v.c.nu if numbers else v.c.until
    src: Any = v
    columns: list[Any] = []
    for key, prefix in windows.items():
        w = sources[key]
        on = sa.and_(w.c.account_id == v.c.id, w.c.p < hi, w.c.q > lo)
        src = src.join(w, on) if key in required else src.outerjoin(w, on)
        lo = steps.greatest(dialect, lo, sa.func.coalesce(w.c.p, lo))
        hi = steps.least(dialect, hi, sa.func.coalesce(w.c.q, hi))
        columns += [w.c[col].label(prefix + col) for col in steps.STEPPED[key[1]]]
    fields = [c for c in v.c if c.name not in _SPAN]
    if numbers:
        lo, hi = steps.day_of(dialect, lo), steps.day_of(dialect, hi)
    return (sa.select(*fields, sa.type_coerce(lo, sa.Date).label("day"), sa.type_coerce(hi, sa.Date).label("next"),
                      *columns).select_from(src).subquery("spans"))


def _cut(dialect: str, spans: sa.Subquery, cuts: Sequence[Any]) -> sa.Subquery:
    """Each span cut at the candidate days (day numbers) inside it."""
    keep = [c for c in spans.c if c.name not in ("day", "next")]
    first = spans.c.day.label("p")
    if not cuts:
        return spans
    start, stop = steps.day_number(dialect, spans.c.day), steps.day_number(dialect, spans.c.next)
    parts = [sa.select(*keep, spans.c.day, spans.c.next, first)]
    parts += [sa.select(*keep, spans.c.day, spans.c.next, steps.day_of(dialect, cut).label("p"))
              .where(cut > start, cut < stop) for cut in cuts]
    u = sa.union_all(*parts).subquery("cuts")
    following = sa.func.lead(u.c.p).over(partition_by=(u.c.id, u.c.day), order_by=u.c.p)
    s = sa.select(*(u.c[c.name] for c in keep), sa.type_coerce(u.c.p, sa.Date).label("day"),
                  sa.type_coerce(sa.func.coalesce(following, u.c.next), sa.Date).label("next")).subquery("cut")
    return sa.select(s).where(s.c.next > s.c.day).subquery("spans")


def _per_day(spans: sa.Subquery, days: sa.Table) -> sa.Subquery:
    """Each span as single days: for a condition whose day-reading this cannot place."""
    keep = [c for c in spans.c if c.name not in ("day", "next")]
    return (sa.select(*keep, days.c.day, days.c.next)
            .select_from(spans.join(days, sa.and_(days.c.day >= spans.c.day, days.c.day < spans.c.next)))
            .subquery("spans"))


def _grid_query(catalog: Catalog, end: dt.date, dialect: str, versions: sa.Table, days: sa.Table,
                expr: n.Expr, variant: int) -> sa.Select | sa.CompoundSelect:
    """Versions x days, each window aggregated per (account, day) from the series rows of its days."""
    fields = [c for c in versions.c if c.name not in _SPAN]
    grid = (sa.select(*fields, days.c.day, days.c.next).select_from(
        versions.join(days, sa.and_(days.c.day >= versions.c.since, days.c.day < versions.c.until)))
        .subquery("accounts"))
    c = _day_compiler(catalog, end, dialect, grid, days)
    return _where(c, expr, sa.literal(variant), grid.c.id, grid.c.day, grid.c.next)


def _day_compiler(catalog: Catalog, end: dt.date, dialect: str, accounts: Any, days: sa.Table) -> DayCompiler:
    c = DayCompiler(catalog, end, dialect_for(dialect))
    c.accounts = accounts
    c.days = days
    return c


def _as_variants(catalog: Catalog, runs: Sequence[Variant] | Sequence[str]) -> list[Variant]:
    return [r if isinstance(r, Variant) else Variant(r, catalog.triggers[r].when) for r in runs]


def _decide_open(conn: Connection, catalog: Catalog, vs: Sequence[Variant], open_: sa.Table, days: sa.Table,
                 fired: sa.Table, versions: sa.Table) -> None:
    """The spans engine/dayties.py left open (a window sum at its threshold), day by day with the reference's
    SQL (as `backtest_by_day`) for just their accounts: the same sums in the same order, the same answer.

    The fields come from the versions (the values `history.as_of_select(day)` gives, already built):
    the as-of query groups the whole history, about 0.3 s a query at 100,000 accounts on SQLite,
    and a backtest re-checks some 80 days there (docs/BENCHMARKS.md)."""
    o, dialect = open_.c, conn.dialect.name
    pairs = (sa.select(o.variant, days.c.day).distinct()
             .select_from(open_.join(days, sa.and_(days.c.day >= o.since, days.c.day < o.until)))
             .order_by(o.variant, days.c.day))
    v = versions.c
    fields = [c for c in versions.c if c.name not in _SPAN]
    for i, raw in conn.execute(pairs).all():
        day = _date(raw)
        lit = sa.literal(day, sa.Date)
        ids = sa.select(o.account_id).where(o.variant == i, o.since <= lit, o.until > lit)
        c = compiler(catalog, day, dialect)
        c.only = ids
        c.accounts = (sa.select(*fields).where(v.id.in_(ids), v.since <= lit, v.until > lit)  # type: ignore[assignment]
                      .subquery("accounts"))
        q = _where(c, vs[i].when, sa.literal(i), c.accounts.c.id, lit, sa.literal(day + dt.timedelta(days=1), sa.Date))
        conn.execute(sa.insert(fired).from_select(["variant", "account_id", "since", "until"], q))


# ---------------------------------------------------------------- the reference: one day at a time


def backtest_by_day(conn: Connection, catalog: Catalog, runs: Sequence[Variant] | Sequence[str], start: dt.date,
                    end: dt.date, window: int = DEFAULT_WINDOW, today: dt.date | None = None,
                    progress: Callable[[dt.date], None] | None = None,
                    only: Sequence[dt.date] | None = None) -> Backtest:
    """Today's compiler once per day and condition, over `history.as_of_select(day)`: the slow, plain path.

    `only`: evaluate just these days of the range (a sample, to check the set-wise path at a size where
    every day would take too long); the result lists who fires on them (`on_days`)."""
    vs = _as_variants(catalog, runs)
    known = check_range(conn, start, end, today or dt.date.today())
    dialect = conn.dialect.name
    replay = sorted(only) if only is not None else [start + dt.timedelta(days=i)
                                                     for i in range((end - start).days + 1)]
    with Scratch(conn) as scratch:
        fired = _fired_table(scratch)
        for day in replay:
            if progress is not None:
                progress(day)
            for i, v in enumerate(vs):
                c = compiler(catalog, day, dialect)
                c.accounts = as_of_select(catalog, day, dialect).subquery("accounts")  # type: ignore[assignment]
                q = _where(c, v.when, sa.literal(i), c.accounts.c.id, sa.literal(day, sa.Date),
                           sa.literal(day + dt.timedelta(days=1), sa.Date))
                conn.execute(sa.insert(fired).from_select(["variant", "account_id", "since", "until"], q))
        # One query per variant and day: no two spans of a variant overlap.
        return _summarise(conn, scratch, fired, vs, start, end, window, known, replay if only is not None else (),
                          merge=set())


# ---------------------------------------------------------------- the summary


def _date(value: Any) -> dt.date:
    return dt.date.fromisoformat(value) if isinstance(value, str) else value


def quarter(day: dt.date) -> str:
    return f"{day.year}-Q{(day.month - 1) // 3 + 1}"


def _changes(conn: Connection, fired: sa.Table, variants: int, merge: set[int]) -> dict[int, Counter[dt.date]]:
    """Per variant, how many accounts start and stop firing each day (+ and -), so that accounts firing
    on a day is a running sum. An account's spans of one query are disjoint (its versions cut by its
    steps), and touching spans cancel out (-1 and +1 the same day): those are counted as they are. The
    spans of a variant in `merge` (written by several queries: an `or` of branches) may overlap, so
    they are merged per account first, in one sorted read: in SQLite two window passes over the
    spans took 3-4 times as long (10,000 x 365: 1.1-1.5 s CPU against 0.3-0.5 s for its 151,464 spans
    of one variant; the GROUP BYs over the others about 0.1 s each)."""
    f = fired.c
    change: dict[int, Counter[dt.date]] = {i: Counter() for i in range(variants)}
    alone = f.variant.notin_(sorted(merge))
    for column, sign in ((f.since, 1), (f.until, -1)):
        for i, day, count in conn.execute(sa.select(f.variant, column, sa.func.count()).where(alone)
                                          .group_by(f.variant, column)):
            change[int(i)][_date(day)] += sign * int(count)
    if not merge:
        return change
    # Dates as stored (ISO text on SQLite, which sorts as the dates do): no conversion per span.
    text = [sa.type_coerce(c, sa.String) if conn.dialect.name == "sqlite" else c for c in (f.since, f.until)]
    rows = conn.execute(sa.select(f.variant, f.account_id, *text).where(f.variant.in_(sorted(merge)))
                        .order_by(f.variant, f.account_id, f.since))
    starts: Counter[tuple[int, Any]] = Counter()
    ends: Counter[tuple[int, Any]] = Counter()
    key: Any = None
    lo: Any = None
    hi: Any = None
    for i, account, since, until in rows:
        if key != (i, account) or since > hi:  # a new island: the last one ends
            if key is not None:
                starts[key[0], lo] += 1
                ends[key[0], hi] += 1
            key, lo, hi = (i, account), since, until
        elif until > hi:
            hi = until
    if key is not None:
        starts[key[0], lo] += 1
        ends[key[0], hi] += 1
    for counts, sign in ((starts, 1), (ends, -1)):
        for (i, day), count in counts.items():
            change[int(i)][_date(day)] += sign * count
    return change


def _summarise(conn: Connection, scratch: Scratch, fired: sa.Table, vs: Sequence[Variant], start: dt.date,
               end: dt.date, window: int, known: dt.date, on_days: Sequence[dt.date] = (),
               merge: set[int] | None = None) -> Backtest:
    """`merge`: the variants whose spans may overlap (None: any)."""
    results = [TriggerResult(v.trigger, v.label, v.param, v.value, v.current) for v in vs]
    # The first fire day, accounts per quarter and on given days read the spans as they are (a minimum,
    # distinct accounts): only the count per day needs an account's spans disjoint (`_changes`).
    s = fired.c
    for i, account, first in conn.execute(sa.select(s.variant, s.account_id, sa.func.min(s.since))
                                          .group_by(s.variant, s.account_id)):
        results[i].first[account] = _date(first)
    change = _changes(conn, fired, len(vs), set(range(len(vs))) if merge is None else merge)
    for i, r in enumerate(results):
        running, d = 0, start
        while d <= end:
            running += change[i].get(d, 0)
            if running:
                r.per_day[d] = running
            d += dt.timedelta(days=1)
    # Per quarter: accounts that fired at least once in it.
    qs: list[tuple[str, dt.date, dt.date]] = []
    d = start
    while d <= end:
        next_quarter = dt.date(d.year + (d.month > 9), ((d.month - 1) // 3 * 3 + 3) % 12 + 1, 1)
        q_end = min(end, next_quarter - dt.timedelta(days=1))
        qs.append((quarter(d), d, q_end))
        d = q_end + dt.timedelta(days=1)
    for label, q0, q1 in qs:
        q = (sa.select(s.variant, sa.func.count(sa.distinct(s.account_id)))
             .where(s.since <= sa.literal(q1, sa.Date), s.until > sa.literal(q0, sa.Date))
             .group_by(s.variant))
        counts: dict[int, int] = {int(i): int(c) for i, c in conn.execute(q)}
        for i, r in enumerate(results):
            r.per_quarter[label] = int(counts.get(i, 0))
    for day in on_days:
        lit = sa.literal(day, sa.Date)
        for r in results:
            r.on_days[day] = set()
        for i, account in conn.execute(sa.select(s.variant, s.account_id).where(s.since <= lit, s.until > lit)):
            results[i].on_days[day].add(account)
    # Conversions: a won outcome within `window` days after the account's first fire.
    o = schema.Outcome.__table__
    won: dict[str, list[dt.date]] = {}
    for account, at in conn.execute(sa.select(o.c.account_id, o.c.at).where(o.c.outcome == "won")):
        won.setdefault(account, []).append(at.date() if isinstance(at, dt.datetime) else _date(at))
    for r in results:
        limit = dt.timedelta(days=window)
        r.converted = sum(1 for a, f in r.first.items() if any(f <= w <= f + limit for w in won.get(a, ())))
    return Backtest(start, end, window, known, sum(len(v) for v in won.values()), results)


__all__ = ["DEFAULT_WINDOW", "Backtest", "BacktestError", "TriggerResult", "Variant", "backtest", "backtest_by_day",
           "check_range", "params", "quarter", "vary", "variants"]
