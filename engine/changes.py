"""Incremental sweeps: which accounts a sweep must evaluate again.

An account's decision depends on its inputs (fields, metric points, events,
its enrollments), on the rules, and on the day. Every writer of inputs
appends the account to `account_changes` in its own transaction (`mark`).
A recorded sweep leaves a mark (`sweep_marks`: its day and a hash of its
rules and settings); the next sweep evaluates only

* the accounts changed since (the `account_changes` rows it consumes),
* the accounts the last sweep skipped for a reason that lapses by itself
  (`sweep_rechecks`: cooldown, frequency cap, lower priority), and
* when the day moved on, the accounts whose conditions can change with
  time alone, derived from the rules (`time_sensitive`).

Every other account would get the decision it got last time, which enrolled
nobody new: enrolled then, it is in the play now (`already_enrolled` until
its run ends, and ending a run marks the account); skipped then for a rule,
the rule still says no. With no mark, another day earlier than the mark,
or different rules or settings, the sweep is full.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dsl import nodes as n
from dsl.catalog import Catalog
from dsl.functions import form_of
from dsl.plan import Plan
from engine.schema import Base
from engine.sqlcompile import compiler

CHANGES = Base.metadata.tables["account_changes"]
MARKS = Base.metadata.tables["sweep_marks"]
RECHECKS = Base.metadata.tables["sweep_rechecks"]
ENROLLMENTS = Base.metadata.tables["enrollments"]
MARK = "sweep"

# Skip reasons that can lapse without any write to the account: a cooldown
# or an email cap runs out with the days, an outbox row cancelled lowers a
# cap, a higher-priority play that did not start leaves room.
LAPSING = frozenset({"cooldown", "frequency_cap", "lower_priority"})

# The functions whose value form reads today.
_TODAY_FUNCTIONS = frozenset({"days_since", "days_until"})


def mark(conn: Connection, ids: sa.Select[Any] | Sequence[str]) -> None:
    """Record that these accounts' inputs changed (in the writer's transaction)."""
    if isinstance(ids, sa.Select):
        conn.execute(CHANGES.insert().from_select(["account_id"], ids))
    elif ids:
        conn.execute(CHANGES.insert(), [{"account_id": i} for i in dict.fromkeys(ids)])


def mark_sql(conn: Connection, table: str, column: str) -> None:
    """`mark` for a loader's staging table, named in SQL as it is."""
    conn.exec_driver_sql(f"INSERT INTO account_changes (account_id) SELECT DISTINCT {column} FROM {table}")


def mark_enrollments(conn: Connection, enrollment_ids: Sequence[int]) -> None:
    """The accounts of these enrollment rows (a run that ended frees its account)."""
    if enrollment_ids:
        mark(conn, sa.select(ENROLLMENTS.c.account_id).where(ENROLLMENTS.c.id.in_(list(enrollment_ids))))


def forget(conn: Connection) -> None:
    """Drop every mark and change (the data was replaced): the next sweep is full."""
    for t in (MARKS, RECHECKS, CHANGES):
        conn.execute(t.delete())


def rules_hash(catalog: Catalog, plans: Mapping[str, Plan], settings: Any) -> str:
    """What decisions depend on besides the data: every rule, play and the sweep's settings."""
    h = hashlib.sha256()
    for kind in ("entities", "metrics", "events", "triggers", "scores", "gates", "routes", "plays"):
        for name, decl in sorted(getattr(catalog, kind).items()):
            h.update(f"{kind}:{name}:".encode())
            h.update(decl.model_dump_json().encode())
    for name, plan in sorted(plans.items()):
        h.update(f"plan:{name}:{plan.hash}".encode())
    h.update(repr(settings).encode())
    return h.hexdigest()[:32]


@dataclass(frozen=True)
class Mark:
    day: dt.date
    rules_hash: str


def last_mark(conn: Connection) -> Mark | None:
    row = conn.execute(sa.select(MARKS.c.day, MARKS.c.rules_hash).where(MARKS.c.name == MARK)).first()
    if row is None:
        return None
    day = row[0] if isinstance(row[0], dt.date) else dt.date.fromisoformat(str(row[0]))
    return Mark(day, row[1])


# --------------------------------------------------------------------------
# Time: which accounts' conditions can change between two days


class EveryAccount(Exception):
    """The rules read the day in a way no narrower set of accounts covers."""


