"""Inbound provider events in the store: every write to, and read of, `inbound_events`,
and the look-ups that map an event to its account.

    record            store one event (idempotent by key); an unsubscribe or a hard
                      bounce marks the contact in the same transaction
    pending           the events whose plays have not been signalled yet, oldest first
    mark_signalled    pending -> done, with the plays signalled
    mark_retry        one more failed attempt (after `give_up_after` attempts: failed)
    account_of_*      which account an address, a CRM deal or a sent message belongs to

workflows/inbound.py records through `record` first and signals after, so an
event that arrived while Temporal was down stays `pending` and is delivered
later. Each function is one transaction, run again over a transient store
fault (engine/store.py `retrying`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from engine import outcomes
from engine.schema import Base, utcnow
from engine.store import Store, insert_ignore

TABLES = Base.metadata.tables
EVENTS, CONTACTS, OPPS, OUTBOX, ACCOUNTS = (TABLES[t] for t in (
    "inbound_events", "contacts", "opportunities", "outbox", "accounts"))


@dataclass(frozen=True)
class NewEvent:
    """One event to record: which account it is for, and what happened."""

    key: str  # `<source>:<provider's event id>`: a second delivery with the same key records nothing
    source: str
    kind: str
    account_id: str
    contact: str | None = None  # an address or a contact id
    play: str | None = None  # the play whose message this answers: only it is signalled (None: every play)
    stage: str | None = None
    occurred_at: dt.datetime | None = None
    payload: Any = None
    # Stop every later email to `contact`: contacts.bounced_at for a `bounced` event, else unsubscribed_at.
    suppress: bool = False


@dataclass(frozen=True)
class Recorded:
    id: int
    duplicate: bool  # the key was already stored: nothing was written


@dataclass(frozen=True)
class PendingEvent:
    id: int
    key: str
    source: str
    kind: str
    account_id: str
    play: str | None
    stage: str | None
    occurred_at: dt.datetime | None
    attempts: int


@dataclass
class Ambiguous(Exception):
    """An address that belongs to contacts of several accounts."""

    address: str
    accounts: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.address} is a contact of {len(self.accounts)} accounts ({', '.join(self.accounts[:5])})"


def record(store: Store, event: NewEvent) -> Recorded:
    """Store `event` once; a contact to suppress is marked in the same transaction (the first date kept)."""

    def work() -> Recorded:
        with store.begin() as conn:
            row = {"key": event.key, "source": event.source, "kind": event.kind, "account_id": event.account_id,
                   "contact": event.contact, "play": event.play, "stage": event.stage, "occurred_at": event.occurred_at,
                   "received_at": utcnow(), "payload": event.payload, "signal_state": "pending",
                   "signal_attempts": 0}
            # ON CONFLICT DO NOTHING, not a look-up first: two deliveries of one event racing
            # on PostgreSQL must not both count as new.
            new = insert_ignore(conn, EVENTS, [row], ["key"]) == 1
            event_id = conn.execute(sa.select(EVENTS.c.id).where(EVENTS.c.key == event.key)).scalar_one()
            if new and event.suppress and event.contact:
                _suppress(conn, event.account_id, event.contact, event.occurred_at or row["received_at"],
                          bounced=event.kind == "bounced")
            if new:
                _record_close(conn, event, event.occurred_at or row["received_at"])
            return Recorded(int(event_id), not new)

    return store.retry(work)


CLOSING = {"closed_won": "won", "closed_lost": "lost"}


def _record_close(conn: sa.Connection, event: NewEvent, at: dt.datetime) -> None:
    """A CRM that closes a deal (`closed_won` / `closed_lost`, or a stage change to Closed Won /
    Lost) gives an outcome (engine/outcomes.py), on the opportunity mirrored from the deal when
    the store has it; keyed by the deal, so a second close of it updates the same outcome."""
    outcome = CLOSING.get(event.kind) or (outcomes.OUTCOME_OF_STAGE.get(event.stage or "")
                                          if event.kind == "stage_changed" else None)
    if outcome is None:
        return
    deal = event.payload.get("objectId") if isinstance(event.payload, dict) else None
    opp = None if deal is None else conn.execute(
        sa.select(OPPS.c.id).where(OPPS.c.external_id == str(deal), OPPS.c.account_id == event.account_id)
        .order_by(OPPS.c.created_at.desc()).limit(1)).scalar()
    key = f"opportunity:{opp}" if opp else f"crm:{event.source}:{deal}" if deal is not None else f"crm:{event.key}"
    try:
        outcomes.record_outcome(conn, outcomes.OutcomeInput(
            event.account_id, outcome, at=at, play=event.play, opportunity_id=opp, source="crm", key=key))
    except outcomes.OutcomeError:  # the event is kept whatever the outcome's trouble; it is no reason to refuse it
        pass


def _suppress(conn: sa.Connection, account_id: str, contact: str, at: dt.datetime, *, bounced: bool) -> None:
    """contacts.bounced_at for a hard bounce, else unsubscribed_at: later sends skip either."""
    who = sa.or_(CONTACTS.c.id == contact, sa.func.lower(CONTACTS.c.email) == contact.lower())
    column = CONTACTS.c.bounced_at if bounced else CONTACTS.c.unsubscribed_at
    conn.execute(CONTACTS.update().where(who, CONTACTS.c.account_id == account_id, column.is_(None))
                 .values({column.name: at}))


def pending(store: Store, limit: int = 500, after_id: int = 0) -> list[PendingEvent]:
    """Events not yet signalled to their plays, in the order they were recorded."""

    def work() -> list[PendingEvent]:
        with store.connect() as conn:
            rows = conn.execute(sa.select(
                EVENTS.c.id, EVENTS.c.key, EVENTS.c.source, EVENTS.c.kind, EVENTS.c.account_id, EVENTS.c.play, EVENTS.c.stage,
                EVENTS.c.occurred_at, EVENTS.c.signal_attempts)
                .where(EVENTS.c.signal_state == "pending", EVENTS.c.id > after_id)
                .order_by(EVENTS.c.id).limit(limit)).all()
        return [PendingEvent(*r) for r in rows]

    return store.retry(work)


def mark_signalled(store: Store, signalled: Sequence[tuple[int, Sequence[str]]]) -> None:
    """Events -> done, each with the plays that got its signal (none: the account ran no play)."""
    if not signalled:
        return

    def work() -> None:
        with store.begin() as conn:
            for event_id, plays in signalled:
                conn.execute(EVENTS.update().where(EVENTS.c.id == event_id).values(
                    signal_state="done", signalled=list(plays), signal_error=None,
                    signal_attempts=EVENTS.c.signal_attempts + 1))

    store.retry(work)


def mark_retry(store: Store, event_id: int, error: str, give_up_after: int) -> bool:
    """One more failed attempt to signal; True if the event is now `failed` (no more attempts)."""

    def work() -> bool:
        with store.begin() as conn:
            attempts = int(conn.execute(sa.select(EVENTS.c.signal_attempts).where(EVENTS.c.id == event_id))
                           .scalar_one()) + 1
            failed = attempts >= give_up_after
            conn.execute(EVENTS.update().where(EVENTS.c.id == event_id).values(
                signal_attempts=attempts, signal_error=error[:500], signal_state="failed" if failed else "pending"))
            return failed

    return store.retry(work)


def counts(store: Store) -> dict[str, int]:
    """Events by signal state."""

    def work() -> dict[str, int]:
        with store.connect() as conn:
            return {s: int(n) for s, n in conn.execute(
                sa.select(EVENTS.c.signal_state, sa.func.count()).group_by(EVENTS.c.signal_state))}

    return store.retry(work)


# --------------------------------------------------------------------------
# Which account an event is for


def account_exists(store: Store, account_id: str) -> bool:
    def work() -> bool:
        with store.connect() as conn:
            return conn.execute(sa.select(ACCOUNTS.c.id).where(ACCOUNTS.c.id == account_id)).first() is not None

    return store.retry(work)


def account_of_contact(store: Store, address: str) -> str | None:
    """The account whose contact has this address (case-insensitive); `Ambiguous` if several do."""

    def work() -> list[str]:
        with store.connect() as conn:
            return sorted(set(conn.execute(sa.select(CONTACTS.c.account_id).where(
                sa.func.lower(CONTACTS.c.email) == address.strip().lower())).scalars()))

    found = store.retry(work)
    if len(found) > 1:
        raise Ambiguous(address, found)
    return found[0] if found else None


def contact_of_account(store: Store, account_id: str, contact: str) -> str | None:
    """The address of the account's contact whose id or address is `contact` (None: no such contact)."""

    def work() -> str | None:
        with store.connect() as conn:
            row = conn.execute(sa.select(CONTACTS.c.id, CONTACTS.c.email).where(
                CONTACTS.c.account_id == account_id,
                sa.or_(CONTACTS.c.id == contact, sa.func.lower(CONTACTS.c.email) == contact.lower()))).first()
        return None if row is None else (row.email or row.id)

    return store.retry(work)


