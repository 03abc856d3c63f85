"""The pipeline funnel: opportunities that reached each stage, step and overall conversion,
and the average time spent in each stage.

An opportunity counts at a stage when it reached that stage or any later one of the
ordered list (reaching Proposal Sent means it was qualified, even if nobody recorded
it), read from `stage_history` and its current stage. Closed Lost is not a step: a lost
deal counts at the stages it reached before. Time in a stage is measured from entering
it to the next stage change, over the opportunities that have left it.

The default stages are the built-in pipeline's (the seeds' CSQL process); `stages`
takes any ordered list, e.g. the seeds' example (Signal Detected ... Closed Won).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dsl import pipeline
from engine.reports.sqltime import days_between, num, percent, ratio
from engine.schema import Base

# The built-in pipeline's open stages in order, then Closed Won (dsl/pipeline.py).
PIPELINE_STAGES = tuple(s.name for s in pipeline.STAGES if not s.closed) + (pipeline.CLOSED_WON,)
T = Base.metadata.tables
OPPS, STAGES = T["opportunities"], T["stage_history"]


class FunnelError(Exception):
    """Stages that cannot make a funnel (none, or one twice)."""


@dataclass(frozen=True)
class StageRow:
    stage: str
    count: int
    step_conversion: float | None  # count / previous stage's count (None for the first)
    overall_conversion: float | None  # count / first stage's count
    avg_days_in_stage: float | None  # over the opportunities that left the stage
    left: int  # how many left the stage (the time's sample)

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "count": self.count, "step_conversion": self.step_conversion,
                "step_conversion_percent": percent(self.step_conversion),
                "overall_conversion": self.overall_conversion, "avg_days_in_stage": self.avg_days_in_stage,
                "left": self.left}


@dataclass(frozen=True)
class Funnel:
    stages: list[StageRow]
    play: str | None
    since: dt.date | None
    until: dt.date | None

    @property
    def overall(self) -> float | None:
        return ratio(self.stages[-1].count, self.stages[0].count) if self.stages else None

    def to_json(self) -> dict[str, Any]:
        return {"report": "funnel", "play": self.play, "since": _iso(self.since), "until": _iso(self.until),
                "stages": [s.to_json() for s in self.stages], "overall_conversion": self.overall,
                "overall_conversion_percent": percent(self.overall, 1)}


def _iso(d: dt.date | None) -> str | None:
    return None if d is None else d.isoformat()


def _start(d: dt.date) -> dt.datetime:
    return dt.datetime.combine(d, dt.time(), dt.timezone.utc)


def funnel(conn: Connection, stages: Sequence[str] = PIPELINE_STAGES, *, play: str | None = None,
           since: dt.date | None = None, until: dt.date | None = None) -> Funnel:
    """The funnel over opportunities created in [since, until) (of `play`, if given)."""
    stages = list(stages)
    if not stages:
        raise FunnelError("a funnel needs at least one stage")
    twice = sorted({s for s in stages if stages.count(s) > 1})
    if twice:
        raise FunnelError(f"a stage is listed twice: {', '.join(twice)}")
    dialect = conn.dialect.name
    index = sa.case({s: i for i, s in enumerate(stages)}, value=STAGES.c.stage, else_=-1)
    current = sa.case({s: i for i, s in enumerate(stages)}, value=OPPS.c.stage, else_=-1)
    opp_filter = []
    if play is not None:
        opp_filter.append(OPPS.c.play == play)
    if since is not None:
        opp_filter.append(OPPS.c.created_at >= _start(since))
    if until is not None:
        opp_filter.append(OPPS.c.created_at < _start(until))
    opps = sa.select(OPPS.c.id).where(*opp_filter).subquery("opps")
    reached = sa.union_all(
        sa.select(STAGES.c.opportunity_id.label("id"), index.label("i"))
        .where(STAGES.c.opportunity_id.in_(sa.select(opps.c.id))),
        sa.select(OPPS.c.id.label("id"), current.label("i")).where(*opp_filter),
    ).subquery("reached")
    top = sa.select(reached.c.id, sa.func.max(reached.c.i).label("top")).group_by(reached.c.id).subquery("top")
    counts = conn.execute(sa.select(*[
        sa.func.coalesce(sa.func.sum(sa.case((top.c.top >= i, 1), else_=0)), 0).label(f"n{i}")
        for i in range(len(stages))])).one()

    nxt = sa.func.lead(STAGES.c.at).over(partition_by=STAGES.c.opportunity_id, order_by=(STAGES.c.at, STAGES.c.id))
    moves = sa.select(STAGES.c.stage, STAGES.c.at, nxt.label("next_at")).where(
        STAGES.c.opportunity_id.in_(sa.select(opps.c.id))).subquery("moves")
    timing = {r.stage: (r.days, int(r.n)) for r in conn.execute(
        sa.select(moves.c.stage, sa.func.avg(days_between(moves.c.at, moves.c.next_at, dialect)).label("days"),
                  sa.func.count().label("n"))
        .where(moves.c.next_at.is_not(None), moves.c.stage.in_(stages)).group_by(moves.c.stage))}
    rows: list[StageRow] = []
    first = int(counts[0])
    for i, s in enumerate(stages):
        n = int(counts[i])
        days, left = timing.get(s, (None, 0))
        rows.append(StageRow(s, n, ratio(n, int(counts[i - 1])) if i else None, ratio(n, first), num(days), left))
    return Funnel(rows, play, since, until)


__all__ = ["Funnel", "FunnelError", "PIPELINE_STAGES", "StageRow", "funnel"]
