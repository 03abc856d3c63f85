"""PipelineWorkflow: the SLA timer of one opportunity, and `record_stage_change`, the one way to move a deal.

One workflow per deal, id `pipeline:<opportunity id>`, started or signalled
with signal-with-start on every stage change (a play's `opportunity` /
`stage` step, `playbook stage`, an inbound CRM event). The store is the
record: on each signal the workflow reads where the deal stands
(`pipeline_state`: its stage, since when, and the SLA instants computed
outside the sandbox), then sleeps until the owner's deadline. A stage change
before it wakes the workflow, which starts over from the new stage: the old
timer is dropped, nobody is told. At the deadline `pipeline_breach` records
the breach and gives the owner a task; after the grace period, the owner's
manager. A closed deal ends the workflow.

The breach key (deal, stage, entry time, level) is the notification's
idempotency key: a retry, a replay or a reset tells nobody twice.

Changing the order or kind of this workflow's commands must be gated with
`workflow.patched(...)` like workflows/play.py; tests/workflows/
test_pipeline.py replays a committed history.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import TYPE_CHECKING

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows.pipeline_activities import PipelineActivities
    from workflows.pipeline_model import (
        BreachRequest,
        Level,
        PipelineInput,
        PipelineStatus,
        SlaState,
        StageSignal,
    )

if TYPE_CHECKING:
    from temporalio.client import Client

    from engine.pipeline import Move
    from engine.store import Store

SIGNAL = "stage_changed"
# Store reads and notifications retry until they succeed (a store outage delays a
# reminder, never drops it); permanent connector errors fail the attempt for good.
RETRY = RetryPolicy(initial_interval=dt.timedelta(seconds=1), backoff_coefficient=2.0,
                    maximum_interval=dt.timedelta(minutes=10))
TIMEOUT = dt.timedelta(seconds=60)


def workflow_id(opportunity_id: str) -> str:
    return f"pipeline:{opportunity_id}"


@workflow.defn(name="PipelineWorkflow")
class PipelineWorkflow:
    @workflow.init
    def __init__(self, inp: PipelineInput) -> None:
        self._id = inp.opportunity_id
        self._told: list[str] = list(inp.told)
        self._dirty = False
        self._state: SlaState | None = None
        self._waiting = "store"
        self._signals: list[StageSignal] = []

    @workflow.signal(name=SIGNAL)
    def stage_changed(self, change: StageSignal) -> None:
        self._dirty = True
        self._signals.append(change)

    @workflow.query(name="status")
    def status(self) -> PipelineStatus:
        return PipelineStatus(opportunity_id=self._id, state=self._state, told=self._told, waiting=self._waiting)

    @workflow.run
    async def run(self, inp: PipelineInput) -> str:
        while True:
            self._dirty = False
            self._waiting = "store"
            state = await workflow.execute_activity_method(
                PipelineActivities.state, self._id, start_to_close_timeout=TIMEOUT, retry_policy=RETRY)
            self._state = state
            if not state.known:
                return f"no opportunity {self._id}"
            if state.closed:
                return f"closed at {state.stage}"
            if await self._run_deadlines(state):
                continue  # the deal moved while a notification was under way
            if not self._dirty:
                self._waiting = "a stage change"
                workflow.set_current_details(f"{state.stage}: no SLA runs now; waiting for a stage change")
                await workflow.wait_condition(lambda: self._dirty or workflow.info().is_continue_as_new_suggested())
            if not self._dirty and workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(PipelineInput(opportunity_id=self._id, told=self._told))

    async def _run_deadlines(self, state: SlaState) -> bool:
        """Sleep to each level's instant and tell it; False when a stage change cut that short
        or every level was told, True when the store said the deal had moved on."""
        levels: tuple[tuple[Level, dt.datetime | None], ...] = (("owner", state.due_at),
                                                                ("manager", state.escalate_at))
        for level, at in levels:
            if at is None:
                return False
            key = state.told_key(level)
            if key in self._told:
                continue
            self._waiting = f"{level} deadline"
            workflow.set_current_details(f"{state.stage}: {state.sla}; {level} told at {_utc(at)}")
            if not await self._sleep_until(at):
                return False
            assert state.stage is not None and state.entered_at is not None and state.due_at is not None
            try:
                result = await workflow.execute_activity_method(
                    PipelineActivities.breach,
                    BreachRequest(opportunity_id=self._id, stage=state.stage, entered_at=state.entered_at,
                                  due_at=state.due_at, level=level, at=workflow.now()),
                    start_to_close_timeout=TIMEOUT, retry_policy=RETRY, summary=f"SLA {state.stage}: {level}")
            except ActivityError as exc:
                # Failed for good (the connector refused the task: an unknown assignee, say). The
                # breach row is written before the task, so reports still count it; the timer
                # goes on to the next level and the next stage instead of dying with this deal.
                cause = exc.cause.message if isinstance(exc.cause, ApplicationError) else str(exc.cause or exc)
                workflow.logger.warning("SLA %s of %s: telling the %s failed: %s", state.stage, self._id, level,
                                        cause)
            else:
                if result.outcome == "moved":
                    return True
            self._told.append(key)
        return False

    async def _sleep_until(self, at: dt.datetime) -> bool:
        """True when `at` came, False when a stage change came first."""
        if self._dirty:
            return False
        remaining = at - workflow.now()
        if remaining <= dt.timedelta(0):
            return True
        try:
            await workflow.wait_condition(lambda: self._dirty, timeout=remaining, timeout_summary="SLA deadline")
        except asyncio.TimeoutError:
            return True
        return False


def _utc(at: dt.datetime) -> str:
    return f"{at.astimezone(dt.timezone.utc):%a %d %b %H:%M} UTC"


# ---------------------------------------------------------------------------
# Outside the workflow: moving a deal and telling its timer


async def signal(client: Client, opportunity_id: str, change: StageSignal, *, task_queue: str) -> None:
    """Start the deal's SLA workflow, or signal the running one, with this change."""
    await client.start_workflow(
        PipelineWorkflow.run, PipelineInput(opportunity_id=opportunity_id), id=workflow_id(opportunity_id),
        task_queue=task_queue, start_signal=SIGNAL, start_signal_args=[change],
    )


