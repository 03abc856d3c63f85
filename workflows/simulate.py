"""`playbook simulate`: the real PlayWorkflows over a dataset, weeks in minutes.

    report = await simulate(SimConfig(days=30, seed=7), playbooks, accounts=1000)

Everything runs on Temporal's time-skipping test server, in this process:
the sweep (workflows/sweep.py, the same code the SweepWorkflow runs), the
PlayWorkflows of workflows/play.py with the built-in store connector, and a
simulated customer. Only the clock is fake.

How time moves: the test server skips time only while a client awaits a
workflow result, and only when nothing is running. So the whole simulation
is one workflow, `SimulationDriver`, whose result the caller awaits. It
sleeps from tick to tick. Ticks fall 30 s past a whole hour: once a
simulated day at the start's hour (a sweep), and whenever a customer event
is due. The customer reacts when an email is written (the connector tells
it; seeded, see `Customer`): a reply some hours later, an unsubscribe, a
bounce, later a deal won or lost; the activity signals the driver the
instant (`wake`). At each tick one activity

1. delivers the customer events due now as `event` signals (and applies
   them to the store: unsubscribed contacts, won/lost opportunities);
2. at the sweep's hour, runs a sweep: reconcile, enrollment decisions,
   starts.

Determinism: for one dataset, seed, start instant and playbooks, the run
is the same. Every random choice is a hash of (seed, the email's
idempotency key, what is drawn), not a draw from a shared generator, so it
does not depend on the order concurrent activities finish in. Plays are
enrolled at the whole hour (`enrolled_at` = tick - 30 s), so their steps
fall on whole hours or window starts, never on a tick: a tick sees every
step due before it already done (the server does not skip time while an
activity runs), and a sweep never races a step. A reaction is drawn while
the email's activity runs, so it is queued (and the driver woken) before
time can move on. Customer events happen at
ticks. (What is not reproduced: run ids, and wall-clock milliseconds the
server's clock gains while activities run; times are shown to the minute.)

When the driver finishes, the test server may skip far ahead through the
plays still sleeping; a connector guard refuses every action dated at or
after the end, and the report is computed inside the driver's last
activity, at the end instant.

The data: demo data in a temporary SQLite store (generated for the
simulation's start date), or a copy of a given SQLite store: a simulation
never writes to your store (except `run_demo`, which asks for it).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import heapq
import json
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    import sqlalchemy as sa
    from temporalio.client import Client
    from temporalio.service import RPCError

    from connectors import base as cb
    from connectors.base import Connectors
    from connectors.store import StoreConnector
    from engine.schema import Base
    from engine.store import Store
    from workflows.accounts import StoreAccounts
    from workflows.activities import PlayActivities
    from workflows.client import DATA_CONVERTER, send_event
    from workflows.model import EventKind, PlayEvent, PlayStatus
    from workflows.play import PlayWorkflow
    from workflows.sweep import Playbooks, SweepSummary, sweep_once

TICK = dt.timedelta(hours=1)
TICK_OFFSET = dt.timedelta(seconds=30)  # ticks fall 30 s after the hour; steps fall on it
UTC = dt.timezone.utc
TABLES = Base.metadata.tables


# --------------------------------------------------------------------------
# Configuration and report


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


# --------------------------------------------------------------------------
# The simulated customer


def draw(seed: int, *parts: object) -> float:
    """A uniform number in [0, 1) fixed by (seed, parts): order-independent randomness."""
    h = hashlib.blake2b("|".join(map(str, (seed, *parts))).encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


@dataclass
class _Email:
    idempotency_key: str
    account_id: str
    play: str
    recipient: str
    subject: str | None
    created_at: dt.datetime


@dataclass(order=True)
class Pending:
    due: dt.datetime
    account: str
    play: str
    kind: str
    stage: str | None = field(default=None, compare=False)
    cause: str = field(default="", compare=False)  # why (the email it answers), for the timeline
    contact: str | None = field(default=None, compare=False)


class Customer:
    """Deterministic reactions to emails (all choices hashed from the seed and the email's key)."""

    def __init__(self, config: SimConfig) -> None:
        self.c = config
        self.replied: set[tuple[str, str, str]] = set()  # (account, play, enrollment) that will reply

    def react(self, email: sa.Row, next_tick: Callable[[dt.datetime], dt.datetime]) -> list[Pending]:
        c, key = self.c, email.idempotency_key
        enrollment = key.split(":")[4] if key.count(":") >= 5 else ""
        subject = email.subject or "(no subject)"
        out: list[Pending] = []
        at = email.created_at
        if draw(c.seed, key, "bounce") < c.bounce_rate:
            return [Pending(next_tick(at + dt.timedelta(minutes=5)), email.account_id, email.play, "bounced",
                            cause=f"“{subject}” bounced", contact=email.recipient)]
        if draw(c.seed, key, "unsubscribe") < c.unsubscribe_rate:
            hours = 1 + int(draw(c.seed, key, "unsubscribe-delay") * 24)
            return [Pending(next_tick(at + dt.timedelta(hours=hours)), email.account_id, email.play,
                            "unsubscribed", cause=f"after “{subject}”", contact=email.recipient)]
        thread = (email.account_id, email.play, enrollment)
        if thread in self.replied or draw(c.seed, key, "reply") >= c.reply_rate:
            return out
        self.replied.add(thread)
        lo, hi = c.reply_hours
        reply_at = next_tick(at + dt.timedelta(hours=lo + int(draw(c.seed, key, "reply-delay") * (hi - lo + 1))))
        out.append(Pending(reply_at, email.account_id, email.play, "replied", cause=f"to “{subject}”",
                           contact=email.recipient))
        deal = draw(c.seed, key, "deal")
        if deal < c.win_rate:
            days = 3 + int(draw(c.seed, key, "won-delay") * 8)
            out.append(Pending(next_tick(reply_at + dt.timedelta(days=days)), email.account_id, email.play,
                               "closed_won", stage="Closed Won", cause="deal signed"))
        elif deal < c.win_rate + c.loss_rate:
            days = 2 + int(draw(c.seed, key, "lost-delay") * 6)
            out.append(Pending(next_tick(reply_at + dt.timedelta(days=days)), email.account_id, email.play,
                               "closed_lost", stage="Closed Lost", cause="not now, they said"))
        return out


# --------------------------------------------------------------------------
# Driver workflow


class DriverInput(BaseModel):
    start: dt.datetime
    end: dt.datetime  # midnight UTC after the last simulated day
    sweep_every_days: int = 1
    next_sweep: int = 0  # continue-as-new carries the position
    after: dt.datetime | None = None  # the last tick done (continue-as-new)
    wakes: list[dt.datetime] = []


class TickRequest(BaseModel):
    at: dt.datetime
    sweep: bool


@workflow.defn(name="SimulationDriver")
class SimulationDriver:
    """Sleeps from tick to tick and lets the simulation's activity act at each (see module doc).

    Ticks: every sweep instant, and every instant a customer event is due.
    The activities announce those with the `wake` signal as soon as they
    are drawn (an email's reply is drawn when the email is written), and a
    tick returns the earliest event still queued.
    """

    def __init__(self) -> None:
        self._wakes: set[dt.datetime] = set()

    @workflow.signal(name="wake")
    def wake(self, at: dt.datetime) -> None:
        self._wakes.add(at)

    @workflow.run
    async def run(self, inp: DriverInput) -> int:
        opts: dict[str, Any] = {"start_to_close_timeout": dt.timedelta(minutes=30),
                                "retry_policy": RetryPolicy(maximum_attempts=3)}
        self._wakes |= set(inp.wakes)
        sweep_no, after, ticks = inp.next_sweep, inp.after, 0
        every = dt.timedelta(days=inp.sweep_every_days)

        def next_at() -> dt.datetime:
            sweep_at = inp.start + sweep_no * every + TICK_OFFSET
            later = [w for w in self._wakes if after is None or w > after]
            return min([sweep_at, *later])

        while (at := next_at()) < inp.end:
            while (wait := at - workflow.now()) > dt.timedelta(0):
                seen = len(self._wakes)
                try:  # a signal may bring an earlier instant
                    await workflow.wait_condition(lambda: len(self._wakes) != seen, timeout=wait)
                except asyncio.TimeoutError:
                    break
                at = next_at()
            sweep = at == inp.start + sweep_no * every + TICK_OFFSET
            queued = await workflow.execute_activity_method(
                SimActivities.tick, TickRequest(at=at, sweep=sweep), summary=f"tick {at:%m-%d %H:%M}", **opts)
            if queued is not None:
                self._wakes.add(queued)
            sweep_no += int(sweep)
            after, ticks = at, ticks + 1
            self._wakes = {w for w in self._wakes if w > at}
            if workflow.info().get_current_history_length() > 9_000:
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(inp.model_copy(update={
                    "next_sweep": sweep_no, "after": after, "wakes": sorted(self._wakes)}))
        if (wait := inp.end + TICK_OFFSET - workflow.now()) > dt.timedelta(0):
            await workflow.sleep(wait)
        await workflow.execute_activity_method(SimActivities.finish, inp.end, summary="report", **opts)
        return ticks


# --------------------------------------------------------------------------
# Activities (state lives here, in this process: the driver only keeps time)


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
                raise cb.TransientError("the simulation has ended")
            async with self.lock:
                result = await method(action)
            if isinstance(action, cb.EmailMessage) and not result.duplicate and self.on_email is not None:
                await self.on_email(action)  # the customer reads it (and draws a reaction) now
            return result

        return guarded


class SimActivities:
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
        email = _Email(message.key, message.account_id, message.play, message.to, message.subject,
                       message.requested_at)
        for p in self.customer.react(email, self._next_tick):  # type: ignore[arg-type]
            heapq.heappush(self.queue, p)
            if p.due not in self.announced and self.driver_id is not None:
                self.announced.add(p.due)
                try:
                    await self.client.get_workflow_handle(self.driver_id).signal(SimulationDriver.wake, p.due)
                except RPCError:  # the driver has finished: the event falls after the end anyway
                    pass

    @activity.defn(name="sim_tick")
    async def tick(self, req: TickRequest) -> dt.datetime | None:
        """Deliver the customer events due now; sweep if it is the sweep's hour. Returns the next event's instant."""
        while self.queue and self.queue[0].due <= req.at:
            await self._deliver(heapq.heappop(self.queue), req.at)
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
        enr = TABLES["enrollments"]

        def read() -> list[str]:
            with self.store.connect() as conn:
                return sorted(conn.execute(sa.select(enr.c.play).where(
                    enr.c.account_id == p.account, enr.c.status == "running")).scalars())

        return await asyncio.to_thread(read)

    async def _deliver(self, p: Pending, at: dt.datetime) -> int:
        kind = EventKind(p.kind)
        async with self.lock:
            await asyncio.to_thread(self._apply_to_store, p, at)
        n = 0
        for play in await self._targets(p):
            event = PlayEvent(kind=kind, stage=p.stage, at=at, source="simulation",
                              id=f"sim:{p.kind}:{p.account}:{play}:{p.due.isoformat()}")
            try:
                got = await send_event(self.client, play, p.account, event)
            except RPCError:
                got = False
            n += int(got)
            text = {"replied": "replied", "unsubscribed": "unsubscribed", "bounced": "email bounced",
                    "closed_won": "deal closed won", "closed_lost": "deal closed lost",
                    "stage_changed": f"stage changed to {p.stage}"}.get(p.kind, p.kind)
            if p.cause:
                text += f" ({p.cause})"
            if not got:
                text += " — the play had already ended"
            self.log.append((at, p.account, play, p.kind, text))
        return n

    def _apply_to_store(self, p: Pending, at: dt.datetime) -> None:
        """What the CRM or the email provider would record: unsubscribes, won/lost deals."""
        with self.store.begin() as conn:
            if p.kind == "unsubscribed" and p.contact:
                contacts = TABLES["contacts"]
                conn.execute(contacts.update().where(contacts.c.email == p.contact,
                                                     contacts.c.unsubscribed_at.is_(None)).values(unsubscribed_at=at))
            if p.stage in ("Closed Won", "Closed Lost"):
                opps, hist = TABLES["opportunities"], TABLES["stage_history"]
                q = sa.select(opps.c.id, opps.c.stage).where(opps.c.account_id == p.account,
                                                             opps.c.closed_at.is_(None))
                if p.play != "*":
                    q = q.where(opps.c.play == p.play)
                for opp_id, stage in conn.execute(q).all():
                    conn.execute(opps.update().where(opps.c.id == opp_id).values(stage=p.stage, updated_at=at,
                                                                                 closed_at=at))
                    conn.execute(hist.insert().values(opportunity_id=opp_id, from_stage=stage, stage=p.stage, at=at,
                                                      actor="crm (simulated customer)"))

    # -- finish -------------------------------------------------------------
    @activity.defn(name="sim_finish")
    async def finish(self, end: dt.datetime) -> None:
        self.report = await build_report(self, end)


# --------------------------------------------------------------------------
# The report


def _minute(t: dt.datetime) -> dt.datetime:
    return t.astimezone(UTC).replace(second=0, microsecond=0)


async def build_report(sim: SimActivities, end: dt.datetime) -> SimReport:
    store, c = sim.store, sim.c
    enr, out, tasks, hist = (TABLES[t] for t in ("enrollments", "outbox", "tasks", "stage_history"))
    days = [DayLoad(day=d, date=(sim.start + dt.timedelta(days=d)).date()) for d in range(c.days)]

    def in_range(t: dt.datetime | None) -> int | None:
        if t is None or t < sim.start or t >= end:
            return None
        return sim.day_of(t)

    def read() -> dict[str, list[sa.Row]]:
        with store.connect() as conn:
            return {
                "enr": list(conn.execute(sa.select(enr).order_by(enr.c.id))),
                "emails": list(conn.execute(sa.select(out.c.created_at, out.c.account_id, out.c.play, out.c.subject,
                                                      out.c.recipient, out.c.status)
                                            .where(out.c.channel == "email", out.c.created_at < end))),
                "tasks": list(conn.execute(sa.select(tasks.c.created_at, tasks.c.assignee, tasks.c.account_id,
                                                     tasks.c.play, tasks.c.title)
                                           .where(tasks.c.created_at < end))),
                "stages": list(conn.execute(sa.select(hist.c.at, hist.c.stage, hist.c.from_stage, hist.c.actor,
                                                      TABLES["opportunities"].c.account_id)
                                            .join(TABLES["opportunities"])
                                            .where(hist.c.at < end))),
            }

    data = await asyncio.to_thread(read)
    totals: Counter[str] = Counter()
    for r in data["enr"]:
        if (d := in_range(r.started_at)) is not None and r.status != "pending":
            days[d].enrolled += 1
    for r in data["emails"]:
        if (d := in_range(r.created_at)) is not None and r.status != "cancelled":
            days[d].emails += 1
            totals["emails"] += 1
    csm: dict[str, Counter[int]] = defaultdict(Counter)
    for r in data["tasks"]:
        if (d := in_range(r.created_at)) is not None:
            who = r.assignee or "(nobody)"
            days[d].tasks += 1
            days[d].tasks_by_assignee[who] = days[d].tasks_by_assignee.get(who, 0) + 1
            csm[who][d] += 1
            totals["tasks"] += 1
    for r in data["stages"]:
        if (d := in_range(r.at)) is not None:
            days[d].stage_changes += 1
            totals["stage_changes"] += 1
    counters = {"replied": "replies", "unsubscribed": "unsubscribes", "bounced": "bounces", "closed_won": "won",
                "closed_lost": "lost"}
    for at, _acc, _play, kind, _text in sim.log:
        if (d := in_range(at)) is not None and kind in counters:
            setattr(days[d], counters[kind], getattr(days[d], counters[kind]) + 1)
            totals[counters[kind]] += 1
    for day in days:
        day.tasks_by_assignee = dict(sorted(day.tasks_by_assignee.items()))

    started = [r for r in data["enr"] if r.status != "pending" and in_range(r.started_at) is not None]
    totals["enrollments"] = len(started)
    totals["accounts_enrolled"] = len({r.account_id for r in started})
    outcomes = await _outcomes(sim, [r for r in started if r.status == "running"])
    for r in started:
        if r.status != "running":
            outcomes[r.id] = r.status
    report = SimReport(
        start=sim.start, end=end, days=c.days, seed=c.seed, accounts=sim.accounts, store=store.url, config=c,
        totals=dict(sorted(totals.items())),
        by_play=dict(sorted(Counter(r.play for r in started).items())),
        by_route=dict(sorted(Counter(f"{r.play}/{r.route or '-'}" for r in started).items())),
        triggers=dict(sorted(Counter(r.trigger for r in started if r.trigger).items())),
        outcomes=dict(sorted(Counter(outcomes.values()).items())),
        csm_tasks={who: {"tasks": sum(per.values()), "days": len(per), "max_per_day": max(per.values())}
                   for who, per in sorted(csm.items())},
        daily=days, sweeps=sim.sweeps,
    )
    chosen = list(c.timeline_accounts) or _sample(sorted({r.account_id for r in started}), c.seed, c.sample)
    report.timelines = {a: await _timeline(sim, a, data, end) for a in chosen}
    return report


async def _outcomes(sim: SimActivities, running: Sequence[sa.Row]) -> dict[int, str]:
    """State of the plays still open at the end: where each one is (sleeping, waiting, exited...)."""
    found: dict[int, str] = {}
    gate = asyncio.Semaphore(50)

    async def one(r: sa.Row) -> None:
        async with gate:
            try:
                desc = await sim.client.get_workflow_handle(r.workflow_id, run_id=r.run_id).describe()
                found[r.id] = "running" if desc.status is not None and desc.status.name == "RUNNING" \
                    else desc.status.name.lower() if desc.status else "unknown"
            except RPCError:
                found[r.id] = "unknown"

    await asyncio.gather(*(one(r) for r in running))
    return found


def _sample(accounts: Sequence[str], seed: int, n: int) -> list[str]:
    return sorted(sorted(accounts, key=lambda a: draw(seed, a, "sample"))[:n])


async def _timeline(sim: SimActivities, account: str, data: dict[str, list[sa.Row]],
                    end: dt.datetime) -> list[TimelineEntry]:
    entries: list[TimelineEntry] = []

    def add(at: dt.datetime, kind: str, play: str | None, text: str) -> None:
        if sim.start <= at < end:
            entries.append(TimelineEntry(at=_minute(at), day=sim.day_of(at), kind=kind, play=play, text=text))

    for r in data["enr"]:
        if r.account_id != account or r.status == "pending":
            continue
        why = (r.reason or {})
        add(r.started_at, "enrolled", r.play,
            f"enrolled in {r.play} (trigger {r.trigger or '-'}, route {r.route or '-'})"
            + (f"; {why['note']}" if why.get("note") else ""))
        if r.run_id is None:
            continue
        try:
            status: PlayStatus = await sim.client.get_workflow_handle(r.workflow_id, run_id=r.run_id).query(
                PlayWorkflow.status)
        except Exception as exc:  # a failed run cannot always answer queries
            add(r.started_at, "step", r.play, f"(decisions unavailable: {type(exc).__name__})")
            continue
        for d in status.decisions:
            add(d.at, "step", r.play, f"{d.step}: {d.outcome.value} — {d.reason}")
        if status.state in ("sleeping", "waiting", "running") and status.next_step:
            nxt = f"next: {status.next_step} at {_minute(status.next_at):%Y-%m-%d %H:%M} UTC" if status.next_at else ""
            entries.append(TimelineEntry(at=_minute(end), day=sim.day_of(end), kind="open", play=r.play,
                                         text=f"still {status.state} at the end of the simulation; {nxt}".rstrip("; ")))
    for at, acc, play, _kind, text in sim.log:
        if acc == account:
            add(at, "customer", play, text)
    for r in data["stages"]:
        if r.account_id == account and r.actor and not r.actor.startswith("play:"):
            add(r.at, "stage", None, f"opportunity {r.from_stage or 'new'} → {r.stage} by {r.actor}")
    order = {"enrolled": 0, "customer": 1, "step": 2, "stage": 3, "open": 4}
    entries.sort(key=lambda e: (e.at, order.get(e.kind, 9)))  # stable: a play's decisions keep their order
    return entries


# --------------------------------------------------------------------------
# Running it


def default_start(now: dt.datetime, hour: int = 6) -> dt.datetime:
    """The next `hour`:00 UTC at least a minute after `now`."""
    now = now.astimezone(UTC)
    start = now.replace(hour=hour, minute=0, second=0, microsecond=0)
    while start < now + dt.timedelta(minutes=1):
        start += dt.timedelta(days=1)
    return start


def simulation_end(start: dt.datetime, days: int) -> dt.datetime:
    """Midnight UTC after the last simulated day: `days` calendar days, the first from `start`'s hour."""
    return dt.datetime.combine(start.date() + dt.timedelta(days=days), dt.time(0), UTC)


def _whole_hour(t: dt.datetime) -> dt.datetime:
    t = t.astimezone(UTC) if t.tzinfo else t.replace(tzinfo=UTC)
    floor = t.replace(minute=0, second=0, microsecond=0)
    return floor if floor == t else floor + dt.timedelta(hours=1)


def copy_sqlite(url: str, target: Path) -> str:
    """A consistent copy of a SQLite store (the backup API: safe while another process writes)."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        raise ValueError("simulate copies SQLite stores only (it never writes to yours); "
                         "export a PostgreSQL store to SQLite first, or simulate on demo data")
    if not Path(parsed.database).exists():
        raise ValueError(f"no SQLite store at {parsed.database}")
    with sqlite3.connect(parsed.database) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    return f"sqlite:///{target}"


@dataclass
class Environment:
    """Where a simulation runs: a time-skipping server, a worker, the store."""

    client: Client
    store: Store
    task_queue: str
    sim: SimActivities


async def simulate(config: SimConfig, playbooks: Playbooks, *, accounts: int = 500, db: str | None = None,
                   workdir: Path | None = None, write_to_store: bool = False, generate: int | None = None,
                   demo_seed: int | None = None, progress: Callable[[str], None] | None = None,
                   test_server: str | None = None) -> SimReport:
    """Run the simulation and return its report.

    `db`: a SQLite store to simulate on (copied first unless
    `write_to_store`); None: `accounts` demo accounts in a temporary store.
    `generate`: demo accounts to generate into the (empty) `db` store first,
    dated for the simulation's start (`run_demo`).
    """
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import Worker

    from engine import demo_data
    from workflows.search_attributes import ensure_registered

    say = progress or (lambda _m: None)
    wall = time.perf_counter()
    async with AsyncExitStack() as stack:
        tmp = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="playbook-sim-")))
        env = await stack.enter_async_context(await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=test_server or _test_server(), data_converter=DATA_CONVERTER,
            runtime=quiet_runtime()))
        await ensure_registered(env.client)
        now = await env.get_current_time()  # read fresh: the test server's clock jumps after a run closes
        start = _whole_hour(config.start) if config.start else default_start(now)
        if start <= now:
            raise ValueError(f"the simulation must start after the test server's clock ({now:%Y-%m-%d %H:%M} UTC)")
        if db is None:
            store = Store.open(f"sqlite:///{tmp / 'simulation.db'}", catalog=playbooks.catalog)
            generate = accounts
        else:
            url = db if write_to_store else copy_sqlite(db, tmp / "simulation.db")
            store = Store.open(url, catalog=playbooks.catalog)
        stack.callback(store.close)
        if generate is not None:
            say(f"generating {generate} demo accounts for {start:%Y-%m-%d}")
            demo_data.generate(playbooks.catalog, generate, seed=config.seed if demo_seed is None else demo_seed,
                               today=start.date(), store=store)
        accounts = store.count("accounts")
        end = simulation_end(start, config.days)
        tq = f"sim-{uuid.uuid4().hex[:8]}"
        lock = asyncio.Lock()
        sim = SimActivities(env.client, store, playbooks, config, start, task_queue=tq, accounts=accounts,
                            lock=lock, progress=say)
        sim.driver_id = f"simulation-{tq}"
        connector = SimConnector(StoreConnector(store), end, lock, on_email=sim.on_email)
        plays = PlayActivities(Connectors.single(connector), StoreAccounts(store, playbooks.catalog),
                               playbooks.catalog)
        worker = Worker(env.client, task_queue=tq, workflows=[PlayWorkflow, SimulationDriver],
                        activities=[*plays.all(), sim.tick, sim.finish],
                        max_concurrent_activities=200, max_concurrent_workflow_tasks=200)
        await stack.enter_async_context(worker)
        say(f"simulating {config.days} days from {start:%Y-%m-%d %H:%M} UTC over {accounts} accounts")
        await env.client.execute_workflow(
            SimulationDriver.run, DriverInput(start=start, end=end, sweep_every_days=config.sweep_every_days,
                                              wakes=sorted({p.due for p in sim.queue})),
            id=sim.driver_id, task_queue=tq)
        assert sim.report is not None
        report = sim.report
        report.wall_seconds = round(time.perf_counter() - wall, 2)
        return report


_RUNTIME: Any = None


def quiet_runtime() -> Any:
    """A Temporal runtime whose core logs only errors: its warnings (the test server's
    missing capabilities) went to stdout, into `--format json` documents."""
    global _RUNTIME
    if _RUNTIME is None:
        from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter

        _RUNTIME = Runtime(telemetry=TelemetryConfig(
            logging=LoggingConfig(filter=TelemetryFilter(core_level="ERROR", other_level="ERROR"))))
    return _RUNTIME


def _test_server() -> str:
    import sys

    found = shutil.which("temporal-test-server")
    here = Path(sys.executable).parent / "temporal-test-server"
    return str(here) if here.exists() else (found or "temporal-test-server")


# --------------------------------------------------------------------------
# Text output


def render(report: SimReport, console: Any = None, *, timelines: bool = True) -> None:
    """Rich tables: totals, daily load, tasks per assignee, then the timelines."""
    from rich.console import Console
    from rich.table import Table

    con = console or Console(width=None if _terminal() else 120)
    t = report.totals
    con.print(f"[bold]Simulated {report.days} days[/bold] from {report.start:%Y-%m-%d %H:%M} UTC to "
              f"{report.end:%Y-%m-%d %H:%M} UTC over {report.accounts} accounts (seed {report.seed}) "
              f"in {report.wall_seconds:.1f} s of real time")
    con.print(f"  enrollments {t.get('enrollments', 0)} ({t.get('accounts_enrolled', 0)} accounts) · "
              f"emails {t.get('emails', 0)} · tasks {t.get('tasks', 0)} · stage changes {t.get('stage_changes', 0)} · "
              f"replies {t.get('replies', 0)} · unsubscribes {t.get('unsubscribes', 0)} · "
              f"won {t.get('won', 0)} · lost {t.get('lost', 0)}")
    if report.by_play:
        con.print("  enrollments by play: " + ", ".join(f"{k} {v}" for k, v in report.by_play.items()))
    if report.outcomes:
        con.print("  plays at the end: " + ", ".join(f"{k} {v}" for k, v in report.outcomes.items()))

    table = Table(title="Daily load (UTC days)", title_justify="left")
    # CSMs: assignees with a task that day; max/CSM: the most tasks one of them got.
    for col in ("day", "date", "enrolled", "emails", "tasks", "CSMs", "max/CSM", "stage moves", "replies", "won",
                "lost", "unsub"):
        table.add_column(col, justify="left" if col == "date" else "right", no_wrap=True)
    for d in report.daily:
        busiest = d.busiest
        table.add_row(str(d.day), f"{d.date:%a %m-%d}", _n(d.enrolled), _n(d.emails), _n(d.tasks),
                      _n(len(d.tasks_by_assignee)), _n(busiest[1] if busiest else 0), _n(d.stage_changes),
                      _n(d.replies), _n(d.won), _n(d.lost), _n(d.unsubscribes))
    con.print(table)

    if report.csm_tasks:
        busiest_ = sorted(report.csm_tasks.items(), key=lambda kv: (-kv[1]["tasks"], kv[0]))[:10]
        ct = Table(title="Tasks per assignee (busiest 10)", title_justify="left")
        for col in ("assignee", "tasks", "days with tasks", "max in a day"):
            ct.add_column(col, justify="left" if col == "assignee" else "right", no_wrap=True)
        for who, st in busiest_:
            ct.add_row(who, str(int(st["tasks"])), str(int(st["days"])), str(int(st["max_per_day"])))
        con.print(ct)

    if timelines:
        for account, entries in report.timelines.items():
            con.print(f"\n[bold]{account}[/bold]")
            if not entries:
                con.print("  (nothing happened to this account in the simulation)")
            for e in entries:
                play = f"[{e.play}] " if e.play else ""
                con.print(f"  day {e.day:>2} {e.at:%a %m-%d %H:%M}  {e.kind:<8} {play}{e.text}", markup=False,
                          highlight=False, soft_wrap=True)


def _terminal() -> bool:
    import sys

    return sys.stdout.isatty()


def _n(v: int) -> str:
    return str(v) if v else "·"


def report_json(report: SimReport) -> str:
    return json.dumps(report.model_dump(mode="json"), indent=2, sort_keys=False)


__all__ = ["Customer", "ScriptedEvent", "SimActivities", "SimConfig", "SimReport", "SimulationDriver",
           "copy_sqlite", "default_start", "draw", "render", "report_json", "simulate"]
