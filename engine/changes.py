"""Incremental sweeps: which accounts a sweep must evaluate again.

An account's decision depends on its inputs (fields, metric points, events,
its enrollments), on the rules, and on the day. Every writer of inputs
appends the account to `account_changes` in its own transaction (`mark`).
A recorded sweep leaves a mark (`sweep_marks`: its day and a hash of its
rules and settings); the next sweep evaluates only

* the accounts changed since (the `account_changes` rows it consumes; one
  row of `EVERY` stands for every account: a first load writes it instead
  of a row per account, and the sweep that sees it is full),
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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dsl import nodes as n
from dsl.catalog import Catalog
from dsl.functions import form_of
from dsl.plan import Plan
from engine.enroll import email_fields
from engine.schema import ENTITY_TABLES, Base
from engine.sqlcompile import MIRROR, compiler, conjuncts

CHANGES = Base.metadata.tables["account_changes"]
MARKS = Base.metadata.tables["sweep_marks"]
RECHECKS = Base.metadata.tables["sweep_rechecks"]
ENROLLMENTS = Base.metadata.tables["enrollments"]
MARK = "sweep"
# The account_id of a change row that stands for every account. A first load (the accounts table
# empty when the file started) writes it instead of a row per account (1,000,000 rows cost 1.6 s of a
# 15 s import): every account there is then is one it wrote or one a later writer marked, so a full
# sweep is the incremental one. No account has an empty id (the importers refuse it); one that did
# would only make a sweep full, which is never wrong.
EVERY = ""

# Skip reasons that can lapse without any write to the account: a cooldown
# or an email cap runs out with the days, an outbox row cancelled lowers a
# cap, a higher-priority play that did not start leaves room.
LAPSING = frozenset({"cooldown", "frequency_cap", "lower_priority"})
LOWER_PRIORITY = "lower_priority"

# The functions whose value form reads today.
_TODAY_FUNCTIONS = frozenset({"days_since", "days_until"})


def mark(conn: Connection, ids: sa.Select[Any] | Sequence[str]) -> None:
    """Record that these accounts' inputs changed (in the writer's transaction): any of them."""
    if isinstance(ids, sa.Select):
        conn.execute(CHANGES.insert().from_select(["account_id"], ids))
    elif ids:
        conn.execute(CHANGES.insert(), [{"account_id": i} for i in dict.fromkeys(ids)])


def mark_sql(conn: Connection, table: str, column: str, *, distinct: bool = True, fields: str = "NULL") -> None:
    """`mark` for a loader's staging table (or a parenthesised SELECT), named in SQL as it is;
    `distinct=False` where the loader knows the values are distinct (a sort saved); `fields`: SQL
    for each row's `account_changes.fields` (`fields_text`), over the table as `t`."""
    conn.exec_driver_sql(f"INSERT INTO account_changes (account_id, fields) SELECT {'DISTINCT ' if distinct else ''}"
                         f"{column}, {fields} FROM {table} t")


def fields_text(fields: Iterable[str]) -> str:
    """`account_changes.fields` for a write of these fields: their names, sorted, comma-separated."""
    return ",".join(sorted(set(fields)))


def mark_every(conn: Connection) -> None:
    """Record that every account's inputs changed (`EVERY`): the next sweep is full. A sweep that began
    before the writer commits does not consume it, as it would not a row per account."""
    conn.execute(CHANGES.insert().values(account_id=EVERY))


def mark_enrollments(conn: Connection, enrollment_ids: Sequence[int]) -> None:
    """The accounts of these enrollment rows (a run that ended frees its account)."""
    if enrollment_ids:
        mark(conn, sa.select(ENROLLMENTS.c.account_id).where(ENROLLMENTS.c.id.in_(list(enrollment_ids))))


def recheck(decisions: Sequence[Any], plans: Mapping[str, Plan]) -> bool:
    """Whether one account's decisions (all of one sweep) hold a skip that may lapse by itself.

    `lower_priority` lapses only if the play that won does not occupy the
    account: when the winner was enrolled, the loser is `in_other_play`
    while it runs, and the run's end marks the account (`mark_enrollments`).
    A held-out winner occupies nothing, so its losers are looked at again.
    """
    won = any(d.enroll and not plans[d.play].concurrent for d in decisions if d.play in plans)
    for d in decisions:
        codes = set(d.codes)
        if codes & (LAPSING - {LOWER_PRIORITY}) or (LOWER_PRIORITY in codes and not won):
            return True
    return False


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


@dataclass(frozen=True)
class Window:
    """A series a rule reads by day: `days` of a window, None (`latest`: no window) or "all" (`days_since`)."""

    series: str  # "metric" or "event"
    name: str
    days: Any


