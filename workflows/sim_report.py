"""The simulation's report: the daily load, the totals and the timelines, read at the end instant.

Aggregation only; how it is shown is cli/simulate_render.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from temporalio.client import WorkflowQueryFailedError
from temporalio.service import RPCError

from engine import actions, enrollment
from workflows.model import PlayStatus
from workflows.play import PlayWorkflow
from workflows.sim_customer import draw
from workflows.sim_model import UTC, DayLoad, SimReport, TimelineEntry

if TYPE_CHECKING:  # the activities build the report from their own state
    from workflows.sim_activities import SimActivities

@dataclass(frozen=True)
class Data:
    """What the report reads from the store, once, at the end instant."""

    enrollments: list[enrollment.Enrollment]
    emails: list[actions.Email]
    tasks: list[actions.TaskRecord]
    stages: list[actions.StageMove]


def _minute(t: dt.datetime) -> dt.datetime:
    return t.astimezone(UTC).replace(second=0, microsecond=0)


async def build_report(sim: SimActivities, end: dt.datetime) -> SimReport:
    store, c = sim.store, sim.c
    days = [DayLoad(day=d, date=(sim.start + dt.timedelta(days=d)).date()) for d in range(c.days)]

    def in_range(t: dt.datetime | None) -> int | None:
        if t is None or t < sim.start or t >= end:
            return None
        return sim.day_of(t)

    def read() -> Data:
        return Data(enrollment.every(store), actions.emails(store, end), actions.tasks(store, end),
                    actions.stage_moves(store, end))

    data = await asyncio.to_thread(read)
    totals: Counter[str] = Counter()
    for r in data.enrollments:
        if (d := in_range(r.started_at)) is not None and r.status != "pending":
            days[d].enrolled += 1
    for e in data.emails:
        if (d := in_range(e.created_at)) is not None and e.status != "cancelled":
            days[d].emails += 1
            totals["emails"] += 1
    csm: dict[str, Counter[int]] = defaultdict(Counter)
    for t in data.tasks:
        if (d := in_range(t.created_at)) is not None:
            who = t.assignee or "(nobody)"
            days[d].tasks += 1
            days[d].tasks_by_assignee[who] = days[d].tasks_by_assignee.get(who, 0) + 1
            csm[who][d] += 1
            totals["tasks"] += 1
    for m in data.stages:
        if (d := in_range(m.at)) is not None:
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

    started = [r for r in data.enrollments if r.status != "pending" and in_range(r.started_at) is not None]
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


async def _outcomes(sim: SimActivities, running: Sequence[enrollment.Enrollment]) -> dict[int, str]:
    """State of the plays still open at the end: where each one is (sleeping, waiting, exited...)."""
    found: dict[int, str] = {}
    gate = asyncio.Semaphore(50)

    async def one(r: enrollment.Enrollment) -> None:
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


QUERY_ATTEMPTS = 3


async def _status(sim: SimActivities, workflow_id: str, run_id: str) -> PlayStatus:
    """The play's `status` query, asked again after a failure: on a starved CPU the worker's
    deadlock detector (2 s without a yield) fails the replay that answers it, which a report
    that is the same for a seed must not show."""
    handle = sim.client.get_workflow_handle(workflow_id, run_id=run_id)
    for _ in range(QUERY_ATTEMPTS - 1):
        try:
            return await handle.query(PlayWorkflow.status)
        except WorkflowQueryFailedError:
            await asyncio.sleep(0.5)
    return await handle.query(PlayWorkflow.status)


async def _timeline(sim: SimActivities, account: str, data: Data,
                    end: dt.datetime) -> list[TimelineEntry]:
    entries: list[TimelineEntry] = []

    def add(at: dt.datetime, kind: str, play: str | None, text: str) -> None:
        if sim.start <= at < end:
            entries.append(TimelineEntry(at=_minute(at), day=sim.day_of(at), kind=kind, play=play, text=text))

    for r in data.enrollments:
        if r.account_id != account or r.status == "pending":
            continue
        why = (r.reason or {})
        add(r.started_at, "enrolled", r.play,
            f"enrolled in {r.play} (trigger {r.trigger or '-'}, route {r.route or '-'})"
            + (f"; {why['note']}" if why.get("note") else ""))
        if r.run_id is None:
            continue
        try:
            status = await _status(sim, r.workflow_id, r.run_id)
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
    for m in data.stages:
        if m.account_id == account and m.actor and not m.actor.startswith("play:"):
            add(m.at, "stage", None, f"opportunity {m.from_stage or 'new'} → {m.stage} by {m.actor}")
    order = {"enrolled": 0, "customer": 1, "step": 2, "stage": 3, "open": 4}
    entries.sort(key=lambda e: (e.at, order.get(e.kind, 9)))  # stable: a play's decisions keep their order
    return entries

