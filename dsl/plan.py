"""The compiled Plan: the JSON IR a PlayWorkflow interprets.

A Plan holds everything a play needs at run time (steps, exits, templates,
days off), so a workflow never reads a file; public holidays travel as
region codes (`US-CA`), resolved by the activities that compute instants.
Its `hash` covers behaviour only: comments, layout and source positions
never change it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from dsl.nodes import Expr, Ref, SendWindow, StepAction

SCHEMA_VERSION: Final = 1


class PlanSource(BaseModel):
    file: str
    line: int


class PlanTemplate(BaseModel):
    name: str
    subject: str
    body: str


class PlanStep(BaseModel):
    """One step. `day` counts from enrollment, or from `Plan.anchor` when set."""

    label: str  # stable within a Plan; part of every idempotency key
    day: int
    business: bool = False
    at: str | None = None
    action: StepAction
    unless: Expr | None = None


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    play: str
    title: str
    kind: str | None = None
    priority: int = 0
    owner: Ref | None = None
    gate: str | None = None
    ungated: bool = False
    concurrent: bool = False
    reenter_days: float | None = None
    exit: Expr | None = None
    anchor: Ref | None = None
    window: SendWindow | None = None
    holidays: list[dt.date] = []  # the calendar's own days off
    holiday_regions: list[str] = []  # `US`, `US-CA`: their public holidays, any year (dsl/calendars.py)
    holdout: float | None = None  # percent of would-be enrollments held out (`holdout 10%`: 10.0)
    steps: list[PlanStep] = []
    templates: dict[str, PlanTemplate] = {}
    source: PlanSource | None = None
    hash: str = ""

    def behaviour_json(self) -> str:
        """Canonical JSON of everything that decides what the play does."""
        data = self.model_dump(mode="json", exclude={"source", "hash"})
        if not data["holiday_regions"]:  # plans without regions keep the hash they had before regions existed
            del data["holiday_regions"]
        if data["holdout"] is None:  # likewise plans without a holdout
            del data["holdout"]
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    def with_hash(self) -> Plan:
        digest = hashlib.sha256(self.behaviour_json().encode()).hexdigest()
        return self.model_copy(update={"hash": digest[:16]})

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> Plan:
        return cls.model_validate_json(text)


class PlanBundle(BaseModel):
    """All plans of a folder, as `playbook compile --all` prints them."""

    plans: list[Plan] = Field(default_factory=list)
