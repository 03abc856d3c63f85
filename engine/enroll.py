"""Enrollment decisions: which accounts start which play now, and why the others do not.

An account is a *candidate* for play P when a trigger that starts P fires.
A candidate is enrolled unless one of these holds (each is a reason code,
stored with the decision; a skipped candidate carries every code that applies):

| code              | when                                                                      |
|-------------------|---------------------------------------------------------------------------|
| `gate_failed`     | P's gate fails (P not `ungated`); the detail names the first unmet requirement |
| `already_enrolled`| the account is in P now (enrollment status pending or running)            |
| `cooldown`        | P says `reenter after N days` and its last run for the account ended (or, with no end recorded, started) fewer than N days before `today` |
| `no_reentry`      | P has no `reenter after`: it runs once per account, and it ran before     |
| `in_other_play`   | P is not `concurrent` and the account is in another non-concurrent play now (a running play is never pre-empted) |
| `frequency_cap`   | P sends email and a contact it emails already got `email_cap` emails (from any play) in the last `email_cap_days` days |
| `lower_priority`  | P is not `concurrent` and another non-concurrent play with a higher priority (ties: the name first in alphabetical order) is enrolled for the account in the same sweep |
| `held_out`        | P declares `holdout N%`, nothing above applies, and the account falls in P's held-out share (engine/holdouts.py: a stable hash of play and account id) |

A held-out account is the control group: its decision is recorded
(`held_out`, the only code it carries) and nothing is started or sent. It
still takes P's turn: a lower-priority play it would have got instead is
skipped (`lower_priority`), so the comparison is "P against no expansion
play", not "P against the next play".

How it runs: rules are evaluated set-wise in SQL, candidates first: the
triggers that start a play are found into a temporary table of candidate
ids, with a column per trigger (`TriggerPass`: one pass over the accounts
for every trigger that reads them all anyway, one query for each trigger
that starts from the windows its condition needs); then one query computes, for
those candidates only, every gate and the route plus left joins to
pre-aggregated enrollment and outbox facts — its window subqueries aggregate
only the candidates' rows. Python then walks the candidate rows (sorted by account,
streamed) to turn facts into reason codes and to apply priority between
plays. Memory holds one account's candidates at a time.

`decide` yields the decisions and writes nothing; engine/enrollment.py
`record` stores them (table `enrollment_decisions`) with an enrollment row
(status `pending`, workflow id `play:<play>:<account>`) for each account
to start — the SweepWorkflow activity calls it, then starts the workflows.
"""

from __future__ import annotations

import datetime as dt
import enum
import itertools
import math
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import reduce
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from dsl import nodes as n
from dsl import steps
from dsl.catalog import Catalog
from dsl.plan import Plan
from dsl.printer import format_expr
from engine.evaluate import BATCH as STREAM_BATCH
from engine.evaluate import RuleSQL, TriggerPass, stream
from engine.holdouts import held_out
from engine.schema import Base
from engine.sqlcompile import SQLCompiler, compiler
from engine.store import Store

# Enrollment statuses that mean "the account is in the play now". `pending`
# is written by `record` before the workflow starts, so a sweep that runs
# again before the start finishes does not enroll the account twice.
ACTIVE = ("pending", "running")
# Outbox rows that never reached anyone do not count against the cap.
NOT_SENT = ("failed", "cancelled")
# `account_ids` up to this many also restrict the window subqueries (as a list
# of bound values in each: more would approach SQLite's 32,766 parameters).
ONLY_LIST_MAX = 500


class EnrollError(Exception):
    """The rules and plans do not fit together (a play's gate is not declared, ...)."""


class Code(str, enum.Enum):
    GATE_FAILED = "gate_failed"
    ALREADY_ENROLLED = "already_enrolled"
    COOLDOWN = "cooldown"
    NO_REENTRY = "no_reentry"
    IN_OTHER_PLAY = "in_other_play"
    FREQUENCY_CAP = "frequency_cap"
    LOWER_PRIORITY = "lower_priority"
    HELD_OUT = "held_out"