def account_of_deal(store: Store, external_id: str) -> str | None:
    """The account of the opportunity mirrored from the CRM deal `external_id`."""

    def work() -> str | None:
        with store.connect() as conn:
            return conn.execute(sa.select(OPPS.c.account_id).where(OPPS.c.external_id == external_id)
                                .order_by(OPPS.c.created_at.desc()).limit(1)).scalar()

    return store.retry(work)


@dataclass(frozen=True)
class SentMessage:
    account_id: str
    play: str | None
    recipient: str
    provider_message_id: str


def sent_message(store: Store, message_ids: Sequence[str]) -> SentMessage | None:
    """The outbox message one of `message_ids` names (In-Reply-To first, then References newest first).

    Ids are compared with and without angle brackets: the SMTP connector stores
    the Message-ID header (`<...>`), an HTTP provider its own bare id.
    """
    wanted: list[str] = []
    for raw in message_ids:
        bare = raw.strip().strip("<>").strip()
        if bare:
            wanted += [f"<{bare}>", bare]
    if not wanted:
        return None

    def work() -> SentMessage | None:
        with store.connect() as conn:
            rows = conn.execute(sa.select(OUTBOX.c.account_id, OUTBOX.c.play, OUTBOX.c.recipient,
                                          OUTBOX.c.provider_message_id)
                                .where(OUTBOX.c.provider_message_id.in_(wanted), OUTBOX.c.account_id.is_not(None))
                                ).all()
        by_id = {r.provider_message_id: r for r in rows}
        for candidate in wanted:
            r = by_id.get(candidate)
            if r is not None:
                return SentMessage(r.account_id, r.play, r.recipient, r.provider_message_id)
        return None

    return store.retry(work)


__all__ = ["Ambiguous", "NewEvent", "PendingEvent", "Recorded", "SentMessage", "account_exists", "account_of_contact",
           "account_of_deal", "contact_of_account", "counts", "mark_retry", "mark_signalled", "pending", "record",
           "sent_message"]
