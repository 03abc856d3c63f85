"""PlayWorkflow: one generic, deterministic interpreter of a compiled Plan.

The Plan arrives in the input, so it is fixed in this enrollment's history:
editing a `.play` file never changes a running play. Everything else comes
from signals (inbound events) and activities (schedule, conditions over
account data, side effects). No file, clock, network or time zone here:
the schedule's UTC instants are computed by the `compute_schedule` local
activity (workflows/schedule.py) and only UTC arithmetic happens inside.

Semantics (docs/workflows.md has the long form):
- Steps run in Plan order, each not before its scheduled instant; a step
  reached after its instant (a wait before it ran long) runs at once.
- The exit condition is checked before every step, between actions of a
  branch, and while sleeping or waiting (every signal re-evaluates it).
- `unless` is evaluated when the step's time comes.
- Inbound-event flags are sticky: `replied` stays true once a reply came.
- Paused (signal `pause`, or `PlayInput.pause` at start), a play acts on
  nothing: a step that comes due waits, and runs at once after `resume`
  (nothing skipped). Events still count and the exit still ends it.

Changing this code changes how running plays replay. Any change to the
order or kind of commands (activities, timers) must be gated with
`workflow.patched("<id>")` (keep both paths until no run started before the
change is open), or shipped with Worker Versioning (PINNED, upgrade on
continue-as-new). tests/workflows/test_replay.py replays committed
histories and fails on a nondeterministic change.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from dsl import nodes as n
    from dsl import steps as step_kinds
    from dsl.plan import Plan, PlanStep
    from dsl.printer import format_expr
    import workflows.conditions as conditions  # `from workflows import m` would re-import m in every run's sandbox
    import workflows.search_attributes as sa
    from workflows.activities import PlayActivities, compute_schedule
    from workflows.model import (
        CLOSED_LOST_STAGE,
        CLOSED_WON_STAGE,
        LEGACY_ACTIVITIES,
        ONE_ACT_ACTIVITY,
        ActResult,
        ConditionRequest,
        Decision,
        EventKind,
        EventState,
        Outcome,
        Pause,
        PlayEvent,
        PlayInput,
        PlayResult,
        PlayState,
        PlayStatus,
        Resume,
        ScheduledStep,
        ScheduleRequest,
        StepContext,
        StepRequest,
    )

# Side effects retry until they succeed or fail permanently: a store or
# provider outage pauses a play (visible as a pending activity) instead of
# failing it. Permanent errors are non-retryable ApplicationErrors.
ACT_RETRY = RetryPolicy(initial_interval=dt.timedelta(seconds=1), backoff_coefficient=2.0,
                        maximum_interval=dt.timedelta(minutes=10))
ACT_TIMEOUT = dt.timedelta(seconds=60)
# `act` heartbeats while it runs (workflows/activities.py `heartbeating`): an
# attempt on a worker that died is retried after this, not after ACT_TIMEOUT.
ACT_HEARTBEAT = dt.timedelta(seconds=10)
# workflow.patched id: runs that recorded it schedule `act` on the queue of the
# connector serving the kind (PlayInput.queues) with ACT_HEARTBEAT.
CONNECTOR_QUEUES_PATCH = "connector-queues"
SCHEDULE_RETRY = RetryPolicy(maximum_attempts=3, non_retryable_error_types=["ScheduleError"])
LATE_AFTER = dt.timedelta(minutes=1)  # a step this much after its instant is logged as late


def workflow_id(play: str, account_id: str) -> str:
    """One account is in one play at most once at a time: the id is the lock."""
    return f"play:{play}:{account_id}"


def idempotency_key(plan: Plan, account_id: str, enrollment: str, path: str) -> str:
    """Stable across retries, replays, resets and continue-as-new (never the run id).

    The enrollment part keeps a re-entry after a cooldown from being mistaken
    for a repeat of the first enrollment's steps.
    """
    return f"play:{plan.play}:{account_id}:{plan.hash}:{enrollment}:{path}"


class _Exit(Exception):
    """Unwinds a step when the exit condition holds mid-step."""


@workflow.defn(name="PlayWorkflow")
class PlayWorkflow:
    @workflow.init
    def __init__(self, inp: PlayInput) -> None:
        # State exists before the first signal is handled (signal-with-start).
        self._input = inp
        self._plan = inp.plan if inp.plan.hash else inp.plan.with_hash()
        carried = inp.state
        self._events: EventState = carried.events if carried else EventState()
        self._decisions: list[Decision] = carried.decisions if carried else []
        self._state: PlayState | None = carried
        self._pause: Pause | None = carried.pause if carried else inp.pause
        self._details = ""  # the current details, as set while not paused
        self._phase = "starting"
        self._current: str | None = None
        self._exit_reason: str | None = None
        # Step and stage are published as search attributes only by runs started
        # with ours (start_play sets them): decided in run(), None until then.
        self._publish: bool | None = None
        self._act_timeout = (dt.timedelta(seconds=inp.activity_timeout_seconds)
                             if inp.activity_timeout_seconds else ACT_TIMEOUT)
        for event in inp.events:
            self._apply(event)

    # ------------------------------------------------------------------ run
    @workflow.run
    async def run(self, inp: PlayInput) -> PlayResult:
        if self._plan.exit is not None and not conditions.is_local(self._plan.exit):
            # The workflow re-checks the exit on every signal; it cannot call
            # an activity for that. The checker should reject such plays.
            raise ApplicationError(
                f"exit condition reads account data: {format_expr(self._plan.exit)}",
                type="PlanError", non_retryable=True,
            )
        if self._state is None:
            schedule = await workflow.execute_local_activity(
                compute_schedule,
                ScheduleRequest(plan=self._plan, enrolled_at=inp.enrolled_at, anchor=inp.anchor, timezone=inp.timezone),
                start_to_close_timeout=dt.timedelta(seconds=30),
                retry_policy=SCHEDULE_RETRY,
            )
            if inp.day_seconds:  # test-only time scale (PlayInput.day_seconds)
                schedule = schedule.compressed(inp.enrolled_at, inp.day_seconds)
            self._state = PlayState(schedule=schedule, events=self._events, decisions=self._decisions)
        self._refresh_exit()
        # Search attributes: a run started with PlaybookPlay (start_play sets it,
        # continue-as-new carries it) upserts step and stage. This is the
        # deterministic gate for the upserts (no workflow.patched needed): every
        # run started before they existed was started without PlaybookPlay, so
        # its replay issues no upsert (the golden histories check it).
        self._publish = workflow.info().typed_search_attributes.get(sa.PLAY) is not None
        if self._pause is not None:
            self._show_pause()

        state = self._state
        steps_this_run = 0
        while state.next_index < len(self._plan.steps):
            step = self._plan.steps[state.next_index]
            if self._exit_reason:
                return self._exited(step.label)
            when = state.schedule.steps[state.next_index]
            if when.missed:
                self._decide(step.label, Outcome.MISSED, "; ".join(when.notes))
                state.next_index += 1
                continue

            self._phase, self._current = "sleeping", None
            if when.due_at > workflow.now():
                self._publish_attributes(step.label, when.due_at)
                # The recipient's local time comes from compute_schedule (no zones in here).
                self._set_details(f"next: {step_in_words(step)}, {when.local} ({_utc(when.due_at)})")
            woke = await self._sleep_until(when.due_at, step.label)
            if woke == "exit":
                return self._exited(step.label)
            if woke == "rollover":
                self._continue_as_new()

            self._phase, self._current = "running", step.label
            try:
                await self._run_step(step, when)
            except _Exit:
                return self._exited(step.label)
            state.next_index += 1
            steps_this_run += 1
            if self._rollover_due(steps_this_run) and state.next_index < len(self._plan.steps):
                await workflow.wait_condition(workflow.all_handlers_finished)
                self._continue_as_new()

        if self._exit_reason:
            return self._exited("-")
        self._phase, self._current = "completed", None
        return PlayResult(outcome="completed", reason="every step ran", decisions=self._decisions)

    # ------------------------------------------------------------ signals
    @workflow.signal(name="event")
    def event(self, event: PlayEvent) -> None:
        self._apply(event)
        self._refresh_exit()
        self._publish_attributes()

    @workflow.signal(name="pause")
    def pause(self, pause: Pause) -> None:
        """Hold every step from now on (a step running now finishes); again: a new reason."""
        self._pause = pause
        self._show_pause()

    @workflow.signal(name="resume")
    def resume(self, resume: Resume) -> None:
        """Steps run again; one that came due while paused runs at once."""
        if self._pause is None:
            return
        self._pause = None
        self._show_pause()

    def _show_pause(self) -> None:
        """Current details and PlaybookPaused (runs past PAUSE_PATCH) as the pause now is."""
        self._set_details(self._details)
        if not self._publish:
            return  # run() shows it once it knows whether this run publishes
        paused = self._pause is not None
        current = workflow.info().typed_search_attributes.get(sa.PAUSED)
        if current != paused and (current is not None or paused) and workflow.patched(sa.PAUSE_PATCH):
            workflow.upsert_search_attributes([sa.PAUSED.value_set(paused)])

    def _set_details(self, text: str) -> None:
        """The Web UI's current details (not a history command); a pause goes first."""
        self._details = text
        if self._pause is not None:
            p = self._pause
            why = f": {p.reason}" if p.reason else ""
            held = f"PAUSED since {_utc(p.at)} by {p.by}{why}; steps wait until `playbook resume`"
            text = f"{held}\n{text}" if text else held
        workflow.set_current_details(text)

    async def _hold(self) -> None:
        """Wait while paused (no command when not paused: old histories replay unchanged)."""
        if self._pause is None or self._exit_reason is not None:
            return
        phase, self._phase = self._phase, "paused"
        await workflow.wait_condition(lambda: self._pause is None or self._exit_reason is not None)
        self._phase = phase
        if self._exit_reason is not None:
            raise _Exit

    def _apply(self, event: PlayEvent) -> None:
        ev = self._events
        if event.id is not None:
            if event.id in ev.seen_ids:
                return  # a redelivered webhook or a repeated import
            ev.seen_ids.append(event.id)
        ev.flags[event.kind.value] = True
        if event.kind is EventKind.STAGE_CHANGED and event.stage is not None:
            ev.stage = event.stage
            if event.stage == CLOSED_WON_STAGE:
                ev.flags[EventKind.CLOSED_WON.value] = True
            elif event.stage == CLOSED_LOST_STAGE:
                ev.flags[EventKind.CLOSED_LOST.value] = True
        elif event.kind in (EventKind.CLOSED_WON, EventKind.CLOSED_LOST):
            ev.stage = CLOSED_WON_STAGE if event.kind is EventKind.CLOSED_WON else CLOSED_LOST_STAGE
            ev.flags[EventKind.STAGE_CHANGED.value] = True

    def _refresh_exit(self) -> None:
        if self._exit_reason is not None or self._plan.exit is None:
            return
        if conditions.evaluate(self._plan.exit, self._events, workflow.now().date()) is True:
            flags = ", ".join(sorted(k for k, v in self._events.flags.items() if v)) or "none"
            self._exit_reason = (
                f"exit when {format_expr(self._plan.exit)} held "
                f"(events: {flags}; stage: {self._events.stage or 'unknown'})"
            )

    def _publish_attributes(self, step: str | None = None, next_at: dt.datetime | None = None) -> None:
        """Upsert PlaybookStep / PlaybookStage / PlaybookNextStepAt where they changed (one command, or none).

        The step is published where the play blocks (sleeping until a step,
        waiting inside one), not for steps run back to back: those last
        milliseconds, and every upsert is an event and a visibility write.
        `next_at` (when it acts next) only in runs past NEXT_STEP_AT_PATCH.
        """
        if not self._publish:
            return
        current = workflow.info().typed_search_attributes
        wanted = [(sa.STEP, step), (sa.STAGE, self._events.stage)]
        updates: list[Any] = [key.value_set(value) for key, value in wanted
                              if value is not None and current.get(key) != value]
        if (next_at is not None and current.get(sa.NEXT_STEP_AT) != next_at
                and workflow.patched(sa.NEXT_STEP_AT_PATCH)):
            updates.append(sa.NEXT_STEP_AT.value_set(next_at))
        if updates:
            workflow.upsert_search_attributes(updates)

    # ------------------------------------------------------------ queries
    @workflow.query(name="status")
    def status(self) -> PlayStatus:
        next_step, next_at = self._next()
        return PlayStatus(
            play=self._plan.play,
            account_id=self._input.account_id,
            plan_hash=self._plan.hash,
            current_step=self._current,
            next_step=next_step,
            next_at=next_at,
            state=self._phase,
            events=self._events,
            decisions=self._decisions,
            runs=self._state.runs if self._state else 1,
            paused=self._pause,
        )

    def _next(self) -> tuple[str | None, dt.datetime | None]:
        if self._state is None or self._exit_reason:
            return None, None
        start = self._state.next_index + (1 if self._phase in ("running", "waiting") else 0)
        for when in self._state.schedule.steps[start:]:
            if not when.missed:
                return when.label, when.due_at
        return None, None

    # ------------------------------------------------------------ steps
    async def _run_step(self, step: PlanStep, when: ScheduledStep) -> None:
        await self._hold()
        if step.unless is not None:
            held = await self._condition(step.unless)
            if held is True:
                self._decide(step.label, Outcome.SKIPPED, f"unless {format_expr(step.unless)} held")
                return
        late = workflow.now() - when.due_at
        if late > LATE_AFTER:
            self._decide(step.label, Outcome.LATE, f"due {when.local}, reached {_ago(late)} late")
        await self._act(step.action, step.label, when)

    async def _act(self, action: n.StepAction, path: str, when: ScheduledStep) -> None:
        await self._hold()
        if self._exit_reason:
            raise _Exit
        match action:
            case n.WaitStep():
                await self._wait(action, path, when)
            case n.BranchStep():
                await self._branch(action, path, when)
            case _:
                result = await self._side_effect(action, path)
                if result.skipped:
                    self._decide(path, Outcome.SKIPPED, f"{result.summary}: {result.skipped}")
                elif result.duplicate:
                    self._decide(path, Outcome.DUPLICATE, f"{result.summary} (already done under this key; not repeated)")
                else:
                    self._decide(path, Outcome.RAN, result.summary)
                if isinstance(action, n.StageStep):
                    # Our own stage move counts for `stage in [...]` exits
                    # (moving to Closed Lost ends the play) but is not an
                    # inbound stage_changed event.
                    self._events.stage = action.stage
                    self._refresh_exit()
                    self._publish_attributes()

    async def _branch(self, action: n.BranchStep, path: str, when: ScheduledStep) -> None:
        held = await self._condition(action.condition)
        arm, actions = ("then", action.then) if held is True else ("else", action.otherwise)
        shown = {True: "true", False: "false", None: "empty"}[held]
        self._decide(path, Outcome.THEN if held is True else Outcome.OTHERWISE,
                     f"{format_expr(action.condition)} is {shown}")
        for i, sub in enumerate(actions):
            await self._act(sub, step_kinds.arm_path(path, arm, i), when)

    async def _wait(self, action: n.WaitStep, path: str, when: ScheduledStep) -> None:
        names = " or ".join(action.events)

        def arrived() -> str | None:
            return next((e for e in action.events if self._events.flag(e)), None)

        if (already := arrived()) is not None:
            self._decide(path, Outcome.EVENT, f"{already} had already happened")
            return
        timeout = dt.timedelta(seconds=when.wait_seconds[path])
        if timeout <= dt.timedelta(0):
            self._decide(path, Outcome.TIMEOUT, f"no {names}: the wait has no length")
            return
        self._phase = "waiting"
        self._publish_attributes(when.label, workflow.now() + timeout)
        self._set_details(f"{when.label}: waiting for {names} until {_utc(workflow.now() + timeout)}")
        try:
            await workflow.wait_condition(
                lambda: arrived() is not None or self._exit_reason is not None,
                timeout=timeout,
                timeout_summary=f"wait for {names}",
            )
        except asyncio.TimeoutError:
            self._decide(path, Outcome.TIMEOUT, f"no {names} within {format_expr(action.timeout)}")
        else:
            if self._exit_reason:
                raise _Exit
            self._decide(path, Outcome.EVENT, f"{arrived()} arrived")
        finally:
            self._phase = "running"

    async def _condition(self, expr: n.Expr) -> bool | None:
        if conditions.is_local(expr):
            return conditions.evaluate(expr, self._events, workflow.now().date())
        return await workflow.execute_activity_method(
            PlayActivities.evaluate_condition,
            ConditionRequest(account_id=self._input.account_id, expr=expr, events=self._events, at=workflow.now()),
            start_to_close_timeout=self._act_timeout,
            retry_policy=ACT_RETRY,
            summary=format_expr(expr),
        )

    async def _side_effect(self, action: n.StepAction, path: str) -> ActResult:
        ctx = StepContext(
            key=idempotency_key(self._plan, self._input.account_id, self._input.enrollment(), path),
            play=self._plan.play,
            plan_hash=self._plan.hash,
            account_id=self._input.account_id,
            step=path,
            requested_at=workflow.now(),
            timezone=self._input.timezone,
            holidays=self._plan.holidays,
            holiday_regions=self._plan.holiday_regions,
        )
        missing = [name for name in step_kinds.templates(action) if name not in self._plan.templates]
        if missing:
            raise ApplicationError(f"step {path}: template {missing[0]!r} is not in the Plan",
                                   type="PlanError", non_retryable=True)
        request = StepRequest(ctx=ctx, action=action, sender=self._plan.owner, play_title=self._plan.title,
                              templates={name: self._plan.templates[name] for name in step_kinds.templates(action)})
        options: dict[str, Any] = {"start_to_close_timeout": self._act_timeout, "retry_policy": ACT_RETRY,
                                   "summary": f"{path}: {action.step}"}
        try:
            if workflow.patched(ONE_ACT_ACTIVITY):
                if workflow.patched(CONNECTOR_QUEUES_PATCH):
                    options["heartbeat_timeout"] = min(ACT_HEARTBEAT, self._act_timeout)
                    if queue := self._input.queues.get(action.step):
                        options["task_queue"] = queue  # the connector's queue: its rate limit
                return await workflow.execute_activity_method(PlayActivities.act, request, **options)
            # A run that began before the patch keeps its per-kind activity names.
            return await workflow.execute_activity(LEGACY_ACTIVITIES[action.step], request, result_type=ActResult,
                                                   **options)
        except ActivityError as exc:
            cause = exc.cause.message if isinstance(exc.cause, ApplicationError) else str(exc.cause or exc)
            self._decide(path, Outcome.FAILED, cause)
            # Fail the play loudly: fix the data, then reset the workflow; the
            # idempotency keys keep the steps that already acted from acting twice.
            raise ApplicationError(f"step {path} failed: {cause}", type="StepFailed", non_retryable=True) from exc

    # ------------------------------------------------------------ time
    async def _sleep_until(self, due: dt.datetime, label: str) -> str:
        """'due' at the instant, 'exit' if the play must stop, 'rollover' to continue as new."""
        remaining = due - workflow.now()
        if remaining <= dt.timedelta(0):
            return "exit" if self._exit_reason else "due"
        try:
            await workflow.wait_condition(
                lambda: self._exit_reason is not None or workflow.info().is_continue_as_new_suggested(),
                timeout=remaining,
                timeout_summary=f"until {label}",
            )
        except asyncio.TimeoutError:
            return "due"
        return "exit" if self._exit_reason else "rollover"

    def _rollover_due(self, steps_this_run: int) -> bool:
        if workflow.info().is_continue_as_new_suggested():
            return True
        return self._input.steps_per_run is not None and steps_this_run >= self._input.steps_per_run

    def _continue_as_new(self) -> None:
        assert self._state is not None
        self._state.events, self._state.decisions = self._events, self._decisions
        self._state.runs += 1
        self._state.pause = self._pause
        # Same id, same Plan, same enrollment: keys and schedule carry over.
        workflow.continue_as_new(self._input.model_copy(update={"state": self._state, "events": []}))

    # ------------------------------------------------------------ decisions
    def _decide(self, step: str, outcome: Outcome, reason: str) -> None:
        self._decisions.append(Decision(step=step, outcome=outcome, reason=reason, at=workflow.now()))

    def _exited(self, at_step: str) -> PlayResult:
        reason = self._exit_reason or "exit"
        self._decide(at_step, Outcome.EXITED, reason)
        self._phase, self._current = "exited", None
        return PlayResult(outcome="exited", reason=reason, decisions=self._decisions)


def step_in_words(step: PlanStep) -> str:
    """A step in words for the Web UI (current and static details): `day 3 email account.admin · usage_analysis`."""
    return f"{'business ' if step.business else ''}day {step.day} {step_kinds.describe(step.action)} ({step.label})"


def _utc(at: dt.datetime) -> str:
    """UTC on purpose: the sandbox has no time zones (docs/workflows.md)."""
    return f"{at.astimezone(dt.timezone.utc):%a %d %b %H:%M} UTC"


def _ago(delta: dt.timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} hours"


__all__: Sequence[str] = ["ACT_HEARTBEAT", "CONNECTOR_QUEUES_PATCH", "PlayWorkflow", "idempotency_key", "step_in_words", "workflow_id"]