@dataclass(frozen=True)
class Settings:
    """Knobs of the sweep that are policy, not rules (the .play files do not say them)."""

    # Max emails one contact receives, across all plays, in `email_cap_days`
    # days. 3 a week is the common ceiling before unsubscribe rates climb.
    email_cap: int = 3
    email_cap_days: int = 7
    # The route each decision reports (`playbook plan` groups by it); None or
    # a name the rules do not declare: no route.
    route: str | None = "touch"


class Reason(NamedTuple):
    code: Code
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code.value, "detail": self.detail}


class Decision(NamedTuple):
    """Whether one account starts one play now, with everything that decided it.

    A named tuple, like `Facts` and `Reason`: a sweep makes one per candidate,
    and a frozen dataclass's `__init__` (an `object.__setattr__` per field) cost
    about three times as much (6 us against 2 us, measured under load)."""

    account_id: str
    play: str
    enroll: bool
    triggers: tuple[str, ...]  # the play's triggers that fire for the account, in declaration order
    reasons: tuple[Reason, ...]  # empty when enrolled
    plan_hash: str
    route: str | None = None
    arr: float | None = None
    gate_failure: str | None = None  # first unmet requirement; None: the gate passes
    active: bool = False  # the account is in this play now

    @property
    def held_out(self) -> bool:
        """Would have started, but the play's holdout keeps the account as a control."""
        return len(self.reasons) == 1 and self.reasons[0].code is Code.HELD_OUT

    @property
    def decision(self) -> str:
        return "enroll" if self.enroll else "held_out" if self.held_out else "skip"

    @property
    def codes(self) -> list[str]:
        return [r.code.value for r in self.reasons]

    @property
    def qualifies(self) -> bool:
        """A trigger fires and the gate passes: what a running enrollment needs to still make sense."""
        return self.gate_failure is None

    @property
    def workflow_id(self) -> str:
        return workflow_id(self.play, self.account_id)

    def reasons_json(self) -> dict[str, Any]:
        return {"triggers": list(self.triggers), "route": self.route,
                "reasons": [r.to_json() for r in self.reasons]}

    def to_json(self) -> dict[str, Any]:
        return {"account_id": self.account_id, "play": self.play, "decision": self.decision,
                "plan_hash": self.plan_hash, **self.reasons_json()}


def workflow_id(play: str, account_id: str) -> str:
    # Same format as workflows.play.workflow_id; engine/ may not import workflows/.
    return f"play:{play}:{account_id}"


# --------------------------------------------------------------------------
# SQL pieces shared with the scorecard and `why`


def gate_failure(c: SQLCompiler, gate_name: str) -> ColumnElement[Any]:
    """The first unmet requirement's label (NULL when the gate passes), as one CASE.

    Same order a person reads the gate in: cases top to bottom, requirements
    in order; "no readiness rules apply" last, because an account no `when`
    applies to can only fail the unconditional requirements before that.
    NULL exactly when `SQLCompiler.gate` is true (same parts, same truth()).
    """
    gate = c.catalog.gates[gate_name]
    whens: list[tuple[ColumnElement[Any], ColumnElement[Any]]] = []
    for case in gate.cases:
        applies = c.truth(case.when) if case.when is not None else None
        for r in case.requires:
            unmet = sa.not_(c.truth(r.when))
            label = requirement_label(r)
            whens.append((unmet if applies is None else sa.and_(applies, unmet), sa.literal(label, sa.Text)))
    conditional = [case.when for case in gate.cases if case.when is not None]
    if conditional:
        none_applies = sa.not_(sa.or_(*(c.truth(w) for w in conditional)))
        whens.append((none_applies, sa.literal(NO_CASE_APPLIES, sa.Text)))
    return sa.case(*whens, else_=sa.null()) if whens else sa.cast(sa.null(), sa.Text)


NO_CASE_APPLIES = "no readiness rules for this kind of account"


def requirement_label(r: n.Requirement) -> str:
    return r.label or format_expr(r.when)


