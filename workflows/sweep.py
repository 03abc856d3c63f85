"""The sweep: evaluate triggers, decide enrollments, start plays in batches.

    SweepWorkflow (on a Temporal Schedule, `ensure_schedule`; or `playbook sweep` once)
      ├─ reconcile     activity: enrollments the store thinks are running, whose
      │                workflow has closed, get their end status and `ended_at`
      │                (cooldowns count from it)
      ├─ decide        activity: engine/enrollment.py `record` — every decision with its
      │                reasons, one `pending` enrollment row per account to start
      └─ start_batch×N activity: starts the pending rows, `batch_size` at a time,
                       with `start_play` (id `play:<play>:<account>`, conflict FAIL)

Why starts from an activity and not child workflows: a child per enrollment
costs the sweep's history several events each, so a sweep of 10,000 accounts
would need continue-as-new, and a child's parent-close policy and id reuse
interact with the sweep's own runs. An activity using the client keeps the
sweep's history at a few events per batch and uses exactly the path every
other enrollment uses (`workflows.client.start_play`).

Never twice: the store's enrollment rows are the source of truth. `decide`
skips accounts with a `pending` or `running` row (`already_enrolled`) and
those in cooldown (Temporal forgets closed runs after the retention period,
so its reuse policy cannot enforce a 90-day cooldown). `pending` rows are an
outbox of starts: written in the same transaction as the decisions, started
afterwards, so a crash between the two leaves rows the next batch or sweep
starts. A start that finds the workflow already open (the store had lost
track of it) joins it (`running`, that run's id) instead of starting twice.

Paused plays (`playbook pause`, engine/pauses.py): an enrollment whose play
is paused starts paused (`PlayInput.pause`) and acts only after `resume`.
The pauses are read again after a batch: a play started just as a pause was
recorded (too late for the command's own listing) gets the pause signal.

Everything a play's input needs is resolved here, outside the workflow: the
anchor date (`anchor account.renewal_date`) and the recipient's time zone
(the send window's `in` field, else the contact the play emails first).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, model_validator
from temporalio import activity, workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from temporalio.client import (
        Client,
        Schedule,
        ScheduleActionStartWorkflow,
        ScheduleAlreadyRunningError,
        ScheduleHandle,
        ScheduleIntervalSpec,
        ScheduleOverlapPolicy,
        SchedulePolicy,
        ScheduleSpec,
        ScheduleUpdate,
        ScheduleUpdateInput,
        WorkflowExecutionStatus,
    )
    from temporalio.service import RPCError, RPCStatusCode

    from dsl import nodes as n
    from dsl.catalog import Catalog
    from dsl.plan import Plan
    from dsl.steps import walk_steps
    from engine import enroll, enrollment, lookup, pauses
    from engine.settings import EngineSettings, load_settings
    from engine.store import Store
    from workflows.client import TASK_QUEUE, AlreadyEnrolled, start_play
    from workflows.model import Pause, PlayInput

SWEEP_SCHEDULE_ID = "playbook-sweep"
SWEEP_WORKFLOW_ID = "playbook-sweep"
DEFAULT_BATCH = 200  # enrollments started per activity (one heartbeat each)
START_CONCURRENCY = 50  # concurrent start RPCs inside a batch


# --------------------------------------------------------------------------
# The rules a sweep works with


@dataclass
class Playbooks:
    """A checked project's catalog and compiled Plans (by play name)."""

    catalog: Catalog
    plans: dict[str, Plan]

    @classmethod
    def load(cls, paths: Sequence[str | Path] = ("playbooks",)) -> Playbooks:
        """Load, check and compile; refuses a project with errors (a sweep must not run half a rule set)."""
        from dsl.checker import check
        from dsl.compiler import compile_plans
        from dsl.project import load

        project = load(list(paths))
        errors = [d for d in [*project.diagnostics, *check(project)] if d.severity.value == "error"]
        if errors:
            first = errors[0]
            raise ValueError(f"{len(errors)} error(s) in the playbooks (run `playbook check`); first: "
                             f"{first.file}:{first.range.start.line}: {first.summary}")
        return cls(project.catalog, {p.play: p for p in compile_plans(project)})


