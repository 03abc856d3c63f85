"""The built-in pipeline in the store: stage changes with their reasons, SLA breaches, the overview.

The stages and their rules are dsl/pipeline.py's table; this module writes
and reads `opportunities`, `stage_history`, `sla_breaches` and `users.manager`.
The SLA timers themselves are Temporal workflows (workflows/pipeline.py):
they call `entry` to learn where a deal stands and `record_breach` when a
deadline passes. Reports count `breach_counts` by stage and owner.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dsl import pipeline
from dsl.pipeline import PipelineError
from engine import actions, outcomes
from engine.schema import Base
from engine.store import Store, insert_ignore

TABLES = Base.metadata.tables
OPPS, STAGES, BREACHES, USERS, AUDIT = (TABLES[t] for t in ("opportunities", "stage_history", "sla_breaches",
                                                            "users", "audit_log"))


class UnknownOpportunity(PipelineError):
    """No opportunity has this id."""


@dataclass(frozen=True)
class Move:
    """What a stage change did. `changed` False: the deal was already at that stage (nothing written)."""

    opportunity_id: str
    account_id: str
    previous: str | None
    stage: str
    at: dt.datetime
    actor: str
    reason: str | None
    changed: bool
    play: str | None = None  # the play that opened the deal


@dataclass(frozen=True)
class Entry:
    """Where a deal stands: its stage and since when (the latest history row into that stage)."""

    opportunity_id: str
    account_id: str
    play: str | None
    title: str | None
    stage: str
    entered_at: dt.datetime
    owner: str | None
    closed: bool


def change_stage(store: Store, opportunity_id: str, stage: str, *, at: dt.datetime, actor: str,
                 reason: str | None = None) -> Move:
    """Move a deal to `stage` with who and why, in one transaction (PipelineError: refused, nothing written)."""
    pipeline.stage(stage)
    pipeline.check_reason(reason)
    with store.begin() as conn:
        q = sa.select(OPPS.c.stage, OPPS.c.account_id, OPPS.c.play).where(OPPS.c.id == opportunity_id)
        if conn.dialect.name == "postgresql":
            q = q.with_for_update()  # two movers of one deal: the second sees the first's stage
        row = conn.execute(q).first()
        if row is None:
            raise UnknownOpportunity(f"no opportunity '{opportunity_id}'")
        previous, account_id, play = row
        if previous == stage:
            return Move(opportunity_id, account_id, previous, stage, at, actor, reason, changed=False, play=play)
        actions.move_stage(conn, opportunity_id, previous, stage, at, actor, reason)
        if stage in pipeline.CLOSED:  # won or lost: the outcome the reports read, in the same transaction
            outcomes.record_outcome(conn, outcomes.OutcomeInput(
                account_id, outcomes.OUTCOME_OF_STAGE[stage], at=at, opportunity_id=opportunity_id, reason=reason,
                source="pipeline"))
        conn.execute(AUDIT.insert().values(at=at, actor=actor, action="opportunity.stage", subject=opportunity_id,
                                           detail={"from": previous, "to": stage, "reason": reason}))
    return Move(opportunity_id, account_id, previous, stage, at, actor, reason, changed=True, play=play)


def entry(conn: Connection, opportunity_id: str) -> Entry | None:
    """The deal's current stage and when it entered it (None: no such deal)."""
    opp = conn.execute(sa.select(OPPS.c.account_id, OPPS.c.play, OPPS.c.title, OPPS.c.stage, OPPS.c.owner,
                                 OPPS.c.created_at, OPPS.c.closed_at)
                       .where(OPPS.c.id == opportunity_id)).first()
    if opp is None:
        return None
    entered = conn.execute(sa.select(sa.func.max(STAGES.c.at)).where(
        STAGES.c.opportunity_id == opportunity_id, STAGES.c.stage == opp.stage)).scalar()
    known = pipeline.BY_NAME.get(opp.stage)
    return Entry(opportunity_id, opp.account_id, opp.play, opp.title, opp.stage,
                 entered if entered is not None else opp.created_at, opp.owner,
                 closed=opp.closed_at is not None or (known is not None and known.closed))