def fired_list(c: SQLCompiler, triggers: Sequence[str]) -> tuple[ColumnElement[Any], list[ColumnElement[Any]]]:
    """(`"a,b,"`: the names of the firing triggers as one text column, each trigger's truth)."""
    truths = [c.truth(c.catalog.triggers[t].when) for t in triggers]
    parts: list[ColumnElement[Any]] = [sa.case((f, sa.literal(t + ",", sa.Text)), else_=sa.literal("", sa.Text)) for t, f in zip(triggers, truths)]
    text = reduce(lambda a, b: a + b, parts) if parts else sa.literal("", sa.Text)
    return text, truths


def split_fired(text: str | None) -> tuple[str, ...]:
    """`"a,b,"` as ("a", "b"): each name ends with a comma."""
    return tuple(text[:-1].split(",")) if text else ()


def id_order(col: ColumnElement[Any], dialect: str) -> ColumnElement[Any]:
    """Order ids by code point on every database, as Python compares strings.

    Why: `plan --against` merges two sorted streams in Python; PostgreSQL's
    default collation (en_US, ...) orders text differently from Python.
    """
    return col.collate("C") if dialect == "postgresql" else col


def route_column(c: SQLCompiler, route: str | None) -> ColumnElement[Any]:
    if route is not None and route in c.catalog.routes:
        return sa.cast(c.route(route), sa.Text)
    return sa.cast(sa.null(), sa.Text)


def arr_column(c: SQLCompiler) -> ColumnElement[Any]:
    if c.catalog.entity_field("account", "arr") is not None or c.catalog.entity_let("account", "arr") is not None:
        return sa.cast(c.field("arr"), sa.Float)
    return sa.cast(sa.null(), sa.Float)


# --------------------------------------------------------------------------
# Plans


def plan_map(plans: Sequence[Plan] | Mapping[str, Plan]) -> dict[str, Plan]:
    return dict(plans) if isinstance(plans, Mapping) else {p.play: p for p in plans}


def email_fields(plan: Plan, catalog: Catalog) -> list[str]:
    """The account contact fields the play emails (`email account.admin ...`), sorted."""
    found: set[str] = set()
    for visit in steps.walk_steps(plan.steps):
        if isinstance(visit.action, n.EmailStep):
            path = visit.action.to.path
            if len(path) == 2 and path[0] == "account" and catalog.entity_field("account", path[1]) is not None:
                found.add(path[1])
    return sorted(found)


def sends_email(plan: Plan) -> bool:
    return any(isinstance(v.action, n.EmailStep) for v in steps.walk_steps(plan.steps))


# --------------------------------------------------------------------------
# The candidate query


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), dt.timezone.utc)


class Facts(NamedTuple):
    """What the sweep knows about one (account, play) candidate.

    A named tuple, not a frozen dataclass: one is made per candidate, and a frozen
    dataclass's `__init__` (a `object.__setattr__` per field) cost several times more."""

    account_id: str
    play: str
    triggers: tuple[str, ...]
    gate_failure: str | None
    route: str | None
    arr: float | None
    active: bool  # in this play now
    last_end: dt.date | None  # end (else start) of the last finished run of this play
    other_play: str | None  # a non-concurrent play the account is in now
    emails_recent: int  # most emails any contact this play writes to got in the cap window


