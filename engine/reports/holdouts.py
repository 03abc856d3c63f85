"""Holdouts: per play that holds accounts out (`holdout N%`), the treated against the held out.

Groups, per play, from the play's first held-out decision on (before it, no
account was held out, so earlier enrollments have no comparison group):

- treated: accounts with an enrollment of the play started since then; they
  enter the group at their first such start. Every enrollment counts, however
  it ended (intent to treat: a play that failed to reach an account is part of
  what the play does).
- held out: accounts with a `held_out` decision for the play and no enrollment
  of it at all (an account held out and later enrolled, after the share was
  lowered, is treated, not a control); they enter at their first held-out decision.

`--since`/`--until` filter on the day an account entered its group.

An account converted when a `won` outcome of the account (of any play: a
held-out account's deal names no play) closed on or after the day it
entered; its expansion revenue is the sum of those outcomes' values (0 when
none). Per group: accounts, conversions, conversion rate with its Wilson
interval, revenue and revenue per account. The differences (treated minus
held out) come with 95% intervals: Newcombe's hybrid score interval for the
conversion rates, Welch's standard error with the normal quantile for the
mean revenue per account (engine/reports/stats.py). With fewer than
`MIN_GROUP` accounts in a group there is no interval, and the report says
"not enough data".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.reports import stats
from engine.reports.sqltime import num, percent, ratio
from engine.schema import Base

T = Base.metadata.tables
ENR, DEC, OUTCOMES = T["enrollments"], T["enrollment_decisions"], T["outcomes"]
HELD_OUT = "held_out"  # engine.enrollment.stored_decision
# Below this many accounts in a group, an interval would mostly show noise (and the normal
# approximation for the revenue difference would not hold).
MIN_GROUP = 30
WILSON = "Wilson score interval"
NEWCOMBE = "Newcombe hybrid score interval (Wilson), 95%"
WELCH = "Welch standard error, normal approximation (z = 1.96), 95%"


@dataclass
class Group:
    accounts: int = 0
    converted: int = 0
    values: list[float] = field(default_factory=list)  # revenue per account, 0 included

    def add(self, won: int, value: float) -> None:
        self.accounts += 1
        self.converted += 1 if won else 0
        self.values.append(value)

    @property
    def revenue(self) -> float:
        return sum(self.values)

    def to_json(self) -> dict[str, Any]:
        rate = ratio(self.converted, self.accounts)
        ci = stats.wilson(self.converted, self.accounts).to_json() if self.accounts else None
        return {"accounts": self.accounts, "converted": self.converted, "conversion_rate": rate,
                "conversion_percent": percent(rate, 1), "conversion_ci": ci, "revenue": num(self.revenue),
                "revenue_per_account": num(ratio(self.revenue, self.accounts))}


@dataclass
class PlayHoldout:
    play: str
    since: dt.date  # the play's first held-out decision
    treated: Group = field(default_factory=Group)
    held_out: Group = field(default_factory=Group)

    @property
    def enough_data(self) -> bool:
        return self.treated.accounts >= MIN_GROUP and self.held_out.accounts >= MIN_GROUP

    def conversion_difference(self) -> stats.Interval | None:
        if not self.enough_data:
            return None
        t, h = self.treated, self.held_out
        return stats.newcombe(t.converted, t.accounts, h.converted, h.accounts)

    def revenue_difference(self) -> stats.Interval | None:
        if not self.enough_data:
            return None
        return stats.welch(self.treated.values, self.held_out.values)

    def note(self) -> str | None:
        if self.enough_data:
            return None
        return (f"not enough data: {self.treated.accounts:,} treated and {self.held_out.accounts:,} held out; "
                f"an interval needs at least {MIN_GROUP} accounts in each group")

    def to_json(self) -> dict[str, Any]:
        conv, rev = self.conversion_difference(), self.revenue_difference()
        return {
            "play": self.play, "since": self.since.isoformat(), "enough_data": self.enough_data, "note": self.note(),
            "treated": self.treated.to_json(), "held_out": self.held_out.to_json(),
            "difference": {
                "conversion": None if conv is None else {**conv.to_json(), "method": NEWCOMBE},
                "revenue_per_account": None if rev is None else {**rev.to_json(2), "method": WELCH},
            },
        }


@dataclass(frozen=True)
class HoldoutsReport:
    plays: list[PlayHoldout]
    since: dt.date | None
    until: dt.date | None

    def to_json(self) -> dict[str, Any]:
        return {"report": "holdouts", "since": None if self.since is None else self.since.isoformat(),
                "until": None if self.until is None else self.until.isoformat(), "confidence": stats.CONFIDENCE,
                "min_group": MIN_GROUP, "group_interval": WILSON, "plays": [p.to_json() for p in self.plays]}


def _start(d: dt.date) -> dt.datetime:
    return dt.datetime.combine(d, dt.time(), dt.timezone.utc)


def _as_date(v: Any) -> dt.date:
    if isinstance(v, dt.datetime):
        return (v.astimezone(dt.timezone.utc) if v.tzinfo else v).date()
    if isinstance(v, dt.date):
        return v
    return dt.datetime.fromisoformat(str(v)).date()  # SQLite text out of an aggregate


def holdouts_report(conn: Connection, *, since: dt.date | None = None,
                    until: dt.date | None = None) -> HoldoutsReport:
    first = (sa.select(DEC.c.play, sa.func.min(DEC.c.at).label("at"))
             .where(DEC.c.decision == HELD_OUT).group_by(DEC.c.play).subquery("first_held"))
    plays = {play: PlayHoldout(play, _as_date(at)) for play, at in conn.execute(sa.select(first.c.play, first.c.at))}
    if not plays:
        return HoldoutsReport([], since, until)

    def window(col: Any) -> list[Any]:
        return ([col >= _start(since)] if since else []) + ([col < _start(until)] if until else [])

    treated = (sa.select(ENR.c.play, ENR.c.account_id, sa.func.min(ENR.c.started_at).label("entered"))
               .select_from(ENR.join(first, sa.and_(first.c.play == ENR.c.play, ENR.c.started_at >= first.c.at)))
               .group_by(ENR.c.play, ENR.c.account_id))
    ever = sa.select(ENR.c.id).where(ENR.c.play == DEC.c.play, ENR.c.account_id == DEC.c.account_id)
    held = (sa.select(DEC.c.play, DEC.c.account_id, sa.func.min(DEC.c.at).label("entered"))
            .where(DEC.c.decision == HELD_OUT, ~sa.exists(ever))
            .group_by(DEC.c.play, DEC.c.account_id))
    for name, q in (("treated", treated), ("held_out", held)):
        for play, won, value in _per_account(conn, q.subquery(name), window):
            getattr(plays[play], name).add(won, value)
    return HoldoutsReport([plays[p] for p in sorted(plays)], since, until)


def _per_account(conn: Connection, group: Any, window: Any) -> Iterable[tuple[str, int, float]]:
    """(play, won outcomes since entering, their value) for each account of the group."""
    o = OUTCOMES
    joined = group.outerjoin(o, sa.and_(o.c.account_id == group.c.account_id, o.c.outcome == "won",
                                        o.c.at >= group.c.entered))
    q = (sa.select(group.c.play, sa.func.count(o.c.id), sa.func.coalesce(sa.func.sum(o.c.value), 0.0))
         .select_from(joined).where(*window(group.c.entered))
         .group_by(group.c.play, group.c.account_id))
    for play, won, value in conn.execute(q):
        yield play, int(won), float(value or 0.0)


__all__ = ["MIN_GROUP", "HoldoutsReport", "PlayHoldout", "holdouts_report"]
