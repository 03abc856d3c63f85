"""Run rules against the store: SQL for every account at once, and one-account
snapshots for the reference evaluator (`why`, tests, the differential check)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dsl import nodes as n
from dsl.catalog import Catalog
from dsl.evaluator import Account
from engine.schema import Base
from engine.sqlcompile import Compiled, SQLCompiler, compiler, disjuncts

BATCH = 10_000  # rows fetched per round trip when streaming results


@dataclass
class RuleSQL:
    """Compile rules for one database and one evaluation day."""

    catalog: Catalog
    today: dt.date
    dialect: str
    # A SELECT of the account ids to evaluate (an incremental sweep); None: every account.
    only: Any = None
    rollups: bool = True  # metric windows from the rollup (False: scan the points)
    # Where the accounts' rows are read (an incremental sweep's copy of its scope's rows,
    # engine/enroll.py `scope_accounts`); None: the store's accounts table.
    accounts: sa.Table | None = None

    def new(self) -> SQLCompiler:
        c = compiler(self.catalog, self.today, self.dialect)
        c.only = self.only
        c.rollups = self.rollups
        if self.accounts is not None:
            c.accounts = self.accounts
        return c

    def condition(self, expr: n.Expr) -> Compiled:
        c = self.new()
        return c.finish(c.compile(expr))

    def trigger(self, name: str) -> sa.Select | sa.CompoundSelect:
        """Ids of the accounts the trigger fires on: one query, filtered in the database."""
        return self.where(self.catalog.triggers[name].when)

    def where(self, expr: n.Expr) -> sa.Select | sa.CompoundSelect:
        """Ids of the accounts where `expr` is true.

        Window joins the condition cannot be true without become inner joins;
        a top-level `or` whose branches need different windows becomes a
        UNION of one query per branch, each starting from its own window, as
        a person would write it. No ORDER BY: sorting a million ids in the
        database costs more than the rule.
        """
        if self.union(expr):
            return sa.union(*(self._where_one(b) for b in disjuncts(expr)))
        return self._where_one(expr)

    def union(self, expr: n.Expr) -> bool:
        """Whether `where` compiles `expr` to a UNION (an `or` of branches that start from windows)."""
        branches = disjuncts(expr)
        return len(branches) > 1 and any(self.new().required_joins(b) for b in branches)

    def _where_one(self, expr: n.Expr) -> sa.Select:
        c = self.new()
        cond = c.compile(expr)
        inner = c.required_joins(expr)
        if self.accounts is None:  # the store's own accounts, which events reference
            alone = c.event_ids(cond, inner)
            if alone is not None:  # the windows already keep to `only` (SQLCompiler._rows)
                return alone
        q = sa.select(c.accounts.c.id).select_from(c.from_clause(inner)).where(cond)
        return q if self.only is None else q.where(c.accounts.c.id.in_(self.only))


@dataclass
class TriggerPass:
    """Every trigger of a sweep in one SELECT over the accounts, where that is cheaper
    than one query per trigger (why: docs/engine.md, "One pass over the accounts").

    A trigger whose condition needs no window row (`account.usage_percent > 80%`,
    a band over a score that counts events) can only be found by reading every
    account, and so can all of them at once: one scan of `accounts`, left-joined
    once to each window subquery any of them reads, one truth column per trigger.
    A trigger that cannot hold without a window's row starts from that (smaller)
    window in its own query (`RuleSQL.trigger`), as does an `or` compiled as a
    UNION. `fill` writes both into one table: `id` and a column per trigger,
    true where it fires, one row per query that found the account.
    """

    rules: RuleSQL
    triggers: Sequence[str]  # every column of the table, `t_<k>` for the k-th
    among: Sequence[str] | None = None  # the ones to evaluate (None: all)
    joined: list[str] = field(init=False)  # evaluated in the pass, in `triggers` order
    alone: list[str] = field(init=False)  # one query each
    merged: list[str] = field(init=False)  # of `alone`, run without hash joins (`settings`)

    def __post_init__(self) -> None:
        c = self.rules.new()
        names = [t for t in self.triggers if self.among is None or t in self.among]
        when = {t: self.rules.catalog.triggers[t].when for t in names}
        joins = {t: c.required_joins(when[t]) for t in names}
        self.joined = [t for t in names if not joins[t] and not self.rules.union(when[t])]
        self.alone = [t for t in names if t not in self.joined]
        every = self.rules.only is None and self.rules.accounts is None
        self.merged = [t for t in self.alone if every and self.rules.dialect == "postgresql"
                       and any(key[0] == "metric" for key in joins[t])]

    def settings(self, label: str) -> dict[str, str]:
        """PostgreSQL settings for the statement `inserts` labels so (`planner_settings`).

        Why: a trigger that starts from a metric window joins the rollup's rows with
        `accounts`, and over every account both come in account order from their primary
        keys (`metric_series` by (metric, account_id), `accounts` by id). PostgreSQL plans a
        hash join instead, a table of every account built (and spilled at the default
        `work_mem`) to probe once per series: at 1,000,000 accounts `power_user_emergence`
        took 1.60 s of CPU against 0.86 s merged (docs/BENCHMARKS.md). Hash joins stay on for
        the other statements, which found no gain without them, and for an incremental
        sweep's few accounts.
        """
        return {"enable_hashjoin": "off"} if label in self.merged else {}

    def columns(self) -> list[sa.Column[Any]]:
        """The table `fill` writes: `id`, then `t_<k>` for the k-th trigger."""
        return [sa.Column("id", sa.Text, nullable=False),
                *(sa.Column(f"t_{k}", sa.Boolean(create_constraint=False), nullable=False, default=False)
                  for k in range(len(self.triggers)))]

    def query(self) -> sa.Select | None:
        """(id, t_<k> for each joined trigger) of the accounts where any of them fires."""
        if not self.joined:
            return None
        c = self.rules.new()
        names = [f"t_{self.triggers.index(t)}" for t in self.joined]
        truths = [c.truth(self.rules.catalog.triggers[t].when).label(k) for t, k in zip(self.joined, names)]
        inner = sa.select(c.accounts.c.id, *truths).select_from(c.from_clause())
        if self.rules.only is not None:
            inner = inner.where(c.accounts.c.id.in_(self.rules.only))
        # OFFSET 0 keeps the database from merging the subquery into the
        # outer SELECT (SQLite's flattening, PostgreSQL's pull-up), which would
        # evaluate each condition again in the WHERE: this way each runs once per account.
        fenced = inner.offset(0).subquery("pass")
        return sa.select(fenced.c.id, *(fenced.c[k] for k in names)).where(sa.or_(*(fenced.c[k] for k in names)))

    def inserts(self, table: sa.Table) -> Iterator[tuple[str, sa.Insert]]:
        """The statements `fill` runs, each with what it finds: "pass" or a trigger's name."""
        q = self.query()
        if q is not None:
            names = [f"t_{self.triggers.index(t)}" for t in self.joined]
            yield "pass", table.insert().from_select(["id", *names], q)
        for t in self.alone:
            ids = self.rules.trigger(t).subquery("f")
            yield t, table.insert().from_select(["id", f"t_{self.triggers.index(t)}"], sa.select(ids.c.id, sa.true()))

    def fill(self, conn: Connection, table: sa.Table) -> None:
        """Write the firing triggers into `table` (made with `columns()`)."""
        with without_jit(conn):
            for label, statement in self.inserts(table):
                with planner_settings(conn, self.settings(label)):
                    conn.execute(statement)


