"""Activities of the pipeline SLA workflow, and the SLA deadline arithmetic.

`deadlines` turns a stage entry into UTC instants: the SLA of dsl/pipeline.py
counted in calendar hours or in business days on the pipeline calendar
(the team's time zone and holiday regions: engine settings `time_zone`,
`pipeline_holidays`), then the grace in business days before the manager
is told. It runs here, outside the sandbox, where ZoneInfo works.

`pipeline_breach` records the breach in the store (`sla_breaches`, UNIQUE
key) and tells the person with a task through the connectors, under the
same key: a retried or replayed timer tells nobody twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Container
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity

from connectors import base as cb
from dsl import pipeline as stages
from dsl.calendars import DaysOff
from dsl.nodes import Duration, DurationUnit
from engine import pipeline
from engine.store import Store
from workflows import schedule
from workflows.activities import PlayActivities
from workflows.pipeline_model import BreachRequest, BreachResult, SlaState

UTC = dt.timezone.utc
ACTOR = "pipeline"


@dataclass(frozen=True)
class SlaCalendar:
    """Business days of the pipeline: a zone, days off, and the manager's grace in business days."""

    timezone: str = "UTC"
    holidays: Container[dt.date] = field(default_factory=DaysOff)
    grace_days: int = 1

    @classmethod
    def from_settings(cls, settings: Any) -> SlaCalendar:
        """From engine settings (`time_zone`, `pipeline_holidays`, `sla_grace_days`)."""
        return cls(settings.time_zone, schedule.days_off((), settings.pipeline_regions), settings.sla_grace_days)


def deadlines(stage: str, entered_at: dt.datetime, cal: SlaCalendar) -> tuple[dt.datetime, dt.datetime] | None:
    """(owner deadline, manager deadline) of a deal that entered `stage` at `entered_at`; None: no SLA there.

    Hours are elapsed time. Business days keep the local time of day: a deal
    qualified Friday 15:00 with 5 business days is due the next Friday 15:00
    (a day off in between pushes it a day). An entry on a weekend counts from
    that day, so its first business day is the next one.
    """
    known = stages.BY_NAME.get(stage)
    if known is None or known.sla is None:
        return None
    due = schedule.add_duration(entered_at, known.sla.within, cal.timezone, cal.holidays)
    grace = Duration(amount=cal.grace_days, unit=DurationUnit.BUSINESS_DAYS)
    escalate = schedule.add_duration(due, grace, cal.timezone, cal.holidays) if cal.grace_days else due
    return due, escalate


class PipelineActivities:
    def __init__(self, store: Store, connectors: cb.Connectors, calendar: SlaCalendar | None = None) -> None:
        self.store = store
        self.connectors = connectors
        self.calendar = calendar or SlaCalendar()

    @activity.defn(name="pipeline_state")
    async def state(self, opportunity_id: str) -> SlaState:
        """The deal's stage, since when, and its SLA instants."""
        def read() -> pipeline.Entry | None:
            with self.store.connect() as conn:
                return pipeline.entry(conn, opportunity_id)

        e = await asyncio.to_thread(read)
        if e is None:
            return SlaState(opportunity_id=opportunity_id, known=False)
        state = SlaState(opportunity_id=opportunity_id, stage=e.stage, entered_at=e.entered_at, closed=e.closed)
        if not e.closed and (when := deadlines(e.stage, e.entered_at, self.calendar)) is not None:
            sla = stages.BY_NAME[e.stage].sla
            state.sla = sla.describe() if sla else None
            state.due_at, state.escalate_at = when
        return state

    @activity.defn(name="pipeline_breach")
    async def breach(self, req: BreachRequest) -> BreachResult:
        """Record the breach and tell the owner (level owner) or the owner's manager (level manager)."""
        def record() -> tuple[pipeline.Entry, str | None, str] | None:
            with self.store.begin() as conn:
                e = pipeline.entry(conn, req.opportunity_id)
                if e is None or e.closed or e.stage != req.stage or e.entered_at != req.entered_at:
                    return None
                who = e.owner if req.level == "owner" else pipeline.manager_of(conn, e.owner)
                key = pipeline.record_breach(conn, e, level=req.level, due_at=req.due_at, at=req.at, notified=who)
                return e, who, key

        found = await asyncio.to_thread(record)
        if found is None:
            return BreachResult(outcome="moved")
        e, who, key = found
        if who is None:
            activity.logger.warning("SLA breach of %s at %s: no %s to tell", e.opportunity_id, e.stage, req.level)
            return BreachResult(outcome="nobody", key=key)
        task = cb.NewTask(key=key, account_id=e.account_id, actor=ACTOR, play=e.play or ACTOR,
                          step=f"sla:{e.stage}:{req.level}", requested_at=req.at, assignee=who,
                          title=self._title(e, req))
        await PlayActivities._guard(self.connectors.act(task))
        return BreachResult(outcome="notified", notified=who, key=key)

    def _title(self, e: pipeline.Entry, req: BreachRequest) -> str:
        zone = schedule.zone(self.calendar.timezone)
        sla = stages.BY_NAME[e.stage].sla
        deal = f"{e.title or e.opportunity_id} ({e.account_id})"
        since = f"{e.entered_at.astimezone(zone):%a %d %b %H:%M %Z}"
        due = f"{req.due_at.astimezone(zone):%a %d %b %H:%M %Z}"
        what = sla.describe() if sla else "the SLA"
        if req.level == "owner":
            return f"SLA missed: {deal} is still at {e.stage} since {since}; {what} was due {due}"
        return f"Escalation: {deal} (owner {e.owner}) is still at {e.stage} since {since}; {what} was due {due}"

    def all(self) -> list[Any]:
        return [self.state, self.breach]


__all__ = ["PipelineActivities", "SlaCalendar", "deadlines"]
