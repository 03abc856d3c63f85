"""What plays and customers did, in the store: the outbox, tasks and the pipeline.

connectors/store.py writes these tables as plays act (inside its own
transaction: `move_stage` takes its connection); the simulation records
what customers and the CRM did (`unsubscribe`, `record_reply`, `close_open_deals`;
outcomes with their deals: engine/outcomes.py), and the `act` activity a hard
bounce (`bounce`); the
demo and the simulation report read them (`outbox_totals`, `emails`,
`tasks`, `stage_moves`). workflows/ touches none of these tables itself.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dsl import pipeline
from engine.schema import Base
from engine.store import Store, insert_ignore

TABLES = Base.metadata.tables
OUTBOX, TASKS, OPPS, STAGES, CONTACTS, INBOUND = (
    TABLES[t] for t in ("outbox", "tasks", "opportunities", "stage_history", "contacts", "inbound_events"))
CLOSED = pipeline.CLOSED


# --------------------------------------------------------------------------
# The pipeline and contacts


def move_stage(conn: Connection, opportunity_id: str, previous: str | None, stage: str, at: dt.datetime,
               actor: str, reason: str | None = None) -> None:
    """Move an opportunity from `previous` to `stage` (closing it at a closed stage), with a
    `stage_history` row saying when, who and why. A stage outside dsl/pipeline.py's table or
    a move it forbids (out of a closed stage) raises `pipeline.PipelineError`, nothing written."""
    pipeline.check_move(previous, stage)
    pipeline.check_reason(reason)
    conn.execute(OPPS.update().where(OPPS.c.id == opportunity_id).values(
        stage=stage, updated_at=at, closed_at=at if stage in CLOSED else None))
    conn.execute(STAGES.insert().values(opportunity_id=opportunity_id, from_stage=previous, stage=stage, at=at,
                                        actor=actor, reason=reason))


def close_open_deals(store: Store, account_id: str, play: str | None, stage: str, at: dt.datetime,
                     actor: str, reason: str | None = None) -> int:
    """Move the account's open opportunities (of `play`; None: of any play) to `stage`; how many."""
    with store.begin() as conn:
        q = sa.select(OPPS.c.id, OPPS.c.stage).where(OPPS.c.account_id == account_id, OPPS.c.closed_at.is_(None))
        if play is not None:
            q = q.where(OPPS.c.play == play)
        rows = conn.execute(q).all()
        for opp_id, previous in rows:
            move_stage(conn, opp_id, previous, stage, at, actor, reason)
    return len(rows)


REPLIED = "replied"  # the inbound event of a reply


def record_reply(store: Store, account_id: str, play: str | None, message_key: str | None, at: dt.datetime,
                 key: str, *, source: str = "simulation") -> None:
    """A reply a play has already been told of (the simulation signals its plays itself): an
    `inbound_events` row `replied`, marked done, with the outbox key it answers in the payload
    (`message`); idempotent by `key`. Replies from providers arrive through engine/inbound.py."""
    with store.begin() as conn:
        insert_ignore(conn, INBOUND, [{"key": key, "source": source, "kind": REPLIED, "account_id": account_id,
                                       "play": play, "occurred_at": at, "received_at": at,
                                       "payload": {"message": message_key}, "signal_state": "done",
                                       "signal_attempts": 0}], ["key"])


def unsubscribe(store: Store, email: str, at: dt.datetime) -> None:
    """The contact with this address unsubscribed at `at` (an earlier unsubscribe is kept)."""
    with store.begin() as conn:
        conn.execute(CONTACTS.update().where(CONTACTS.c.email == email, CONTACTS.c.unsubscribed_at.is_(None))
                     .values(unsubscribed_at=at))


def bounce(store: Store, email: str, at: dt.datetime) -> int:
    """A mail server refused this address for good (a hard bounce) at `at`: every contact with it
    is skipped by later sends, like an unsubscribe (an earlier bounce is kept). How many contacts."""
    with store.begin() as conn:
        done = conn.execute(CONTACTS.update().where(CONTACTS.c.email == email, CONTACTS.c.bounced_at.is_(None))
                            .values(bounced_at=at))
    return int(done.rowcount or 0)


