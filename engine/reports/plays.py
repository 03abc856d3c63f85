"""Play performance: per play and per email step, attempts, replies, closes, close rate and
the average value of a close ("which email converts").

Replies are the `replied` inbound events (engine/inbound.py from providers, engine.actions.
record_reply from the simulation). Per play, an attempt is an enrollment; it replied
when a reply of the play (or of no play in particular) arrived for the account while it
ran, and it closed when an outcome `won` names it. Per step, an attempt is an email the
step wrote (outbox, not cancelled or failed); it was answered when a reply names it
(`payload.message`, the outbox key) or, for a reply that names no message, when it is
the play's last email to the account before the reply; a close is an answered email
whose enrollment was won, with that outcome's value.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.actions import REPLIED
from engine.reports.sqltime import num, percent, ratio
from engine.schema import Base

T = Base.metadata.tables
ENR, OUTBOX, INBOUND, OUTCOMES = T["enrollments"], T["outbox"], T["inbound_events"], T["outcomes"]
NOT_ATTEMPTS = ("cancelled", "failed")  # outbox statuses that never reached anyone


@dataclass(frozen=True)
class Line:
    play: str
    step: str | None  # None: the play as a whole
    attempts: int
    replies: int
    closes: int
    avg_value: float | None

    @property
    def rate(self) -> float | None:
        return ratio(self.closes, self.attempts)

    @property
    def reply_rate(self) -> float | None:
        return ratio(self.replies, self.attempts)

    def to_json(self) -> dict[str, Any]:
        return {"play": self.play, "step": self.step, "attempts": self.attempts, "replies": self.replies,
                "reply_rate": self.reply_rate, "closes": self.closes, "rate": self.rate,
                "rate_percent": percent(self.rate), "avg_value": self.avg_value}


@dataclass(frozen=True)
class PlaysReport:
    plays: list[Line]
    steps: list[Line]
    since: dt.date | None
    until: dt.date | None

    def to_json(self) -> dict[str, Any]:
        return {"report": "plays", "since": None if self.since is None else self.since.isoformat(),
                "until": None if self.until is None else self.until.isoformat(),
                "plays": [p.to_json() for p in self.plays], "steps": [s.to_json() for s in self.steps]}


def _start(d: dt.date) -> dt.datetime:
    return dt.datetime.combine(d, dt.time(), dt.timezone.utc)


def _position(dialect: str, needle: Any, haystack: Any) -> Any:
    return sa.func.strpos(haystack, needle) if dialect == "postgresql" else sa.func.instr(haystack, needle)


def plays_report(conn: Connection, *, since: dt.date | None = None, until: dt.date | None = None) -> PlaysReport:
    """Enrollments started in [since, until), their emails, replies and won outcomes."""
    dialect = conn.dialect.name
    enr_filter = []
    if since is not None:
        enr_filter.append(ENR.c.started_at >= _start(since))
    if until is not None:
        enr_filter.append(ENR.c.started_at < _start(until))
    e = sa.select(ENR.c.id, ENR.c.play, ENR.c.account_id, ENR.c.started_at, ENR.c.ended_at).where(
        *enr_filter).subquery("e")
    replied = sa.exists().where(
        INBOUND.c.kind == REPLIED, INBOUND.c.account_id == e.c.account_id,
        sa.or_(INBOUND.c.play == e.c.play, INBOUND.c.play.is_(None)), INBOUND.c.occurred_at >= e.c.started_at,
        sa.or_(e.c.ended_at.is_(None), INBOUND.c.occurred_at <= e.c.ended_at))
    won = sa.select(OUTCOMES.c.enrollment_id, sa.func.max(OUTCOMES.c.value).label("value")).where(
        OUTCOMES.c.outcome == "won", OUTCOMES.c.enrollment_id.is_not(None)).group_by(
        OUTCOMES.c.enrollment_id).subquery("won")
    per_play = sa.select(
        e.c.play, sa.func.count().label("attempts"),
        sa.func.sum(sa.case((replied, 1), else_=0)).label("replies"),
        sa.func.count(won.c.enrollment_id).label("closes"), sa.func.avg(won.c.value).label("avg_value"),
    ).select_from(e.outerjoin(won, won.c.enrollment_id == e.c.id)).group_by(e.c.play).order_by(e.c.play)
    plays = [Line(r.play, None, int(r.attempts), int(r.replies or 0), int(r.closes), num(r.avg_value))
             for r in conn.execute(per_play)]

    # The step is what follows ":e<enrollment id>:" in the message's key (workflows.play.idempotency_key).
    marker = sa.literal(":e") + sa.cast(e.c.id, sa.Text) + sa.literal(":")
    at = _position(dialect, marker, OUTBOX.c.idempotency_key)
    step = sa.func.substr(OUTBOX.c.idempotency_key, at + sa.func.length(marker))
    # Looked up through the account's replies (indexed), not a join on the message key
    # alone, which neither database can index inside the JSON payload.
    message = INBOUND.c.payload["message"].as_string()
    later = OUTBOX.alias("later")
    last_before_reply = ~sa.exists().where(
        later.c.account_id == OUTBOX.c.account_id, later.c.play == OUTBOX.c.play, later.c.channel == "email",
        later.c.status.not_in(NOT_ATTEMPTS), later.c.created_at > OUTBOX.c.created_at,
        later.c.created_at <= INBOUND.c.occurred_at).correlate(OUTBOX, INBOUND)  # two levels up: say so
    answered = sa.exists().where(
        INBOUND.c.kind == REPLIED, INBOUND.c.account_id == OUTBOX.c.account_id,
        sa.or_(message == OUTBOX.c.idempotency_key,
               sa.and_(message.is_(None), sa.or_(INBOUND.c.play == OUTBOX.c.play, INBOUND.c.play.is_(None)),
                       INBOUND.c.occurred_at >= OUTBOX.c.created_at, last_before_reply)))
    emails = sa.select(e.c.play, step.label("step"), sa.case((answered, 1), else_=0).label("replied"),
                       won.c.enrollment_id.label("won_id"), won.c.value).select_from(
        e.join(OUTBOX, sa.and_(OUTBOX.c.account_id == e.c.account_id, OUTBOX.c.play == e.c.play, at > 0))
        .outerjoin(won, won.c.enrollment_id == e.c.id)
    ).where(OUTBOX.c.channel == "email", OUTBOX.c.status.not_in(NOT_ATTEMPTS)).subquery("emails")
    closed = sa.and_(emails.c.replied == 1, emails.c.won_id.is_not(None))
    per_step = sa.select(
        emails.c.play, emails.c.step, sa.func.count().label("attempts"),
        sa.func.sum(emails.c.replied).label("replies"),
        sa.func.sum(sa.case((closed, 1), else_=0)).label("closes"),
        sa.func.avg(sa.case((closed, emails.c.value))).label("avg_value"),
    ).group_by(emails.c.play, emails.c.step).order_by(emails.c.play, emails.c.step)
    steps = [Line(r.play, r.step, int(r.attempts), int(r.replies or 0), int(r.closes or 0), num(r.avg_value))
             for r in conn.execute(per_step)]
    return PlaysReport(plays, steps, since, until)


__all__ = ["Line", "PlaysReport", "plays_report"]
