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

How it runs: rules are evaluated set-wise in SQL — one query, a UNION ALL of
one branch per play, each branch the play's triggers, gate and route over
all accounts plus left joins to pre-aggregated enrollment and outbox facts,
filtered to the candidates. Python then walks the candidate rows (sorted by
account, streamed) to turn facts into reason codes and to apply priority
between plays. Memory holds one account's candidates at a time.

`decide` yields the decisions; `record` stores them (table
`enrollment_decisions`) and writes an enrollment row (status `pending` by
default, workflow id `play:<play>:<account>`) for each account to start —
the SweepWorkflow activity calls it, then starts the workflows.
"""

from __future__ import annotations

import datetime as dt
import enum
import itertools
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import reduce
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from dsl import nodes as n
from dsl.catalog import Catalog
from dsl.plan import Plan
from dsl.printer import format_expr
from engine.evaluate import stream
from engine.schema import Base, utcnow
from engine.sqlcompile import SQLCompiler, compiler
from engine.store import Store, chunked

# Enrollment statuses that mean "the account is in the play now". `pending`
# is written by `record` before the workflow starts, so a sweep that runs
# again before the start finishes does not enroll the account twice.
ACTIVE = ("pending", "running")
# Outbox rows that never reached anyone do not count against the cap.
NOT_SENT = ("failed", "cancelled")
BATCH = 1_000  # rows per INSERT when recording


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


@dataclass(frozen=True)
class Reason:
    code: Code
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code.value, "detail": self.detail}


@dataclass(frozen=True)
class Decision:
    """Whether one account starts one play now, with everything that decided it."""

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
    def decision(self) -> str:
        return "enroll" if self.enroll else "skip"

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
    parts = [sa.case((f, sa.literal(t + ",", sa.Text)), else_=sa.literal("", sa.Text)) for t, f in zip(triggers, truths)]
    text = reduce(lambda a, b: a + b, parts) if parts else sa.literal("", sa.Text)
    return text, truths


def split_fired(text: str | None) -> tuple[str, ...]:
    return tuple(t for t in (text or "").split(",") if t)


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

    def walk(actions: Iterable[Any]) -> None:
        for a in actions:
            if isinstance(a, n.EmailStep):
                path = a.to.path
                if len(path) == 2 and path[0] == "account" and catalog.entity_field("account", path[1]) is not None:
                    found.add(path[1])
            elif isinstance(a, n.BranchStep):
                walk(a.then)
                walk(a.otherwise)

    walk(step.action for step in plan.steps)
    return sorted(found)


def sends_email(plan: Plan) -> bool:
    def walk(actions: Iterable[Any]) -> bool:
        return any(isinstance(a, n.EmailStep) or (isinstance(a, n.BranchStep) and (walk(a.then) or walk(a.otherwise)))
                   for a in actions)

    return walk(step.action for step in plan.steps)


# --------------------------------------------------------------------------
# The candidate query


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), dt.timezone.utc)


@dataclass
class CandidateQuery:
    """Builds the one SELECT that lists every (account, play) candidate with its facts."""

    catalog: Catalog
    plans: dict[str, Plan]
    today: dt.date
    dialect: str
    settings: Settings = field(default_factory=Settings)
    account_ids: Sequence[str] | None = None

    def plays(self) -> list[str]:
        """Plays that can start: compiled, and started by at least one trigger."""
        return [p for p in sorted(self.plans) if p in self.catalog.plays and self.catalog.triggers_starting(p)]

    def branch(self, play: str) -> sa.Select:
        plan = self.plans[play]
        c = compiler(self.catalog, self.today, self.dialect)
        acc = c.accounts
        triggers = [t.name for t in self.catalog.triggers_starting(play)]
        fired, truths = fired_list(c, triggers)
        if plan.ungated or plan.gate is None:
            failure: ColumnElement[Any] = sa.cast(sa.null(), sa.Text)
        elif plan.gate not in self.catalog.gates:
            raise EnrollError(f"play {play}: gate '{plan.gate}' is not declared")
        else:
            failure = gate_failure(c, plan.gate)
        route = route_column(c, self.settings.route)
        arr = arr_column(c)

        enr = Base.metadata.tables["enrollments"]
        same = (sa.select(enr.c.account_id, sa.func.count().label("n"))
                .where(enr.c.play == play, enr.c.status.in_(ACTIVE))
                .group_by(enr.c.account_id).subquery("e_same"))
        last = (sa.select(enr.c.account_id, sa.func.max(sa.func.coalesce(enr.c.ended_at, enr.c.started_at)).label("v"))
                .where(enr.c.play == play, enr.c.status.not_in(ACTIVE))
                .group_by(enr.c.account_id).subquery("e_last"))
        src = c.from_clause()
        src = src.outerjoin(same, same.c.account_id == acc.c.id).outerjoin(last, last.c.account_id == acc.c.id)

        other: ColumnElement[Any] = sa.cast(sa.null(), sa.Text)
        if not plan.concurrent:
            concurrent = sorted(p for p, pl in self.plans.items() if pl.concurrent)
            others = (sa.select(enr.c.account_id, sa.func.min(enr.c.play).label("v"))
                      .where(enr.c.status.in_(ACTIVE), enr.c.play != play, enr.c.play.not_in(concurrent))
                      .group_by(enr.c.account_id).subquery("e_other"))
            src = src.outerjoin(others, others.c.account_id == acc.c.id)
            other = others.c.v

        emails: ColumnElement[Any] = sa.literal(0, sa.Integer)
        out = Base.metadata.tables["outbox"]
        since = _day_start(self.today + dt.timedelta(days=1 - self.settings.email_cap_days))
        for f in email_fields(plan, self.catalog):
            sub = (sa.select(out.c.recipient, sa.func.count().label("n"))
                   .where(out.c.channel == "email", out.c.created_at >= since, out.c.status.not_in(NOT_SENT))
                   .group_by(out.c.recipient).subquery(f"o_{f}"))
            src = src.outerjoin(sub, sub.c.recipient == acc.c[f])
            got = sa.func.coalesce(sub.c.n, 0)
            emails = sa.case((got > emails, got), else_=emails)  # the most-emailed contact counts

        query = sa.select(
            acc.c.id.label("account_id"),
            sa.literal(play, sa.Text).label("play"),
            fired.label("fired"),
            failure.label("gate_failure"),
            route.label("route"),
            arr.label("arr"),
            sa.func.coalesce(same.c.n, 0).label("active_same"),
            last.c.v.label("last_end"),
            other.label("other_play"),
            emails.label("emails_recent"),
        ).select_from(src).where(sa.or_(*truths))
        if self.account_ids is not None:
            query = query.where(acc.c.id.in_(list(self.account_ids)))
        return query

    def query(self) -> sa.Select | None:
        branches = [self.branch(p) for p in self.plays()]
        if not branches:
            return None
        u = (sa.union_all(*branches) if len(branches) > 1 else branches[0]).subquery("candidates")
        return sa.select(u).order_by(id_order(u.c.account_id, self.dialect), u.c.play)


# --------------------------------------------------------------------------
# Facts -> decisions


@dataclass
class _Candidate:
    row: Any
    plan: Plan
    reasons: list[Reason]


def _as_date(v: Any) -> dt.date | None:
    if v is None:
        return None
    if isinstance(v, dt.datetime):
        return (v.astimezone(dt.timezone.utc) if v.tzinfo else v).date()
    if isinstance(v, dt.date):
        return v
    return dt.datetime.fromisoformat(str(v)).date()  # SQLite text when a type got lost in the UNION


def _facts_reasons(row: Any, plan: Plan, today: dt.date, settings: Settings) -> list[Reason]:
    reasons: list[Reason] = []
    if row.gate_failure is not None:
        reasons.append(Reason(Code.GATE_FAILED, f"gate {plan.gate}: not met: {row.gate_failure}"))
    if int(row.active_same or 0) > 0:
        reasons.append(Reason(Code.ALREADY_ENROLLED, f"already in {plan.play}"))
    else:
        last = _as_date(row.last_end)
        if last is not None:
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
    if row.other_play is not None and not plan.concurrent:
        reasons.append(Reason(Code.IN_OTHER_PLAY, f"already in {row.other_play}; one expansion play at a time"))
    recent = int(row.emails_recent or 0)
    if sends_email(plan) and recent >= settings.email_cap:
        reasons.append(Reason(Code.FREQUENCY_CAP, f"{recent} emails to the contact in the last "
                                                  f"{settings.email_cap_days} days (cap {settings.email_cap})"))
    return reasons


def _days(d: float) -> str:
    return f"{d:g} day" + ("" if d == 1 else "s")


def _decide_account(rows: Iterable[Any], plans: dict[str, Plan], today: dt.date,
                    settings: Settings) -> list[Decision]:
    cands = [_Candidate(r, plans[r.play], _facts_reasons(r, plans[r.play], today, settings)) for r in rows]
    # Priority only decides between plays that could otherwise start now.
    exclusive = sorted((c for c in cands if not c.reasons and not c.plan.concurrent),
                       key=lambda c: (-c.plan.priority, c.plan.play))
    for loser in exclusive[1:]:
        win = exclusive[0].plan
        loser.reasons.append(Reason(Code.LOWER_PRIORITY, f"{win.play} (priority {win.priority}) starts instead "
                                                         f"(priority {loser.plan.priority})"))
    out = []
    for c in cands:
        r = c.row
        out.append(Decision(
            account_id=r.account_id, play=c.plan.play, enroll=not c.reasons, triggers=split_fired(r.fired),
            reasons=tuple(c.reasons), plan_hash=c.plan.hash, route=r.route,
            arr=float(r.arr) if r.arr is not None else None, gate_failure=r.gate_failure,
            active=int(r.active_same or 0) > 0,
        ))
    return out


def decide(conn: Connection, catalog: Catalog, plans: Sequence[Plan] | Mapping[str, Plan], today: dt.date,
           settings: Settings | None = None, account_ids: Sequence[str] | None = None) -> Iterator[Decision]:
    """Every candidate's decision, streamed in account order (then play).

    `account_ids` restricts the sweep (for `why`); None: every account.
    """
    settings = settings or Settings()
    pm = plan_map(plans)
    q = CandidateQuery(catalog, pm, today, conn.dialect.name, settings, account_ids).query()
    if q is None:
        return
    for _, rows in itertools.groupby(stream(conn, q), key=lambda r: r.account_id):
        yield from _decide_account(rows, pm, today, settings)


def decision_set(store: Store, catalog: Catalog, plans: Sequence[Plan] | Mapping[str, Plan], today: dt.date,
                 settings: Settings | None = None, account_ids: Sequence[str] | None = None) -> list[Decision]:
    """All decisions as a list (tests, small stores; a sweep should use `decide` or `record`)."""
    with store.connect() as conn:
        return list(decide(conn, catalog, plans, today, settings, account_ids))


# --------------------------------------------------------------------------
# Recording


@dataclass(frozen=True)
class NewEnrollment:
    """An enrollment row `record` wrote: what the sweep activity must start."""

    id: int
    workflow_id: str
    play: str
    account_id: str
    plan_hash: str
    trigger: str | None
    route: str | None


@dataclass
class SweepResult:
    enrolled: list[NewEnrollment] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)  # reason code -> candidates
    decisions: int = 0


def record(store: Store, catalog: Catalog, plans: Sequence[Plan] | Mapping[str, Plan], today: dt.date,
           settings: Settings | None = None, *, status: str = "pending", now: dt.datetime | None = None,
           account_ids: Sequence[str] | None = None) -> SweepResult:
    """Decide, store every decision, and write an enrollment row per account to start.

    One transaction: either the whole sweep's decisions and enrollments are
    stored, or none. Enrollments get `status` (`pending` until the workflow
    has started; pass `running` if the caller starts it first), the play's
    plan hash and workflow id `play:<play>:<account>`. A re-run sees the
    pending rows and skips those accounts (`already_enrolled`).
    """
    now = now or utcnow()
    dec_t = Base.metadata.tables["enrollment_decisions"]
    enr_t = Base.metadata.tables["enrollments"]
    result = SweepResult()
    with store.begin() as conn:
        for batch in chunked(decide(conn, catalog, plans, today, settings, account_ids), BATCH):
            conn.execute(dec_t.insert(), [{
                "account_id": d.account_id, "play": d.play, "decision": "enrolled" if d.enroll else "skipped",
                "trigger": d.triggers[0] if d.triggers else None, "plan_hash": d.plan_hash,
                "reasons": d.reasons_json(), "at": now,
            } for d in batch])
            result.decisions += len(batch)
            for d in batch:
                if not d.enroll:
                    result.skipped.update(d.codes)
                    continue
                new_id = conn.execute(enr_t.insert().values(
                    workflow_id=d.workflow_id, play=d.play, account_id=d.account_id, plan_hash=d.plan_hash,
                    trigger=d.triggers[0] if d.triggers else None, route=d.route, status=status,
                    started_at=now, reason=d.reasons_json(),
                ).returning(enr_t.c.id)).scalar_one()
                result.enrolled.append(NewEnrollment(int(new_id), d.workflow_id, d.play, d.account_id,
                                                     d.plan_hash, d.triggers[0] if d.triggers else None, d.route))
        store.audit(conn, "sweep", "enroll", None, {
            "today": today.isoformat(), "decisions": result.decisions, "enrolled": len(result.enrolled),
            "skipped": dict(result.skipped)})
    return result


__all__ = ["ACTIVE", "Code", "Decision", "EnrollError", "NewEnrollment", "Reason", "Settings", "SweepResult",
           "CandidateQuery", "decide", "decision_set", "gate_failure", "record", "workflow_id"]