def time_sensitive(catalog: Catalog, dialect: str, since: dt.date, today: dt.date) -> list[sa.Select[Any]]:
    """SELECTs of account ids whose rule values may differ between `since` and `today` (since < today).

    From the rules: a window of N days over a series changes for an account
    with a point entering ((since, today]) or leaving ((since-N, today-N]);
    `latest` with a point in (since, today]; `days_since(event)` for every
    account with the event. A comparison that reads today through a field
    (`days_until(account.renewal_date) between 76 and 90`) is evaluated on
    both days, and the accounts where it differs are taken. Raises
    `EveryAccount` where the day reaches a value outside any comparison
    (a score formula of `days_since`) or mixes with a window in one comparison.
    """
    finder = _TimeFinder(catalog)
    for expr in finder.roots():
        finder.visit(expr, False)
    out: list[sa.Select[Any]] = []
    metrics, events = (Base.metadata.tables[t] for t in ("metric_points", "events"))
    for series, name, days in sorted(finder.windows, key=repr):
        table, col, day = (metrics, "metric", "date") if series == "metric" else (events, "event", "occurred_on")
        base = sa.select(table.c.account_id).where(table.c[col] == name)
        if days == "all":
            out.append(base.where(table.c[day] <= today).distinct())
            continue
        ranges = [(since, today)]
        if days is not None:
            width = dt.timedelta(days=math.ceil(days))
            ranges.append((since - width, today - width))
        out.append(base.where(sa.or_(*(sa.and_(table.c[day] > lo, table.c[day] <= hi) for lo, hi in ranges)))
                   .distinct())
    if finder.atoms:
        before, after = compiler(catalog, since, dialect), compiler(catalog, today, dialect)
        after.accounts = before.accounts  # one FROM for both days
        differs = []
        for atom in finder.atoms:
            a, b = before.compile(atom), after.compile(atom)
            differs.append(a.is_distinct_from(b))
        if before._joins or after._joins:
            raise EveryAccount("a dated comparison reads a window")
        out.append(sa.select(after.accounts.c.id).where(sa.or_(*differs)))
    return out


class _TimeFinder:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.windows: set[tuple[str, str, Any]] = set()  # (series, name, days | None | "all")
        self.atoms: list[Any] = []
        self._seen_atoms: set[str] = set()
        self._stack: list[str] = []
        self.window_read = False

    def roots(self) -> Iterator[n.Node]:
        # Lets are reached through the rules that read them: a `let` of
        # days_until(...) is fine as long as every use is compared.
        c = self.catalog
        yield from (*c.triggers.values(), *c.scores.values(), *c.gates.values(), *c.routes.values())

    def visit(self, node: Any, inside: bool) -> bool:
        """Walk `node`; True when its value reads today outside a series (its comparison must be checked)."""
        if isinstance(node, (list, tuple)):
            return any([self.visit(x, inside) for x in node])
        if not isinstance(node, n.Node):
            return False
        if isinstance(node, (n.Today, n.Ago)):
            return True
        if isinstance(node, n.Call):
            form = form_of(node)
            if form is not None and form.series is not None and node.args and isinstance(node.args[0], n.Symbol):
                self.windows.add((form.series, node.args[0].name, _window_days(form.name, form.windowed, node)))
                self.window_read = True
                return False
            dated = any([self.visit(a, inside) for a in node.args])
            return dated or (form is not None and form.name in _TODAY_FUNCTIONS)
        if isinstance(node, n.Ref):
            let = self.catalog.entity_let("account", node.path[1]) if (
                node.path[0] == "account" and len(node.path) == 2) else None
            # Scores, gates, routes and triggers are roots themselves: their
            # values change only where their own comparisons do.
            if let is None or node.path[1] in self._stack:
                return False
            self._stack.append(node.path[1])
            try:
                return self.visit(let.value, inside)
            finally:
                self._stack.pop()
        comparison = (isinstance(node, n.Binary) and node.op in n.COMPARISONS) or isinstance(
            node, (n.Between, n.InList, n.IsEmpty))
        if comparison and not inside:
            self.window_read = False
            if self._children(node, True):
                if self.window_read:
                    raise EveryAccount("a comparison reads both the day and a window")
                key = node.model_dump_json()
                if key not in self._seen_atoms:
                    self._seen_atoms.add(key)
                    self.atoms.append(node)
            return False
        dated = self._children(node, inside)
        if dated and not inside and not isinstance(node, _EXPRESSIONS):
            # A declaration takes a value that reads the day outside any
            # comparison (a score formula of days_since): no narrower set.
            raise EveryAccount(f"a value reads today outside a comparison ({type(node).__name__})")
        return dated

    def _children(self, node: n.Node, inside: bool) -> bool:
        dated = False
        for name in type(node).model_fields:
            if name != "span":
                dated = self.visit(getattr(node, name), inside) or dated
        return dated