@dataclass
class TimeRules:
    """What of the enrolling rules (the plays' triggers and gates) the day alone can change.

    Each is a value whose every input but the day is the account's data; if
    none of them differs between two days for an account, none of the
    triggers or gates does either (they are and/or/not of these values and
    of values that do not read the day).
    """

    # Comparisons that read the day (through a field: `days_until(account.renewal)`), each with its
    # polarity (below) and the roots that read it ("trigger.<name>", "gate.<name>").
    dated: list[tuple[Any, bool | None, frozenset[str]]]
    # Values that read windows, with the windows, the polarity and the roots that read them.
    windowed: list[tuple[Any, frozenset[Window], bool | None, frozenset[str]]]


# Polarity: whether a value can only start an enrollment by becoming true
# (True: it sits under no `not` in a trigger's or a gate requirement's
# and/or/not), only by becoming false (False: under one `not`), or either
# way (None: a gate case's `when`, a value inside arithmetic...). A trigger
# that stops firing or a gate that stops passing starts nothing: the play was
# skipped for another reason, or it started and now occupies the account
# (`in_other_play` for the others until its end marks the account), or it was
# held out, and then the plays it beat are rechecked (`recheck`). So only a
# move towards true matters, in Kleene order false < empty < true, where
# and/or are monotone and `not` reverses.


def time_rules(catalog: Catalog, plans: Mapping[str, Plan]) -> TimeRules:
    """The time-dependent values of the rules that decide enrollment; `EveryAccount` where none covers it.

    Routes and scores no trigger or gate reads are left out: they are
    reported with a decision but decide no enrollment.
    """
    finder = _TimeFinder(catalog)
    for play in sorted(plans):
        if play in catalog.plays:
            for key, node in _roots(catalog, plans[play]):
                finder.root(key, node)
    return finder.rules()


def _roots(catalog: Catalog, plan: Plan) -> list[tuple[str, Any]]:
    """The rules deciding whether a play starts, each with its key (`trigger.<name>`, `gate.<name>`)."""
    out: list[tuple[str, Any]] = [(f"trigger.{t.name}", t.when) for t in catalog.triggers_starting(plan.play)]
    if not plan.ungated and plan.gate is not None and plan.gate in catalog.gates:
        out.append((f"gate.{plan.gate}", catalog.gates[plan.gate]))
    return out


