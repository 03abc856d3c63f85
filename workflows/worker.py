"""The worker: PlayWorkflow and its activities over the connectors the settings choose.

    settings = TemporalSettings.from_env()           # address, namespace, TLS
    await run_worker(settings, store=Store.open(...), catalog=project.catalog)

Workers are stateless: run as many as needed against one task queue. A
worker

- polls the main task queue (plays, sweeps, every activity) and one queue
  per registered connector (`<task queue>.<connector>`, only `act`) with
  that connector's rate limit (`[rates]`, workflows/queues.py),

- connects by address, namespace and optional TLS (workflows/settings.py)
  with the pydantic data converter,
- registers our search attributes when the namespace lacks them (warns if
  it may not: starting plays then fails until an operator adds them),
- stops gracefully on SIGTERM / SIGINT: it polls no new tasks and gives
  in-flight activities `shutdown_seconds` to finish (a send that is half
  way completes and is reported); whatever is still running after that is
  cancelled and retried later by another worker, which the idempotency keys
  make safe.

Exit: sdk-python #300 can abort the interpreter at exit ("Fatal Python
error: PyGILState_Release") after a worker ran many workflows. `main()` and
the CLI therefore end the process with `os._exit` once the worker has shut
down cleanly and output is flushed (`hard_exit`).

`python -m workflows.worker [--playbooks DIR] [--database URL]` runs one.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from pydantic import SecretStr
from temporalio.client import Client
from temporalio.worker import Worker

from connectors.base import Connectors
from connectors.sandbox import load_sandbox_settings
from connectors.settings import choose, describe, load_connectors, rates
from dsl.catalog import Catalog
from engine.store import Store
from workflows.activities import PlayActivities
from workflows.play import PlayWorkflow
from workflows.queues import connector_queues
from workflows.search_attributes import SearchAttributeError, ensure_registered
from workflows.settings import TemporalSettings, connect

log = logging.getLogger("playbook.worker")


def store_activities(store: Store, catalog: Catalog, *, unsubscribe_url: str | None = None,
                     connectors: Connectors | None = None) -> PlayActivities:
    """Activities over the store's accounts, acting through the connectors the settings
    choose per step kind (connectors/settings.py; default: the store itself)."""
    from workflows.accounts import StoreAccounts

    if connectors is None:
        connectors = load_connectors(store)
    url, secret = unsubscribe_link(unsubscribe_url)
    return PlayActivities(connectors, StoreAccounts(store, catalog), catalog, unsubscribe_url=url,
                          unsubscribe_secret=secret)


def unsubscribe_link(given: str | None = None) -> tuple[str | None, SecretStr | None]:
    """The format of `{{ unsubscribe_url }}` (and List-Unsubscribe) and the secret of its {token}:
    `given`, else the `[email]` setting `unsubscribe_url`, else the one-click link of `playbook
    serve` when its `public_url` and `unsubscribe_secret` settings are set (docs/serve.md).
    The worker and `playbook render` both ask here, so a preview shows the link a play sends."""
    from connectors import mail
    from connectors.inbound import load_serve_settings
    from engine.settings import SettingsError

    serve = load_serve_settings()
    url = given if given is not None else mail.load().unsubscribe_url
    if url is None and serve.public_url and serve.unsubscribe_secret is not None:
        url = serve.public_url.rstrip("/") + "/unsubscribe?c={contact}&a={account_id}&p={play}&t={token}"
    if url is not None and "{token}" in url and serve.unsubscribe_secret is None:
        raise SettingsError("unsubscribe_url uses {token}: set unsubscribe_secret in [serve] "
                            "(PLAYBOOK_SERVE_UNSUBSCRIBE_SECRET)")
    return url, serve.unsubscribe_secret


def build_worker(
    client: Client,
    settings: TemporalSettings,
    activities: PlayActivities,
    *,
    extra_workflows: Sequence[type] = (),
    extra_activities: Sequence[Callable[..., Any]] = (),
    **options: Any,
) -> Worker:
    """A worker for PlayWorkflow (plus, e.g., the sweep's workflow and activities)."""
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[PlayWorkflow, *extra_workflows],
        activities=[*activities.all(), *extra_activities],
        graceful_shutdown_timeout=dt.timedelta(seconds=settings.shutdown_seconds),
        max_concurrent_activities=settings.max_activities,
        sticky_queue_schedule_to_start_timeout=dt.timedelta(seconds=settings.sticky_timeout_seconds),
        **options,
    )


