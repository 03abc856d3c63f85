"""SLA breaches by stage and owner: how many deals entered each stage that has an SLA
(dsl/pipeline.py), how many missed it (told to the owner), how many were escalated to the
owner's manager, and the breach rate.

Breaches are the pipeline's `sla_breaches` rows (one per level told); a deal's owner is
the one recorded at the breach, and for deals entering a stage, the opportunity's owner.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dsl import pipeline
from engine.reports.sqltime import percent, ratio
from engine.schema import Base

T = Base.metadata.tables
OPPS, STAGES, BREACHES = T["opportunities"], T["stage_history"], T["sla_breaches"]
SLA_STAGES = tuple(s.name for s in pipeline.STAGES if s.sla is not None)


@dataclass(frozen=True)
class SlaRow:
    stage: str
    owner: str | None
    sla: str
    entered: int  # deals that entered the stage
    breaches: int  # deadlines missed (told to the owner)
    escalations: int  # told to the owner's manager too

    @property
    def rate(self) -> float | None:
        return ratio(self.breaches, self.entered)

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "owner": self.owner, "sla": self.sla, "entered": self.entered,
                "breaches": self.breaches, "escalations": self.escalations, "breach_rate": self.rate,
                "breach_rate_percent": percent(self.rate)}


@dataclass(frozen=True)
class SlaReport:
    rows: list[SlaRow]
    since: dt.date | None
    until: dt.date | None

    def to_json(self) -> dict[str, Any]:
        return {"report": "sla", "since": None if self.since is None else self.since.isoformat(),
                "until": None if self.until is None else self.until.isoformat(),
                "breaches": sum(r.breaches for r in self.rows), "escalations": sum(r.escalations for r in self.rows),
                "rows": [r.to_json() for r in self.rows]}


def _start(d: dt.date) -> dt.datetime:
    return dt.datetime.combine(d, dt.time(), dt.timezone.utc)


def sla_report(conn: Connection, *, since: dt.date | None = None, until: dt.date | None = None) -> SlaReport:
    """Deals that entered a stage in [since, until), and the breaches of those stays."""
    entered_in: list[sa.ColumnElement[bool]] = [STAGES.c.stage.in_(SLA_STAGES)]
    breach_in: list[sa.ColumnElement[bool]] = [BREACHES.c.stage.in_(SLA_STAGES)]
    if since is not None:
        entered_in.append(STAGES.c.at >= _start(since))
        breach_in.append(BREACHES.c.entered_at >= _start(since))
    if until is not None:
        entered_in.append(STAGES.c.at < _start(until))
        breach_in.append(BREACHES.c.entered_at < _start(until))
    entered = {(r.stage, r.owner): int(r.n) for r in conn.execute(
        sa.select(STAGES.c.stage, OPPS.c.owner, sa.func.count(sa.distinct(STAGES.c.opportunity_id)).label("n"))
        .select_from(STAGES.join(OPPS, OPPS.c.id == STAGES.c.opportunity_id)).where(*entered_in)
        .group_by(STAGES.c.stage, OPPS.c.owner))}
    told = {(r.stage, r.owner): (int(r.owner_level or 0), int(r.manager_level or 0)) for r in conn.execute(
        sa.select(BREACHES.c.stage, BREACHES.c.owner,
                  sa.func.sum(sa.case((BREACHES.c.level == "owner", 1), else_=0)).label("owner_level"),
                  sa.func.sum(sa.case((BREACHES.c.level == "manager", 1), else_=0)).label("manager_level"))
        .where(*breach_in).group_by(BREACHES.c.stage, BREACHES.c.owner))}
    order = {s: i for i, s in enumerate(SLA_STAGES)}
    keys = sorted(set(entered) | set(told), key=lambda k: (order[k[0]], k[1] is None, k[1] or ""))
    rows = []
    for stage, owner in keys:
        sla = pipeline.BY_NAME[stage].sla
        breaches, escalations = told.get((stage, owner), (0, 0))
        rows.append(SlaRow(stage, owner, sla.describe() if sla else "", max(entered.get((stage, owner), 0), breaches),
                           breaches, escalations))
    return SlaReport(rows, since, until)


__all__ = ["SLA_STAGES", "SlaReport", "SlaRow", "sla_report"]