@dataclass
class CandidateQuery:
    """The one SELECT behind a sweep: one row per account on which any play's trigger fires.

    Every trigger (or, with a candidate table, its recorded result), gate and
    the route are columns of the same SELECT, so each rule and each window
    join is computed once for all plays; the
    enrollment history and the outbox come in as two pre-aggregated joins
    (per account, per contact). Rows are sorted by account id.
    """

    catalog: Catalog
    plans: dict[str, Plan]
    today: dt.date
    dialect: str
    settings: Settings = field(default_factory=Settings)
    account_ids: Sequence[str] | None = None
    # The candidates are a few accounts (an incremental sweep's scope): read their rows by key.
    scoped: bool = False
    # Where the accounts' rows are read (`scope_accounts`); None: the store's accounts table.
    accounts: sa.Table | None = None

    def __post_init__(self) -> None:
        # Plays that can start: compiled, declared, and started by at least one trigger.
        self.plays = [p for p in sorted(self.plans)
                      if p in self.catalog.plays and self.catalog.triggers_starting(p)]
        for p in self.plays:
            gate = self.plans[p].gate
            if not self.plans[p].ungated and gate is not None and gate not in self.catalog.gates:
                raise EnrollError(f"play {p}: gate '{gate}' is not declared")
        self.gates = sorted({g for p in self.plays if (g := self._gate(p)) is not None})
        self.email_fields = {p: email_fields(self.plans[p], self.catalog) for p in self.plays}
        self.contacts = sorted({f for fs in self.email_fields.values() for f in fs})
        # Per play, the result columns `facts` reads (looked up once, not per row).
        self._gate_cols = [f"gate_{self.gates.index(g)}" if (g := self._gate(p)) is not None else None
                           for p in self.plays]
        self._mail_cols = [[f"m_{self.contacts.index(f)}" for f in self.email_fields[p]] for p in self.plays]
        self._exclusive = [not self.plans[p].concurrent for p in self.plays]
        self._pos: tuple[Any, ...] | None = None  # `_positions`

    def _gate(self, play: str) -> str | None:
        plan = self.plans[play]
        return None if plan.ungated else plan.gate

    def triggers(self) -> list[str]:
        """Every trigger that starts one of the plays, each once, in name order."""
        return sorted({t.name for p in self.plays for t in self.catalog.triggers_starting(p)})

    def query(self, candidates: sa.Table | None = None) -> sa.Select | None:
        """The SELECT.

        `candidates`: a table of account `id`s with a column `t_<k>` per trigger
        (the k-th of `triggers()`), true where it fires, possibly several rows
        per account (as `candidate_table` fills it). The triggers are then read from it, not
        evaluated again, and the gates, route and facts are computed only for
        its accounts: every window subquery aggregates only their rows.
        """
        if not self.plays:
            return None
        c = compiler(self.catalog, self.today, self.dialect)
        if self.accounts is not None:
            c.accounts = self.accounts
        acc = c.accounts
        only: Any = None
        cand: Any = None
        if candidates is not None:
            only = sa.select(candidates.c.id)
            index = {t: k for k, t in enumerate(self.triggers())}
            cand = (sa.select(candidates.c.id, *(
                sa.func.max(sa.case((candidates.c[f"t_{k}"], 1), else_=0)).label(f"t_{k}") for k in index.values()))
                .group_by(candidates.c.id).subquery("cand"))
        elif self.account_ids is not None and len(self.account_ids) <= ONLY_LIST_MAX:
            only = list(self.account_ids)
        c.only = only
        cols: list[ColumnElement[Any]] = [acc.c.id.label("account_id")]
        any_fires: list[ColumnElement[Any]] = []
        for i, play in enumerate(self.plays):
            names = [t.name for t in self.catalog.triggers_starting(play)]
            if cand is None:
                fired, truths = fired_list(c, names)
                any_fires += truths
            else:
                # Same text as fired_list, from the triggers' own queries.
                parts = [sa.case((cand.c[f"t_{index[t]}"] == 1, sa.literal(t + ",", sa.Text)),
                                 else_=sa.literal("", sa.Text)) for t in names]
                fired = reduce(lambda a, b: a + b, parts)
            cols.append(fired.label(f"fired_{i}"))
        cols += [gate_failure(c, g).label(f"gate_{j}") for j, g in enumerate(self.gates)]
        cols += [route_column(c, self.settings.route).label("route"), arr_column(c).label("arr")]

        enr = Base.metadata.tables["enrollments"]
        active = enr.c.status.in_(ACTIVE)
        facts: list[Any] = [enr.c.account_id]
        for i, play in enumerate(self.plays):
            facts.append(sa.func.max(sa.case((sa.and_(enr.c.play == play, active), 1), else_=0)).label(f"a_{i}"))
            ended = sa.func.coalesce(enr.c.ended_at, enr.c.started_at)
            facts.append(sa.func.max(sa.case((sa.and_(enr.c.play == play, sa.not_(active)), ended))).label(f"l_{i}"))
        # Runs of plays this sweep does not know (removed, renamed) still occupy the account.
        facts.append(sa.func.min(sa.case((sa.and_(active, enr.c.play.not_in(self.plays)), enr.c.play))).label("other"))
        e_q = sa.select(*facts)
        if cand is not None and self.scoped and self.dialect == "postgresql":
            # A scope's enrollments by key: `= ANY(ARRAY(...))` is an index scan of
            # (account_id, play) per candidate, where `IN` hash-joined a scan of every
            # enrollment (at 1,000,000 accounts and 170,623 enrollments, 11,213 candidates:
            # 92-107 ms against 51-77 ms).
            e_q = e_q.where(enr.c.account_id == sa.any_(sa.func.array(only.scalar_subquery())))
        elif only is not None:
            e_q = e_q.where(enr.c.account_id.in_(only))
        e = e_q.group_by(enr.c.account_id).subquery("e_facts")
        start = None if cand is None else cand.join(acc, acc.c.id == cand.c.id)
        src = c.from_clause(start=start).outerjoin(e, e.c.account_id == acc.c.id)
        cols += [e.c[f"a_{i}"] for i in range(len(self.plays))] + [e.c[f"l_{i}"] for i in range(len(self.plays))]
        cols.append(e.c.other)

        out = Base.metadata.tables["outbox"]
        since = _day_start(self.today + dt.timedelta(days=1 - self.settings.email_cap_days))
        for k, f in enumerate(self.contacts):
            window = [out.c.channel == "email", out.c.created_at >= since, out.c.status.not_in(NOT_SENT)]
            if self.scoped and only is not None:
                # A few accounts: their contacts' rows by (recipient, created_at), not the whole window.
                a = acc.alias(f"oa_{k}")
                window.append(out.c.recipient.in_(sa.select(a.c[f]).where(a.c.id.in_(only), a.c[f].isnot(None))))
            sub = (sa.select(out.c.recipient, sa.func.count().label("n")).where(*window)
                   .group_by(out.c.recipient).subquery(f"o_{k}"))
            src = src.outerjoin(sub, sub.c.recipient == acc.c[f])
            cols.append(sa.func.coalesce(sub.c.n, 0).label(f"m_{k}"))

        q = sa.select(*cols).select_from(src)
        if cand is None:
            q = q.where(sa.or_(*any_fires))
        if self.account_ids is not None:
            q = q.where(acc.c.id.in_(list(self.account_ids)))
        # From a candidate table, order by its id: ordering by the accounts'
        # key would have SQLite walk every account in key order to skip a sort.
        return q.order_by(id_order(acc.c.id if cand is None else cand.c.id, self.dialect))

    def _positions(self, row: Any) -> tuple[Any, ...]:
        """Where `facts` finds each column in a row of `query()` (looked up once: every row has the same)."""
        if self._pos is None:
            at = {k: i for i, k in enumerate(row._fields)}
            plays = tuple((i, play, at[f"fired_{i}"], None if g is None else at[g], at[f"a_{i}"], at[f"l_{i}"],
                           tuple(at[c] for c in self._mail_cols[i]))
                          for i, (play, g) in enumerate(zip(self.plays, self._gate_cols)))
            self._pos = (at["account_id"], at["route"], at["arr"], at["other"], plays)
        return self._pos

    def facts(self, row: Any) -> Iterator[Facts]:
        """The candidates in one result row: one per play whose trigger fired.

        Columns by position, not by name: this runs once per candidate row, and
        an incremental sweep's evaluation is mostly this loop."""
        account_at, route_at, arr_at, other_at, plays = self._positions(row)
        active = [bool(row[a]) for _, _, _, _, a, _, _ in plays]
        busy = any(active)  # most candidates are in no play: skip looking for one
        account, route, arr = row[account_at], row[route_at], row[arr_at]
        arr = float(arr) if arr is not None else None
        for i, play, fired_at, gate_at, _, last_at, mail_at in plays:
            fired = row[fired_at]
            if not fired:
                continue
            others = ([p for k, p in enumerate(self.plays) if active[k] and k != i and self._exclusive[k]]
                      if busy else None)
            last = row[last_at]
            # Positional, in the fields' order (keywords cost a third more per candidate).
            yield Facts(account, play, split_fired(fired), row[gate_at] if gate_at is not None else None, route,
                        arr, active[i], None if last is None else _as_date(last),
                        others[0] if others else row[other_at],
                        max([int(row[k] or 0) for k in mail_at]) if mail_at else 0)


