"""Payloads of the play workflow: its input, signals, queries and schedule.

Everything here crosses the Temporal boundary through the pydantic data
converter, so every field is a plain, JSON-serialisable pydantic type.
Nothing here may read a clock, a file or a time zone database: this module
is imported inside the workflow sandbox.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from pydantic import BaseModel, Field

from dsl.nodes import Expr, Ref, StepAction
from dsl.plan import Plan, PlanTemplate

# ---------------------------------------------------------------------------
# Inbound events (one signal, typed payload)


class EventKind(str, enum.Enum):
    """Inbound events a play reacts to; the values are the names used in `.play` conditions."""

    REPLIED = "replied"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    MEETING_BOOKED = "meeting_booked"
    STAGE_CHANGED = "stage_changed"
    CLOSED_WON = "closed_won"
    CLOSED_LOST = "closed_lost"


CLOSED_WON_STAGE = "Closed Won"
CLOSED_LOST_STAGE = "Closed Lost"


class PlayEvent(BaseModel):
    """The payload of the `event` signal."""

    kind: EventKind
    stage: str | None = None  # the new stage, for stage_changed
    at: dt.datetime | None = None  # when it happened at the source (informational)
    id: str | None = None  # the source's event id; a repeated id is ignored
    source: str | None = None  # "smtp", "hubspot", "store", ...


class EventState(BaseModel):
    """What the play knows of the outside world: sticky flags and the current stage.

    Flags are sticky: `replied` stays true once a reply arrived after
    enrollment. `stage` is the pipeline stage as last reported (None: unknown).
    """

    flags: dict[str, bool] = {}
    stage: str | None = None
    seen_ids: list[str] = []  # event ids already applied (deduplicates redelivered events)

    def flag(self, name: str) -> bool:
        return self.flags.get(name, False)


class Pause(BaseModel):
    """Payload of the `pause` signal, and a paused play's state: steps wait until `resume`.

    `scope`: what was paused, a play's name or "*" for every play (`playbook pause --all`)."""

    at: dt.datetime
    by: str
    reason: str | None = None
    scope: str = "*"


class Resume(BaseModel):
    """Payload of the `resume` signal."""

    at: dt.datetime
    by: str


# ---------------------------------------------------------------------------
# Schedule: every step's instant in UTC, computed outside the workflow


class ScheduledStep(BaseModel):
    label: str
    due_at: dt.datetime  # UTC
    local: str  # the same instant in the recipient's zone, for people: "2026-03-09 09:00 EDT"
    missed: bool = False  # due on a day before enrollment: never run (see docs/workflows.md)
    notes: list[str] = []  # why the instant moved: weekend, holiday, send window, DST gap
    # Timeout of every `wait` inside this step (by action path), resolved against
    # the step's own calendar position, so business-day waits need no calendar later.
    wait_seconds: dict[str, float] = {}


class Schedule(BaseModel):
    timezone: str
    steps: list[ScheduledStep]

    def compressed(self, origin: dt.datetime, day_seconds: float) -> Schedule:
        """Test-only: the same schedule with every day lasting `day_seconds` (see PlayInput.day_seconds)."""
        scale = day_seconds / 86400.0
        steps = [
            s.model_copy(update={
                "due_at": origin + (s.due_at - origin) * scale,
                "wait_seconds": {k: v * scale for k, v in s.wait_seconds.items()},
            })
            for s in self.steps
        ]
        return self.model_copy(update={"steps": steps})


class ScheduleRequest(BaseModel):
    plan: Plan
    enrolled_at: dt.datetime
    anchor: dt.date | None = None
    timezone: str = "UTC"


# ---------------------------------------------------------------------------
# Workflow input, state and queries


class Outcome(str, enum.Enum):
    RAN = "ran"
    SKIPPED = "skipped"  # an `unless` condition held
    MISSED = "missed"  # due before enrollment
    LATE = "late"  # ran after its time (a wait before it ran long)
    THEN = "then"  # branch condition true
    OTHERWISE = "otherwise"  # branch condition false or empty
    EVENT = "event"  # a wait ended by an event
    TIMEOUT = "timeout"  # a wait ended by its timeout
    EXITED = "exited"
    FAILED = "failed"
    DUPLICATE = "duplicate"  # the connector had already acted for this key


class Decision(BaseModel):
    step: str  # action path: "call", "day14/then/0"
    outcome: Outcome
    reason: str
    at: dt.datetime


class PlayState(BaseModel):
    """Everything carried across continue-as-new."""

    schedule: Schedule
    next_index: int = 0
    events: EventState = EventState()
    decisions: list[Decision] = []
    wait_deadlines: dict[str, dt.datetime] = {}  # a wait in progress survives continue-as-new
    runs: int = 1  # how many runs this enrollment has used (1 + continue-as-new count)
    pause: Pause | None = None  # paused when it continued as new