# --------------------------------------------------------------------------
# Reads for reports


@dataclass(frozen=True)
class Email:
    created_at: dt.datetime
    account_id: str | None
    play: str | None
    recipient: str
    subject: str | None
    body: str
    status: str
    key: str  # idempotency key


@dataclass(frozen=True)
class TaskRecord:
    created_at: dt.datetime
    assignee: str | None
    account_id: str | None
    play: str | None
    title: str


@dataclass(frozen=True)
class StageMove:
    at: dt.datetime
    account_id: str
    from_stage: str | None
    stage: str
    actor: str | None


@dataclass(frozen=True)
class OutboxTotals:
    by_channel: dict[str, int]  # channel -> messages written
    emails_cancelled: int  # to unsubscribed contacts: recorded, never sent
    first_pending_email: Email | None  # by account, then key: the same one for the same data
    top_assignees: dict[str | None, int]  # the five with most tasks (None: nobody)


def _email(r: sa.Row) -> Email:
    return Email(r.created_at, r.account_id, r.play, r.recipient, r.subject, r.body, r.status, r.idempotency_key)


_EMAIL_COLUMNS = (OUTBOX.c.created_at, OUTBOX.c.account_id, OUTBOX.c.play, OUTBOX.c.recipient, OUTBOX.c.subject,
                  OUTBOX.c.body, OUTBOX.c.status, OUTBOX.c.idempotency_key)


def outbox_totals(store: Store) -> OutboxTotals:
    with store.connect() as conn:
        by_channel = {c: int(n) for c, n in conn.execute(
            sa.select(OUTBOX.c.channel, sa.func.count()).group_by(OUTBOX.c.channel))}
        cancelled = conn.execute(sa.select(sa.func.count()).select_from(OUTBOX)
                                 .where(OUTBOX.c.channel == "email", OUTBOX.c.status == "cancelled")).scalar_one()
        # Ordered by account and key: ids and milliseconds depend on which activity ran first.
        sample = conn.execute(sa.select(*_EMAIL_COLUMNS).where(OUTBOX.c.channel == "email",
                                                                OUTBOX.c.status == "pending")
                              .order_by(OUTBOX.c.account_id, OUTBOX.c.idempotency_key).limit(1)).first()
        top = {a: int(n) for a, n in conn.execute(
            sa.select(TASKS.c.assignee, sa.func.count()).group_by(TASKS.c.assignee)
            .order_by(sa.func.count().desc(), TASKS.c.assignee).limit(5))}
    return OutboxTotals(dict(sorted(by_channel.items())), int(cancelled),
                        _email(sample) if sample is not None else None, top)


def emails(store: Store, before: dt.datetime) -> list[Email]:
    """Every email written before `before` (sent, pending or cancelled)."""
    with store.connect() as conn:
        return [_email(r) for r in conn.execute(sa.select(*_EMAIL_COLUMNS).where(
            OUTBOX.c.channel == "email", OUTBOX.c.created_at < before))]


def tasks(store: Store, before: dt.datetime) -> list[TaskRecord]:
    with store.connect() as conn:
        return [TaskRecord(*r) for r in conn.execute(sa.select(
            TASKS.c.created_at, TASKS.c.assignee, TASKS.c.account_id, TASKS.c.play, TASKS.c.title)
            .where(TASKS.c.created_at < before))]


def stage_moves(store: Store, before: dt.datetime) -> list[StageMove]:
    with store.connect() as conn:
        return [StageMove(*r) for r in conn.execute(sa.select(
            STAGES.c.at, OPPS.c.account_id, STAGES.c.from_stage, STAGES.c.stage, STAGES.c.actor)
            .join(OPPS, OPPS.c.id == STAGES.c.opportunity_id).where(STAGES.c.at < before))]


__all__ = ["Email", "OutboxTotals", "StageMove", "TaskRecord", "close_open_deals", "emails", "move_stage",
           "outbox_totals", "record_reply", "stage_moves", "tasks", "unsubscribe", "bounce"]
