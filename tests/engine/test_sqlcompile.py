"""The SQL compiler agrees with the reference evaluator, on SQLite and PostgreSQL.

A differential property test: random conditions (comparisons, arithmetic,
windows, nulls, enums, dates, and/or/not) over random accounts with empty
values; every account's three-valued answer must match.
"""

from __future__ import annotations

import datetime as dt
import math

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsl import nodes as n
from dsl.evaluator import Account, Evaluator
from dsl.functions import FUNCTIONS, REGISTRY
from dsl.project import load_text
from engine import rollups
from engine.evaluate import RuleSQL, fired, values
from engine.sqlcompile import DIALECTS, SQLCompileError, compiler
from engine.schema import Base
from engine.store import Store
from store_backends import fresh_store

TODAY = dt.date(2026, 6, 1)

CATALOG_SOURCE = """\
entity account
  field a number?
  field b int?
  field p percent?
  field seg enum(x, y, z)?
  field flag bool?
  field d date?
  let ratio = account.a / account.b

metric m per day
event e

gate g
  require account.a >= 0
  when account.seg == x
    require account.p > 50%
  when account.seg == y
    require account.flag

score s
  points 10 if account.a > 5, 5 if account.a > 2
  points 3 if account.flag, otherwise 1
  band hi 10..
  band lo ..<10

route r
  when account.a < 3 -> low
  when count(e, 30 days) >= 2 -> mid
  when account.seg == x and avg(m, 7 days) > 3 -> mid
  when account.b < 3 and not (account.flag and sum(m, 10 days) > 4) -> mid
  when account.seg != y and (account.b < 5 or count(e, 30 days) >= 1) -> low
  otherwise -> high

trigger t
  when account.a > 1
  then start play1

play play1
  ungated
  day 1 stage "A"
"""
CATALOG = load_text(CATALOG_SOURCE, "diff.play").catalog


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(request, tmp_path_factory):
    with fresh_store(request.param, tmp_path_factory.mktemp("db"), CATALOG) as s:
        yield s


# ---------------------------------------------------------------- strategies

small = st.integers(-3, 12)
halves = st.sampled_from([-2.5, -0.5, 0.5, 1.5, 2.5])  # where rounding half away from zero shows
num_field = st.sampled_from([["account", "a"], ["account", "b"], ["account", "p"], ["account", "ratio"]])
window = st.sampled_from([1, 3, 7, 30]).map(lambda d: n.Duration(amount=d, unit=n.DurationUnit.DAYS))
dates = st.one_of(
    st.just(n.Ref(path=["account", "d"])),
    st.just(n.Today()),
    st.integers(-3, 40).map(lambda k: n.DateLit(value=TODAY - dt.timedelta(days=k))),
    st.integers(0, 40).map(lambda k: n.Ago(duration=n.Duration(amount=k, unit=n.DurationUnit.DAYS))),
)
cmp_ops = st.sampled_from([n.BinOp.EQ, n.BinOp.NE, n.BinOp.LT, n.BinOp.LE, n.BinOp.GT, n.BinOp.GE])

# Every function comes from the registry (dsl/functions.py): a new function is
# compiled and compared here without a change to this file, unless it takes or
# gives a kind no function did before (test_every_registry_form_is_drawn says so).
NUMERIC_RESULTS = ("number", "percent")
CONDITION_RESULTS = ("bool", "date")


def argument(kinds: tuple[str, ...], depth: int) -> st.SearchStrategy:
    """Any argument of these kinds: the catalog's metric or event, a window, a date, a number."""
    if kinds == ("metric",):
        return st.just(n.Symbol(name="m"))
    if kinds == ("event",):
        return st.just(n.Symbol(name="e"))
    if kinds == ("duration",):
        return window
    if kinds == ("date",):
        return dates
    if set(kinds) <= {"number", "percent"}:
        return numeric(depth - 1)
    raise AssertionError(f"the differential test draws no argument of kind {kinds}: add it to argument()")