async def record_stage_change(client: Client, store: Store, opportunity_id: str, stage: str, *, actor: str,
                              reason: str | None = None, at: dt.datetime | None = None,
                              task_queue: str = "playbook") -> Move:
    """Move a deal (checked against dsl/pipeline.py's table, recorded with time, actor and reason code),
    then tell its SLA workflow and the running play that opened it (a `stage_changed` event).
    For `playbook stage` and inbound CRM events.

    Raises `engine.pipeline.PipelineError` (unknown deal or stage, a refused move) with nothing
    written. A deal already at `stage` is no change and nothing is signalled. If Temporal cannot be
    reached after the move was stored, the error propagates: the move stands, and the old timer's
    breach activity sees the deal moved and tells nobody.
    """
    from engine import pipeline

    when = at if at is not None else dt.datetime.now(dt.timezone.utc)
    move = await asyncio.to_thread(pipeline.change_stage, store, opportunity_id, stage, at=when, actor=actor,
                                   reason=reason)
    if move.changed:
        await signal(client, opportunity_id, StageSignal(stage=stage, at=when, actor=actor, reason=reason),
                     task_queue=task_queue)
        if move.play is not None:
            # The play that opened the deal sees the move as an inbound stage_changed event,
            # so `exit when stage in ["Closed Won", "Closed Lost"]` ends it (not running: nothing to do).
            from workflows.client import send_event
            from workflows.model import EventKind, PlayEvent

            await send_event(client, move.play, move.account_id, PlayEvent(
                kind=EventKind.STAGE_CHANGED, stage=stage, at=when, source="pipeline",
                id=f"pipeline:{opportunity_id}:{stage}:{when.isoformat()}"))
    return move


__all__ = ["PipelineWorkflow", "record_stage_change", "signal", "workflow_id"]
