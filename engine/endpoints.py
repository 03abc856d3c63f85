"""Webhook endpoints disabled by their receiver (a 410 Gone), kept in the store.

The webhooks connector checks `disabled` before each call and calls
`disable` on a 410, so later calls to that URL fail at once, saying when and
why; `enable` (`playbook webhooks --enable URL`, once the receiver is back)
removes the mark.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.schema import WebhookEndpoint
from engine.store import insert_ignore

ENDPOINTS = WebhookEndpoint.__table__


@dataclass(frozen=True)
class Disabled:
    url: str
    at: dt.datetime
    reason: str


def disabled(conn: Connection, url: str) -> Disabled | None:
    row = conn.execute(sa.select(ENDPOINTS.c.disabled_at, ENDPOINTS.c.reason).where(ENDPOINTS.c.url == url)).first()
    return None if row is None else Disabled(url, row.disabled_at, row.reason)


def all_disabled(conn: Connection) -> list[Disabled]:
    """Every disabled endpoint, the most recently disabled first."""
    rows = conn.execute(sa.select(ENDPOINTS.c.url, ENDPOINTS.c.disabled_at, ENDPOINTS.c.reason)
                        .order_by(ENDPOINTS.c.disabled_at.desc(), ENDPOINTS.c.url))
    return [Disabled(r.url, r.disabled_at, r.reason) for r in rows]


def disable(conn: Connection, url: str, *, at: dt.datetime, reason: str) -> None:
    """Mark `url` disabled (the first mark stays: it says when the receiver went away)."""
    insert_ignore(conn, ENDPOINTS, [{"url": url, "disabled_at": at, "reason": reason}], ["url"])


def enable(conn: Connection, url: str) -> bool:
    """Send to `url` again; False when it was not disabled."""
    return conn.execute(ENDPOINTS.delete().where(ENDPOINTS.c.url == url)).rowcount > 0


__all__ = ["Disabled", "all_disabled", "disable", "disabled", "enable"]