def calls(results: tuple[str, ...], depth: int) -> st.SearchStrategy:
    """A call of any registry form whose result is one of these kinds."""
    forms = [f for f in REGISTRY if f.result.kind in results]
    return st.one_of(*(
        st.tuples(*(argument(k, depth) for k in f.params)).map(lambda args, f=f: n.Call(func=f.name, args=list(args)))
        for f in forms
    ))


def numeric(depth: int) -> st.SearchStrategy:
    leaves = st.one_of(
        small.map(lambda v: n.Number(value=v)),
        halves.map(lambda v: n.Number(value=v)),
        st.sampled_from([0.25, 0.5, 0.75]).map(lambda v: n.Percent(value=v)),
        num_field.map(lambda p: n.Ref(path=p)),
        st.just(n.Ref(path=["score", "s"])),
    )
    if depth < 0:
        return leaves
    with_calls = st.one_of(leaves, calls(NUMERIC_RESULTS, depth))
    if depth == 0:
        return with_calls
    sub = numeric(depth - 1)
    return st.one_of(
        with_calls,
        st.tuples(st.sampled_from([n.BinOp.ADD, n.BinOp.SUB, n.BinOp.MUL, n.BinOp.DIV]), sub, sub).map(
            lambda t: n.Binary(op=t[0], left=t[1], right=t[2])),
    )


def function_condition() -> st.SearchStrategy:
    """A call that gives a condition, or a date call compared with a date."""
    out = []
    if any(f.result.kind == "bool" for f in REGISTRY):
        out.append(calls(("bool",), 1))
    if any(f.result.kind == "date" for f in REGISTRY):
        out.append(st.tuples(cmp_ops, calls(("date",), 1), dates).map(
            lambda t: n.Binary(op=t[0], left=t[1], right=t[2])))
    return st.one_of(*out)


def condition(depth: int) -> st.SearchStrategy:
    enum_vals = st.sampled_from(["x", "y", "z"]).map(lambda v: n.Symbol(name=v))
    leaves = st.one_of(
        st.tuples(cmp_ops, numeric(1), numeric(1)).map(lambda t: n.Binary(op=t[0], left=t[1], right=t[2])),
        enum_vals.map(lambda v: n.Binary(op=n.BinOp.EQ, left=n.Ref(path=["account", "seg"]), right=v)),
        st.tuples(st.lists(enum_vals, max_size=3), st.booleans()).map(
            lambda t: n.InList(value=n.Ref(path=["account", "seg"]), items=t[0], negated=t[1])),
        st.just(n.Ref(path=["account", "flag"])),
        st.just(n.Ref(path=["gate", "g"])),
        st.just(n.Ref(path=["trigger", "t"])),
        st.sampled_from(["hi", "lo"]).map(lambda b: n.Binary(op=n.BinOp.EQ, left=n.Ref(path=["band", "s"]), right=n.Symbol(name=b))),
        st.sampled_from(["low", "mid", "high"]).map(lambda b: n.Binary(op=n.BinOp.EQ, left=n.Ref(path=["route", "r"]), right=n.Symbol(name=b))),
        st.tuples(num_field, st.booleans()).map(lambda t: n.IsEmpty(value=n.Ref(path=t[0]), negated=t[1])),
        st.tuples(numeric(0), small, small).map(lambda t: n.Between(value=t[0], low=n.Number(value=t[1]), high=n.Number(value=t[2]))),
        st.tuples(cmp_ops, st.integers(0, 40)).map(lambda t: n.Binary(
            op=t[0], left=n.Ref(path=["account", "d"]),
            right=n.Ago(duration=n.Duration(amount=t[1], unit=n.DurationUnit.DAYS)))),
        function_condition(),
    )
    if depth == 0:
        return leaves
    sub = condition(depth - 1)
    return st.one_of(
        leaves,
        st.tuples(st.sampled_from([n.BinOp.AND, n.BinOp.OR]), sub, sub).map(lambda t: n.Binary(op=t[0], left=t[1], right=t[2])),
        sub.map(lambda x: n.Unary(op=n.UnOp.NOT, operand=x)),
    )


def maybe(s: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.none(), s)


