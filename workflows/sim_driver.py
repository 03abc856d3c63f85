"""The simulation's driver workflow: it keeps time, the activities act.

How time moves: the test server skips time only while a client awaits a
workflow result, and only when nothing is running. So the whole simulation
is one workflow, `SimulationDriver`, whose result the caller awaits. It
sleeps from tick to tick. Ticks fall 30 s past a whole hour: once a
simulated day at the start's hour (a sweep), and whenever a customer event
is due (workflows/sim_activities.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows.sim_activities import WAKE_SIGNAL, SimActivities, TickRequest
    from workflows.sim_model import TICK_OFFSET


class DriverInput(BaseModel):
    start: dt.datetime
    end: dt.datetime  # midnight UTC after the last simulated day
    sweep_every_days: int = 1
    next_sweep: int = 0  # continue-as-new carries the position
    after: dt.datetime | None = None  # the last tick done (continue-as-new)
    wakes: list[dt.datetime] = []


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

    @workflow.signal(name=WAKE_SIGNAL)
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

