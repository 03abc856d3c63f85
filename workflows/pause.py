"""`playbook pause` / `resume`: hold every step of one play, or of all plays, and let them go.

    await pause_plays(client, store, "usage_limit", by="ana", reason="pricing email is wrong")
    await resume_plays(client, store, None, by="ana")        # None: every play

Two halves, so a pause holds for plays running now and plays started later:

1. the store's record (engine/pauses.py), written first: the sweep reads it
   when it starts enrollments and starts them paused (`PlayInput.pause`),
   and signals a pause to any it started just as the record was written;
2. the `pause` / `resume` signal to every running PlayWorkflow of the play
   (visibility query `PlaybookPlay = '<play>'`; every running play for
   `--all`), sent from here, a bounded number at a time.

Why signals one by one and not Temporal's batch operation: the command then
knows how many plays it reached and fails loudly if the server refuses, and
it works on every server. 1,000 plays took 17 s here (docs/BENCHMARKS.md);
for 100,000 a server-side batch signal would be the faster tool. A paused play
shows `PlaybookPaused = true` and a "PAUSED since ..." line in its current
details (workflows/play.py); pausing twice only replaces the reason, a
resume of a play that is not paused does nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from pydantic import BaseModel
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from engine import pauses
from engine.store import Store
from workflows.model import Pause, Resume
from workflows.play import PlayWorkflow
from workflows.status import query_for

CONCURRENCY = 50  # signals in flight at once


class StillPaused(Exception):
    """A play cannot be resumed alone while every play is paused."""


class PauseReport(BaseModel):
    scope: str  # a play's name, or "*"
    paused: bool  # True after `pause`, False after `resume`
    signalled: int = 0  # running plays that got the signal
    gone: int = 0  # closed between the listing and the signal
    query: str  # the visibility query of the plays signalled
    since: dt.datetime | None = None  # when the pause began (pause only)
    reason: str | None = None
    resumed: list[str] = []  # the pauses a resume removed (play names, "*")


def scope_of(play: str | None) -> str:
    return play if play is not None else pauses.ALL


async def pause_plays(client: Client, store: Store, play: str | None, *, by: str,
                      reason: str | None = None) -> PauseReport:
    """Record the pause, then signal it to every running play it covers."""
    scope = scope_of(play)
    record = await asyncio.to_thread(pauses.pause, store, scope, by, reason)
    signal = Pause(at=record.at, by=by, reason=reason, scope=scope)
    query = query_for(play)
    signalled, gone = await _signal_all(client, query, "pause", signal)
    return PauseReport(scope=scope, paused=True, signalled=signalled, gone=gone, query=query, since=record.at,
                       reason=reason)


async def resume_plays(client: Client, store: Store, play: str | None, *, by: str,
                       at: dt.datetime | None = None) -> PauseReport:
    """Remove the pause (for `None`: every pause), then signal `resume` to the running plays it covers."""
    scope = scope_of(play)
    if play is not None:
        every = (await asyncio.to_thread(pauses.in_force, store)).get(pauses.ALL)
        if every is not None:
            raise StillPaused(f"every play is paused (since {every.at:%Y-%m-%d %H:%M} UTC, by {every.by}): "
                              f"resume them all with `playbook resume --all`")
    removed = await asyncio.to_thread(pauses.resume, store, scope, by)
    query = query_for(play)
    signal = Resume(at=at or dt.datetime.now(dt.timezone.utc), by=by)
    signalled, gone = await _signal_all(client, query, "resume", signal)
    return PauseReport(scope=scope, paused=False, signalled=signalled, gone=gone, query=query, resumed=removed)


async def signal_pause(client: Client, workflow_ids: list[str], signal: Pause) -> None:
    """Pause these plays (the sweep: enrollments started just as a pause was recorded)."""
    await _signal_ids(client, workflow_ids, "pause", signal)


async def _signal_all(client: Client, query: str, name: str, payload: Pause | Resume) -> tuple[int, int]:
    ids = [wf.id async for wf in client.list_workflows(query, page_size=1000)]
    return await _signal_ids(client, ids, name, payload)


async def _signal_ids(client: Client, ids: list[str], name: str, payload: Pause | Resume) -> tuple[int, int]:
    gate = asyncio.Semaphore(CONCURRENCY)
    done = {"signalled": 0, "gone": 0}

    async def one(workflow_id: str) -> None:
        async with gate:
            handle = client.get_workflow_handle_for(PlayWorkflow.run, workflow_id)
            try:
                await handle.signal(name, payload)
            except RPCError as exc:
                if exc.status is not RPCStatusCode.NOT_FOUND:
                    raise
                done["gone"] += 1  # it completed or exited since it was listed
                return
            done["signalled"] += 1

    await asyncio.gather(*(one(i) for i in ids))
    return done["signalled"], done["gone"]


__all__ = ["PauseReport", "StillPaused", "pause_plays", "resume_plays", "scope_of", "signal_pause"]