# --------------------------------------------------------------------------
# Facts -> decisions


def _as_date(v: Any) -> dt.date | None:
    if v is None:
        return None
    if isinstance(v, dt.datetime):
        return (v.astimezone(dt.timezone.utc) if v.tzinfo else v).date()
    if isinstance(v, dt.date):
        return v
    return dt.datetime.fromisoformat(str(v)).date()  # SQLite text, if an aggregate lost the column type


def _facts_reasons(f: Facts, plan: Plan, today: dt.date, settings: Settings) -> list[Reason]:
    reasons: list[Reason] = []
    if f.gate_failure is not None:
        reasons.append(Reason(Code.GATE_FAILED, f"gate {plan.gate}: not met: {f.gate_failure}"))
    if f.active:
        reasons.append(Reason(Code.ALREADY_ENROLLED, f"already in {plan.play}"))
    elif f.last_end is not None:
        last = f.last_end
        if plan.reenter_days is None:
            reasons.append(Reason(Code.NO_REENTRY, f"was in {plan.play} (last on {last.isoformat()}); "
                                                  "the play has no `reenter after`, so it runs once per account"))
        else:
            since = (today - last).days
            if since < plan.reenter_days:
                until = last + dt.timedelta(days=math.ceil(plan.reenter_days))
                reasons.append(Reason(Code.COOLDOWN, f"last run ended {last.isoformat()} ({since} days ago); "
                                                     f"may re-enter from {until.isoformat()} "
                                                     f"(reenter after {_days(plan.reenter_days)})"))
    if f.other_play is not None and not plan.concurrent:
        reasons.append(Reason(Code.IN_OTHER_PLAY, f"already in {f.other_play}; one expansion play at a time"))
    if f.emails_recent >= settings.email_cap and sends_email(plan):  # the cheap test first
        reasons.append(Reason(Code.FREQUENCY_CAP, f"{f.emails_recent} emails to the contact in the last "
                                                  f"{settings.email_cap_days} days (cap {settings.email_cap})"))
    return reasons


