"""The simulation's activities: the state of a run lives here, in this process.

At each tick the driver (workflows/sim_driver.py) calls `SimActivities.tick`,
which delivers the customer events due then as `event` signals (and applies
them to the store: unsubscribed contacts, won/lost opportunities) and, at the
sweep's hour, runs a sweep. Emails reach the customer through `SimConnector`
the instant a play writes them; a drawn reaction wakes the driver at once,
before time can move on. `finish` builds the report at the end instant.

A tick waits until every play it signalled has handled the event (ended,
or is blocked again on a timer or a condition) before it sweeps or returns:
the server does not move time while a play reacts, but the sweep runs at
the same instant, so without the wait its reconciliation (which plays have
ended) and its decisions (cooldown or already enrolled) depended on how
fast the machine ran the plays.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.service import RPCError

from connectors import base as cb
from engine import actions, enrollment, outcomes
from engine.store import Store
from workflows.client import send_event
from workflows.play import workflow_id
from workflows.model import EventKind, PlayEvent
from workflows.sim_customer import Customer, Email, Pending
from workflows.sim_model import TICK, TICK_OFFSET, UTC, SimConfig, SimReport
from workflows.sim_report import build_report
from workflows.sweep import Playbooks, SweepSummary, sweep_once

WAKE_SIGNAL = "wake"  # the driver's signal: a customer event is due at this instant
SETTLE_POLL = 0.02  # seconds between looks at a signalled play's history
SETTLE_TIMEOUT = 300.0  # seconds (wall clock) a play may take to handle an event
# Commands a workflow task may end with that leave the play waiting (not working).
_AT_REST = {EventType.EVENT_TYPE_TIMER_STARTED, EventType.EVENT_TYPE_TIMER_CANCELED,
            EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES, EventType.EVENT_TYPE_MARKER_RECORDED,
            EventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED}
_ACTIVITY_CLOSED = {  # event type -> its attributes (which name the activity's scheduled event)
    EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: "activity_task_completed_event_attributes",
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: "activity_task_failed_event_attributes",
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: "activity_task_timed_out_event_attributes",
    EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED: "activity_task_canceled_event_attributes",
}


class TickRequest(BaseModel):
    at: dt.datetime
    sweep: bool


class SimConnector:
    """Delegates to a connector, one call at a time, and refuses actions dated at or after `end`.

    One at a time: SQLite allows one writer, and a read-then-write
    transaction that loses the race fails at once with "database is locked"
    (a stale WAL snapshot is not retried by the busy timeout); the retry
    would work, but would move the step a second later and fill the log.
    The simulation's own writes (sweeps, customer events) take the same lock.
    """

    def __init__(self, inner: Any, end: dt.datetime, lock: asyncio.Lock,
                 on_email: Callable[[cb.EmailMessage], Any] | None = None) -> None:
        self.inner, self.end, self.lock, self.on_email = inner, end, lock, on_email

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        async def guarded(action: cb.Action) -> Any:
            if action.requested_at >= self.end:
                # Plays wake after the end while the server skips time to deliver the
                # driver's result. Retryable (nothing acts), and BENIGN: the SDK logs
                # other failed attempts at WARNING with a traceback, on the demo's screen.
                raise ApplicationError("the simulation has ended", type="SimulationEnded",
                                       category=ApplicationErrorCategory.BENIGN)
            async with self.lock:
                result = await method(action)
            if isinstance(action, cb.EmailMessage) and not result.duplicate and self.on_email is not None:
                await self.on_email(action)  # the customer reads it (and draws a reaction) now
            return result

        return guarded


class SimActivities:
    """One simulation's state (the customer's queue, its log, the sweeps) and its two activities."""

    def __init__(self, client: Client, store: Store, playbooks: Playbooks, config: SimConfig, start: dt.datetime,
                 *, task_queue: str, accounts: int, lock: asyncio.Lock | None = None,
                 progress: Callable[[str], None] | None = None) -> None:
        self.client, self.store, self.playbooks, self.c = client, store, playbooks, config
        self.lock = lock or asyncio.Lock()
        self.start, self.task_queue, self.accounts = start, task_queue, accounts
        self.customer = Customer(config)
        self.queue: list[Pending] = []
        self.driver_id: str | None = None  # whom to `wake` when a reaction is drawn
        self.announced: set[dt.datetime] = set()
        self.log: list[tuple[dt.datetime, str, str | None, str, str]] = []  # (at, account, play, kind, text)
        self.sweeps: list[SweepSummary] = []
        self.report: SimReport | None = None
        self.progress = progress or (lambda _msg: None)
        for s in config.script:
            due = self._next_tick(dt.datetime.combine(start.date() + dt.timedelta(days=s.day), dt.time(s.hour), UTC))
            heapq.heappush(self.queue, Pending(due, s.account, s.play or "*", s.event.value, stage=s.stage,
                                               cause="scripted"))

    def _next_tick(self, t: dt.datetime) -> dt.datetime:
        """The first tick at or after `t`."""
        k = -(-(t - self.start - TICK_OFFSET) // TICK)  # ceil
        return self.start + max(k, 0) * TICK + TICK_OFFSET

    def day_of(self, t: dt.datetime) -> int:
        """Calendar day (UTC) of the simulation: 0 is the start's date."""
        return (t.astimezone(UTC).date() - self.start.date()).days

    # -- tick ---------------------------------------------------------------
    async def on_email(self, message: cb.EmailMessage) -> None:
        """An email was written: the customer's reactions are drawn now, and the driver told when."""
        email = Email(message.key, message.account_id, message.play, message.to, message.subject,
                      message.requested_at)
        for p in self.customer.react(email, self._next_tick):
            heapq.heappush(self.queue, p)
            if p.due not in self.announced and self.driver_id is not None:
                self.announced.add(p.due)
                try:
                    await self.client.get_workflow_handle(self.driver_id).signal(WAKE_SIGNAL, p.due)
                except RPCError:  # the driver has finished: the event falls after the end anyway
                    pass

    @activity.defn(name="sim_tick")
    async def tick(self, req: TickRequest) -> dt.datetime | None:
        """Deliver the customer events due now; sweep if it is the sweep's hour. Returns the next event's instant."""
        signalled: set[tuple[str, str]] = set()
        while self.queue and self.queue[0].due <= req.at:
            signalled |= await self._deliver(heapq.heappop(self.queue), req.at)
        await asyncio.gather(*(self._settled(play, account) for play, account in sorted(signalled)))
        if req.sweep:
            async with self.lock:
                summary = await sweep_once(self.client, self.store, self.playbooks, req.at, today=req.at.date(),
                                           enrolled_at=req.at - TICK_OFFSET, task_queue=self.task_queue)
            self.sweeps.append(summary)
            self.progress(f"day {self.day_of(req.at)}: {summary.started} enrolled, "
                          f"{summary.reconciled.checked} running checked")
        return self.queue[0].due if self.queue else None

    async def _targets(self, p: Pending) -> list[str]:
        if p.play != "*":
            return [p.play]
        return await asyncio.to_thread(enrollment.active_plays, self.store, p.account)

    async def _settled(self, play: str, account: str) -> None:
        """Return once the play has handled its signals: ended, or waiting with no work under way."""
        handle = self.client.get_workflow_handle(workflow_id(play, account))
        deadline = asyncio.get_running_loop().time() + SETTLE_TIMEOUT
        while True:
            desc = await handle.describe()
            if desc.status is not WorkflowExecutionStatus.RUNNING:
                return
            if play_at_rest([e async for e in handle.fetch_history_events()]):
                return
            if asyncio.get_running_loop().time() > deadline:
                raise ApplicationError(f"{play} for {account} did not settle within {SETTLE_TIMEOUT:.0f} s")
            await asyncio.sleep(SETTLE_POLL)

    async def _deliver(self, p: Pending, at: dt.datetime) -> set[tuple[str, str]]:
        """Apply the event to the store and signal it to its plays; returns the (play, account) signalled."""
        kind = EventKind(p.kind)
        async with self.lock:
            await asyncio.to_thread(self._apply_to_store, p, at)
        signalled: set[tuple[str, str]] = set()
        for play in await self._targets(p):
            event = PlayEvent(kind=kind, stage=p.stage, at=at, source="simulation",
                              id=f"sim:{p.kind}:{p.account}:{play}:{p.due.isoformat()}")
            try:
                got = await send_event(self.client, play, p.account, event)
            except RPCError:
                got = False
            if got:
                signalled.add((play, p.account))
            text = {"replied": "replied", "unsubscribed": "unsubscribed", "bounced": "email bounced",
                    "closed_won": "deal closed won", "closed_lost": "deal closed lost",
                    "stage_changed": f"stage changed to {p.stage}"}.get(p.kind, p.kind)
            if p.cause:
                text += f" ({p.cause})"
            if not got:
                text += " — the play had already ended"
            self.log.append((at, p.account, play, p.kind, text))
        return signalled

    def _apply_to_store(self, p: Pending, at: dt.datetime) -> None:
        """What the CRM or the email provider would record: unsubscribes, replies, won/lost deals and their outcomes."""
        if p.kind == "unsubscribed" and p.contact:
            actions.unsubscribe(self.store, p.contact, at)
        if p.kind == "replied":
            actions.record_reply(self.store, p.account, None if p.play == "*" else p.play, p.message, at,
                                 f"sim:replied:{p.account}:{p.play}:{p.due.isoformat()}")
        if p.stage in actions.CLOSED:
            outcomes.close_deals(self.store, p.account, None if p.play == "*" else p.play, p.stage, at,
                                 source="simulation", actor="crm (simulated customer)",
                                 catalog=self.playbooks.catalog)

    # -- finish -------------------------------------------------------------
    @activity.defn(name="sim_finish")
    async def finish(self, end: dt.datetime) -> None:
        self.report = await build_report(self, end)



def play_at_rest(events: list[HistoryEvent]) -> bool:
    """A running play's history shows it waiting: its last workflow task completed after every
    event it was given, issued only timer or bookkeeping commands, and no activity is under way."""
    types = [e.event_type for e in events]
    last_done = max((i for i, t in enumerate(types) if t == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED), default=-1)
    scheduled = {e.event_id for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED}
    closed = {getattr(e, _ACTIVITY_CLOSED[e.event_type]).scheduled_event_id
              for e in events if e.event_type in _ACTIVITY_CLOSED}
    return last_done >= 0 and all(t in _AT_REST for t in types[last_done + 1:]) and scheduled <= closed