_EXPRESSIONS = (n.Unary, n.Binary, n.InList, n.Between, n.IsEmpty, n.Call, n.Ref, n.Today, n.Ago)


def _window_days(func: str, windowed: bool, call: n.Call) -> Any:
    if func == "days_since":
        return "all"  # changes every day for every account with the event
    if not windowed or len(call.args) < 2:
        return None
    arg = call.args[1]
    return arg.days if isinstance(arg, n.Duration) else getattr(arg, "value", None)


# --------------------------------------------------------------------------
# One sweep's scope


@dataclass
class Scope:
    """What one recorded sweep evaluates: `ids` (a temporary table of account ids), or every account."""

    full: bool
    why: str
    rules_hash: str
    seen: sa.Table  # the account_changes rows this sweep consumes (id, account_id)
    ids: sa.Table | None = None


def begin(conn: Connection, scratch: Any, catalog: Catalog, plans: Mapping[str, Plan], settings: Any,
          today: dt.date, *, full: bool = False) -> Scope:
    """Decide the scope of a sweep on `today` and fill its tables (temporary, in `scratch`)."""
    digest = rules_hash(catalog, plans, settings)
    seen = scratch.table("pb_seen", sa.Column("id", sa.BigInteger, primary_key=True),
                         sa.Column("account_id", sa.Text, nullable=False))
    conn.execute(seen.insert().from_select(["id", "account_id"], sa.select(CHANGES.c.id, CHANGES.c.account_id)))
    prior = last_mark(conn)
    why = ""
    if full:
        why = "asked for a full sweep"
    elif prior is None:
        why = "no sweep recorded before"
    elif prior.rules_hash != digest:
        why = "the rules or settings changed"
    elif prior.day > today:
        why = f"the last sweep was for a later day ({prior.day})"
    parts: list[sa.Select[Any]] = []
    if not why and prior is not None and prior.day < today:
        try:
            parts = time_sensitive(catalog, conn.dialect.name, prior.day, today)
        except EveryAccount as e:
            why = f"the day changed and {e}"
    if why:
        return Scope(True, why, digest, seen)
    ids = scratch.table("pb_scope", sa.Column("id", sa.Text, primary_key=True))
    sources = [sa.select(seen.c.account_id), sa.select(RECHECKS.c.account_id), *parts]
    conn.execute(ids.insert().from_select(["id"], sa.union(*sources)))
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text(f'ANALYZE "{ids.name}"'))
    return Scope(False, "", digest, seen, ids)


def finish(conn: Connection, scope: Scope, today: dt.date, lapsing: Iterable[str]) -> None:
    """After the sweep's decisions are written: consume its changes, keep its rechecks, move the mark."""
    conn.execute(CHANGES.delete().where(CHANGES.c.id.in_(sa.select(scope.seen.c.id))))
    if scope.ids is None:
        conn.execute(RECHECKS.delete())
    else:
        conn.execute(RECHECKS.delete().where(RECHECKS.c.account_id.in_(sa.select(scope.ids.c.id))))
    again = sorted(set(lapsing))
    if again:
        conn.execute(RECHECKS.insert(), [{"account_id": a} for a in again])
    top = conn.execute(sa.select(sa.func.max(scope.seen.c.id))).scalar() or 0
    conn.execute(MARKS.delete().where(MARKS.c.name == MARK))
    conn.execute(MARKS.insert().values(name=MARK, day=today, change_id=int(top), rules_hash=scope.rules_hash))


def describe(scope: Scope) -> dict[str, Any]:
    return {"full": scope.full, "why": scope.why}


__all__ = ["LAPSING", "EveryAccount", "Mark", "Scope", "begin", "describe", "finish", "forget", "last_mark", "mark",
           "mark_enrollments", "mark_sql", "rules_hash", "time_sensitive"]