# --------------------------------------------------------------------------
# Payloads


class SweepInput(BaseModel):
    today: dt.date | None = None  # evaluate rules as of this date (default: the team's date, engine/settings.py)
    dry_run: bool = False  # decide and report, record nothing, start nothing
    batch_size: int = DEFAULT_BATCH
    # Evaluate every account, not only those changed or time-sensitive since the last sweep (engine/changes.py).
    full: bool = False


class ReconcileResult(BaseModel):
    checked: int = 0
    ended: dict[str, int] = {}  # new status -> rows


class DecideRequest(BaseModel):
    now: dt.datetime
    # None: the team's date at `now`, from the worker's settings (a workflow
    # reads no settings; the activity does, like `playbook plan` does).
    today: dt.date | None = None
    dry_run: bool = False
    full: bool = False


class DecideResult(BaseModel):
    """A candidate is one (account, play) a trigger starts; `decisions` counts them."""

    today: dt.date | None = None  # the day the rules were evaluated on
    decisions: int = 0
    accounts: int = 0  # distinct accounts with a candidate
    enrolled: int = 0
    skipped: int = 0  # candidates not enrolled
    # reason code -> skipped candidates that carry it; one may carry several,
    # so these add up to `skipped` or more.
    reasons: dict[str, int] = {}
    by_play: dict[str, int] = {}  # play -> enrollments decided
    by_route: dict[str, int] = {}  # "play/route" -> enrollments decided
    triggers: dict[str, int] = {}  # trigger -> enrollments it started (an enrollment's first firing trigger)
    full: bool = True  # every account evaluated; else only `scope` accounts (engine/changes.py)
    scope: int | None = None
    why_full: str = ""  # why an incremental sweep evaluated every account

    @model_validator(mode="before")
    @classmethod
    def _reasons_were_called_skipped(cls, data: Any) -> Any:
        # A sweep recorded in history before `reasons` existed had the reason
        # counts under `skipped`: replaying it must still decode.
        if isinstance(data, dict) and isinstance(data.get("skipped"), dict):
            data = {**data, "reasons": data["skipped"],
                    "skipped": int(data.get("decisions", 0)) - int(data.get("enrolled", 0))}
        return data


class StartRequest(BaseModel):
    after_id: int = 0  # enrollment rows with a larger id (a cursor over the pending rows)
    limit: int = DEFAULT_BATCH
    enrolled_at: dt.datetime  # the sweep's instant: every play it starts counts from here


class StartResult(BaseModel):
    last_id: int = 0
    more: bool = False
    started: int = 0
    joined: int = 0  # already open in Temporal: the row now points at that run
    failed: int = 0  # not startable (an empty anchor): status `failed`, with the reason
    errors: int = 0  # transient (left pending for the next batch or sweep)
    error: str | None = None  # the first transient error, for the log


class SweepSummary(BaseModel):
    now: dt.datetime
    today: dt.date
    dry_run: bool = False
    reconciled: ReconcileResult = ReconcileResult()
    decided: DecideResult = DecideResult()
    started: int = 0
    joined: int = 0
    failed: int = 0
    errors: int = 0
    error: str | None = None  # the first transient start error
    batches: int = 0


# --------------------------------------------------------------------------
# The work (plain async functions: the activities, `playbook sweep` and the
# simulation all call these)


