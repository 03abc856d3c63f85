"""Pauses in force: which plays `playbook pause` holds, kept in the store.

A running play is paused by a signal (workflows/pause.py); this record is
what makes the pause hold for plays started later: the sweep reads it when
it starts enrollments and starts them paused. One row per play paused, `*`
for every play; `resume` deletes rows. Every pause and resume is also an
audit log entry (who, when, why).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

import sqlalchemy as sa

from engine.schema import PlayPause, utcnow
from engine.store import Store

ALL = "*"
PAUSES = PlayPause.__table__


@dataclass(frozen=True)
class PauseRecord:
    scope: str  # a play's name, or ALL
    at: dt.datetime
    by: str
    reason: str | None = None


def pause(store: Store, scope: str, by: str, reason: str | None = None, at: dt.datetime | None = None) -> PauseRecord:
    """Record a pause of `scope` (a play, or ALL); pausing again replaces the reason."""
    record = PauseRecord(scope=scope, at=at or utcnow(), by=by, reason=reason)

    def write() -> None:
        with store.begin() as conn:
            conn.execute(PAUSES.delete().where(PAUSES.c.scope == scope))
            conn.execute(PAUSES.insert().values(scope=scope, paused_at=record.at, paused_by=by, reason=reason))
            store.audit(conn, by, "play_paused", scope, {"reason": reason} if reason else None)

    store.retry(write)
    return record


def resume(store: Store, scope: str, by: str) -> list[str]:
    """Remove the pause of `scope`; ALL removes every pause. Returns the scopes that were paused."""

    def write() -> list[str]:
        with store.begin() as conn:
            where = sa.true() if scope == ALL else PAUSES.c.scope == scope
            gone = sorted(r[0] for r in conn.execute(sa.select(PAUSES.c.scope).where(where)))
            conn.execute(PAUSES.delete().where(where))
            for s in gone:
                store.audit(conn, by, "play_resumed", s)
            return gone

    return store.retry(write)


def in_force(store: Store) -> dict[str, PauseRecord]:
    """Every pause in force, by scope."""

    def read() -> dict[str, PauseRecord]:
        with store.connect() as conn:
            rows = conn.execute(sa.select(PAUSES)).all()
        return {r.scope: PauseRecord(scope=r.scope, at=r.paused_at, by=r.paused_by, reason=r.reason) for r in rows}

    return store.retry(read)


def holding(pauses: Mapping[str, PauseRecord], play: str) -> PauseRecord | None:
    """The pause that holds `play`: its own, else the pause of every play."""
    return pauses.get(play) or pauses.get(ALL)


__all__ = ["ALL", "PauseRecord", "holding", "in_force", "pause", "resume"]
