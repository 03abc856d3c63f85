"""Trigger effectiveness: per trigger and quarter, the share of eligible accounts it fired on,
judged against the seeds' bands, and its accuracy (fired, then converted).

A trigger fired on an account in a quarter when a sweep recorded a decision for the
account naming it among its firing triggers (`enrollment_decisions.reasons.triggers`,
or the decision's `trigger`). Eligible accounts are the accounts in the store, or the
accounts a caller counts (`eligible`). Accuracy is the share of the accounts it fired on
that later had a `won` outcome (at or after the first time it fired in that quarter).

Bands (the seeds: "each trigger should fire on 5-15% of eligible accounts per quarter";
over 40% "thresholds too permissive: raise them, add a health gate"; under 3% "too
restrictive or data gaps: lower them, verify the tracking"): see `band`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.reports.sqltime import percent, quarter, ratio
from engine.schema import Base

T = Base.metadata.tables
DECISIONS, OUTCOMES, ACCOUNTS = T["enrollment_decisions"], T["outcomes"], T["accounts"]

HEALTHY = (0.05, 0.15)
TOO_PERMISSIVE = 0.40
TOO_RESTRICTIVE = 0.03
ADVICE = {
    "too restrictive or missing data": "lower the threshold about 20%, or check the fields it reads are filled",
    "low": "below the 5-15% healthy band",
    "healthy": "",
    "high": "above the 5-15% healthy band",
    "too permissive": "raise the threshold, add a health-score gate",
}


def band(rate: float | None) -> str:
    """Where a quarter's fire rate falls among the seeds' bands."""
    if rate is None:
        return ""
    if rate < TOO_RESTRICTIVE:
        return "too restrictive or missing data"
    if rate < HEALTHY[0]:
        return "low"
    if rate <= HEALTHY[1]:
        return "healthy"
    if rate <= TOO_PERMISSIVE:
        return "high"
    return "too permissive"


@dataclass(frozen=True)
class QuarterRow:
    trigger: str
    quarter: str
    fired: int  # accounts
    eligible: int
    converted: int

    @property
    def rate(self) -> float | None:
        return ratio(self.fired, self.eligible)

    @property
    def accuracy(self) -> float | None:
        return ratio(self.converted, self.fired)

    def to_json(self) -> dict[str, Any]:
        b = band(self.rate)
        return {"trigger": self.trigger, "quarter": self.quarter, "fired": self.fired, "eligible": self.eligible,
                "fire_rate": self.rate, "fire_rate_percent": percent(self.rate, 1), "band": b,
                "advice": ADVICE.get(b, ""), "converted": self.converted, "accuracy": self.accuracy,
                "accuracy_percent": percent(self.accuracy)}


@dataclass(frozen=True)
class TriggersReport:
    rows: list[QuarterRow]
    eligible: int

    def to_json(self) -> dict[str, Any]:
        return {"report": "triggers", "eligible": self.eligible,
                "bands": {"healthy": list(HEALTHY), "too_permissive_above": TOO_PERMISSIVE,
                          "too_restrictive_below": TOO_RESTRICTIVE},
                "rows": [r.to_json() for r in self.rows]}


def _fired(dialect: str) -> sa.TextClause:
    """(trigger, account_id, at) for every trigger a decision names: the JSON list, else the column."""
    if dialect == "postgresql":
        listed = ("SELECT t.value AS trigger, d.account_id, d.at FROM enrollment_decisions d "
                  "CROSS JOIN LATERAL jsonb_array_elements_text(d.reasons->'triggers') AS t(value) "
                  "WHERE jsonb_typeof(d.reasons->'triggers') = 'array'")
        bare = "jsonb_typeof(d.reasons->'triggers') IS DISTINCT FROM 'array'"
    else:
        listed = ("SELECT t.value AS trigger, d.account_id, d.at FROM enrollment_decisions d, "
                  "json_each(d.reasons, '$.triggers') AS t WHERE json_type(d.reasons, '$.triggers') = 'array'")
        bare = "(d.reasons IS NULL OR json_type(d.reasons, '$.triggers') IS NOT 'array')"
    return sa.text(f"{listed} UNION ALL SELECT d.trigger, d.account_id, d.at FROM enrollment_decisions d "
                   f"WHERE d.trigger IS NOT NULL AND {bare}")


def triggers_report(conn: Connection, *, eligible: int | None = None) -> TriggersReport:
    dialect = conn.dialect.name
    base = eligible if eligible is not None else int(
        conn.execute(sa.select(sa.func.count()).select_from(ACCOUNTS)).scalar_one())
    fired = _fired(dialect).columns(sa.column("trigger", sa.Text), sa.column("account_id", sa.Text),
                                    sa.column("at", DECISIONS.c.at.type)).subquery("fired")
    q = quarter(fired.c.at, dialect)
    first = sa.select(fired.c.trigger, q.label("quarter"), fired.c.account_id,
                      sa.func.min(fired.c.at).label("first_at")).group_by(
        fired.c.trigger, q, fired.c.account_id).subquery("first")
    converted = sa.exists().where(OUTCOMES.c.account_id == first.c.account_id, OUTCOMES.c.outcome == "won",
                                  OUTCOMES.c.at >= first.c.first_at)
    rows = conn.execute(sa.select(
        first.c.trigger, first.c.quarter, sa.func.count().label("fired"),
        sa.func.sum(sa.case((converted, 1), else_=0)).label("converted"),
    ).group_by(first.c.trigger, first.c.quarter).order_by(first.c.trigger, first.c.quarter))
    return TriggersReport([QuarterRow(r.trigger, r.quarter, int(r.fired), base, int(r.converted or 0))
                           for r in rows], base)


__all__ = ["ADVICE", "QuarterRow", "TriggersReport", "band", "triggers_report"]