day = st.integers(-2, 40).map(lambda k: TODAY - dt.timedelta(days=k))
account = st.fixed_dictionaries({
    "a": maybe(st.integers(-2, 10).map(float)),
    "b": maybe(st.integers(-1, 6)),
    "p": maybe(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0])),
    "seg": maybe(st.sampled_from(["x", "y", "z"])),
    "flag": maybe(st.booleans()),
    "d": maybe(day),
    "m": st.dictionaries(day, st.integers(0, 8).map(float), max_size=5),
    "e": st.lists(day, max_size=3),
})


def load(store: Store, accounts: list[dict]) -> None:
    table = store.table("account")
    mp, ev = Base.metadata.tables["metric_points"], Base.metadata.tables["events"]
    with store.begin() as conn:
        conn.execute(ev.delete())
        conn.execute(mp.delete())
        conn.execute(table.delete())
        for i, acc in enumerate(accounts):
            aid = f"acc{i}"
            conn.execute(table.insert().values(id=aid, **{k: acc[k] for k in ("a", "b", "p", "seg", "flag", "d")}))
            for d, v in acc["m"].items():
                conn.execute(mp.insert().values(metric="m", account_id=aid, date=d, value=v))
            for j, d in enumerate(acc["e"]):
                conn.execute(ev.insert().values(
                    key=f"{aid}|e|{j}", account_id=aid, event="e",
                    occurred_at=dt.datetime.combine(d, dt.time(12), dt.timezone.utc), occurred_on=d))
        rollups.rebuild(conn)


def snapshot(acc: dict) -> Account:
    return Account(
        fields={k: acc[k] for k in ("a", "b", "p", "seg", "flag", "d")},
        metrics={"m": sorted(acc["m"].items())},
        events={"e": list(acc["e"])},
    )


def reference(accounts: list[dict], expr: n.Node) -> dict[str, object]:
    return {f"acc{i}": Evaluator(CATALOG, snapshot(acc), TODAY).condition(expr) for i, acc in enumerate(accounts)}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(accounts=st.lists(account, min_size=1, max_size=6), expr=condition(2))
def test_sql_and_reference_evaluator_agree(store, accounts, expr):
    load(store, accounts)
    with store.connect() as conn:
        got = values(conn, RuleSQL(CATALOG, TODAY, store.dialect), expr)
    want = reference(accounts, expr)
    assert got == want
    # The trigger form (inner joins, unions) selects exactly the accounts where it is true.
    with store.connect() as conn:
        ids = sorted(row[0] for row in conn.execute(RuleSQL(CATALOG, TODAY, store.dialect).where(expr)))
    assert ids == sorted(k for k, v in want.items() if v is True)


def test_trigger_fires_only_when_true(store):
    load(store, [
        {"a": 5.0, "b": None, "p": None, "seg": None, "flag": None, "d": None, "m": {}, "e": []},
        {"a": None, "b": None, "p": None, "seg": None, "flag": None, "d": None, "m": {}, "e": []},
        {"a": 0.0, "b": None, "p": None, "seg": None, "flag": None, "d": None, "m": {}, "e": []},
    ])
    with store.connect() as conn:
        assert fired(conn, RuleSQL(CATALOG, TODAY, store.dialect), "t") == ["acc0"]


def test_a_window_the_condition_needs_is_an_inner_join():
    required_joins = compiler(CATALOG, TODAY, "sqlite").required_joins
    avg = n.Call(func="avg", args=[n.Symbol(name="m"), n.Duration(amount=30, unit=n.DurationUnit.DAYS)])
    cond = n.Binary(op=n.BinOp.GT, left=avg, right=n.Number(value=5))
    assert required_joins(cond) == {("metric", "avg", "m", 30)}
    either = n.Binary(op=n.BinOp.OR, left=cond, right=n.Ref(path=["account", "flag"]))
    assert required_joins(either) == set()
    empty_ok = n.IsEmpty(value=avg)
    assert required_joins(empty_ok) == set()