class PlayInput(BaseModel):
    plan: Plan
    account_id: str
    enrolled_at: dt.datetime  # UTC; fixed here (not workflow.now()) so resets keep it
    # Distinguishes two enrollments of the same account in the same plan version
    # (re-entry after a cooldown) inside idempotency keys. Stable across retries,
    # replays, resets and continue-as-new; defaults to enrolled_at.
    enrollment_id: str | None = None
    anchor: dt.date | None = None  # value of plan.anchor for this account, resolved at enrollment
    timezone: str = "UTC"  # recipient's IANA zone, resolved at enrollment
    events: list[PlayEvent] = []  # events known at enrollment time
    # Started paused (a pause recorded in the store for its play or for all
    # plays): no step acts until the `resume` signal.
    pause: Pause | None = None
    # Step kind -> the task queue of the connector serving it, decided at start
    # from the connector settings (workflows/queues.py); a kind not in it runs
    # its `act` on the workflow's own task queue.
    queues: dict[str, str] = {}
    state: PlayState | None = None  # set only by continue-as-new
    # Continue as new after this many steps in one run. The server suggests it
    # by history size already; this makes it testable on the test server,
    # which never suggests it.
    steps_per_run: int | None = None
    # TEST-ONLY time scale, for tests on a real (not time-skipping) server such
    # as the crash test: one day of the schedule lasts `day_seconds` real
    # seconds (steps and waits compressed around enrolled_at, calendar rules
    # computed as usual first), and acting activities time out after
    # `activity_timeout_seconds` instead of 60 s, so a killed worker's activity
    # is retried within seconds. Never set them for real plays.
    day_seconds: float | None = None
    activity_timeout_seconds: float | None = None

    def enrollment(self) -> str:
        if self.enrollment_id:
            return self.enrollment_id
        return self.enrolled_at.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


class PlayStatus(BaseModel):
    """Answer of the `status` query."""

    play: str
    account_id: str
    plan_hash: str
    current_step: str | None  # the step being run or waited for
    next_step: str | None
    next_at: dt.datetime | None
    state: str  # "sleeping", "running", "waiting", "paused", "exited", "completed"
    events: EventState
    decisions: list[Decision]
    runs: int
    paused: Pause | None = None  # steps wait until resumed


class PlayResult(BaseModel):
    outcome: str  # "completed" or "exited"
    reason: str
    decisions: list[Decision]


# ---------------------------------------------------------------------------
# Activity requests


class StepContext(BaseModel):
    """What every acting activity receives: who, which step, and the idempotency key."""

    key: str
    play: str
    plan_hash: str
    account_id: str
    step: str
    requested_at: dt.datetime  # workflow time when the step ran (not the activity's clock)
    timezone: str = "UTC"
    holidays: list[dt.date] = []
    holiday_regions: list[str] = []  # Plan.holiday_regions: public holidays, resolved by the activity

    @property
    def actor(self) -> str:
        return f"play:{self.play}"


class StepRequest(BaseModel):
    """What the `act` activity receives: the Plan's step itself, and what of the Plan it needs.

    One request for every acting step kind: the activity turns the step into
    its connector action (connectors/base.py `ACTIONS`).
    """

    ctx: StepContext
    action: StepAction
    templates: dict[str, PlanTemplate] = {}  # the templates the step uses
    sender: Ref | None = None  # Plan.owner: {{ sender_name }}, {{ sender_email }}
    play_title: str = ""

    @classmethod
    def from_activity(cls, activity_type: str, payload: dict[str, Any]) -> StepRequest:
        """A request sent to one of the activities plays used before `act` (LEGACY_ACTIVITIES),
        in its old shape (one request type per kind) or in this one."""
        if "action" in payload:
            return cls.model_validate(payload)
        kind = {name: kind for kind, name in LEGACY_ACTIVITIES.items()}[activity_type]
        fields = {k: v for k, v in payload.items() if k not in ("ctx", "template", "sender", "play_title")}
        templates: dict[str, Any] = {}
        if kind == "email":  # the old request carried the whole template
            fields["template"] = payload["template"]["name"]
            templates = {fields["template"]: payload["template"]}
        return cls.model_validate({"ctx": payload["ctx"], "action": {"step": kind, **fields}, "templates": templates,
                                   "sender": payload.get("sender"), "play_title": payload.get("play_title", "")})


# Before patch ONE_ACT_ACTIVITY every acting kind had its own activity; runs
# started before it keep scheduling these names (workflows/play.py).
LEGACY_ACTIVITIES = {
    "email": "send_email", "task": "create_task", "stage": "change_stage", "opportunity": "create_opportunity",
    "notify": "notify", "webhook": "webhook", "set": "set_field", "trial": "enable_trial",
}
ONE_ACT_ACTIVITY = "one-act-activity"


class ConditionRequest(BaseModel):
    account_id: str
    expr: Expr
    events: EventState = Field(default_factory=EventState)
    at: dt.datetime  # workflow time: the evaluator's `today`


class ActResult(BaseModel):
    """What the workflow records of an action: enough for the decision log."""

    duplicate: bool = False  # the key had been used: nothing was done this time
    skipped: str | None = None  # deliberately not done (recipient unsubscribed), with why
    external_id: str | None = None
    summary: str = ""