def _days(d: float) -> str:
    return f"{d:g} day" + ("" if d == 1 else "s")


def _decide_account(facts: Iterable[Facts], plans: dict[str, Plan], today: dt.date,
                    settings: Settings) -> list[Decision]:
    cands = [(f, plans[f.play]) for f in facts]
    reasons = [_facts_reasons(f, plan, today, settings) for f, plan in cands]
    # Priority only decides between plays that could otherwise start now.
    exclusive = [k for k, (_, plan) in enumerate(cands) if not reasons[k] and not plan.concurrent]
    if len(exclusive) > 1:
        exclusive.sort(key=lambda k: (-cands[k][1].priority, cands[k][1].play))
        win = cands[exclusive[0]][1]
        for k in exclusive[1:]:
            loser = cands[k][1]
            reasons[k].append(Reason(Code.LOWER_PRIORITY, f"{win.play} (priority {win.priority}) starts instead "
                                                          f"(priority {loser.priority})"))
    # After priority, so a held-out account takes its play's turn (see the module docstring).
    for (f, plan), why in zip(cands, reasons):
        if not why and held_out(plan.play, f.account_id, plan.holdout):
            why.append(Reason(Code.HELD_OUT, f"in {plan.play}'s holdout ({plan.holdout:g}% of accounts "
                                             "by a stable hash): not started, kept for comparison"))
    # Positional: the fields in Decision's order (keywords cost a third more per decision).
    return [Decision(f.account_id, plan.play, not why, f.triggers, tuple(why), plan.hash, f.route, f.arr,
                     f.gate_failure, f.active) for (f, plan), why in zip(cands, reasons)]


def decide(conn: Connection, catalog: Catalog, plans: Sequence[Plan] | Mapping[str, Plan], today: dt.date,
           settings: Settings | None = None, account_ids: Sequence[str] | None = None) -> Iterator[Decision]:
    """Every candidate's decision, streamed in account order (code point order), then play name.

    `account_ids` restricts the sweep (for `why`); None: every account.
    """
    if account_ids is None:
        with Scratch(conn) as scratch:
            yield from prepare(scratch, catalog, plans, today, settings)
        return
    # A few accounts (`why`): restricting to them beats finding every candidate first.
    settings = settings or Settings()
    pm = plan_map(plans)
    cq = CandidateQuery(catalog, pm, today, conn.dialect.name, settings, account_ids)
    q = cq.query()
    if q is not None:
        for row in stream(conn, q):
            yield from _decide_account(cq.facts(row), pm, today, settings)


