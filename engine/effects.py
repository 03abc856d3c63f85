"""What plays did: the messages in the outbox and the tasks they created, read with filters.

`playbook outbox` and `playbook tasks` show these rows; the functions only
read (the caller opens the store read-only), newest first, so a limit keeps
the most recent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dsl.suggest import closest
from engine.schema import Base


class EffectsError(ValueError):
    """A filter that can match nothing by construction (an unknown status)."""


@dataclass(frozen=True)
class Kind:
    """One kind of effect: its table, the columns shown, and the statuses a row can have."""

    table: str
    columns: tuple[str, ...]
    statuses: tuple[str, ...]


OUTBOX = Kind("outbox", ("id", "created_at", "play", "account_id", "channel", "recipient", "subject", "status",
                         "sent_at"), ("pending", "sending", "sent", "failed", "cancelled"))
TASKS = Kind("tasks", ("id", "created_at", "play", "account_id", "assignee", "title", "due", "status"),
             ("open", "done", "cancelled"))


@dataclass(frozen=True)
class Filters:
    account: str | None = None
    play: str | None = None
    status: str | None = None


def _where(kind: Kind, filters: Filters) -> list[sa.ColumnElement[bool]]:
    t = Base.metadata.tables[kind.table]
    status = filters.status.lower() if filters.status is not None else None  # statuses are lower case
    if status is not None and status not in kind.statuses:
        close = closest(status, kind.statuses)
        hint = f"did you mean '{close}'?" if close else f"one of {', '.join(kind.statuses)}"
        raise EffectsError(f"no {kind.table} row has status '{filters.status}': {hint}")
    out: list[sa.ColumnElement[bool]] = []
    for column, value in (("account_id", filters.account), ("play", filters.play), ("status", status)):
        if value is not None:
            out.append(t.c[column] == value)
    return out


def rows(conn: Connection, kind: Kind, filters: Filters, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """The matching rows, newest first, as {column: value} (times as UTC datetimes)."""
    t = Base.metadata.tables[kind.table]
    q = sa.select(*(t.c[c] for c in kind.columns)).where(*_where(kind, filters)).order_by(t.c.id.desc())
    if limit is not None:
        q = q.limit(limit)
    for row in conn.execute(q):
        yield dict(row._mapping)


def plays(conn: Connection) -> set[str]:
    """Every play the store has a row of: enrolled an account, wrote a message or a task."""
    tables = [Base.metadata.tables[name] for name in ("enrollments", OUTBOX.table, TASKS.table)]
    query = sa.union(*(sa.select(t.c.play).where(t.c.play.is_not(None)).distinct() for t in tables))
    return {str(p) for p in conn.execute(query).scalars()}


def count(conn: Connection, kind: Kind, filters: Filters) -> int:
    t = Base.metadata.tables[kind.table]
    return int(conn.execute(sa.select(sa.func.count()).select_from(t).where(*_where(kind, filters))).scalar() or 0)


def to_json(row: dict[str, Any]) -> dict[str, Any]:
    """A row with its times as ISO 8601 text."""
    return {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in row.items()}


__all__ = ["OUTBOX", "TASKS", "EffectsError", "Filters", "Kind", "count", "plays", "rows", "to_json"]
