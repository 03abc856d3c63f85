"""`playbook simulate`: the real PlayWorkflows over a dataset, weeks in minutes.

    report = await simulate(SimConfig(days=30, seed=7), playbooks, accounts=1000)

Everything runs on Temporal's time-skipping test server, in this process:
the sweep (workflows/sweep.py, the same code the SweepWorkflow runs), the
PlayWorkflows of workflows/play.py with the built-in store connector, and a
simulated customer. Only the clock is fake. The parts:

- workflows/sim_model.py: what is asked for (`SimConfig`) and reported (`SimReport`);
- workflows/sim_customer.py: the simulated customer's reactions to emails;
- workflows/sim_driver.py: the one workflow that moves time, tick to tick;
- workflows/sim_activities.py: what happens at a tick (customer events, sweeps);
- workflows/sim_report.py: the daily load, totals and timelines at the end;
- cli/simulate_render.py: the report as text tables and timelines.

Determinism: for one dataset, seed, start instant and playbooks, the run
is the same. Every random choice is a hash of (seed, the email's
idempotency key, what is drawn), not a draw from a shared generator, so it
does not depend on the order concurrent activities finish in. Plays are
enrolled at the whole hour (`enrolled_at` = tick - 30 s), so their steps
fall on whole hours or window starts, never on a tick: a tick sees every
step due before it already done (the server does not skip time while an
activity runs), and a sweep never races a step. A reaction is drawn while
the email's activity runs, so it is queued (and the driver woken) before
time can move on. Customer events happen at ticks, and a tick waits until
every play it signalled has handled the event (ended, or waits again)
before it sweeps, so the sweep's reconciliation and decisions do not
depend on how fast the machine runs the plays. (What is not reproduced: run ids, and wall-clock milliseconds the
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
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from connectors.base import Connectors
from connectors.store import StoreConnector
from engine.store import Store, copy_sqlite
from workflows.accounts import StoreAccounts
from workflows.activities import PlayActivities
from workflows.client import DATA_CONVERTER
from workflows.play import PlayWorkflow
from workflows.sim_activities import SimActivities, SimConnector
from workflows.sim_driver import DriverInput, SimulationDriver
from workflows.sim_model import UTC, SimConfig, SimReport
from workflows.sweep import Playbooks


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