def manager_of(conn: Connection, user_id: str | None) -> str | None:
    if user_id is None:
        return None
    return conn.execute(sa.select(USERS.c.manager).where(USERS.c.id == user_id)).scalar()


def breach_key(opportunity_id: str, stage: str, entered_at: dt.datetime, level: str) -> str:
    """One key per (deal, stage entry, level): the breach row's and its notification's idempotency key."""
    return f"sla:{opportunity_id}:{stage}:{entered_at.astimezone(dt.timezone.utc):%Y%m%dT%H%M%S.%fZ}:{level}"


def record_breach(conn: Connection, e: Entry, *, level: str, due_at: dt.datetime, at: dt.datetime,
                  notified: str | None) -> str:
    """The breach row (once per key: a retry writes nothing); returns its key."""
    key = breach_key(e.opportunity_id, e.stage, e.entered_at, level)
    insert_ignore(conn, BREACHES, [{
        "key": key, "opportunity_id": e.opportunity_id, "account_id": e.account_id, "stage": e.stage,
        "level": level, "owner": e.owner, "notified": notified, "entered_at": e.entered_at, "due_at": due_at,
        "at": at,
    }], ["key"])
    return key


def told(store: Store) -> dict[tuple[str, str, dt.datetime], dict[str, str | None]]:
    """Who each breach told, by (opportunity, stage, entered at): level -> user id (None: nobody to tell)."""
    found: dict[tuple[str, str, dt.datetime], dict[str, str | None]] = {}
    with store.connect() as conn:
        for opp, stage, entered_at, level, notified in conn.execute(sa.select(
                BREACHES.c.opportunity_id, BREACHES.c.stage, BREACHES.c.entered_at, BREACHES.c.level,
                BREACHES.c.notified)):
            found.setdefault((opp, stage, entered_at), {})[level] = notified
    return found


def breach_counts(store: Store) -> dict[tuple[str, str | None], int]:
    """SLA breaches (owner level: one per missed deadline) by (stage, owner)."""
    with store.connect() as conn:
        return {(s, o): int(n) for s, o, n in conn.execute(
            sa.select(BREACHES.c.stage, BREACHES.c.owner, sa.func.count())
            .where(BREACHES.c.level == "owner").group_by(BREACHES.c.stage, BREACHES.c.owner))}


def entries(store: Store, *, include_closed: bool = False) -> list[Entry]:
    """Every deal (open ones unless `include_closed`) with its stage and since when, oldest entry first."""
    with store.connect() as conn:
        latest = (sa.select(STAGES.c.opportunity_id, STAGES.c.stage, sa.func.max(STAGES.c.at).label("at"))
                  .group_by(STAGES.c.opportunity_id, STAGES.c.stage).subquery())
        q = (sa.select(OPPS.c.id, OPPS.c.account_id, OPPS.c.play, OPPS.c.title, OPPS.c.stage, OPPS.c.owner,
                       OPPS.c.created_at, OPPS.c.closed_at, latest.c.at)
             .select_from(OPPS.outerjoin(latest, sa.and_(latest.c.opportunity_id == OPPS.c.id,
                                                           latest.c.stage == OPPS.c.stage))))
        if not include_closed:
            q = q.where(OPPS.c.closed_at.is_(None))
        rows = conn.execute(q).all()
    found = [Entry(r.id, r.account_id, r.play, r.title, r.stage, r.at if r.at is not None else r.created_at,
                   r.owner, closed=r.closed_at is not None) for r in rows]
    return sorted(found, key=lambda e: (e.entered_at, e.opportunity_id))


__all__ = ["Entry", "Move", "PipelineError", "UnknownOpportunity", "breach_counts", "breach_key", "told",
           "change_stage", "entries", "entry", "manager_of", "record_breach"]