async def reconcile(client: Client, store: Store, now: dt.datetime, *, concurrency: int = 20,
                    heartbeat: Any = None) -> ReconcileResult:
    """Close the store's `running` enrollments whose workflow is closed (or unknown to Temporal).

    Status: completed (includes plays that exited), failed, cancelled,
    terminated, timed_out; `lost` when Temporal does not know the run (its
    retention period passed, or it ran on another server). `ended_at` is the
    run's close time (now for `lost`), which cooldowns count from.
    """
    rows = await asyncio.to_thread(enrollment.running, store)
    result = ReconcileResult(checked=len(rows))
    gate = asyncio.Semaphore(concurrency)
    closed: list[enrollment.End] = []

    async def check(row: enrollment.EnrollmentRow) -> None:
        async with gate:
            try:
                desc = await client.get_workflow_handle(row.workflow_id, run_id=row.run_id).describe()
            except RPCError as exc:
                if exc.status is RPCStatusCode.NOT_FOUND:
                    closed.append(enrollment.End(row.id, "lost", now))
                    return
                raise
            if desc.status is not None and desc.status is not WorkflowExecutionStatus.RUNNING:
                closed.append(enrollment.End(row.id, desc.status.name.lower(), desc.close_time or now))

    for i in range(0, len(rows), 500):
        await asyncio.gather(*(check(r) for r in rows[i:i + 500]))
        if heartbeat:
            heartbeat(i)

    await asyncio.to_thread(enrollment.record_ends, store, closed)
    for end in closed:
        result.ended[end.status] = result.ended.get(end.status, 0) + 1
    return result


