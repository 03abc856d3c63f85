"""Rules -> SQL: one SQLAlchemy Core expression per rule, evaluated set-wise.

Like a sqlglot generator: one method per node kind (`_<kind>`), a dialect
class for what SQLite and PostgreSQL spell differently, and an error on any
node it does not know. Window functions become pre-aggregated subqueries
joined once per (function, series, window), so a rule over a million
accounts is one query with a few hash joins — never a loop over accounts.

The meaning is docs/semantics.md; dsl/evaluator.py is the reference that a
differential test holds this module to.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from dsl import nodes as n
from dsl.catalog import Catalog
from engine.schema import Base, entity_table


class SQLCompileError(Exception):
    """A rule this compiler cannot express (the checker should have caught it)."""


# ---------------------------------------------------------------- dialects


class Dialect:
    """What differs between databases, one method each."""

    name = "generic"

    def days_between(self, later: ColumnElement, earlier: ColumnElement) -> ColumnElement:
        raise NotImplementedError

    def to_date(self, col: ColumnElement) -> ColumnElement:
        raise NotImplementedError


class SQLiteDialect(Dialect):
    name = "sqlite"

    def days_between(self, later, earlier):
        # Dates are ISO text in SQLite; julianday() makes them day numbers.
        return sa.cast(sa.func.round(sa.func.julianday(later) - sa.func.julianday(earlier)), sa.Integer)

    def to_date(self, col):
        return sa.type_coerce(sa.func.date(col), sa.Date)


class PostgresDialect(Dialect):
    name = "postgresql"

    def days_between(self, later, earlier):
        return sa.type_coerce(sa.cast(later, sa.Date) - sa.cast(earlier, sa.Date), sa.Integer)

    def to_date(self, col):
        return sa.cast(sa.func.timezone("UTC", col), sa.Date)


DIALECTS: dict[str, type[Dialect]] = {"sqlite": SQLiteDialect, "postgresql": PostgresDialect}


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

    def __post_init__(self) -> None:
        self.accounts = entity_table(self.catalog.account, "account")
        self._metrics = Base.metadata.tables["metric_points"]
        self._events = Base.metadata.tables["events"]

    # ------------------------------------------------------------ entry points
    def compile(self, expr: n.Node) -> ColumnElement:
        method = getattr(self, f"_{expr.kind}", None)
        if method is None:
            raise SQLCompileError(f"no SQL for {expr.kind} expressions")
        return method(expr)

    def from_clause(self, inner: set[tuple] = frozenset(), start: Any = None) -> Any:
        """Accounts joined to the window subqueries: inner joins for those in
        `inner` (the condition cannot hold without their row), outer otherwise.
        `start`: a join that already holds the accounts table, to begin from."""
        src: Any = self.accounts if start is None else start
        for key, sub in self._joins.items():
            on = sub.c.account_id == self.accounts.c.id
            src = src.join(sub, on) if key in inner else src.outerjoin(sub, on)
        return src

    def finish(self, column: ColumnElement) -> Compiled:
        return Compiled(column, self.from_clause(), self.accounts)

    def truth(self, expr: n.Node) -> ColumnElement:
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
        value = self.score(name) if value is None else value
        whens = []
        for b in score.bands:
            conds = []
            if b.low is not None:
                conds.append(value >= b.low if b.low_inclusive else value > b.low)
            if b.high is not None:
                conds.append(value <= b.high if b.high_inclusive else value < b.high)
            whens.append((sa.and_(value.isnot(None), *conds), sa.literal(b.name)))
        return sa.case(*whens, else_=sa.null()) if whens else sa.null()

    def route(self, name: str) -> ColumnElement:
        whens = []
        otherwise: ColumnElement = sa.null()
        for case in self.catalog.routes[name].cases:
            if case.when is None:
                otherwise = sa.literal(case.target)
                break
            whens.append((self.compile(case.when), sa.literal(case.target)))
        return sa.case(*whens, else_=otherwise) if whens else otherwise

    def gate(self, name: str) -> ColumnElement:
        gate = self.catalog.gates[name]
        parts: list[ColumnElement] = []
        conditional = [c for c in gate.cases if c.when is not None]
        for case in gate.cases:
            reqs = sa.and_(*(self.truth(r.when) for r in case.requires)) if case.requires else sa.true()
            if case.when is None:
                parts.append(reqs)
            else:
                parts.append(sa.or_(sa.not_(self.truth(case.when)), reqs))
        if conditional:  # some `when` must apply, or the account has no readiness rules
            parts.append(sa.or_(*(self.truth(c.when) for c in conditional)))
        return sa.and_(*parts) if parts else sa.true()

    # ------------------------------------------------------------ literals
    def _number(self, e: n.Number):
        return sa.literal(e.value, sa.Float)

    def _percent(self, e: n.Percent):
        return sa.literal(e.value, sa.Float)

    def _string(self, e: n.String):
        return sa.literal(e.value, sa.Text)

    def _bool(self, e: n.Bool):
        return sa.true() if e.value else sa.false()

    def _symbol(self, e: n.Symbol):
        return sa.literal(e.name, sa.Text)

    def _duration(self, e: n.Duration):
        return sa.literal(float(e.days), sa.Float)

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
        left, right = self.compile(e.left), self.compile(e.right)
        match e.op:
            case n.BinOp.AND:
                return sa.and_(left, right)
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
                return sa.cast(left, sa.Float) / sa.func.nullif(sa.cast(right, sa.Float), 0)
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
        if not e.items:  # `x in []` is false, but empty when x is
            membership = sa.case((value.is_(None), sa.null()), else_=sa.false())
        else:
            membership = value.in_([self.compile(i) for i in e.items])
        return sa.not_(membership) if e.negated else membership

    def _between(self, e: n.Between):
        return self.compile(e.value).between(self.compile(e.low), self.compile(e.high))

    def _is_empty(self, e: n.IsEmpty):
        value = self.compile(e.value)
        return value.isnot(None) if e.negated else value.is_(None)

    # ------------------------------------------------------------ functions
    def _call(self, e: n.Call):
        method = getattr(self, f"_fn_{e.func}", None)
        if method is None:
            raise SQLCompileError(f"no SQL for function {e.func}(...)")
        return method(e)

    def _fn_days_since(self, e: n.Call):
        arg = e.args[0]
        if isinstance(arg, n.Symbol) and arg.name in self.catalog.events:
            last = self._event_join("last", arg.name, None).c.v
            return self.dialect.days_between(sa.literal(self.today, sa.Date), last)
        return self.dialect.days_between(sa.literal(self.today, sa.Date), self.compile(arg))

    def _fn_days_until(self, e: n.Call):
        return self.dialect.days_between(self.compile(e.args[0]), sa.literal(self.today, sa.Date))

    def _fn_happened(self, e: n.Call):
        return sa.func.coalesce(self._event_join("count", e.args[0].name, self._days(e.args[1])).c.v, 0) > 0

    def _fn_count(self, e: n.Call):
        return sa.func.coalesce(self._event_join("count", e.args[0].name, self._days(e.args[1])).c.v, 0)

    def _aggregate(self, e: n.Call, kind: str):
        if not isinstance(e.args[0], n.Symbol):  # min(a, b) / max(a, b) of two numbers
            a, b = self.compile(e.args[0]), self.compile(e.args[1])
            pick = a < b if kind == "min" else a > b
            # Not LEAST/GREATEST: PostgreSQL's skip empty inputs; ours make the result empty.
            return sa.case((sa.or_(a.is_(None), b.is_(None)), sa.null()), (pick, a), else_=b)
        return self._metric_join(kind, e.args[0].name, self._days(e.args[1])).c.v

    def _fn_avg(self, e):
        return self._aggregate(e, "avg")

    def _fn_sum(self, e):
        return self._aggregate(e, "sum")

    def _fn_min(self, e):
        return self._aggregate(e, "min")

    def _fn_max(self, e):
        return self._aggregate(e, "max")

    def _fn_latest(self, e: n.Call):
        return self._metric_join("latest", e.args[0].name, None).c.v

    def _fn_growth(self, e: n.Call):
        sub = self._metric_join("growth", e.args[0].name, self._days(e.args[1]))
        return sa.case(
            (sa.and_(sub.c.n >= 2, sub.c.first != 0), sa.cast(sub.c.last, sa.Float) / sub.c.first - 1),
            else_=sa.null(),
        )

    def _fn_abs(self, e: n.Call):
        return sa.func.abs(self.compile(e.args[0]))

    def _fn_round(self, e: n.Call):
        # Half away from zero on both: SQLite's round() does it, PostgreSQL's numeric round() does.
        value = self.compile(e.args[0])
        if self.dialect.name == "postgresql":
            return sa.cast(sa.func.round(sa.cast(value, sa.Numeric)), sa.Float)
        return sa.func.round(value)

    # ------------------------------------------------------------ windows
    def _days(self, arg: n.Node) -> float:
        if isinstance(arg, n.Duration):
            return arg.days
        if isinstance(arg, n.Number):
            return arg.value
        raise SQLCompileError("a window must be a literal duration such as `30 days`")

    def _cutoff(self, days: float) -> dt.date:
        # A window of N days holds dates in (today - N, today]; fractions of a day round up.
        return self.today - dt.timedelta(days=math.ceil(days))

    def _metric_join(self, kind: str, metric: str, days: float | None) -> sa.Subquery:
        key = ("metric", kind, metric, days)
        if key in self._joins:
            return self._joins[key]
        m = self._metrics
        where = [m.c.metric == metric, m.c.date <= self.today]
        if days is not None:
            where.append(m.c.date > self._cutoff(days))
        if self.only is not None:
            where.append(m.c.account_id.in_(self.only))
        name = f"w{len(self._joins)}"
        if kind in ("avg", "sum", "min", "max"):
            agg = getattr(sa.func, kind)(m.c.value)
            sub = sa.select(m.c.account_id, agg.label("v")).where(*where).group_by(m.c.account_id).subquery(name)
        elif kind in ("latest", "growth"):
            # The first and last points by date, found by aggregating dates and
            # reading those two rows back by primary key: no window function,
            # so no sort of the whole series.
            span = sa.select(
                m.c.account_id, sa.func.min(m.c.date).label("d0"), sa.func.max(m.c.date).label("d1"),
                sa.func.count().label("n"),
            ).where(*where).group_by(m.c.account_id).subquery(name + "s")
            # Read back as scalar subqueries, not joins: SQLite then sees a
            # plain aggregate it builds an automatic index on when the rule
            # left-joins it; with joins inside, in a query with many windows
            # (scorecard, sweep), it scanned the whole subquery per account.
            def point(alias: str, day: Any) -> Any:
                t = m.alias(name + alias)
                return sa.select(t.c.value).where(
                    t.c.metric == metric, t.c.account_id == span.c.account_id, t.c.date == day).scalar_subquery()

            if kind == "latest":
                sub = sa.select(span.c.account_id, point("l", span.c.d1).label("v")).subquery(name)
            else:
                sub = sa.select(span.c.account_id, span.c.n, point("f", span.c.d0).label("first"),
                                point("l", span.c.d1).label("last")).subquery(name)
        else:  # pragma: no cover - callers pass known kinds
            raise SQLCompileError(kind)
        self._joins[key] = sub
        return sub

    def _event_join(self, kind: str, event: str, days: float | None) -> sa.Subquery:
        key = ("event", kind, event, days)
        if key in self._joins:
            return self._joins[key]
        ev = self._events
        where = [ev.c.event == event, ev.c.occurred_on <= self.today]
        if days is not None:
            where.append(ev.c.occurred_on > self._cutoff(days))
        if self.only is not None:
            where.append(ev.c.account_id.in_(self.only))
        agg = sa.func.count() if kind == "count" else sa.func.max(ev.c.occurred_on)
        sub = sa.select(ev.c.account_id, agg.label("v")).where(*where).group_by(ev.c.account_id).subquery(
            f"w{len(self._joins)}")
        self._joins[key] = sub
        return sub


# ---------------------------------------------------------------- join analysis
#
# Which window joins a condition needs a row from. Outer-joining every
# window subquery makes the database visit every account; where a condition
# cannot be true without the subquery's row (`avg(m, 30 days) > 5`), an inner
# join lets it start from the (usually much smaller) subquery instead, the
# plan a person writes by hand. Conservative: when unsure, say "not needed".

_SERIES_KIND = {"avg": "avg", "sum": "sum", "min": "min", "max": "max", "latest": "latest", "growth": "growth"}


def _join_key(call: n.Call, catalog: Catalog) -> tuple | None:
    """The `_joins` key a window call compiles to (None: not a window call)."""
    args = call.args
    if not args or not isinstance(args[0], n.Symbol):
        return None
    days = _literal_days(args[1]) if len(args) > 1 else None
    if call.func in _SERIES_KIND:
        return ("metric", _SERIES_KIND[call.func], args[0].name, days)
    if call.func in ("count", "happened"):
        return ("event", "count", args[0].name, days)
    if call.func == "days_since" and args[0].name in catalog.events:
        return ("event", "last", args[0].name, None)
    return None


def _literal_days(arg: n.Node) -> float | None:
    if isinstance(arg, n.Duration):
        return arg.days
    if isinstance(arg, n.Number):
        return arg.value
    return None


def nulling_joins(expr: n.Node, catalog: Catalog) -> set[tuple]:
    """Joins whose missing row makes `expr` empty."""
    if isinstance(expr, n.Call):
        key = _join_key(expr, catalog)
        if key is not None and key[1] != "count":  # a missing count is 0, not empty
            return {key}
        if key is None and expr.func in ("abs", "round", "min", "max", "days_since", "days_until"):
            return set().union(*(nulling_joins(a, catalog) for a in expr.args))
        return set()
    if isinstance(expr, n.Binary) and expr.op in n.ARITHMETIC:
        return nulling_joins(expr.left, catalog) | nulling_joins(expr.right, catalog)
    if isinstance(expr, n.Unary) and expr.op == n.UnOp.NEG:
        return nulling_joins(expr.operand, catalog)
    let = _let_of(expr, catalog)
    return nulling_joins(let.value, catalog) if let is not None else set()


def required_joins(expr: n.Node, catalog: Catalog) -> set[tuple]:
    """Joins without whose row `expr` is never true."""
    if isinstance(expr, n.Binary):
        if expr.op == n.BinOp.AND:
            return required_joins(expr.left, catalog) | required_joins(expr.right, catalog)
        if expr.op == n.BinOp.OR:
            return required_joins(expr.left, catalog) & required_joins(expr.right, catalog)
        if expr.op in n.COMPARISONS:
            keys = nulling_joins(expr.left, catalog) | nulling_joins(expr.right, catalog)
            return keys | _zero_count_fails(expr, catalog)
        return set()
    if isinstance(expr, n.Between):
        return set().union(*(nulling_joins(e, catalog) for e in (expr.value, expr.low, expr.high)))
    if isinstance(expr, n.InList):
        return nulling_joins(expr.value, catalog)
    if isinstance(expr, n.Call) and expr.func == "happened":
        key = _join_key(expr, catalog)
        return {key} if key else set()
    let = _let_of(expr, catalog)
    return required_joins(let.value, catalog) if let is not None else set()


def _zero_count_fails(expr: n.Binary, catalog: Catalog) -> set[tuple]:
    """`count(e, 14 days) >= 3`: with no row the count is 0, and 0 >= 3 is false."""
    for call, other, op in ((expr.left, expr.right, expr.op), (expr.right, expr.left, _MIRROR.get(expr.op))):
        if isinstance(call, n.Call) and call.func == "count" and isinstance(other, n.Number) and op is not None:
            key = _join_key(call, catalog)
            if key is not None and not _holds(op, 0.0, other.value):
                return {key}
    return set()


_MIRROR = {n.BinOp.LT: n.BinOp.GT, n.BinOp.LE: n.BinOp.GE, n.BinOp.GT: n.BinOp.LT, n.BinOp.GE: n.BinOp.LE,
           n.BinOp.EQ: n.BinOp.EQ, n.BinOp.NE: n.BinOp.NE}


def _holds(op: n.BinOp, a: float, b: float) -> bool:
    return {n.BinOp.EQ: a == b, n.BinOp.NE: a != b, n.BinOp.LT: a < b, n.BinOp.LE: a <= b,
            n.BinOp.GT: a > b, n.BinOp.GE: a >= b}[op]


def _let_of(expr: n.Node, catalog: Catalog) -> n.LetDecl | None:
    if isinstance(expr, n.Ref) and len(expr.path) == 2 and expr.path[0] == "account":
        return catalog.entity_let("account", expr.path[1])
    return None


def disjuncts(expr: n.Node) -> list[n.Node]:
    """`a or b or c` as [a, b, c]; anything else as [expr]."""
    if isinstance(expr, n.Binary) and expr.op == n.BinOp.OR:
        return disjuncts(expr.left) + disjuncts(expr.right)
    return [expr]


def compiler(catalog: Catalog, today: dt.date, dialect: str) -> SQLCompiler:
    return SQLCompiler(catalog, today, dialect_for(dialect))
