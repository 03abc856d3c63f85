"""Rules -> SQL: one SQLAlchemy Core expression per rule, evaluated set-wise.

Like a sqlglot generator: one method per node kind (`_<kind>`), a dialect
class for what SQLite and PostgreSQL spell differently (with its table of
functions, engine/sqlfunctions.py), and an error on any node or function it
does not know. Window functions become pre-aggregated subqueries joined once
per (kind, series, window), so a rule over a million accounts is one query
with a few hash joins — never a loop over accounts.

The meaning is docs/semantics.md; dsl/evaluator.py is the reference that a
differential test holds this module to.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import ColumnElement

from dsl import nodes as n
from dsl.catalog import Catalog
from dsl.functions import Function, form_of
from engine.schema import Base, entity_table
from engine.sqlfunctions import POSTGRESQL, SQLITE, Rollup, SeriesRows, SQLFunction, Window


class SQLCompileError(Exception):
    """A rule this compiler cannot express (the checker should have caught it)."""


# ---------------------------------------------------------------- dialects


class Once(ColumnElement[Any]):
    """`body` reading `value` computed once per row: `(SELECT body FROM (SELECT value AS v))`.

    Why: a band compares its score with every band edge, and SQLite evaluates
    an expression as often as it is written (no common subexpressions): the
    whitespace score, six mentions in its band, cost 2.7x a plain field
    condition at 1,000,000 accounts. A correlated scalar subquery evaluates
    the score once and the comparisons read its column.
    """

    inherit_cache = False  # each instance has its own name; statements holding one are not cached
    _seq = itertools.count()

    def __init__(self, value: ColumnElement[Any], body: Callable[[ColumnElement[Any]], ColumnElement[Any]]):
        self.value = value
        self.name = f"pb_once_{next(Once._seq)}"
        self.body = body(sa.literal_column(self.name, type_=value.type))
        self.type = self.body.type

    def get_children(self, **kw: Any) -> list[ColumnElement[Any]]:
        return [self.value, self.body]

    @property
    def _from_objects(self) -> list[Any]:
        return [*self.value._from_objects, *self.body._from_objects]


@compiles(Once)
def _compile_once(element: Once, compiler: Any, **kw: Any) -> str:
    # Only the binds flag carries over: the inner SELECTs are neither result columns nor labels.
    inner = {k: v for k, v in kw.items() if k in ("literal_binds", "literal_execute")}
    body, value = compiler.process(element.body, **inner), compiler.process(element.value, **inner)
    return f"(SELECT {body} FROM (SELECT {value} AS {element.name}) AS {element.name}_row)"


class Dialect:
    """What differs between databases: the function table (engine/sqlfunctions.py) and dates."""

    name = "generic"
    functions: ClassVar[dict[str, SQLFunction]] = {}
    days_as_dates = False  # compare days_until/days_since with a whole number as the date itself

    def to_date(self, col: ColumnElement) -> ColumnElement:
        raise NotImplementedError

    def once(self, value: ColumnElement, body: Callable[[ColumnElement], ColumnElement]) -> ColumnElement:
        """`body(value)`, with `value` computed once per row where writing it out repeats the work."""
        return body(value)

    def conjunction(self, parts: list[ColumnElement]) -> ColumnElement:
        """`a and b and ...` (the language's `and` is SQL's three-valued AND)."""
        return sa.and_(*parts)

    def number(self, value: float) -> ColumnElement:
        """A number of the language (a float, as in the reference evaluator)."""
        return sa.literal(value, sa.Float)


class SQLiteDialect(Dialect):
    name = "sqlite"
    functions = SQLITE
    # `days_until(d) > 45` as `d > '2026-07-16'`: dates are ISO text, whose order is
    # the dates' (SQLCompiler.day_comparison says why).
    days_as_dates = True

    def to_date(self, col):
        return sa.type_coerce(sa.func.date(col), sa.Date)

    def once(self, value, body):
        return Once(value, body)

    def conjunction(self, parts):
        """The cheap conditions first, and the costly ones (a band's score) only where they all
        may hold: `CASE WHEN NOT (cheap) THEN false ELSE cheap AND costly END`.

        Why: SQLite evaluates both sides of an AND in a result column (no
        short circuit), so `band.whitespace == strong and account.x is not
        empty` computed the score (a correlated subquery) for every account of
        the one pass. A false cheap side makes the AND false whatever the
        costly side is, so the guard changes no answer, empty included.
        """
        costly = [p for p in parts if _costly(p)]
        if not costly or len(costly) == len(parts):
            return sa.and_(*parts)
        cheap = [p for p in parts if not _costly(p)]
        return sa.case((sa.not_(sa.and_(*cheap)), sa.false()), else_=sa.and_(*cheap, *costly))


class PostgresDialect(Dialect):
    name = "postgresql"
    functions = POSTGRESQL

    def to_date(self, col):
        return sa.cast(sa.func.timezone("UTC", col), sa.Date)

    def number(self, value):
        """`CAST(46.0 AS FLOAT)`: psycopg2 sends `46.0`, which PostgreSQL reads as a
        numeric, and an integer compared with a numeric (a day count, a count of
        events) is converted to numeric for every row. As a float8 the comparison is
        the reference evaluator's (floats) and costs a float conversion instead."""
        return sa.cast(sa.literal(value, sa.Float), sa.Float)

    def conjunction(self, parts):
        """The smaller conditions first: PostgreSQL evaluates an AND left to right and
        stops at the first false one, so `band.whitespace == strong and account.x is not
        empty` then computes the band's score (written out once per band, 8 times)
        only where the cheap side holds. AND is commutative in three-valued logic."""
        return sa.and_(*sorted(parts, key=_size))


DIALECTS: dict[str, type[Dialect]] = {"sqlite": SQLiteDialect, "postgresql": PostgresDialect}


def _costly(column: ColumnElement) -> bool:
    """Whether SQL runs a subquery per row to compute `column` (a `Once`, a scalar subquery)."""
    return any(isinstance(e, (Once, sa.ScalarSelect)) for e in visitors.iterate(column))


def _size(column: ColumnElement) -> int:
    """How many SQL elements `column` is made of: the cost PostgreSQL's order of an AND goes by."""
    return sum(1 for _ in visitors.iterate(column))


def dialect_for(name: str) -> Dialect:
    try:
        return DIALECTS[name]()
    except KeyError:
        raise SQLCompileError(f"no SQL dialect for database '{name}' (have: {', '.join(DIALECTS)})") from None


# ---------------------------------------------------------------- compiler


@dataclass
class Compiled:
    """A rule as SQL: `column` over `from_` (accounts left-joined to window subqueries)."""

    column: ColumnElement
    from_: Any
    accounts: sa.Table

    def select(self, *extra: ColumnElement) -> sa.Select:
        return sa.select(self.accounts.c.id, *extra, self.column.label("value")).select_from(self.from_)


@dataclass
class SQLCompiler:
    # False in a compiler whose `today` is each row's own day (the backtest's): a
    # day count cannot then be turned into a fixed date (`day_comparison`).
    today_is_fixed: ClassVar[bool] = True
    catalog: Catalog
    today: dt.date
    dialect: Dialect
    accounts: sa.Table = field(init=False)
    _joins: dict[tuple, sa.Subquery] = field(default_factory=dict, init=False)
    _let_stack: list[str] = field(default_factory=list, init=False)
    # Account ids the window subqueries may restrict themselves to (a SELECT of
    # ids or a list); None: every account. Only narrows what is aggregated: the
    # caller must itself restrict the accounts to the same ids.
    only: Any = field(default=None, init=False)
    # Metric windows read the rollup (engine/rollups.py); False: scan the
    # points (the rollups' differential test and benchmark compare the two).
    rollups: bool = field(default=True, init=False)
    # While a route's branch compiles: (its key, the accounts that can reach it). Its windows
    # aggregate only those accounts, under their own join key (`route`).
    _reach: tuple[tuple, ColumnElement] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.accounts = _accounts_table(self.catalog)
        self._metrics = Base.metadata.tables["metric_points"]
        self._events = Base.metadata.tables["events"]

    # ------------------------------------------------------------ entry points
    def compile(self, expr: n.Expr) -> ColumnElement:
        method = getattr(self, f"_{expr.kind}", None)
        if method is None:
            raise SQLCompileError(f"no SQL for {expr.kind} expressions")
        return method(expr)

    def from_clause(self, inner: Collection[tuple] = frozenset(), start: Any = None) -> Any:
        """Accounts joined to the window subqueries: inner joins for those in
        `inner` (the condition cannot hold without their row), outer otherwise.
        `start`: a join that already holds the accounts table, to begin from."""
        src: Any = self.accounts if start is None else start
        for key, sub in self._joins.items():
            on = sub.c.account_id == self.accounts.c.id
            src = src.join(sub, on) if key in inner else src.outerjoin(sub, on)
        return src

    def event_ids(self, column: ColumnElement, inner: Collection[tuple]) -> sa.Select | None:
        """The ids where `column` is true, read from its event windows alone, without `accounts`;
        None where that would not be the same accounts.

        Why: a condition over events only (`happened(funding_announced, within 30
        days)`) joined its window to `accounts` just to read the id back, and
        PostgreSQL hash-joined a scan of the whole table for it. An event's account
        is an account: `events.account_id` references `accounts.id` (a foreign key,
        enforced on both databases), so the window's ids are the same accounts. Only
        where every window is inner (the condition needs its row), every window is
        over events (metric points have no foreign key), and the condition reads
        nothing of the account. The caller decides whether `self.accounts` is the
        store's own table (an incremental sweep reads a copy of its scope's rows).
        """
        keys = list(self._joins)
        if not keys or set(keys) != set(inner) or any(k[0] != "event" for k in keys):
            return None
        if any(getattr(e, "table", None) is self.accounts for e in visitors.iterate(column)):
            return None
        first, *rest = (self._joins[k] for k in keys)
        src: Any = first
        for sub in rest:
            src = src.join(sub, sub.c.account_id == first.c.account_id)
        return sa.select(first.c.account_id.label("id")).select_from(src).where(column)

    @property
    def reads_windows(self) -> bool:
        """Whether anything compiled so far reads a window (joins a subquery to the accounts)."""
        return bool(self._joins)

    def finish(self, column: ColumnElement) -> Compiled:
        return Compiled(column, self.from_clause(), self.accounts)

    def truth(self, expr: n.Expr) -> ColumnElement:
        """A condition that is true, never empty: where SQL's NULL must read as not-true."""
        return sa.func.coalesce(self.compile(expr), sa.false())

    def trigger(self, name: str) -> ColumnElement:
        return self.compile(self.catalog.triggers[name].when)

    def score(self, name: str) -> ColumnElement:
        score = self.catalog.scores[name]
        if score.formula is not None:
            return self.compile(score.formula)
        total: ColumnElement = sa.literal(0.0)
        for rule in score.points:
            whens = [(self.compile(case.when), sa.literal(float(case.points))) for case in rule.cases]
            total = total + sa.case(*whens, else_=sa.literal(float(rule.otherwise)))
        return total

    def band(self, name: str, value: ColumnElement | None = None) -> ColumnElement:
        score = self.catalog.scores[name]
        if not score.bands:
            return sa.null()
        value = self.score(name) if value is None else value

        def bands(value: ColumnElement) -> ColumnElement:
            whens = []
            for b in score.bands:
                conds = []
                if b.low is not None:
                    conds.append(value >= b.low if b.low_inclusive else value > b.low)
                if b.high is not None:
                    conds.append(value <= b.high if b.high_inclusive else value < b.high)
                whens.append((sa.and_(value.isnot(None), *conds), sa.literal(b.name)))
            return sa.case(*whens, else_=sa.null())

        return self.dialect.once(value, bands)

    def route(self, name: str) -> ColumnElement:
        """The first branch whose condition holds.

        A branch's windows aggregate only the accounts that can reach it: no earlier branch
        holds, and the branch's own conditions that read the account alone do. Why:
        `account.arr >= 25000 and growth(api_calls, 60 days) >= 60%` computed the growth of
        every candidate, though only accounts past the enterprise branch and above the ARR
        read it (an incremental sweep's decisions spent a sixth of their time there). A CASE
        takes a branch only where its condition is true, so an account outside the reach
        never reads the window's value, and reading it as an empty window changes nothing.
        """
        whens = []
        otherwise: ColumnElement = sa.null()
        earlier: list[ColumnElement] = []  # earlier branches that read the account alone: each not true
        outer = self._reach
        for k, case in enumerate(self.catalog.routes[name].cases):
            if case.when is None:
                otherwise = sa.literal(case.target)
                break
            parts = conjuncts(case.when)
            plain = [c for p in parts if (c := self._plain(p)) is not None]
            reach = earlier + plain
            if outer is not None:
                reach.insert(0, outer[1])
            self._reach = ((*(outer[0] if outer else ()), name, k), sa.and_(*reach)) if reach else outer
            try:
                whens.append((self.compile(case.when), sa.literal(case.target)))
            finally:
                self._reach = outer
            if len(plain) == len(parts):  # the whole condition reads the account alone
                earlier.append(sa.not_(sa.func.coalesce(sa.and_(*plain), sa.false())))
        return sa.case(*whens, else_=otherwise) if whens else otherwise

    def _plain(self, expr: n.Expr) -> ColumnElement | None:
        """`expr` compiled, if it reads nothing but the accounts table (no window, no other day);
        None otherwise, and then nothing it compiled is kept."""
        joins = dict(self._joins)
        column = self.compile(expr)
        if self._joins == joins and all(f is self.accounts for f in column._from_objects):
            return column
        self._joins = joins
        return None

    def gate(self, name: str) -> ColumnElement:
        gate = self.catalog.gates[name]
        parts: list[ColumnElement] = []
        conditional = [c.when for c in gate.cases if c.when is not None]
        for case in gate.cases:
            reqs = sa.and_(*(self.truth(r.when) for r in case.requires)) if case.requires else sa.true()
            if case.when is None:
                parts.append(reqs)
            else:
                parts.append(sa.or_(sa.not_(self.truth(case.when)), reqs))
        if conditional:  # some `when` must apply, or the account has no readiness rules
            parts.append(sa.or_(*(self.truth(when) for when in conditional)))
        return sa.and_(*parts) if parts else sa.true()

    # ------------------------------------------------------------ literals
    def _number(self, e: n.Number):
        return self.dialect.number(e.value)

    def _percent(self, e: n.Percent):
        return self.dialect.number(e.value)

    def _string(self, e: n.String):
        return sa.literal(e.value, sa.Text)

    def _bool(self, e: n.Bool):
        return sa.true() if e.value else sa.false()

    def _symbol(self, e: n.Symbol):
        return sa.literal(e.name, sa.Text)

    def _duration(self, e: n.Duration):
        return self.dialect.number(float(e.days))

    def _date(self, e: n.DateLit):
        return sa.literal(e.value, sa.Date)

    def _ago(self, e: n.Ago):
        return sa.literal(self.today - dt.timedelta(days=math.floor(e.duration.days)), sa.Date)

    def _today(self, e: n.Today):
        return sa.literal(self.today, sa.Date)

    # ------------------------------------------------------------ references
    def _ref(self, e: n.Ref):
        head, rest = e.path[0], e.path[1:]
        if head == "account" and len(rest) == 1:
            return self.field(rest[0])
        if head == "score":
            return self.score(rest[0])
        if head == "band":
            return self.band(rest[0])
        if head == "route":
            return self.route(rest[0])
        if head == "gate":
            return self.gate(rest[0])
        if head == "trigger":
            return sa.func.coalesce(self.trigger(rest[0]), sa.false())
        raise SQLCompileError(f"'{e.dotted}' cannot be read in SQL")

    def field(self, name: str) -> ColumnElement:
        f = self.catalog.entity_field("account", name)
        if f is not None:
            col = self.accounts.c[name]
            return self.dialect.to_date(col) if f.type.name == n.TypeName.DATETIME else col
        let = self.catalog.entity_let("account", name)
        if let is None:
            raise SQLCompileError(f"account has no field '{name}'")
        if name in self._let_stack:
            raise SQLCompileError(f"derived field '{name}' depends on itself")
        self._let_stack.append(name)
        try:
            return self.compile(let.value)
        finally:
            self._let_stack.pop()

    # ------------------------------------------------------------ operators
    def _unary(self, e: n.Unary):
        inner = self.compile(e.operand)
        return sa.not_(inner) if e.op == n.UnOp.NOT else -inner

    def _binary(self, e: n.Binary):
        if e.op == n.BinOp.AND:
            return self.dialect.conjunction([self.compile(c) for c in conjuncts(e)])
        if e.op in n.COMPARISONS:
            dated = self.day_comparison(e.left, e.op, e.right)
            if dated is None and e.op in MIRROR:
                dated = self.day_comparison(e.right, MIRROR[e.op], e.left)
            if dated is not None:
                return dated
        left, right = self.compile(e.left), self.compile(e.right)
        match e.op:
            case n.BinOp.OR:
                return sa.or_(left, right)
            case n.BinOp.ADD:
                return sa.cast(left, sa.Float) + right
            case n.BinOp.SUB:
                return sa.cast(left, sa.Float) - right
            case n.BinOp.MUL:
                return sa.cast(left, sa.Float) * right
            case n.BinOp.DIV:
                # Real division on both databases; x / 0 is empty (PostgreSQL would raise).
                # (nullif typed: untyped, SQLAlchemy casts a divisor to NUMERIC, costly on PostgreSQL.)
                return sa.cast(left, sa.Float) / sa.func.nullif(sa.cast(right, sa.Float), 0, type_=sa.Float)
            case n.BinOp.EQ:
                return left == right
            case n.BinOp.NE:
                return left != right
            case n.BinOp.LT:
                return left < right
            case n.BinOp.LE:
                return left <= right
            case n.BinOp.GT:
                return left > right
            case n.BinOp.GE:
                return left >= right
        raise SQLCompileError(f"no SQL for operator {e.op.value}")

    def _in(self, e: n.InList):
        value = self.compile(e.value)
        membership: ColumnElement
        if not e.items:  # `x in []` is false, but empty when x is
            membership = sa.case((value.is_(None), sa.null()), else_=sa.false())
        else:
            membership = value.in_([self.compile(i) for i in e.items])
        return sa.not_(membership) if e.negated else membership

    def _between(self, e: n.Between):
        low = self.day_comparison(e.value, n.BinOp.GE, e.low)
        high = self.day_comparison(e.value, n.BinOp.LE, e.high)
        if low is not None and high is not None:
            return sa.and_(low, high)
        return self.compile(e.value).between(self.compile(e.low), self.compile(e.high))

    def day_comparison(self, call: n.Node, op: n.BinOp, other: n.Node) -> ColumnElement | None:
        """`days_until(d) op N` as `d op today + N` (days_since: `d op' today - N`), N a whole
        number, where the dialect says dates compare as they are (`days_as_dates`); else None.

        Why: on SQLite the day count is `round(julianday(d) - julianday(today))`,
        parsing the date text for every account: `renewal_window`,
        `contract_milestone` and `expansion_due` spent 0.14 s of the one pass's
        1.9 s of CPU on it at 1,000,000 accounts. The count is a whole number of
        days, so against a whole N it holds exactly when the date is on the
        matching side of today +/- N; an empty date is empty either way.
        """
        if not self.dialect.days_as_dates or not isinstance(call, n.Call) or not isinstance(other, n.Number):
            return None
        if not self.today_is_fixed:
            return None  # a compiler whose today is a row's day (engine/backtest.py, daysteps.py)
        form = form_of(call)
        if form is None or form.name not in ("days_until", "days_since") or form.series is not None:
            return None
        if not float(other.value).is_integer() or op not in MIRROR:
            return None
        try:
            if form.name == "days_until":  # d - today op N  <=>  d op today + N
                edge = self.today + dt.timedelta(days=int(other.value))
            else:  # today - d op N  <=>  d op' today - N
                edge, op = self.today - dt.timedelta(days=int(other.value)), MIRROR[op]
        except OverflowError:  # beyond the calendar: leave it to the day count
            return None
        date, bound = self.compile(call.args[0]), sa.literal(edge, sa.Date)
        return {n.BinOp.EQ: date == bound, n.BinOp.NE: date != bound, n.BinOp.LT: date < bound,
                n.BinOp.LE: date <= bound, n.BinOp.GT: date > bound, n.BinOp.GE: date >= bound}[op]

    def _is_empty(self, e: n.IsEmpty):
        value = self.compile(e.value)
        return value.isnot(None) if e.negated else value.is_(None)

    # ------------------------------------------------------------ functions
    def _call(self, e: n.Call):
        form, sql = self._function(e)
        today = sa.literal(self.today, sa.Date)
        if form.series is None:
            if sql.value is None:
                raise SQLCompileError(f"{form.doc} has no SQL for {self.dialect.name} (engine/sqlfunctions.py)")
            return sql.value(today, *(self.compile(a) for a in e.args))
        if sql.window is None:
            raise SQLCompileError(f"{form.doc} has no SQL for {self.dialect.name} (engine/sqlfunctions.py)")
        window = sql.window
        rollup = self._rollup(window, form.series)
        read = rollup.value if rollup is not None else window.value
        value = read(self._window(e, form, window), today)
        empty = form.empty_series(self.today)
        # An account with no row in the window: what the function gives for nothing (a count is 0).
        return value if empty is None else sa.func.coalesce(value, sa.literal(empty))

    def _function(self, e: n.Call) -> tuple[Function, SQLFunction]:
        form = form_of(e)
        if form is None:
            raise SQLCompileError(f"no function {e.func}(...)")
        if len(e.args) != len(form.params):
            raise SQLCompileError(f"{e.func}(...) takes {len(form.params)} argument(s), not {len(e.args)}")
        sql = self.dialect.functions.get(e.func)
        if sql is None:
            raise SQLCompileError(f"{e.func}(...) has no SQL for {self.dialect.name}: "
                                  "add it to the dialect's table in engine/sqlfunctions.py")
        return form, sql

    # ------------------------------------------------------------ windows
    def _days(self, arg: n.Node) -> float:
        days = _literal_days(arg)
        if days is None:
            raise SQLCompileError("a window must be a literal duration such as `30 days`")
        return days

    def _cutoff(self, days: float) -> dt.date:
        # A window of N days holds dates in (today - N, today]; fractions of a day round up.
        return self.today - dt.timedelta(days=math.ceil(days))

    def window_key(self, e: n.Call) -> tuple | None:
        """The joined subquery a window call reads: (series, kind, name, days); None for other calls."""
        form = form_of(e)
        sql = self.dialect.functions.get(e.func)
        if form is None or form.series is None or sql is None or sql.window is None:
            return None
        if not e.args or not isinstance(e.args[0], n.Symbol):
            return None
        days = _literal_days(e.args[1]) if form.windowed and len(e.args) > 1 else None
        return (form.series, sql.window.kind, e.args[0].name, days)

    def _window(self, e: n.Call, form: Function, window: Window) -> sa.Subquery:
        series = form.series or ""  # callers pass window forms
        if not isinstance(e.args[0], n.Symbol):
            raise SQLCompileError(f"{e.func}(...) needs a {series} name as its first argument")
        days = self._days(e.args[1]) if form.windowed else None
        key = (series, window.kind, e.args[0].name, days)
        if self._reach is not None:
            key += self._reach[0]
        if key not in self._joins:
            rows = self._rows(series, e.args[0].name, days)
            rollup = self._rollup(window, series)
            build = rollup.subquery if rollup is not None else window.subquery
            self._joins[key] = build(rows)
        return self._joins[key]

    def _rollup(self, window: Window, series: str | None) -> Rollup | None:
        """The rollup form the window is read through, if any."""
        return window.rollup if self.rollups and series == "metric" else None

    def _rows(self, series: str, name: str, days: float | None) -> SeriesRows:
        table, series_column, day_column = (
            (self._metrics, "metric", "date") if series == "metric" else (self._events, "event", "occurred_on"))
        day = table.c[day_column]
        where = [table.c[series_column] == name, day <= self.today]
        cutoff = self._cutoff(days) if days is not None else None
        if cutoff is not None:
            where.append(day > cutoff)
        only = self.only
        if self._reach is not None:
            acc = self.accounts
            reach = sa.select(acc.c.id).where(self._reach[1]).correlate(None)  # its own FROM, never the outer accounts
            only = reach if only is None else reach.where(acc.c.id.in_(only))
        if only is not None:
            where.append(table.c.account_id.in_(only))
        return SeriesRows(table, series_column, day_column, name, tuple(where), f"w{len(self._joins)}",
                          today=self.today, cutoff=cutoff, only=only)

    # ------------------------------------------------------------ join analysis
    #
    # Which window joins a condition needs a row from. Outer-joining every
    # window subquery makes the database visit every account; where a condition
    # cannot be true without the subquery's row (`avg(m, 30 days) > 5`), an inner
    # join lets it start from the (usually much smaller) subquery instead, the
    # plan a person writes by hand. Conservative: when unsure, say "not needed".

    def _empty_series(self, e: n.Call) -> object:
        form = form_of(e)
        assert form is not None  # callers have a window key, so a form
        return form.empty_series(self.today)

    def nulling_joins(self, expr: n.Node) -> set[tuple]:
        """Joins whose missing row makes `expr` empty."""
        if isinstance(expr, n.Call):
            key = self.window_key(expr)
            if key is not None:
                # A count without a row is 0, not empty.
                return {key} if self._empty_series(expr) is None else set()
            if form_of(expr) is not None:  # a value form: an empty argument makes it empty
                return set().union(*(self.nulling_joins(a) for a in expr.args))
            return set()
        if isinstance(expr, n.Binary) and expr.op in n.ARITHMETIC:
            return self.nulling_joins(expr.left) | self.nulling_joins(expr.right)
        if isinstance(expr, n.Unary) and expr.op == n.UnOp.NEG:
            return self.nulling_joins(expr.operand)
        let = _let_of(expr, self.catalog)
        return self.nulling_joins(let.value) if let is not None else set()

    def required_joins(self, expr: n.Node) -> set[tuple]:
        """Joins without whose row `expr` is never true."""
        if isinstance(expr, n.Binary):
            if expr.op == n.BinOp.AND:
                return self.required_joins(expr.left) | self.required_joins(expr.right)
            if expr.op == n.BinOp.OR:
                return self.required_joins(expr.left) & self.required_joins(expr.right)
            if expr.op in n.COMPARISONS:
                return self.nulling_joins(expr.left) | self.nulling_joins(expr.right) | self._failing_when_empty(expr)
            return set()
        if isinstance(expr, n.Between):
            return set().union(*(self.nulling_joins(e) for e in (expr.value, expr.low, expr.high)))
        if isinstance(expr, n.InList):
            return self.nulling_joins(expr.value)
        if isinstance(expr, n.Call):
            key = self.window_key(expr)  # happened(...): false without a row
            return {key} if key is not None and self._empty_series(expr) is not True else set()
        let = _let_of(expr, self.catalog)
        return self.required_joins(let.value) if let is not None else set()

    def _failing_when_empty(self, expr: n.Binary) -> set[tuple]:
        """`count(e, 14 days) >= 3`: with no row the count is 0, and 0 >= 3 is false."""
        for call, other, op in ((expr.left, expr.right, expr.op), (expr.right, expr.left, MIRROR.get(expr.op))):
            if not isinstance(call, n.Call) or not isinstance(other, n.Number) or op is None:
                continue
            key = self.window_key(call)
            if key is None:
                continue
            empty = self._empty_series(call)
            if isinstance(empty, (int, float)) and not isinstance(empty, bool) and not _holds(op, empty, other.value):
                return {key}
        return set()


# A comparison read from its other side (`3 < x` is `x > 3`).
MIRROR = {n.BinOp.LT: n.BinOp.GT, n.BinOp.LE: n.BinOp.GE, n.BinOp.GT: n.BinOp.LT, n.BinOp.GE: n.BinOp.LE,
           n.BinOp.EQ: n.BinOp.EQ, n.BinOp.NE: n.BinOp.NE}


def _holds(op: n.BinOp, a: float, b: float) -> bool:
    return {n.BinOp.EQ: a == b, n.BinOp.NE: a != b, n.BinOp.LT: a < b, n.BinOp.LE: a <= b,
            n.BinOp.GT: a > b, n.BinOp.GE: a >= b}[op]


def _literal_days(arg: n.Node) -> float | None:
    if isinstance(arg, n.Duration):
        return arg.days
    if isinstance(arg, n.Number):
        return arg.value
    return None


def _let_of(expr: n.Node, catalog: Catalog) -> n.LetDecl | None:
    if isinstance(expr, n.Ref) and len(expr.path) == 2 and expr.path[0] == "account":
        return catalog.entity_let("account", expr.path[1])
    return None


def conjuncts(expr: n.Expr) -> list[n.Expr]:
    """`a and b and c` as [a, b, c]; anything else as [expr]."""
    if isinstance(expr, n.Binary) and expr.op == n.BinOp.AND:
        return conjuncts(expr.left) + conjuncts(expr.right)
    return [expr]


def disjuncts(expr: n.Expr) -> list[n.Expr]:
    """`a or b or c` as [a, b, c]; anything else as [expr]."""
    if isinstance(expr, n.Binary) and expr.op == n.BinOp.OR:
        return disjuncts(expr.left) + disjuncts(expr.right)
    return [expr]


# The accounts table of recent catalogs: a sweep makes dozens of compilers, and building the
# table (a Column per declared field) cost more than some of the queries it then ran.
_TABLES: dict[int, tuple[Any, sa.Table]] = {}


def _accounts_table(catalog: Catalog) -> sa.Table:
    entity = catalog.account
    hit = _TABLES.get(id(entity))
    if hit is not None and hit[0] is entity:
        return hit[1]
    table = entity_table(entity, "account")
    if len(_TABLES) >= 16:
        _TABLES.pop(next(iter(_TABLES)))
    _TABLES[id(entity)] = (entity, table)  # the declaration held: its id cannot be reused meanwhile
    return table


def compiler(catalog: Catalog, today: dt.date, dialect: str) -> SQLCompiler:
    return SQLCompiler(catalog, today, dialect_for(dialect))