def test_a_count_that_holds_at_zero_keeps_accounts_without_events(store):
    load(store, [
        {"a": 1.0, "b": None, "p": None, "seg": None, "flag": None, "d": None, "m": {}, "e": []},
        {"a": 1.0, "b": None, "p": None, "seg": None, "flag": None, "d": None, "m": {}, "e": [TODAY]},
    ])
    count = n.Call(func="count", args=[n.Symbol(name="e"), n.Duration(amount=30, unit=n.DurationUnit.DAYS)])
    rules = RuleSQL(CATALOG, TODAY, store.dialect)
    with store.connect() as conn:
        for op, value, want in ((n.BinOp.LT, 1, ["acc0"]), (n.BinOp.GE, 1, ["acc1"]), (n.BinOp.GE, 0, ["acc0", "acc1"])):
            cond = n.Binary(op=op, left=count, right=n.Number(value=value))
            assert sorted(r[0] for r in conn.execute(rules.where(cond))) == want, (op, value)


# ---------------------------------------------------------------- every function


def test_every_registry_form_is_drawn():
    """The strategies above build every form's arguments and use its result somewhere."""
    for form in REGISTRY:
        assert form.result.kind in NUMERIC_RESULTS + CONDITION_RESULTS, form.doc
        for kinds in form.params:
            argument(kinds, 1)  # raises for a kind the test cannot build


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_every_registry_form_has_sql_in_every_dialect(dialect):
    table = DIALECTS[dialect].functions
    for form in REGISTRY:
        row = table.get(form.name)
        assert row is not None, f"{form.name} has no row in the {dialect} table (engine/sqlfunctions.py)"
        assert (row.window if form.series else row.value) is not None, f"{form.doc}: no SQL in {dialect}"
    assert set(table) == set(FUNCTIONS), "a SQL row for a function the registry does not have"


def test_a_function_missing_from_a_dialect_is_a_compile_error(monkeypatch):
    table = {k: v for k, v in DIALECTS["sqlite"].functions.items() if k != "round"}
    monkeypatch.setattr(DIALECTS["sqlite"], "functions", table)
    with pytest.raises(SQLCompileError, match=r"round\(\.\.\.\) has no SQL for sqlite"):
        compiler(CATALOG, TODAY, "sqlite").compile(n.Call(func="round", args=[n.Number(value=2.5)]))


def _same(got: object, want: object) -> bool:
    if isinstance(got, (int, float)) and isinstance(want, (int, float)) and not isinstance(want, bool):
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12)  # avg/sum: exact in Python, not in SQL
    return got == want


@pytest.mark.parametrize("form", REGISTRY, ids=[f.doc for f in REGISTRY])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data(), accounts=st.lists(account, min_size=1, max_size=6))
def test_each_function_in_sql_gives_the_reference_value(store, form, data, accounts):
    call = n.Call(func=form.name, args=[data.draw(argument(k, 1)) for k in form.params])
    load(store, accounts)
    with store.connect() as conn:
        got = values(conn, RuleSQL(CATALOG, TODAY, store.dialect), call)
    want = {f"acc{i}": Evaluator(CATALOG, snapshot(acc), TODAY).eval_expr(call) for i, acc in enumerate(accounts)}
    assert got.keys() == want.keys()
    assert all(_same(got[k], want[k]) for k in want), (got, want)


def _band_and(*others: n.Expr) -> n.Expr:
    expr: n.Expr = n.Binary(op=n.BinOp.EQ, left=n.Ref(path=["band", "s"]), right=n.Symbol(name="hi"))
    for other in others:
        expr = n.Binary(op=n.BinOp.AND, left=expr, right=other)
    return expr