def prepare(scratch: Scratch, catalog: Catalog, plans: Sequence[Plan] | Mapping[str, Plan], today: dt.date,
            settings: Settings | None = None, only: sa.Table | None = None,
            narrow: Mapping[str, sa.Select[Any]] | None = None) -> Generator[Decision, None, None]:
    """Find every candidate now (into a table of `scratch`); return the stream of their decisions.

    Two steps so that several sweeps can be read side by side on one
    connection (`plan --against`): prepare all, then read. SQLite aborts a
    statement that is still reading ("abort due to ROLLBACK") when the same
    connection writes a temporary table, and refuses to drop one while any
    statement reads: drop `scratch` once every stream is closed. `only`: a
    table of account `id`s to evaluate (an incremental sweep, engine/changes.py); `narrow`: per
    trigger, a SELECT of the fewer of them to evaluate it on (`changes.Scope.narrow`).
    """
    settings = settings or Settings()
    pm = plan_map(plans)
    conn = scratch.conn
    accounts = None if only is None else scope_accounts(scratch, catalog, only)
    cq = CandidateQuery(catalog, pm, today, conn.dialect.name, settings, scoped=only is not None, accounts=accounts)
    q = cq.query(candidate_table(scratch, cq, only, narrow)) if cq.plays else None

    def read() -> Generator[Decision, None, None]:
        if q is None:
            return
        # Not evaluate.stream: the result must be closed before the table is dropped.
        with conn.execute(q, execution_options={"stream_results": True, "yield_per": STREAM_BATCH}) as result:
            for row in result:
                yield from _decide_account(cq.facts(row), pm, today, settings)

    return read()


_TAKEN = "playbook_scratch_tables"  # Connection.info key: the scratch tables alive on that connection
_TABLES: dict[tuple[Any, ...], sa.Table] = {}


def _scratch_table(name: str, columns: Sequence[sa.Column[Any]], clustered: bool = False) -> sa.Table:
    """The Table object for this name and these columns, the same one each time: SQLAlchemy's
    statement cache knows a table by its object, so a new one makes every statement compile anew."""
    key = (name, clustered, *((c.name, repr(c.type), c.primary_key, c.nullable) for c in columns))
    t = _TABLES.get(key)
    if t is None:
        if len(_TABLES) >= 256:
            _TABLES.pop(next(iter(_TABLES)))
        t = _TABLES[key] = sa.Table(name, sa.MetaData(), *columns, prefixes=["TEMPORARY"],
                                    sqlite_with_rowid=not clustered)
    return t


class Scratch:
    """The temporary tables of one evaluation on one connection, dropped together by their owner.

    Why an owner, not each query for itself: SQLite refuses to drop a table
    while any statement on the connection is still reading ("database table
    is locked"), so two decision streams read side by side on one connection
    can only drop their tables once both are closed. Names are unique on
    the connection, so evaluations never see each other's tables.
    """

    def __init__(self, conn: Connection):
        self.conn = conn
        self.tables: list[sa.Table] = []

    def table(self, prefix: str, *columns: sa.Column[Any], clustered: bool = False) -> sa.Table:
        """A new, empty temporary table `<prefix>_<n>`, dropped with the others.

        `clustered`: the rows are kept in primary-key order, in the key's b-tree itself
        (SQLite's WITHOUT ROWID; PostgreSQL has no such table): a table read by its key
        then costs one b-tree search per row instead of two, and one b-tree to write.

        `n` is the smallest not in use on this connection (temporary tables
        are the connection's own): the next evaluation on it gets the same
        names, so SQLAlchemy's statement cache compiles its queries once.
        """
        taken: set[str] = self.conn.info.setdefault(_TAKEN, set())
        name = next(f"{prefix}_{k}" for k in itertools.count() if f"{prefix}_{k}" not in taken)
        t = _scratch_table(name, columns, clustered)
        taken.add(name)  # before it exists: a failed CREATE leaves the name unused, never reused wrongly
        t.create(self.conn)
        self.tables.append(t)
        return t

    def drop(self) -> None:
        while self.tables:
            t = self.tables[-1]
            t.drop(self.conn)
            self.tables.pop()
            self.conn.info.get(_TAKEN, set()).discard(t.name)

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.drop()
            return
        try:
            self.drop()
        except Exception:
            # Unwinding already (an error, or a caller that stopped early on a
            # closed connection): the first error is the one to report, and
            # temporary tables go with the connection anyway.
            pass


