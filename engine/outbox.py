"""The outbox as a ledger for providers that have no idempotency key (Slack, webhooks, SMTP).

A connector records the step's idempotency key before it acts and marks the
row when the provider answered, each in its own short transaction:

    claim(conn, ...)        -> the row, now `sending` (or already `sent`: skip it)
    ... call the provider ...
    mark_sent(conn, key, provider_message_id=..., at=...)      # `sent`
    mark_failed(conn, key, error, permanent=...)                # `failed` / back to `pending`
    mark_unknown(conn, key, error)      # no answer: stays `sending`, the next claim is `resumed`

A key already `sent` is never sent again (the connector answers
`duplicate=True` with the first provider id). A row found `sending` means an
earlier attempt died between the provider call and `mark_sent` (a killed
worker): whether the provider got it is unknown, so `Claim.resumed` tells the
connector, which sends again under the same provider-side id where the
provider has one (a webhook's `webhook-id`, an email's Message-ID) so the
receiver can drop the copy.

Email connectors pass the Message-ID to `claim` (angle brackets included), so
it is on the row before the message leaves: a reply or an asynchronous bounce
is matched to its row by `by_message_id` even when the `sent` mark was lost
(the IMAP reply reader relies on this contract).

Rows are the store connector's `outbox` rows (engine/schema.py), so a play
that ran on the built-in store and later on a real provider keeps one row per
key; `cancelled` rows (an unsubscribed recipient) are never claimed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.schema import OutboxMessage
from engine.store import insert_ignore

OUTBOX = OutboxMessage.__table__
FINAL = ("sent", "cancelled")  # statuses a claim leaves alone
ERROR_CHARS = 1000


@dataclass(frozen=True)
class Claim:
    """One outbox row as a claim found it. `previous`: its status before the claim (`new` when
    the claim wrote it); `status`: now (`sending`, or `sent`/`cancelled` left as they were)."""

    id: int
    previous: str
    status: str
    attempts: int  # provider calls begun under this key, this one included
    provider_message_id: str | None

    @property
    def sent(self) -> bool:
        return self.status == "sent"

    @property
    def cancelled(self) -> bool:
        return self.status == "cancelled"

    @property
    def resumed(self) -> bool:
        """An earlier attempt began sending and never recorded the outcome."""
        return self.previous == "sending"


def claim(conn: Connection, *, key: str, channel: str, recipient: str, body: str, at: dt.datetime,
          subject: str | None = None, account_id: str | None = None, play: str | None = None,
          message_id: str | None = None) -> Claim:
    """The key's row, created if new and set `sending` unless it is already final (sent, cancelled).

    `message_id`: the id the message will carry (an email's Message-ID), recorded now."""
    row = _row(conn, key)
    previous = "new"
    if row is None:
        insert_ignore(conn, OUTBOX, [{
            "idempotency_key": key, "channel": channel, "recipient": recipient, "subject": subject, "body": body,
            "status": "sending", "account_id": account_id, "play": play, "created_at": at, "attempts": 1,
            "provider_message_id": message_id,
        }], ["idempotency_key"])
        row = _row(conn, key)
        assert row is not None  # inserted above, or by a racing writer
    else:
        previous = row.status
        if row.status not in FINAL:
            values: dict[str, Any] = {"status": "sending", "attempts": OUTBOX.c.attempts + 1}
            if message_id is not None:
                values["provider_message_id"] = message_id
            conn.execute(OUTBOX.update().where(OUTBOX.c.idempotency_key == key).values(values))
            row = _row(conn, key)
            assert row is not None
    return Claim(id=int(row.id), previous=previous, status=row.status, attempts=int(row.attempts),
                 provider_message_id=row.provider_message_id)


def mark_sent(conn: Connection, key: str, *, provider_message_id: str | None, at: dt.datetime) -> None:
    """The provider accepted it: `sent`, with its id (Slack's ts, the Message-ID, the webhook-id)."""
    conn.execute(OUTBOX.update().where(OUTBOX.c.idempotency_key == key).values(
        status="sent", provider_message_id=provider_message_id, sent_at=at, last_error=None))


def mark_failed(conn: Connection, key: str, error: str, *, permanent: bool) -> None:
    """The provider refused it: `failed` for good, or back to `pending` for the next attempt.
    `error` must already be free of secrets (connectors build it from names, never tokens)."""
    conn.execute(OUTBOX.update().where(OUTBOX.c.idempotency_key == key).values(
        status="failed" if permanent else "pending", last_error=error[:ERROR_CHARS]))


def mark_unknown(conn: Connection, key: str, error: str) -> None:
    """No answer (a timeout, a connection lost mid-request): the provider may have it. The row
    stays `sending`, so the next attempt's claim is `resumed` and can look before resending."""
    conn.execute(OUTBOX.update().where(OUTBOX.c.idempotency_key == key).values(last_error=error[:ERROR_CHARS]))


@dataclass(frozen=True)
class Sent:
    """What an inbound reply or bounce needs of the message it answers."""

    id: int
    key: str  # the step's idempotency key: play:<play>:<account>:...
    channel: str
    status: str
    recipient: str
    subject: str | None
    account_id: str | None
    play: str | None
    provider_message_id: str


def by_message_id(conn: Connection, message_id: str) -> Sent | None:
    """The row of the message with this Message-ID (given with or without its angle brackets)."""
    wanted = message_id.strip()
    if not wanted.startswith("<"):
        wanted = f"<{wanted}>"
    row = conn.execute(sa.select(OUTBOX.c.id, OUTBOX.c.idempotency_key, OUTBOX.c.channel, OUTBOX.c.status,
                                 OUTBOX.c.recipient, OUTBOX.c.subject, OUTBOX.c.account_id, OUTBOX.c.play,
                                 OUTBOX.c.provider_message_id)
                       .where(OUTBOX.c.provider_message_id == wanted).order_by(OUTBOX.c.id).limit(1)).first()
    return None if row is None else Sent(int(row[0]), *row[1:])


def _row(conn: Connection, key: str) -> Any:  # a Row or None
    return conn.execute(sa.select(OUTBOX.c.id, OUTBOX.c.status, OUTBOX.c.attempts, OUTBOX.c.provider_message_id)
                        .where(OUTBOX.c.idempotency_key == key)).first()


__all__ = ["Claim", "Sent", "by_message_id", "claim", "mark_failed", "mark_sent", "mark_unknown"]
