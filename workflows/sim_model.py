"""What a simulation is asked for (`SimConfig`) and what it reports (`SimReport`).

Plain data, shared by the run (workflows/simulate.py), the report's
aggregation (workflows/sim_report.py) and its rendering (cli/simulate_render.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel

from workflows.model import EventKind
from workflows.sweep import SweepSummary

TICK = dt.timedelta(hours=1)
TICK_OFFSET = dt.timedelta(seconds=30)  # ticks fall 30 s after the hour; steps fall on it
UTC = dt.timezone.utc


class ScriptedEvent(BaseModel):
    """An event the customer sends at a chosen simulated time (`--script FILE`, a JSON list)."""

    day: int  # calendar day of the simulation (0: the start's date)
    hour: int = 14  # UTC hour of that day (events happen at ticks: 30 s past the hour)
    account: str
    event: EventKind
    stage: str | None = None  # for stage_changed
    play: str | None = None  # None: every play the account is in at that time


class SimConfig(BaseModel):
    days: int = 30
    seed: int = 7
    start: dt.datetime | None = None  # UTC, rounded up to the hour; None: the next 06:00 UTC
    reply_rate: float = 0.2  # chance that an email gets a reply (one reply per enrollment at most)
    reply_hours: tuple[int, int] = (2, 48)  # a reply comes this many hours after the email
    unsubscribe_rate: float = 0.01  # per email
    bounce_rate: float = 0.0  # per email
    win_rate: float = 0.25  # after a reply: chance the deal closes won (3-10 days later)
    loss_rate: float = 0.10  # after a reply: chance the deal closes lost (2-7 days later)
    script: list[ScriptedEvent] = []
    sweep_every_days: int = 1
    timeline_accounts: list[str] = []  # accounts whose timeline the report shows in full
    sample: int = 5  # else: this many enrolled accounts, chosen by the seed


class TimelineEntry(BaseModel):
    at: dt.datetime
    day: int
    kind: str  # enrolled, step, customer, stage, ended, skipped
    play: str | None = None
    text: str


class DayLoad(BaseModel):
    day: int
    date: dt.date
    enrolled: int = 0
    emails: int = 0
    tasks: int = 0
    tasks_by_assignee: dict[str, int] = {}
    stage_changes: int = 0
    replies: int = 0
    unsubscribes: int = 0
    bounces: int = 0
    won: int = 0
    lost: int = 0

    @property
    def busiest(self) -> tuple[str, int] | None:
        if not self.tasks_by_assignee:
            return None
        return max(self.tasks_by_assignee.items(), key=lambda kv: (kv[1], kv[0]))


class SimReport(BaseModel):
    start: dt.datetime
    end: dt.datetime
    days: int
    seed: int
    accounts: int
    store: str
    config: SimConfig
    totals: dict[str, int] = {}
    by_play: dict[str, int] = {}  # enrollments
    by_route: dict[str, int] = {}  # "play/route" -> enrollments
    triggers: dict[str, int] = {}  # trigger -> enrollments it started
    outcomes: dict[str, int] = {}  # enrollment status at the end
    csm_tasks: dict[str, dict[str, float]] = {}  # assignee -> {"tasks", "days", "max_per_day"}
    daily: list[DayLoad] = []
    timelines: dict[str, list[TimelineEntry]] = {}
    sweeps: list[SweepSummary] = []
    wall_seconds: float = 0.0

    def deterministic_view(self) -> dict[str, Any]:
        """The report without what legitimately differs between two runs (wall time, sweep clocks)."""
        data = self.model_dump(mode="json", exclude={"wall_seconds", "sweeps", "store"})
        data["sweeps"] = [s.model_dump(mode="json", exclude={"now"}) for s in self.sweeps]
        return data