def connector_workers(client: Client, settings: TemporalSettings, activities: PlayActivities,
                      limits: Mapping[str, float] | None = None, **options: Any) -> list[Worker]:
    """One activity worker per connector queue, each with its connector's rate (None: unlimited).

    Every registered connector's queue, not only those the settings choose now:
    a running play keeps the queue it was started with (workflows/queues.py)."""
    limits = rates() if limits is None else limits
    return [
        Worker(
            client,
            task_queue=queue,
            activities=[activities.act],
            max_task_queue_activities_per_second=limits.get(name),
            graceful_shutdown_timeout=dt.timedelta(seconds=settings.shutdown_seconds),
            max_concurrent_activities=settings.max_activities,
            max_concurrent_activity_task_polls=2,  # idle queues should cost the server little
            **options,
        )
        for name, queue in connector_queues(settings.task_queue).items()
    ]


async def prepare(client: Client) -> None:
    """Register the search attributes if we may; a worker runs without them."""
    try:
        added = await ensure_registered(client)
    except SearchAttributeError as exc:
        log.warning("%s", exc)
        return
    if added:
        log.info("registered search attributes: %s", ", ".join(added))


def install_stop_signals(stop: asyncio.Event) -> Callable[[], None]:
    """SIGTERM and SIGINT set `stop` (a second one is left to the default: kill -9 still works)."""
    loop = asyncio.get_running_loop()
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # signals only reach the main thread
    installed: list[int] = []

    def handler(signum: int) -> None:
        if stop.is_set():
            return
        log.info("%s: finishing in-flight activities, then stopping", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, handler, signum)
        installed.append(signum)

    def remove() -> None:
        for signum in installed:
            loop.remove_signal_handler(signum)

    return remove


async def run_until(worker: Worker | Sequence[Worker], stop: asyncio.Event) -> None:
    """Run the worker(s) until `stop` is set or one fails; then shut them all down gracefully."""
    workers = [worker] if isinstance(worker, Worker) else list(worker)
    runs = [asyncio.create_task(w.run()) for w in workers]
    stopped = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait({*runs, stopped}, return_when=asyncio.FIRST_COMPLETED)
        failed = [r for r in runs if r in done]
        # Waits up to graceful_shutdown_timeout for activities, all workers at once.
        await asyncio.gather(*(w.shutdown() for w, r in zip(workers, runs) if not r.done()),
                             return_exceptions=True)
        results = await asyncio.gather(*runs, return_exceptions=True)
        for r in failed:
            r.result()  # a fatal worker error (lost server beyond retries, bad registration)
        for res in results:
            if isinstance(res, BaseException):
                raise res
    finally:
        stopped.cancel()


async def run_worker(
    settings: TemporalSettings,
    *,
    store: Store | None = None,
    catalog: Catalog | None = None,
    activities: PlayActivities | None = None,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[Client], None] | None = None,
    client: Client | None = None,
    sweep_paths: Sequence[str | Path] | None = None,
    **options: Any,
) -> None:
    """Connect, register search attributes, run until SIGTERM/SIGINT (or `stop`).

    `sweep_paths`: also run SweepWorkflow (workflows/sweep.py) over the store,
    with the playbooks in these folders, re-read when a .play file changes.
    """
    chosen = None  # connectors by step kind, when the settings chose them
    sandboxed = None  # where sandbox mode sends messages, when it is on
    if activities is None:
        if store is None:
            raise ValueError("run_worker needs a store or activities")
        activities = store_activities(store, catalog or store.catalog or Catalog())
        chosen = describe(choose())
        mode = load_sandbox_settings()
        sandboxed = mode.describe() if mode.on else None
        # The built-in pipeline's SLA timers run beside the plays that open and move deals.
        flows, acts = pipeline_worker_parts(store, activities, settings.task_queue)
        options = {**options, "extra_workflows": [*options.get("extra_workflows", ()), *flows],
                   "extra_activities": [*options.get("extra_activities", ()), *acts]}
    client = client or await connect(settings)
    await prepare(client)
    if sweep_paths is not None and store is not None:
        from workflows.queues import step_queues
        from workflows.sweep import sweep_worker_parts
        from workflows.sync import sync_worker_parts

        # The plays it starts run each `act` on the queue of the kind's connector.
        playbooks = fresh_playbooks(sweep_paths)
        flows, acts = sweep_worker_parts(client, store, playbooks, task_queue=settings.task_queue,
                                         queues=step_queues(settings.task_queue))
        # Declared sources sync on Schedules of their own (workflows/sync.py), run by these workers.
        sync_flows, sync_acts = sync_worker_parts(store, lambda: playbooks().catalog)
        options = {**options, "extra_workflows": [*options.get("extra_workflows", ()), *flows, *sync_flows],
                   "extra_activities": [*options.get("extra_activities", ()), *acts, *sync_acts]}
        await _apply_source_schedules(client, playbooks, settings.task_queue)
    worker = build_worker(client, settings, activities, **options)
    limits = rates()
    queues = connector_workers(client, settings, activities, limits)
    stop = stop or asyncio.Event()
    remove = install_stop_signals(stop)
    try:
        if on_ready is not None:
            on_ready(client)
        log.info("worker polling %s", settings.describe())
        if chosen:
            log.info("connectors: %s", chosen)
        if sandboxed:
            log.warning("%s", sandboxed)
        log.info("connector queues: %s", ", ".join(
            f"{w.task_queue} ({limits[n]:g}/s)" if n in limits else w.task_queue
            for n, w in zip(connector_queues(settings.task_queue), queues)))
        await run_until([worker, *queues], stop)
    finally:
        remove()
    log.info("worker stopped")


