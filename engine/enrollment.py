"""Enrollment rows: every write to, and every read of, `enrollments` and `enrollment_decisions`.

Which accounts should start which play is decided in engine/enroll.py
(`decide`, read only); this module keeps the record of it, so the
lifecycle of an enrollment is in one place:

    record        the sweep's decisions, and one `pending` row per account to start
                  (an outbox of starts, in the same transaction)
    pending       the pending rows, in id order, a batch at a time
    record_starts pending -> running (started, or found open and joined), or -> failed
                  (not startable: an empty anchor, a play no longer in the rules)
    running       the rows the store thinks are running
    record_ends   running -> completed | failed | cancelled | terminated | timed_out | lost
                  (the workflow closed; `ended_at` is what cooldowns count from)
    cancel_open   running or pending -> cancelled (the demo's in-process server is gone)

Reads for the other layers: `active_plays` (an account's running plays),
`every` (all rows, for reports), `first_sweep` (the decisions of the first
sweep a store recorded). The workflows/ package calls these and touches no
table itself.

Each function is one transaction, run again over a transient fault of the
store (a PostgreSQL restart, a SQLite lock held too long: engine/store.py
`retrying`, bounded, with backoff); a fault that lasts is `StoreUnreachable`.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa

from dsl.catalog import Catalog
from dsl.plan import Plan
from engine import changes
from engine.enroll import ACTIVE, Decision, Scratch, Settings, decide, plan_map, prepare
from engine.schema import Base, utcnow
from engine.store import Store, chunked

BATCH = 1_000  # rows per INSERT when recording
ENROLLMENTS = Base.metadata.tables["enrollments"]
DECISIONS = Base.metadata.tables["enrollment_decisions"]

P = ParamSpec("P")
T = TypeVar("T")


def _retried(work: Callable[Concatenate[Store, P], T]) -> Callable[Concatenate[Store, P], T]:
    """`work(store, ...)`, run again over a transient store fault (`Store.retry`)."""

    @functools.wraps(work)
    def run(store: Store, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return store.retry(lambda: work(store, *args, **kwargs))

    return run


# --------------------------------------------------------------------------
# Recording a sweep's decisions


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
    """What `record` stored. A candidate is one (account, play) decision."""

    enrolled: list[NewEnrollment] = field(default_factory=list)
    decisions: int = 0
    accounts: int = 0  # distinct accounts with at least one candidate
    # reason code -> skipped candidates that carry it; a skipped candidate
    # carries every code that applies, so these add up to `skipped` or more.
    reasons: Counter[str] = field(default_factory=Counter)
    full: bool = True  # every account evaluated (else only those engine/changes.py scoped)
    why_full: str = ""  # why it was full when asked for an incremental sweep
    scope: int | None = None  # accounts in an incremental sweep's scope

    @property
    def skipped(self) -> int:
        """Candidates not enrolled."""
        return self.decisions - len(self.enrolled)


@_retried
def record(store: Store, catalog: Catalog, plans: Sequence[Plan] | Mapping[str, Plan], today: dt.date,
           settings: Settings | None = None, *, status: str = "pending", now: dt.datetime | None = None,
           account_ids: Sequence[str] | None = None, incremental: bool = False) -> SweepResult:
    """Decide, store every decision, and write an enrollment row per account to start.

    `incremental`: evaluate only the accounts engine/changes.py says may
    decide differently since the last recorded sweep (full when it cannot
    tell). Every recorded sweep of all accounts leaves the mark the next
    incremental one starts from.

    One transaction: either the whole sweep's decisions and enrollments are
    stored, or none, so running it again after a fault is safe (if the fault
    hid a commit that went through, the second run finds the pending rows:
    it stores a second set of decisions, all skipped, and enrolls nobody
    twice). Enrollments
    get `status` (`pending` until the workflow has started; pass `running`
    if the caller starts it first), the play's plan hash and workflow id
    `play:<play>:<account>`. A re-run sees the pending rows and skips those
    accounts (`already_enrolled`).
    """
    now = now or utcnow()
    result = SweepResult()
    last_account: str | None = None
    pm = plan_map(plans)
    knobs = settings or Settings()
    with store.begin() as conn, Scratch(conn) as scratch:
        scope = None
        stream: Iterator[Decision]
        if account_ids is None:
            scope = changes.begin(conn, scratch, catalog, pm, knobs, today, full=not incremental)
            result.full, result.why_full = scope.full, scope.why
            if scope.ids is not None:
                result.scope = int(conn.execute(sa.select(sa.func.count()).select_from(scope.ids)).scalar_one())
            stream = prepare(scratch, catalog, pm, today, knobs, scope.ids, scope.narrow)
        else:
            stream = decide(conn, catalog, pm, today, knobs, account_ids)
        lapsing: list[str] = []
        group: list[Decision] = []  # the current account's decisions, for its recheck
        for batch in chunked(stream, BATCH):
            conn.execute(DECISIONS.insert(), [{
                "account_id": d.account_id, "play": d.play, "decision": stored_decision(d),
                "trigger": d.triggers[0] if d.triggers else None, "plan_hash": d.plan_hash,
                "reasons": d.reasons_json(), "at": now,
            } for d in batch])
            result.decisions += len(batch)
            for d in batch:
                if d.account_id != last_account:  # decisions come sorted by account
                    if group and changes.recheck(group, pm):
                        lapsing.append(group[0].account_id)
                    group = []
                    result.accounts += 1
                    last_account = d.account_id
                group.append(d)
                if not d.enroll:
                    result.reasons.update(d.codes)
                    continue
                new_id = conn.execute(ENROLLMENTS.insert().values(
                    workflow_id=d.workflow_id, play=d.play, account_id=d.account_id, plan_hash=d.plan_hash,
                    trigger=d.triggers[0] if d.triggers else None, route=d.route, status=status,
                    started_at=now, reason=d.reasons_json(),
                ).returning(ENROLLMENTS.c.id)).scalar_one()
                result.enrolled.append(NewEnrollment(int(new_id), d.workflow_id, d.play, d.account_id,
                                                     d.plan_hash, d.triggers[0] if d.triggers else None, d.route))
        if group and changes.recheck(group, pm):
            lapsing.append(group[0].account_id)
        if scope is not None:
            changes.finish(conn, scope, today, lapsing)
        store.audit(conn, "sweep", "enroll", None, {
            "today": today.isoformat(), "decisions": result.decisions, "accounts": result.accounts,
            "enrolled": len(result.enrolled), "skipped": result.skipped, "reasons": dict(result.reasons),
            "full": result.full, "scope": result.scope})
    return result


def stored_decision(d: Decision) -> str:
    """`enrolled`, `held_out` (a play's control group: reports compare it) or `skipped`."""
    return "enrolled" if d.enroll else "held_out" if d.held_out else "skipped"


# --------------------------------------------------------------------------
# Starting and ending


@dataclass(frozen=True)
class EnrollmentRow:
    """An enrollment as the sweep's start and reconcile steps see it."""

    id: int
    workflow_id: str
    play: str
    account_id: str
    run_id: str | None = None


def _rows(result: Any) -> list[EnrollmentRow]:
    return [EnrollmentRow(int(r.id), r.workflow_id, r.play, r.account_id, r.run_id) for r in result]


_ROW_COLUMNS = (ENROLLMENTS.c.id, ENROLLMENTS.c.workflow_id, ENROLLMENTS.c.play, ENROLLMENTS.c.account_id,
                ENROLLMENTS.c.run_id)


@_retried
def pending(store: Store, after_id: int, limit: int) -> tuple[list[EnrollmentRow], bool]:
    """Up to `limit` pending rows with an id above `after_id`, in id order; and whether more follow."""
    with store.connect() as conn:
        rows = _rows(conn.execute(sa.select(*_ROW_COLUMNS)
                                  .where(ENROLLMENTS.c.status == "pending", ENROLLMENTS.c.id > after_id)
                                  .order_by(ENROLLMENTS.c.id).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


@dataclass(frozen=True)
class Start:
    """What became of one pending row: `running` (with its run) or `failed` (with `ended_at`)."""

    id: int
    status: str
    run_id: str | None = None
    plan_hash: str | None = None  # the plan the run was started with
    ended_at: dt.datetime | None = None
    note: str | None = None  # added to the row's reason, for `playbook status` and people


@_retried
def record_starts(store: Store, starts: Sequence[Start]) -> None:
    """Write what the start attempts did, in one transaction."""
    with store.begin() as conn:
        for s in starts:
            given = {"run_id": s.run_id, "plan_hash": s.plan_hash, "ended_at": s.ended_at}
            values: dict[str, Any] = {"status": s.status, **{k: v for k, v in given.items() if v is not None}}
            if s.note is not None:
                reason = conn.execute(sa.select(ENROLLMENTS.c.reason).where(ENROLLMENTS.c.id == s.id)).scalar() or {}
                values["reason"] = {**reason, "note": s.note}
            conn.execute(ENROLLMENTS.update().where(ENROLLMENTS.c.id == s.id).values(**values))
        # A run that did not start frees its account for the next sweep.
        changes.mark_enrollments(conn, [s.id for s in starts if s.status not in ACTIVE])


@_retried
def running(store: Store) -> list[EnrollmentRow]:
    """Every row the store thinks is running, in id order."""
    with store.connect() as conn:
        return _rows(conn.execute(sa.select(*_ROW_COLUMNS).where(ENROLLMENTS.c.status == "running")
                                  .order_by(ENROLLMENTS.c.id)))


@dataclass(frozen=True)
class End:
    id: int
    status: str  # completed | failed | cancelled | terminated | timed_out | lost
    at: dt.datetime


@_retried
def record_ends(store: Store, ends: Sequence[End]) -> None:
    """Close running rows (a row no longer running is left as it is)."""
    if not ends:
        return
    with store.begin() as conn:
        for e in ends:
            conn.execute(ENROLLMENTS.update().where(ENROLLMENTS.c.id == e.id, ENROLLMENTS.c.status == "running")
                         .values(status=e.status, ended_at=e.at))
        changes.mark_enrollments(conn, [e.id for e in ends])


@_retried
def cancel_open(store: Store, at: dt.datetime, note: str) -> int:
    """Mark every running or pending row `cancelled` at `at`, with `note`; how many."""
    with store.begin() as conn:
        rows = list(conn.execute(sa.select(ENROLLMENTS.c.id, ENROLLMENTS.c.reason)
                                 .where(ENROLLMENTS.c.status.in_(ACTIVE))))
        for row_id, reason in rows:
            conn.execute(ENROLLMENTS.update().where(ENROLLMENTS.c.id == row_id).values(
                status="cancelled", ended_at=at, reason={**(reason or {}), "note": note}))
        changes.mark_enrollments(conn, [row_id for row_id, _ in rows])
    return len(rows)


# --------------------------------------------------------------------------
# Reads


@_retried
def active_plays(store: Store, account_id: str) -> list[str]:
    """The plays the account is running now, sorted."""
    with store.connect() as conn:
        return sorted(conn.execute(sa.select(ENROLLMENTS.c.play).where(
            ENROLLMENTS.c.account_id == account_id, ENROLLMENTS.c.status == "running")).scalars())


@dataclass(frozen=True)
class Enrollment:
    """A whole enrollment row, for reports."""

    id: int
    workflow_id: str
    run_id: str | None
    play: str
    account_id: str
    plan_hash: str
    trigger: str | None
    route: str | None
    status: str
    started_at: dt.datetime
    ended_at: dt.datetime | None
    reason: dict[str, Any] | None


@_retried
def every(store: Store) -> list[Enrollment]:
    """Every enrollment row, in id order."""
    with store.connect() as conn:
        return [Enrollment(**r._mapping) for r in conn.execute(sa.select(ENROLLMENTS).order_by(ENROLLMENTS.c.id))]


@dataclass(frozen=True)
class StoredDecision:
    account_id: str
    play: str
    decision: str  # enrolled | held_out | skipped
    reasons: dict[str, Any]  # {"triggers": [...], "route": ..., "reasons": [{"code", "detail"}]}


@_retried
def first_sweep(store: Store) -> list[StoredDecision]:
    """The decisions of the first sweep the store recorded (empty if none)."""
    with store.connect() as conn:
        first_at = conn.execute(sa.select(sa.func.min(DECISIONS.c.at))).scalar()
        if first_at is None:
            return []
        return [StoredDecision(a, p, d, r or {}) for a, p, d, r in conn.execute(
            sa.select(DECISIONS.c.account_id, DECISIONS.c.play, DECISIONS.c.decision, DECISIONS.c.reasons)
            .where(DECISIONS.c.at == first_at))]


__all__ = ["End", "Enrollment", "EnrollmentRow", "NewEnrollment", "Start", "StoredDecision", "SweepResult", "active_plays", "stored_decision",
           "cancel_open", "every", "first_sweep", "pending", "record", "record_ends", "record_starts", "running"]
