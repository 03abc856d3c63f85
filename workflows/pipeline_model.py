"""Payloads of the pipeline SLA workflow (workflows/pipeline.py): input, signal, activity data.

Imported inside the workflow sandbox: plain pydantic, no clock, file or zone.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel

Level = Literal["owner", "manager"]


class PipelineInput(BaseModel):
    opportunity_id: str
    # Levels already told, as `told_key`s: carried over continue-as-new.
    told: list[str] = []


class StageSignal(BaseModel):
    """The `stage_changed` signal: a deal moved (the store has the move; this says which, for the history)."""

    stage: str | None  # None: a new deal (at the connector's first stage)
    at: dt.datetime
    actor: str | None = None
    reason: str | None = None


class SlaState(BaseModel):
    """Where a deal stands and its SLA instants in UTC (computed outside the sandbox)."""

    opportunity_id: str
    known: bool = True  # False: no such opportunity in the store
    stage: str | None = None
    entered_at: dt.datetime | None = None
    closed: bool = False
    sla: str | None = None  # the SLA in words: "Qualified within 5 business days"
    due_at: dt.datetime | None = None  # the owner is told at this instant
    escalate_at: dt.datetime | None = None  # the owner's manager, at this one

    def told_key(self, level: Level) -> str:
        at = self.entered_at.isoformat() if self.entered_at else "-"
        return f"{self.stage}|{at}|{level}"


class BreachRequest(BaseModel):
    opportunity_id: str
    stage: str
    entered_at: dt.datetime
    due_at: dt.datetime
    level: Level
    at: dt.datetime  # workflow time of the breach


class BreachResult(BaseModel):
    # notified: a task went to `notified`; nobody: recorded, no one to tell (no owner / manager);
    # moved: the deal had left that stage entry (a signal is on its way): nothing recorded.
    outcome: Literal["notified", "nobody", "moved"]
    notified: str | None = None
    key: str | None = None


class PipelineStatus(BaseModel):
    """The `status` query."""

    opportunity_id: str
    state: SlaState | None
    told: list[str]
    waiting: str  # "owner deadline", "manager deadline", "a stage change", "store"


__all__ = ["BreachRequest", "BreachResult", "Level", "PipelineInput", "PipelineStatus", "SlaState", "StageSignal"]
