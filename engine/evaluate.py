"""Run rules against the store: SQL for every account at once, and one-account
snapshots for the reference evaluator (`why`, tests, the differential check)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
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

    def new(self) -> SQLCompiler:
        c = compiler(self.catalog, self.today, self.dialect)
        c.only = self.only
        c.rollups = self.rollups
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
        branches = disjuncts(expr)
        if len(branches) > 1 and any(self.new().required_joins(b) for b in branches):
            return sa.union(*(self._where_one(b) for b in branches))
        return self._where_one(expr)

    def _where_one(self, expr: n.Expr) -> sa.Select:
        c = self.new()
        cond = c.compile(expr)
        inner = c.required_joins(expr)
        q = sa.select(c.accounts.c.id).select_from(c.from_clause(inner)).where(cond)
        return q if self.only is None else q.where(c.accounts.c.id.in_(self.only))


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