def time_sensitive(conn: Connection, scratch: Any, catalog: Catalog, plans: Mapping[str, Plan], rules: TimeRules,
                   since: dt.date, today: dt.date) -> list[tuple[sa.Select[Any], frozenset[str]]]:
    """SELECTs of account ids whose time-dependent values differ between `since` and `today` (since < today),
    each with the roots reading those values (`TimeRules`: the only triggers and gates it can move).

    A window of N days over a series can only change for an account with a
    point entering ((since, today]) or leaving ((since-N, today-N]): those
    accounts are found through the (series, day) indexes into a temporary
    table, and each value reading windows is computed on both days for the
    accounts at the edges of its windows only; the accounts where it
    differs are taken. A comparison that reads the day through a field is
    computed on both days for every account in one pass.
    """
    dialect = conn.dialect.name
    out: list[tuple[sa.Select[Any], frozenset[str]]] = []
    windows = sorted({w for _, ws, _, _ in rules.windowed for w in ws}, key=repr)
    # Per value, the edges that can move it (window k's entering side is key 2k, its leaving side 2k + 1).
    reads = [(value, polarity, roots,
              sorted(2 * windows.index(w) + side for w in ws for side in _sides(value, polarity)))
             for value, ws, polarity, roots in rules.windowed]
    needed = sorted({k for _, _, _, keys in reads for k in keys})
    if needed:
        edges = scratch.table("pb_edges", sa.Column("w", sa.Integer, nullable=False),
                              sa.Column("id", sa.Text, nullable=False))
        for key in needed:
            q = _edges(windows[key // 2], since, today)[key % 2]
            if q is not None:
                conn.execute(edges.insert().from_select(["w", "id"], sa.select(sa.literal(key, sa.Integer), q.c.id)))
        found = {int(k) for (k,) in conn.execute(sa.select(edges.c.w).distinct())}
        if dialect == "postgresql" and found:
            conn.execute(sa.text(f'ANALYZE "{edges.name}"'))
        for value, polarity, roots, keys in reads:
            keys = [k for k in keys if k in found]
            if keys:  # no account at these edges: the value reads the same on both days for every account
                at_edge = sa.select(edges.c.id).where(edges.c.w.in_(keys))
                out.append((_differs(catalog, dialect, since, today, value, polarity, at_edge), roots))
    if rules.dated:
        before, after = compiler(catalog, since, dialect), compiler(catalog, today, dialect)
        after.accounts = before.accounts  # one FROM for both days
        indexed = set(dated_fields(catalog, rules))
        everywhere, everywhere_roots = [], frozenset[str]()
        gates: dict[str, Any] = {}  # each gate compiled once (the shipped expansion_ready guards six comparisons)
        for atom, polarity, roots in rules.dated:
            exact = _moved(before.compile(atom), after.compile(atom), polarity)
            guard = _holds_today(catalog, plans, today, dialect, roots, gates)
            if guard is not None:
                exact = sa.and_(exact, guard)
            hull = _date_hull(catalog, atom, since, today, polarity)
            if hull is not None and not hull[1]:
                continue  # the day alone cannot move it the way that starts a play
            if hull is None:
                everywhere.append(exact)
                everywhere_roots |= roots
                continue
            value = after.compile(hull[0])
            near = [value.between(sa.literal(lo, sa.Date), sa.literal(hi, sa.Date)) for lo, hi in hull[1]]
            if hull[0].path[1] in indexed:
                # One index range per query (an OR of ranges may scan): only the
                # accounts whose date is near a boundary are read.
                out += [(sa.select(after.accounts.c.id).where(r, exact), roots) for r in near]
            else:  # a plain range test on the date first: most rows stop there
                everywhere.append(sa.and_(sa.or_(*near), exact))
                everywhere_roots |= roots
        if everywhere:
            out.append((sa.select(after.accounts.c.id).where(sa.or_(*everywhere)), everywhere_roots))
    return out


def _holds_today(catalog: Catalog, plans: Mapping[str, Plan], today: dt.date, dialect: str,
                 roots: Iterable[str], gates: dict[str, Any]) -> Any:
    """A condition on the account's row that holds wherever one of `roots` (the triggers and gates
    reading a dated comparison) can change a decision today; None where no such condition is known.

    Why it may narrow the dated scope: a comparison that moved changes a decision only by making a
    trigger fire or a gate pass today (see Polarity), so its root must be true today, and then so
    is each of the root's `and`ed parts; and a trigger that fires changes nothing while the gate
    of the play it starts fails (that candidate is skipped, and a skipped candidate takes no other
    play's turn). The parts that read no window are tested on the row the date's index range
    found (`days_until(account.renewal_date) between 46 and 60 and account.health_score >= 80`:
    only the healthy accounts entering the range, and of those only the ones the play's gate lets
    through).
    """
    holds = []
    for root in sorted(roots):
        kind, name = root.split(".", 1)
        if kind == "gate":
            gate = _gate_today(catalog, today, dialect, name, gates)
            if gate is None:
                return None
            holds.append(gate)
            continue
        parts = []
        for part in conjuncts(catalog.triggers[name].when):
            c = compiler(catalog, today, dialect)
            value = c.truth(part)
            if not c.reads_windows:
                parts.append(value)
        passes: list[Any] = []
        for play in sorted(plans):
            if play not in catalog.plays or name not in {t.name for t in catalog.triggers_starting(play)}:
                continue
            plan = plans[play]
            gate = (None if plan.ungated or plan.gate is None
                    else _gate_today(catalog, today, dialect, plan.gate, gates))
            if gate is None:  # ungated, or a gate that reads windows: no condition from the play
                passes = []
                break
            passes.append(gate)
        if passes:
            parts.append(sa.or_(*passes))
        if not parts:
            return None
        holds.append(sa.and_(*parts))
    return sa.or_(*holds) if holds else None


def _gate_today(catalog: Catalog, today: dt.date, dialect: str, name: str, known: dict[str, Any]) -> Any:
    """The gate passes today, if that needs no window (None otherwise); `known`: the gates compiled so far."""
    if name not in known:
        value = None
        if name in catalog.gates:
            c = compiler(catalog, today, dialect)
            value = c.gate(name)
            if c.reads_windows:
                value = None
        known[name] = value
    return known[name]


def dated_fields(catalog: Catalog, rules: TimeRules) -> list[str]:
    """The stored date fields whose ranges decide the dated part of the next day's scope (`_date_hull`)."""
    found: set[str] = set()
    for atom, _, _ in rules.dated:
        dated = _dated_atom(catalog, atom)
        if dated is not None:
            f = catalog.entity_field("account", dated[1].path[1])
            if f is not None and f.type.name == n.TypeName.DATE:  # a datetime is read through date(): no index
                found.add(f.name)
    return sorted(found)


def ensure_indexes(conn: Connection, fields: Iterable[str]) -> None:
    """An index on each of these date fields (`dated_fields`), so the next day's dated scope is a few
    index ranges instead of a pass over every account. Made by a recorded sweep (committed with it),
    once: a rolled-back evaluation would pay for building it every time."""
    ident = conn.dialect.identifier_preparer
    for name in fields:
        conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {ident.quote('ix_accounts_' + name)} "
                             f"ON {ident.quote(ENTITY_TABLES['account'])} ({ident.quote(name)})")


def _dated_atom(catalog: Catalog, atom: Any) -> tuple[n.Call, n.Ref, list[float]] | None:
    """`days_since(F) > 30`, `days_until(F) between 76 and 90`...: (the call, F, the bounds), F a stored field."""
    call: Any
    bounds: list[Any]
    if isinstance(atom, n.Between):
        call, bounds = atom.value, [atom.low, atom.high]
    elif isinstance(atom, n.Binary) and atom.op in n.COMPARISONS:
        call, bounds = (atom.left, [atom.right]) if isinstance(atom.left, n.Call) else (atom.right, [atom.left])
    else:
        return None
    if not (isinstance(call, n.Call) and call.func in _TODAY_FUNCTIONS and len(call.args) == 1
            and all(isinstance(b, n.Number) for b in bounds)):
        return None
    field = call.args[0]
    # A stored field only: a derived one might read the day itself.
    if not (isinstance(field, n.Ref) and len(field.path) == 2 and field.path[0] == "account"
            and catalog.entity_field("account", field.path[1]) is not None):
        return None
    return call, field, [float(b.value) for b in bounds if isinstance(b, n.Number)]


def _thresholds(atom: Any, bounds: list[float]) -> list[tuple[int, bool]]:
    """The whole-day counts m at which a `_dated_atom` can change, each with whether the atom rises
    with `count >= m` (True) or falls with it: it reads `count >= m` for each m, negated or combined
    (`> b` is `>= floor(b) + 1`, `< b` is not `>= ceil(b)`, `== b` is `>= ceil(b)` and not
    `>= floor(b) + 1`, `!= b` the reverse, `between a and b` is `>= ceil(a)` and not `>= floor(b) + 1`)."""
    if isinstance(atom, n.Between):
        low, high = bounds
        return [(math.ceil(low), True), (math.floor(high) + 1, False)]
    bound, = bounds
    op = atom.op if isinstance(atom.left, n.Call) else MIRROR.get(atom.op, atom.op)
    if op in (n.BinOp.GT, n.BinOp.LE):
        return [(math.floor(bound) + 1, op == n.BinOp.GT)]
    if op in (n.BinOp.GE, n.BinOp.LT):
        return [(math.ceil(bound), op == n.BinOp.GE)]
    low, high = math.ceil(bound), math.floor(bound) + 1
    if low == high:  # a fractional bound: == never holds and != always does, on either day
        return []
    return [(low, op == n.BinOp.EQ), (high, op != n.BinOp.EQ)]


def _date_hull(catalog: Catalog, atom: Any, since: dt.date, today: dt.date,
               polarity: bool | None = None) -> tuple[n.Ref, list[tuple[dt.date, dt.date]]] | None:
    """For a `_dated_atom`: F and the date ranges outside which the comparison reads the same on both
    days, or, with a `polarity` (see Polarity), does not move in that direction.

    A date field's day count is a whole number on both databases (F - day: no time of day), and the
    atom changes between the two days only where the count passes one of its `_thresholds` m, i.e.
    `count >= m` holds on one day and not on the other: days_until (F - day, falling) where
    F - today < m <= F - since, so F in [since + m, today + m - 1]; days_since (day - F, rising)
    where day - F reaches m, so F in [since - m + 1, today - m]. One day wide for a one-day step,
    and no slack. A datetime's count is rounded from a fraction on SQLite
    (`round(julianday(F) - julianday(day))`) and its range tested against midnight: two days of
    slack either side. At 1,000,000 demo accounts the day after a sweep, a renewal date's range
    holds about 3,400 accounts (6,800 when the range took both ends of every bound, 20,000 with
    slack), which PostgreSQL reads from the heap.
    """
    found = _dated_atom(catalog, atom)
    if found is None:
        return None
    call, field, bounds = found
    f = catalog.entity_field("account", field.path[1])
    slack = dt.timedelta(days=0 if f is not None and f.type.name == n.TypeName.DATE else 2)
    rising = call.func == "days_since"  # the count grows with the day: `count >= m` can only become true
    ranges = []
    try:
        for m, up in _thresholds(atom, bounds):
            # Crossing m moves the atom towards true where it rises with `count >= m` and the
            # count rises, or falls with it and the count falls: `days_until(F) between 76 and 90`
            # becomes true only where the count passes 90, never where it passes 76.
            if polarity is not None and (up == rising) != polarity:
                continue
            if rising:
                lo, hi = since - dt.timedelta(days=m - 1), today - dt.timedelta(days=m)
            else:
                lo, hi = since + dt.timedelta(days=m), today + dt.timedelta(days=m - 1)
            ranges.append((lo - slack, hi + slack))
    except OverflowError:  # a bound of thousands of years (or infinite): no date is near it
        return None
    return field, ranges


def _moved(before: Any, after: Any, polarity: bool | None) -> Any:
    """The value moved in the direction that may start an enrollment (see Polarity)."""
    if polarity is None:
        return after.is_distinct_from(before)

    def rank(v: Any) -> Any:
        return sa.case((v, 2), (sa.not_(v), 0), else_=1)

    return rank(after) > rank(before) if polarity else rank(after) < rank(before)


def _edges(w: Window, since: dt.date, today: dt.date) -> tuple[sa.Subquery, sa.Subquery | None]:
    """SELECTs (as subqueries with an `id` column) of the accounts with a point entering `w`, and
    of those with a point leaving it (None: nothing leaves a window without a start)."""
    metrics, events = (Base.metadata.tables[t] for t in ("metric_points", "events"))
    table, col, day = (metrics, "metric", "date") if w.series == "metric" else (events, "event", "occurred_on")
    base = sa.select(table.c.account_id.label("id")).where(table.c[col] == w.name)
    if w.days == "all":
        return base.where(table.c[day] <= today).distinct().subquery("e"), None
    # One range per query: each is one index range (series, day), where an OR of two may scan.
    entering = base.where(table.c[day] > since, table.c[day] <= today).distinct().subquery("e")
    if w.days is None:
        return entering, None
    width = dt.timedelta(days=math.ceil(w.days))
    return entering, base.where(table.c[day] > since - width, table.c[day] <= today - width).distinct().subquery("e")


# Window functions whose value only grows with the points in the window.
_COUNTING = frozenset({"happened", "count"})
_GROWING = {n.BinOp.GT: True, n.BinOp.GE: True, n.BinOp.LT: False, n.BinOp.LE: False}


def _sides(value: Any, polarity: bool | None) -> tuple[int, ...]:
    """Which edges of its windows can move `value` towards starting a play (0: a point entering,
    1: one leaving). `happened(e, ...)` and `count(e, ...) >= 3` only become true as points
    enter and only become false as points leave; anything else may move either way."""
    if polarity is not None and _counts_up(value):
        return (0,) if polarity else (1,)
    return (0, 1)


def _counts_up(value: Any) -> bool:
    """The value, true or false, can only go from false to true as its window gains points."""
    def counting(x: Any) -> bool:
        return isinstance(x, n.Call) and x.func in _COUNTING and bool(x.args) and isinstance(x.args[0], n.Symbol)

    if isinstance(value, n.Call):
        return value.func == "happened" and counting(value)
    if isinstance(value, n.Binary) and value.op in _GROWING:
        up = _GROWING[value.op]
        left, right = (value.left, value.right) if up else (value.right, value.left)
        # `count(...) > N` / `N < count(...)`: the count on the greater side, a number on the other.
        return isinstance(left, n.Call) and left.func == "count" and counting(left) and isinstance(right, n.Number)
    return False


def _differs(catalog: Catalog, dialect: str, since: dt.date, today: dt.date, value: Any, polarity: bool | None,
             ids: sa.Select[Any]) -> sa.Select[Any]:
    """The accounts among `ids` where `value` moved between the two days (`_moved`)."""
    sides = []
    for day, name in ((since, "before"), (today, "after")):
        c = compiler(catalog, day, dialect)
        c.only = ids  # the windows aggregate only these accounts' rows
        v = c.compile(value)
        sides.append(sa.select(c.accounts.c.id, v.label("v")).select_from(c.from_clause())
                     .where(c.accounts.c.id.in_(ids)).subquery(name))
    before, after = sides
    return (sa.select(after.c.id).join(before, before.c.id == after.c.id)
            .where(_moved(before.c.v, after.c.v, polarity)))


class _TimeFinder:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._values: dict[str, tuple[Any, frozenset[Window], bool, bool | None]] = {}  # key -> (v, ws, dated, pol)
        self._read_by: dict[str, set[str]] = {}  # key -> the roots that read the value
        self._roots: set[str] = set()
        self._root = ""  # the root being walked
        self._stack: list[str] = []
        self._windows: set[Window] = set()  # read by the comparison being walked

    def rules(self) -> TimeRules:
        vals = [(v, ws, dated, pol, frozenset(self._read_by[k])) for k, (v, ws, dated, pol) in self._values.items()]
        return TimeRules([(v, pol, roots) for v, _, dated, pol, roots in vals if dated],
                         [(v, ws, pol, roots) for v, ws, dated, pol, roots in vals if not dated])

    def root(self, key: str, node: Any) -> None:
        if key not in self._roots:
            self._roots.add(key)
            self._root = key
            self._follow(key, node, False, True)

    def _value(self, node: Any, windows: Iterable[Window], dated: bool, polarity: bool | None) -> None:
        ws = frozenset(windows)
        if dated and ws:
            raise EveryAccount("a comparison reads both the day and a window")
        if not dated and not ws:
            return
        key = node.model_dump_json()
        if key in self._values and self._values[key][3] != polarity:
            polarity = None  # read both ways
        self._values[key] = (node, ws, dated, polarity)
        self._read_by.setdefault(key, set()).add(self._root)

    def visit(self, node: Any, inside: bool, polarity: bool | None) -> bool:
        """Walk `node`; True when its value reads today outside a series (its comparison must be checked)."""
        if isinstance(node, (list, tuple)):
            return any([self.visit(x, inside, polarity) for x in node])
        if not isinstance(node, n.Node):
            return False
        if isinstance(node, (n.Today, n.Ago)):
            return True
        if isinstance(node, n.Call):
            form = form_of(node)
            if form is not None and form.series is not None and node.args and isinstance(node.args[0], n.Symbol):
                w = Window(form.series, node.args[0].name, _window_days(form.name, form.windowed, node))
                if inside:
                    self._windows.add(w)
                else:  # a window read outside any comparison (`happened(...)`): its own value
                    self._value(node, [w], False, polarity)
                return False
            dated = any([self.visit(a, inside, None) for a in node.args])
            return dated or (form is not None and form.name in _TODAY_FUNCTIONS)
        if isinstance(node, n.Ref):
            target = _target(self.catalog, node)
            if target is None:
                return False
            return self._follow(node.dotted, target, inside, polarity)
        comparison = (isinstance(node, n.Binary) and node.op in n.COMPARISONS) or isinstance(
            node, (n.Between, n.InList, n.IsEmpty))
        if comparison and not inside:
            outer, self._windows = self._windows, set()
            try:
                dated = self._children(node, True, None)
                self._value(node, self._windows, dated, polarity)
            finally:
                self._windows = outer
            return False
        if isinstance(node, n.Binary) and node.op in (n.BinOp.AND, n.BinOp.OR):
            pass  # and/or keep the polarity
        elif isinstance(node, n.Unary) and node.op == n.UnOp.NOT:
            polarity = None if polarity is None else not polarity
        elif isinstance(node, n.GateDecl):
            dated = False
            for case in node.cases:
                dated = self.visit(case.when, inside, None) or dated  # applies: either way
                dated = self.visit([r.when for r in case.requires], inside, polarity) or dated
            return dated
        else:
            polarity = None
        dated = self._children(node, inside, polarity)
        if dated and not inside and not isinstance(node, _EXPRESSIONS):
            # A declaration takes a value that reads the day outside any
            # comparison (a score formula of days_since): no narrower set.
            raise EveryAccount(f"a value reads today outside a comparison ({type(node).__name__})")
        return dated

    def _follow(self, key: str, target: Any, inside: bool, polarity: bool | None) -> bool:
        # Lets, scores, gates, triggers and routes are walked where they are
        # read, as if written there: their comparisons become values of the
        # reader's (a cycle is the checker's to report).
        if key in self._stack:
            return False
        self._stack.append(key)
        try:
            return self.visit(target, inside, polarity)
        finally:
            self._stack.pop()

    def _children(self, node: n.Node, inside: bool, polarity: bool | None) -> bool:
        dated = False
        for name in type(node).model_fields:
            if name != "span":
                dated = self.visit(getattr(node, name), inside, polarity) or dated
        return dated


def _target(c: Catalog, ref: n.Ref) -> Any:
    """What a reference reads, to walk as if written there: a `let`'s value, a trigger's condition, a
    score, gate or route; None for a stored field and for what no declaration names."""
    head, rest = ref.path[0], ref.path[1:]
    if len(rest) != 1:
        return None
    name = rest[0]
    if head == "account":
        let = c.entity_let("account", name)
        return None if let is None else let.value
    if head == "trigger":
        trigger = c.triggers.get(name)
        return None if trigger is None else trigger.when
    decls: dict[str, Any] = {"score": c.scores, "band": c.scores, "gate": c.gates, "route": c.routes}
    return decls.get(head, {}).get(name)


_EXPRESSIONS = (n.Unary, n.Binary, n.InList, n.Between, n.IsEmpty, n.Call, n.Ref, n.Today, n.Ago)


def _window_days(func: str, windowed: bool, call: n.Call) -> Any:
    if func == "days_since":
        return "all"  # changes every day for every account with the event
    if not windowed or len(call.args) < 2:
        return None
    arg = call.args[1]
    return arg.days if isinstance(arg, n.Duration) else getattr(arg, "value", None)


# --------------------------------------------------------------------------
# Fields: which plays a change of some account fields can affect


def trigger_inputs(catalog: Catalog, plans: Mapping[str, Plan], route: str | None) -> dict[str, frozenset[str] | None]:
    """Per trigger of the plays: the account fields that any decision of a play it starts reads (its
    triggers, its gate, the route, `arr` and the contact fields it emails) and the roots of those
    triggers and that gate (`trigger.<name>`, `gate.<name>`: what the day moves); None: more than
    that (a reference this cannot follow).

    Why: an account whose only changes since its last evaluation are fields none of these read
    gets the same decision for those plays as then (see Polarity: it enrolled nobody new, and a
    skip that may lapse put the account in `sweep_rechecks`, which re-evaluates every play), so
    their triggers need not be evaluated for it. Neither do they need its windows: at a million
    accounts, a 1% change of `usage_percent` re-read every scope account's metric rollup rows
    for `headcount_growth` and `power_user_emergence`, which no play it starts reads. The same
    holds for the day: an account whose renewal date comes near is evaluated for the plays whose
    triggers or gate read it, not for the ones reading its windows.
    """
    reads = _FieldReader(catalog)
    by_play: dict[str, frozenset[str] | None] = {}
    for play in sorted(plans):
        if play not in catalog.plays:
            continue
        plan = plans[play]
        roots = _roots(catalog, plan)
        parts: list[Any] = [node for _, node in roots]
        if route is not None:
            parts.append(catalog.routes.get(route))
        if catalog.entity_field("account", "arr") or catalog.entity_let("account", "arr"):  # enroll.arr_column
            parts.append(n.Ref(path=["account", "arr"]))
        fields = reads.fields([x for x in parts if x is not None])
        # And the keys of its triggers and gate, which the day's parts of the scope carry (`time_sensitive`).
        keys = {key for key, _ in roots}
        by_play[play] = None if fields is None else fields | frozenset(email_fields(plan, catalog)) | keys
    # A play with a holdout can be eligible and not started, and so take the turn of every
    # exclusive play it outranks (engine/enroll.py `_decide_account`) at each evaluation: it is
    # evaluated wherever they are. (One that lost to it is rechecked, `recheck`.)
    rank = {p: (-plans[p].priority, p) for p in by_play}
    for p, fields in list(by_play.items()):
        if plans[p].holdout and not plans[p].concurrent:
            for q in by_play:
                if not plans[q].concurrent and rank[p] < rank[q]:
                    other = by_play[q]
                    fields = None if fields is None or other is None else fields | other
            by_play[p] = fields
    out: dict[str, frozenset[str] | None] = {}
    for play, fields in by_play.items():
        for t in catalog.triggers_starting(play):
            known = out.get(t.name, frozenset())
            out[t.name] = None if known is None or fields is None else known | fields
    return out


class _FieldReader:
    """The account fields a rule reads, following lets, scores, bands, gates, triggers and routes."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def fields(self, node: Any) -> frozenset[str] | None:
        found: set[str] = set()
        return frozenset(found) if self._visit(node, found, []) else None

    def _visit(self, node: Any, found: set[str], stack: list[str]) -> bool:
        """Add what `node` reads to `found`; False where it reads what no field names."""
        if isinstance(node, (list, tuple)):
            return all([self._visit(x, found, stack) for x in node])
        if not isinstance(node, n.Node):
            return True
        if isinstance(node, n.Ref):
            return self._ref(node, found, stack)
        return all([self._visit(getattr(node, f), found, stack) for f in type(node).model_fields if f != "span"])

    def _ref(self, ref: n.Ref, found: set[str], stack: list[str]) -> bool:
        target = _target(self.catalog, ref)
        if target is None:
            if len(ref.path) == 2 and ref.path[0] == "account" and self.catalog.entity_field("account", ref.path[1]):
                found.add(ref.path[1])
                return True
            return False
        head, name = ref.path
        key = f"{head}.{name}"
        if key in stack:  # a cycle: the checker's to report
            return True
        return self._visit(target, found, [*stack, key])


# --------------------------------------------------------------------------
# One sweep's scope


@dataclass
class Scope:
    """What one recorded sweep evaluates: `ids` (a temporary table of account ids), or every account."""

    full: bool
    why: str
    rules_hash: str
    seen: sa.Table  # the account_changes rows this sweep consumes (id, account_id, fields)
    # (id, fields: what the account is in scope for, `fields_text` of the fields its changes wrote and
    # the roots the day moved; NULL: anything)
    ids: sa.Table | None = None
    dated: tuple[str, ...] = ()  # the date fields the next day's dated scope reads by index (`dated_fields`)
    # Per trigger, the accounts of `ids` to evaluate it on, where fewer (`trigger_inputs`): one
    # SELECT object per distinct set, so triggers with the same one are evaluated together.
    narrow: dict[str, sa.Select[Any]] = field(default_factory=dict)


def begin(conn: Connection, scratch: Any, catalog: Catalog, plans: Mapping[str, Plan], settings: Any,
          today: dt.date, *, full: bool = False) -> Scope:
    """Decide the scope of a sweep on `today` and fill its tables (temporary, in `scratch`)."""
    digest = rules_hash(catalog, plans, settings)
    seen = scratch.table("pb_seen", sa.Column("id", sa.BigInteger, primary_key=True),
                         sa.Column("account_id", sa.Text, nullable=False), sa.Column("fields", sa.Text))
    conn.execute(seen.insert().from_select(["id", "account_id", "fields"],
                                           sa.select(CHANGES.c.id, CHANGES.c.account_id, CHANGES.c.fields)))
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
    elif conn.execute(sa.select(seen.c.id).where(seen.c.account_id == EVERY).limit(1)).first() is not None:
        why = "every account was loaded (a first load)"
    parts: list[tuple[sa.Select[Any], frozenset[str]]] = []
    rules: TimeRules | None = None
    day_reads: str = ""
    try:
        rules = time_rules(catalog, plans)
    except EveryAccount as e:
        day_reads = str(e)
    dated = tuple(dated_fields(catalog, rules)) if rules is not None else ()
    if not why and prior is not None and prior.day < today:
        if rules is None:
            why = f"the day changed and {day_reads}"
        else:
            parts = time_sensitive(conn, scratch, catalog, plans, rules, prior.day, today)
    if why:
        return Scope(True, why, digest, seen, dated=dated)
    if conn.dialect.name == "postgresql":
        # The scope's queries are small; PostgreSQL's JIT, triggered by the
        # tables' size, spent more compiling them (up to 0.8 s each at a
        # million accounts) than running them. For this transaction only.
        conn.exec_driver_sql("SET LOCAL jit = off")
    ids = scratch.table("pb_scope", sa.Column("id", sa.Text, primary_key=True), sa.Column("fields", sa.Text),
                        clustered=True)
    rows = sa.union_all(sa.select(seen.c.account_id.label("id"), seen.c.fields),
                        sa.select(RECHECKS.c.account_id, sa.null().label("fields")),
                        *(p.add_columns(sa.literal(fields_text(roots)).label("fields")) for p, roots in parts)
                        ).subquery("u")
    # What an account is in scope for: the fields its changes wrote and the roots the day moved,
    # all of them (`trigger_inputs` reads both), unless one of its reasons reads anything (NULL:
    # a change of more than fields, a recheck).
    if conn.dialect.name == "postgresql":
        every = sa.func.string_agg(sa.distinct(rows.c.fields), sa.literal_column("','"))
    else:
        every = sa.func.group_concat(sa.distinct(rows.c.fields))
    reasons = sa.case((sa.func.count(rows.c.fields) == sa.func.count(), every))
    # In key order: each statement of the evaluation reads the big tables (accounts, the metric
    # rollup) by key in the order it scans the scope, and keys in order share index and heap
    # pages that a hash order would read again (PostgreSQL at 1,000,000 accounts, 10,000 keys,
    # warm: accounts 75-82 -> 53-54 ms, a metric's rollup rows 90 -> 71 ms).
    conn.execute(ids.insert().from_select(["id", "fields"], sa.select(rows.c.id, reasons).group_by(rows.c.id)
                                          .order_by(sa.text("1"))))
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text(f'ANALYZE "{ids.name}"'))
    return Scope(False, "", digest, seen, ids, dated, _narrow(conn, catalog, plans, settings, ids))


def _narrow(conn: Connection, catalog: Catalog, plans: Mapping[str, Plan], settings: Any,
            ids: sa.Table) -> dict[str, sa.Select[Any]]:
    """`Scope.narrow`: each trigger skips the accounts in scope only for what it does not read."""
    kinds = [k for (k,) in conn.execute(sa.select(ids.c.fields).where(ids.c.fields.isnot(None)).distinct())]
    if not kinds:
        return {}
    by_skip: dict[tuple[str, ...], sa.Select[Any]] = {}
    out: dict[str, sa.Select[Any]] = {}
    for trigger, reads in trigger_inputs(catalog, plans, getattr(settings, "route", None)).items():
        if reads is None:
            continue
        skip = tuple(sorted(k for k in kinds if not set(k.split(",")) & reads))
        if skip:
            if skip not in by_skip:
                by_skip[skip] = sa.select(ids.c.id).where(sa.or_(ids.c.fields.is_(None), ids.c.fields.not_in(skip)))
            out[trigger] = by_skip[skip]
    return out


def finish(conn: Connection, scope: Scope, today: dt.date, lapsing: Iterable[str]) -> None:
    """After the sweep's decisions are written: consume its changes, keep its rechecks, move the mark."""
    ensure_indexes(conn, scope.dated)
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


__all__ = ["EVERY", "LAPSING", "EveryAccount", "Mark", "Scope", "TimeRules", "Window", "begin", "describe", "finish", "forget",
           "dated_fields", "ensure_indexes", "last_mark", "mark", "mark_enrollments", "mark_every", "mark_sql", "recheck", "rules_hash", "time_rules", "time_sensitive"]