async def _apply_source_schedules(client: Client, playbooks: Callable[[], Any], task_queue: str) -> None:
    """One Schedule per declared source; a worker that cannot make them still runs (it warns)."""
    from workflows.sync import apply_schedules

    try:
        catalog = playbooks().catalog
        if not catalog.sources:
            return
        applied, deleted = await apply_schedules(client, catalog, task_queue=task_queue)
    except Exception as exc:  # noqa: BLE001 - a bad [sources] setting or a refused schedule: say it, keep working
        log.warning("source schedules not applied: %s: %s", type(exc).__name__, exc)
        return
    log.info("source schedules: %s%s", ", ".join(applied), f" (deleted {', '.join(deleted)})" if deleted else "")


def pipeline_worker_parts(store: Store, activities: PlayActivities, task_queue: str
                          ) -> tuple[list[type], list[Callable[..., Any]]]:
    """PipelineWorkflow and its activities over the store, on the pipeline calendar of the
    engine settings. When the store itself keeps the deals (no CRM connector serves
    `opportunity` and `stage`), the play activities signal it when a deal opens or moves;
    deals kept in a CRM follow that CRM's own process."""
    from connectors.store import StoreConnector
    from engine.settings import load_settings
    from workflows.pipeline import PipelineWorkflow
    from workflows.pipeline_activities import PipelineActivities, SlaCalendar

    if all(isinstance(activities.connectors.by_kind.get(k), StoreConnector) for k in ("opportunity", "stage")):
        activities.pipeline_queue = task_queue
    acts = PipelineActivities(store, activities.connectors, SlaCalendar.from_settings(load_settings()))
    return [PipelineWorkflow], acts.all()


def fresh_playbooks(paths: Sequence[str | Path]) -> Callable[[], Any]:
    """The sweep's playbooks, loaded again only when a .play file was added, removed or changed."""
    from dsl.project import discover
    from workflows.sweep import Playbooks

    cached: dict[str, Any] = {}

    def get() -> Any:
        files = discover(list(paths))
        stamp = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)
        if cached.get("stamp") != stamp:
            cached["playbooks"], cached["stamp"] = Playbooks.load(list(paths)), stamp
        return cached["playbooks"]

    return get


def load_catalog(paths: Sequence[str | Path]) -> Catalog:
    """Declarations (fields, lets, scores) the activities evaluate against.

    A project with errors still yields what could be read, with a warning:
    running plays carry their Plans and must keep running.
    """
    from dsl.project import load

    project = load(list(paths))
    if project.errors:
        log.warning("%d error(s) in %s; run `playbook check`", len(project.errors), ", ".join(map(str, paths)))
    return project.catalog


def hard_exit(code: int) -> NoReturn:
    """Flush and leave without interpreter finalisation (sdk-python #300)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    logging.shutdown()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    parser = argparse.ArgumentParser(prog="python -m workflows.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--playbooks", action="append", default=None, help="folders of .play files (catalog)")
    parser.add_argument("--database", default=None, help="store URL (default: $PLAYBOOK_DATABASE_URL or .playbook/)")
    parser.add_argument("--address", default=None)
    parser.add_argument("--namespace", default=None)
    parser.add_argument("--task-queue", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = TemporalSettings.from_env(address=args.address, namespace=args.namespace, task_queue=args.task_queue)
    paths = args.playbooks or ["playbooks"]
    catalog = load_catalog(paths)
    store = Store.open(args.database, catalog=catalog)
    code = 0
    try:
        asyncio.run(run_worker(settings, store=store, catalog=catalog, sweep_paths=paths))
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback
        print(f"worker: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    finally:
        store.close()
    hard_exit(code)


if __name__ == "__main__":
    main()

__all__ = ["build_worker", "hard_exit", "load_catalog", "pipeline_worker_parts", "run_worker", "store_activities"]