def test_a_band_anded_with_cheap_conditions_keeps_three_valued_logic(store):
    """The score runs only where the cheap conjuncts may hold (SQLite: a CASE guard,
    PostgreSQL: the cheap ones first); the answer is the reference's, empty included."""
    flag = n.Ref(path=["account", "flag"])
    seg_x = n.Binary(op=n.BinOp.EQ, left=n.Ref(path=["account", "seg"]), right=n.Symbol(name="x"))
    rows = []
    for a in (None, 1.0, 9.0):  # score empty-free: 1 + (0 | 5 | 10) points with flag otherwise 1
        for f in (None, False, True):
            for seg in (None, "x", "y"):
                rows.append({"a": a, "b": None, "p": None, "seg": seg, "flag": f, "d": None, "m": {}, "e": []})
    load(store, rows)
    for expr in (_band_and(flag), _band_and(flag, seg_x), n.Binary(op=n.BinOp.AND, left=seg_x, right=_band_and(flag))):
        with store.connect() as conn:
            got = values(conn, RuleSQL(CATALOG, TODAY, store.dialect), expr)
            ids = sorted(r[0] for r in conn.execute(RuleSQL(CATALOG, TODAY, store.dialect).where(expr)))
        want = reference(rows, expr)
        assert got == want
        assert ids == sorted(k for k, v in want.items() if v is True)
        assert {True, False, None} <= set(want.values())  # every answer occurs: the check says something


def test_sqlite_guards_a_costly_conjunct_with_the_cheap_ones():
    from sqlalchemy.dialects import sqlite

    flag = n.Ref(path=["account", "flag"])
    c = compiler(CATALOG, TODAY, "sqlite")
    sql = str(c.compile(_band_and(flag)).compile(dialect=sqlite.dialect()))
    guard, _, rest = sql.partition(" ELSE ")
    assert guard.startswith("CASE WHEN ") and "accounts.flag" in guard  # the cheap side first, alone
    assert "SELECT" not in guard and "SELECT" in rest  # the score's subquery only past the guard
    # Nothing costly: a plain AND, as on PostgreSQL.
    plain = str(compiler(CATALOG, TODAY, "sqlite").compile(n.Binary(op=n.BinOp.AND, left=flag, right=flag))
                .compile(dialect=sqlite.dialect()))
    assert "CASE" not in plain


def test_postgresql_evaluates_the_smaller_conjuncts_first():
    """PostgreSQL stops an AND at its first false part: the band's score (written out
    once per band) comes after the cheap conditions, whatever the rule's order."""
    from sqlalchemy.dialects import postgresql

    flag = n.Ref(path=["account", "flag"])
    sql = str(compiler(CATALOG, TODAY, "postgresql").compile(_band_and(flag)).compile(dialect=postgresql.dialect()))
    assert sql.index("accounts.flag") < sql.index("CASE")