def candidate_table(scratch: Scratch, cq: CandidateQuery, only: sa.Table | None = None,
                    narrow: Mapping[str, sa.Select[Any]] | None = None) -> sa.Table:
    """A temporary table of the accounts each trigger of the sweep fires on: `id`
    and a column `t_<k>` per trigger (its index in `cq.triggers()`), filled by one
    pass over the accounts for the triggers that read every account anyway and
    one query for each of the others (`TriggerPass`); `narrow`: as in `prepare`,
    one such pass per distinct set of accounts."""
    conn = scratch.conn
    every = None if only is None else sa.select(only.c.id)
    groups: dict[int, tuple[Any, list[str]]] = {}
    for trigger in cq.triggers():
        among = (narrow or {}).get(trigger, every)
        groups.setdefault(id(among), (among, []))[1].append(trigger)
    passes = [TriggerPass(RuleSQL(cq.catalog, cq.today, conn.dialect.name, among, accounts=cq.accounts),
                          cq.triggers(), names) for among, names in groups.values()]
    t = scratch.table("pb_candidates", *passes[0].columns())
    for found in passes:
        found.fill(conn, t)
    if conn.dialect.name == "postgresql":
        # No autovacuum statistics for temporary tables: tell the planner its size and its key's,
        # which the decision query groups by (the trigger columns' statistics are read by nothing).
        conn.execute(sa.text(f'ANALYZE "{t.name}" (id)'))
    return t


def scope_accounts(scratch: Scratch, catalog: Catalog, only: sa.Table) -> sa.Table:
    """A temporary copy of the accounts rows of `only` (a table of `id`s: an incremental sweep's scope),
    for every statement of the evaluation to read instead of the accounts table.

    Why: each trigger's query and the decision query read the scope's rows again, each
    time by key from a table of a million accounts (on SQLite an index seek and a rowid
    seek, on PostgreSQL an index and a heap page, pages a full evaluation pushes out of
    cache); here they are read by key once and then scanned or hash-joined in a table
    the size of the scope.
    """
    conn = scratch.conn
    acc = compiler(catalog, dt.date.min, conn.dialect.name).accounts
    copy = scratch.table("pb_accounts", *(sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
                                          for c in acc.columns), clustered=True)
    names = [c.name for c in acc.columns]
    conn.execute(copy.insert().from_select(names, sa.select(*acc.columns).where(acc.c.id.in_(sa.select(only.c.id)))))
    if conn.dialect.name == "postgresql":
        # No autovacuum statistics for temporary tables: its size and its key's, for the joins
        # (all columns: 0.15 s of backend CPU at 11,372 rows).
        conn.execute(sa.text(f'ANALYZE "{copy.name}" (id)'))
    return copy


def decision_set(store: Store, catalog: Catalog, plans: Sequence[Plan] | Mapping[str, Plan], today: dt.date,
                 settings: Settings | None = None, account_ids: Sequence[str] | None = None) -> list[Decision]:
    """All decisions as a list (tests, small stores; a sweep should use `decide` or `enrollment.record`)."""
    def read() -> list[Decision]:
        with store.connect() as conn:
            return list(decide(conn, catalog, plans, today, settings, account_ids))

    return store.retry(read)  # a transient fault: again; a lasting one: StoreUnreachable


__all__ = ["ACTIVE", "CandidateQuery", "Code", "Decision", "EnrollError", "Reason", "Scratch", "Settings", "decide",
           "decision_set", "gate_failure", "prepare", "workflow_id"]