def _count(decisions: Sequence[Any], key: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in decisions:
        for k in key(d):
            out[k] = out.get(k, 0) + 1
    return dict(sorted(out.items()))


def decide(store: Store, playbooks: Playbooks, now: dt.datetime, today: dt.date, *, dry_run: bool = False,
           settings: EngineSettings, full: bool = False) -> DecideResult:
    """Enrollment decisions (engine/enroll.py); recorded with `pending` rows unless `dry_run`."""
    knobs = settings.enrollment()
    if dry_run:
        decisions = enroll.decision_set(store, playbooks.catalog, playbooks.plans, today, knobs)
        chosen = [d for d in decisions if d.enroll]
        return DecideResult(
            today=today, decisions=len(decisions), accounts=len({d.account_id for d in decisions}),
            enrolled=len(chosen), skipped=len(decisions) - len(chosen),
            reasons=_count([d for d in decisions if not d.enroll], lambda d: d.codes),
            by_play=_count(chosen, lambda d: [d.play]),
            by_route=_count(chosen, lambda d: [f"{d.play}/{d.route or '-'}"]),
            triggers=_count(chosen, lambda d: list(d.triggers[:1])),
        )
    res = enrollment.record(store, playbooks.catalog, playbooks.plans, today, knobs, status="pending", now=now,
                            incremental=not full)
    return DecideResult(
        full=res.full, scope=res.scope, why_full=res.why_full,
        today=today, decisions=res.decisions, accounts=res.accounts, enrolled=len(res.enrolled),
        skipped=res.skipped, reasons=dict(sorted(res.reasons.items())),
        by_play=_count(res.enrolled, lambda e: [e.play]),
        by_route=_count(res.enrolled, lambda e: [f"{e.play}/{e.route or '-'}"]),
        triggers=_count(res.enrolled, lambda e: [e.trigger] if e.trigger else []),
    )


def _first_email_to(plan: Plan) -> n.Ref | None:
    return next((v.action.to for v in walk_steps(plan.steps) if isinstance(v.action, n.EmailStep)), None)


def _account_field(ref: n.Ref | None) -> str | None:
    if ref is not None and len(ref.path) == 2 and ref.path[0] == "account":
        return ref.path[1]
    return None


def _valid_zone(name: Any) -> str | None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if not name or not isinstance(name, str):
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return name


def _as_date(v: Any) -> dt.date | None:
    if v is None or v == "":
        return None
    if isinstance(v, dt.datetime):
        return v.date()
    if isinstance(v, dt.date):
        return v
    return dt.date.fromisoformat(str(v)[:10])


def play_inputs(store: Store, playbooks: Playbooks, rows: Sequence[Any],
                enrolled_at: dt.datetime) -> list[tuple[Any, PlayInput | None, str | None]]:
    """(row, PlayInput or None, why not) for enrollment rows: anchor and time zone read from the store."""
    needed: set[str] = set()
    for pl in playbooks.plans.values():
        for ref in (pl.anchor, pl.window.timezone if pl.window else None, _first_email_to(pl)):
            if (f := _account_field(ref)) is not None:
                needed.add(f)
    data = lookup.account_fields(store, playbooks.catalog, {r.account_id for r in rows}, sorted(needed))
    zones = lookup.contact_zones(store, {v for d in data.values() for k, v in d.items()
                                         if k != "id" and isinstance(v, str) and v})
    out: list[tuple[Any, PlayInput | None, str | None]] = []
    for row in rows:
        plan = playbooks.plans.get(row.play)
        if plan is None:
            out.append((row, None, f"play {row.play!r} is no longer in the playbooks"))
            continue
        acc = data.get(row.account_id)
        if acc is None:
            out.append((row, None, f"account {row.account_id!r} is not in the store"))
            continue
        anchor = None
        if plan.anchor is not None:
            anchor = _as_date(acc.get(_account_field(plan.anchor) or ""))
            if anchor is None:
                out.append((row, None, f"the play is anchored on {plan.anchor.dotted}, which is empty"))
                continue
        tz = None
        if plan.window is not None and plan.window.timezone is not None:
            tz = _valid_zone(acc.get(_account_field(plan.window.timezone) or ""))
        if tz is None:
            contact = acc.get(_account_field(_first_email_to(plan)) or "")
            tz = _valid_zone(zones.get(contact)) if contact else None
        inp = PlayInput(plan=plan, account_id=row.account_id, enrolled_at=enrolled_at,
                        enrollment_id=f"e{row.id}", anchor=anchor, timezone=tz or "UTC")
        out.append((row, inp, None))
    return out


async def start_batch(client: Client, store: Store, playbooks: Playbooks, req: StartRequest, *,
                      task_queue: str = TASK_QUEUE, concurrency: int = START_CONCURRENCY,
                      queues: Mapping[str, str] | None = None) -> StartResult:
    """Start up to `req.limit` pending enrollments with an id above `req.after_id`.

    `queues`: step kind -> task queue of its connector (workflows/queues.py), put in
    every play's input; None: every step on the workflow's own queue."""
    rows, more = await asyncio.to_thread(enrollment.pending, store, req.after_id, req.limit)
    result = StartResult(last_id=rows[-1].id if rows else req.after_id, more=more)
    if not rows:
        return result
    inputs = await asyncio.to_thread(play_inputs, store, playbooks, rows, req.enrolled_at)
    held = await asyncio.to_thread(pauses.in_force, store)
    inputs = [(row, _paused(inp, held), why) for row, inp, why in inputs]
    if queues:
        inputs = [(row, inp.model_copy(update={"queues": dict(queues)}) if inp else None, why)
                  for row, inp, why in inputs]
    gate = asyncio.Semaphore(concurrency)
    starts: list[enrollment.Start] = []
    started: list[PlayInput] = []

    async def start(row: enrollment.EnrollmentRow, inp: PlayInput | None, why: str | None) -> None:
        if inp is None:
            starts.append(enrollment.Start(row.id, "failed", ended_at=req.enrolled_at, note=f"not started: {why}"))
            result.failed += 1
            return
        async with gate:
            try:
                handle = await start_play(client, inp, task_queue=task_queue)
                starts.append(enrollment.Start(row.id, "running", run_id=handle.result_run_id,
                                               plan_hash=inp.plan.hash))
                started.append(inp)
                result.started += 1
            except AlreadyEnrolled:
                desc = await client.get_workflow_handle(row.workflow_id).describe()
                starts.append(enrollment.Start(row.id, "running", run_id=desc.run_id,
                                               note="already open in Temporal: joined that run, not started again"))
                result.joined += 1
            except Exception as exc:  # an outage: the row stays pending, the next batch or sweep retries
                result.errors += 1
                result.error = result.error or f"{type(exc).__name__}: {exc}"

    await asyncio.gather(*(start(*x) for x in inputs))
    await asyncio.to_thread(enrollment.record_starts, store, starts)
    await _pause_late(client, store, started, held)
    return result


def _paused(inp: PlayInput | None, held: dict[str, pauses.PauseRecord]) -> PlayInput | None:
    """`inp` started paused when a pause holds its play."""
    if inp is None or (p := pauses.holding(held, inp.plan.play)) is None:
        return inp
    return inp.model_copy(update={"pause": Pause(at=p.at, by=p.by, reason=p.reason, scope=p.scope)})


async def _pause_late(client: Client, store: Store, started: list[PlayInput],
                      before: dict[str, pauses.PauseRecord]) -> None:
    """Pause the plays just started unpaused whose play a pause recorded meanwhile now holds."""
    from workflows.pause import signal_pause
    from workflows.play import workflow_id

    now = await asyncio.to_thread(pauses.in_force, store)
    if now == before:
        return
    late: dict[str, list[str]] = {}
    for inp in started:
        if inp.pause is None and (p := pauses.holding(now, inp.plan.play)) is not None:
            late.setdefault(p.scope, []).append(workflow_id(inp.plan.play, inp.account_id))
    for scope, ids in late.items():
        p = now[scope]
        await signal_pause(client, ids, Pause(at=p.at, by=p.by, reason=p.reason, scope=p.scope))


async def sweep_once(client: Client | None, store: Store, playbooks: Playbooks, now: dt.datetime, *,
                     today: dt.date | None = None, dry_run: bool = False, batch_size: int = DEFAULT_BATCH,
                     task_queue: str = TASK_QUEUE, enrolled_at: dt.datetime | None = None,
                     settings: EngineSettings | None = None, queues: Mapping[str, str] | None = None,
                     full: bool = False) -> SweepSummary:
    """One sweep in this process: what SweepWorkflow does through its activities.

    `client` may be None only for a dry run. `enrolled_at` (default `now`):
    the instant the plays count from. `settings` (default: `load_settings()`)
    give the caps and the team's date at `now`.
    """
    settings = settings or load_settings()
    today = today or settings.today(now)
    summary = SweepSummary(now=now, today=today, dry_run=dry_run)
    if not dry_run:
        assert client is not None, "a sweep that starts plays needs a Temporal client"
        summary.reconciled = await reconcile(client, store, now)
    summary.decided = await asyncio.to_thread(decide, store, playbooks, now, today, dry_run=dry_run,
                                              settings=settings, full=full)
    if dry_run:
        return summary
    assert client is not None
    cursor = 0
    while True:
        b = await start_batch(client, store, playbooks,
                              StartRequest(after_id=cursor, limit=batch_size, enrolled_at=enrolled_at or now),
                              task_queue=task_queue, queues=queues)
        summary.batches += 1
        _add(summary, b)
        if not b.more:
            return summary
        cursor = b.last_id


def _add(summary: SweepSummary, b: StartResult) -> None:
    summary.started += b.started
    summary.joined += b.joined
    summary.failed += b.failed
    summary.errors += b.errors
    summary.error = summary.error or b.error


# --------------------------------------------------------------------------
# Activities and the workflow


class SweepActivities:
    """The sweep's activities over one store and one set of playbooks.

    `playbooks` may be a callable returning a fresh `Playbooks`, so a
    long-running worker picks up edited .play files at the next sweep
    (running plays keep their Plan: it is in their history).
    """

    def __init__(self, client: Client, store: Store, playbooks: Playbooks | Any, *,
                 task_queue: str = TASK_QUEUE, settings: EngineSettings | None = None,
                 queues: Mapping[str, str] | None = None) -> None:
        self.client = client
        self.queues = queues
        self.store = store
        self._playbooks = playbooks
        self.task_queue = task_queue
        self._settings = settings  # None: read at every sweep, so an edited settings file applies

    def settings(self) -> EngineSettings:
        return self._settings or load_settings()

    def playbooks(self) -> Playbooks:
        return self._playbooks if isinstance(self._playbooks, Playbooks) else self._playbooks()

    @activity.defn(name="sweep_reconcile")
    async def reconcile(self, now: dt.datetime) -> ReconcileResult:
        return await reconcile(self.client, self.store, now, heartbeat=activity.heartbeat)

    @activity.defn(name="sweep_decide")
    async def decide(self, req: DecideRequest) -> DecideResult:
        settings = self.settings()
        today = req.today or settings.today(req.now)
        return await asyncio.to_thread(decide, self.store, self.playbooks(), req.now, today,
                                       dry_run=req.dry_run, settings=settings, full=req.full)

    @activity.defn(name="sweep_start_batch")
    async def start_batch(self, req: StartRequest) -> StartResult:
        activity.heartbeat(req.after_id)
        return await start_batch(self.client, self.store, self.playbooks(), req, task_queue=self.task_queue,
                                 queues=self.queues)

    def all(self) -> list[Any]:
        return [self.reconcile, self.decide, self.start_batch]


SWEEP_RETRY = RetryPolicy(initial_interval=dt.timedelta(seconds=2), backoff_coefficient=2.0,
                          maximum_interval=dt.timedelta(minutes=2), maximum_attempts=10)


@workflow.defn(name="SweepWorkflow")
class SweepWorkflow:
    """Reconcile, decide, then start the pending enrollments batch by batch (deterministic)."""

    @workflow.run
    async def run(self, inp: SweepInput) -> SweepSummary:
        now = workflow.now()
        # Until the decide activity says which day the team's time zone makes it.
        summary = SweepSummary(now=now, today=inp.today or now.date(), dry_run=inp.dry_run)
        opts: dict[str, Any] = {"start_to_close_timeout": dt.timedelta(minutes=30),
                                "heartbeat_timeout": dt.timedelta(minutes=5), "retry_policy": SWEEP_RETRY}
        if not inp.dry_run:
            summary.reconciled = await workflow.execute_activity_method(
                SweepActivities.reconcile, now, summary="close finished enrollments", **opts)
        summary.decided = await workflow.execute_activity_method(
            SweepActivities.decide, DecideRequest(now=now, today=inp.today, dry_run=inp.dry_run, full=inp.full),
            summary="enrollment decisions", **opts)
        summary.today = summary.decided.today or summary.today
        if inp.dry_run:
            return summary
        cursor = 0
        while True:
            b = await workflow.execute_activity_method(
                SweepActivities.start_batch,
                StartRequest(after_id=cursor, limit=inp.batch_size, enrolled_at=now),
                summary=f"start enrollments after #{cursor}", **opts)
            summary.batches += 1
            _add(summary, b)
            if not b.more:
                return summary
            cursor = b.last_id


def sweep_worker_parts(client: Client, store: Store, playbooks: Playbooks | Any, *,
                       task_queue: str = TASK_QUEUE,
                       queues: Mapping[str, str] | None = None) -> tuple[list[type], list[Any]]:
    """(workflows, activities) a worker registers to run sweeps (workflows/worker.py adds them)."""
    return [SweepWorkflow], SweepActivities(client, store, playbooks, task_queue=task_queue, queues=queues).all()


# --------------------------------------------------------------------------
# The schedule


async def ensure_schedule(client: Client, every: dt.timedelta = dt.timedelta(hours=1), *,
                          schedule_id: str = SWEEP_SCHEDULE_ID, task_queue: str = TASK_QUEUE,
                          catchup_window: dt.timedelta | None = None, batch_size: int = DEFAULT_BATCH,
                          paused: bool = False) -> ScheduleHandle:
    """Create the sweep's Temporal Schedule, or update it to `every` if it exists.

    Overlap SKIP: a sweep still running when the next one is due is not
    doubled. Catch-up window (default: one interval): after an outage one
    missed sweep runs, not a backlog of them (each would see the same data).
    """
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            SweepWorkflow.run, SweepInput(batch_size=batch_size), id=SWEEP_WORKFLOW_ID, task_queue=task_queue),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=catchup_window or every),
    )
    schedule.state.paused = paused
    schedule.state.note = f"playbook sweep every {every}"
    try:
        return await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:
        handle = client.get_schedule_handle(schedule_id)

        def update(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await handle.update(update)
        return handle


__all__ = ["DecideResult", "Playbooks", "ReconcileResult", "StartResult", "SweepActivities", "SweepInput",
           "SweepSummary", "SweepWorkflow", "decide", "ensure_schedule", "play_inputs", "reconcile",
           "start_batch", "sweep_once", "sweep_worker_parts"]