def test_postgresql_numbers_are_floats_and_a_division_casts_nothing_to_numeric():
    """A bare `46.0` is a numeric to PostgreSQL, and an integer compared with it (a day
    count, a count of events) is converted to numeric per row; a float8 is not."""
    from sqlalchemy.dialects import postgresql

    a = n.Ref(path=["account", "a"])
    for expr in (n.Binary(op=n.BinOp.GT, left=a, right=n.Number(value=46)),
                 n.Binary(op=n.BinOp.GT, left=n.Binary(op=n.BinOp.DIV, left=a, right=a), right=n.Percent(value=0.9))):
        sql = str(compiler(CATALOG, TODAY, "postgresql").compile(expr).compile(
            dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
        assert "NUMERIC" not in sql and "AS FLOAT)" in sql.rpartition(">")[2], sql


def test_postgresql_growth_from_the_rollup_divides_floats():
    """growth's `last / nullif(first, 0)`: untyped, SQLAlchemy cast the divisor to NUMERIC,
    a conversion per account (float8 to numeric keeps 15 digits, so not even exact)."""
    from sqlalchemy.dialects import postgresql

    growth = n.Call(func="growth", args=[n.Symbol(name="m"), n.Duration(amount=90, unit=n.DurationUnit.DAYS)])
    expr = n.Binary(op=n.BinOp.GE, left=growth, right=n.Percent(value=0.2))
    sql = str(RuleSQL(CATALOG, TODAY, "postgresql").where(expr).compile(
        dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    assert "metric_series" in sql and "NUMERIC" not in sql, sql


def test_day_counts_against_whole_numbers_compare_the_dates_and_agree_with_the_reference(store):
    """`days_until(d) > 3` compiles to `d > today + 3` on SQLite (`SQLCompiler.day_comparison`);
    every operator, both functions, either side, fractions (not rewritten), BETWEEN and empty dates agree."""
    rows = [{"a": None, "b": None, "p": None, "seg": None, "flag": None, "d": d, "m": {}, "e": []}
            for d in [None, *(TODAY + dt.timedelta(days=k) for k in range(-6, 7))]]
    load(store, rows)
    d = n.Ref(path=["account", "d"])
    exprs: list[n.Expr] = []
    for func in ("days_until", "days_since"):
        call = n.Call(func=func, args=[d])
        for op in n.COMPARISONS:
            for k in (-3, 0, 2, 2.5):
                exprs.append(n.Binary(op=op, left=call, right=n.Number(value=k)))
                exprs.append(n.Binary(op=op, left=n.Number(value=k), right=call))
        for low, high in ((-2, 3), (3, -2), (1, 1), (0.5, 4)):
            exprs.append(n.Between(value=call, low=n.Number(value=low), high=n.Number(value=high)))
    for expr in exprs:
        with store.connect() as conn:
            got = values(conn, RuleSQL(CATALOG, TODAY, store.dialect), expr)
        want = reference(rows, expr)
        assert got == want, expr
        assert want["acc0"] is None and {True, False} & set(want.values())


def test_sqlite_compares_a_whole_day_count_as_a_date():
    from sqlalchemy.dialects import sqlite

    call = n.Call(func="days_until", args=[n.Ref(path=["account", "d"])])
    sql = str(compiler(CATALOG, TODAY, "sqlite").compile(
        n.Binary(op=n.BinOp.GT, left=call, right=n.Number(value=45))).compile(
        dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    assert sql == "accounts.d > '2026-07-16'" and "julianday" not in sql
    fraction = str(compiler(CATALOG, TODAY, "sqlite").compile(
        n.Binary(op=n.BinOp.GT, left=call, right=n.Number(value=45.5))).compile(dialect=sqlite.dialect()))
    assert "julianday" in fraction


def test_a_compiler_reading_the_day_from_its_rows_keeps_counting_days():
    """The backtest's compilers put each row's day where `today` is: no date of the compile day in their SQL."""
    from sqlalchemy.dialects import sqlite

    from engine.backtest import DayCompiler

    call = n.Call(func="days_until", args=[n.Ref(path=["account", "d"])])
    c = DayCompiler(CATALOG, TODAY, DIALECTS["sqlite"]())
    c.accounts = sa.table("rows", sa.column("id"), sa.column("day"), sa.column("d"))
    sql = str(c.compile(n.Binary(op=n.BinOp.GT, left=call, right=n.Number(value=45))).compile(
        dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    assert "rows.day" in sql and "2026-07-16" not in sql


def test_a_route_branch_window_aggregates_only_the_accounts_that_can_reach_the_branch(store):
    # Branch 2 (`account.seg == x and avg(m, 7 days) > 3`): acc1 (a < 3) and acc2 (seg y) cannot
    # reach it. acc3 takes branch 1 (two events), but that branch reads a window, which the reach
    # leaves out (it reads the account alone): acc3's window is computed, and not read.
    points = {TODAY: 5.0}
    load(store, [
        {"a": 5.0, "b": None, "p": None, "seg": "x", "flag": None, "d": None, "m": points, "e": []},
        {"a": 1.0, "b": None, "p": None, "seg": "x", "flag": None, "d": None, "m": points, "e": []},
        {"a": 5.0, "b": None, "p": None, "seg": "y", "flag": None, "d": None, "m": points, "e": []},
        {"a": 5.0, "b": None, "p": None, "seg": "x", "flag": None, "d": None, "m": points, "e": [TODAY, TODAY]},
    ])
    c = compiler(CATALOG, TODAY, store.dialect)
    c.route("r")
    (window,) = [sub for key, sub in c._joins.items() if key[0] == "metric" and key[-2:] == ("r", 2)]
    with store.connect() as conn:
        assert [row[0] for row in conn.execute(sa.select(window.c.account_id))] == ["acc0", "acc3"]