@contextmanager
def without_jit(conn: Connection) -> Iterator[None]:
    """PostgreSQL's JIT off for the statements run inside, then as it was (transaction-local).

    Why: the server compiles a statement whose estimated cost passes `jit_above_cost`
    (and optimizes and inlines it past `jit_optimize_above_cost`), and its time grows
    with the size of the expressions, not of the data. The rollup's windows are large
    CASE trees over the kept points: at 100,000 accounts `headcount_growth` took 0.09 s
    of backend CPU without JIT and 0.43 s with plain JIT (0.9 s of compiling in EXPLAIN
    ANALYZE with inlining and optimizing), and at 1,000,000 every trigger statement
    passes both thresholds; a parallel plan compiles once per worker as well.
    Measurements: docs/BENCHMARKS.md, "Engine: every trigger". Outside a transaction
    (autocommit) `set_config(..., true)` lasts one statement: JIT then stays on.
    """
    with planner_settings(conn, {"jit": "off"}):
        yield


@contextmanager
def planner_settings(conn: Connection, settings: dict[str, str]) -> Iterator[None]:
    """These PostgreSQL settings for the statements run inside, then each as it was
    (transaction-local; nothing on SQLite)."""
    if conn.dialect.name != "postgresql" or not settings:
        yield
        return
    def put(values: dict[str, str]) -> dict[str, str]:  # -> what they were
        was = {}
        for k, v in values.items():
            was[k] = conn.execute(sa.text("SELECT current_setting(:k)"), {"k": k}).scalar_one()
            conn.execute(sa.text("SELECT set_config(:k, :v, true)"), {"k": k, "v": v})
        return was

    was = put(settings)
    yield
    # Not on an error: PostgreSQL's transaction is then aborted, and its rollback restores them.
    put(was)


def fired(conn: Connection, rules: RuleSQL, trigger: str) -> list[str]:
    return sorted(row[0] for row in conn.execute(rules.trigger(trigger)))


def stream(conn: Connection, query: sa.Select) -> Iterator[sa.Row]:
    """Rows of `query` in batches, so a million accounts never sit in memory at once."""
    # Per statement: Connection.execution_options() would switch the whole
    # connection to server-side cursors, and PostgreSQL cannot DECLARE one for
    # a later INSERT on it.
    result = conn.execute(query, execution_options={"stream_results": True, "yield_per": BATCH})
    yield from result


def values(conn: Connection, rules: RuleSQL, expr: n.Expr) -> dict[str, object]:
    """account id -> value of `expr` (small data sets: tests, `why`)."""
    compiled = rules.condition(expr)
    return {row[0]: normalise(row[1]) for row in conn.execute(compiled.select())}


def normalise(value: object) -> object:
    """SQLite answers 0/1 for conditions; PostgreSQL true/false. Make them agree."""
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    return value


def snapshot(conn: Connection, catalog: Catalog, accounts: sa.Table, account_id: str) -> Account | None:
    """Everything a rule may read about one account, for the reference evaluator."""
    row = conn.execute(sa.select(accounts).where(accounts.c.id == account_id)).mappings().first()
    if row is None:
        return None
    declared = {f.name for f in catalog.account.fields} if catalog.account else set()
    fields = {k: v for k, v in row.items() if k in declared}
    metrics: dict[str, list[tuple[dt.date, float]]] = {}
    mp = Base.metadata.tables["metric_points"]
    for m, d, v in conn.execute(sa.select(mp.c.metric, mp.c.date, mp.c.value).where(mp.c.account_id == account_id)):
        if v is not None:
            metrics.setdefault(m, []).append((d, v))
    events: dict[str, list[dt.date]] = {}
    ev = Base.metadata.tables["events"]
    for e, d in conn.execute(sa.select(ev.c.event, ev.c.occurred_on).where(ev.c.account_id == account_id)):
        events.setdefault(e, []).append(d)
    return Account(fields=fields, metrics=metrics, events=events)
