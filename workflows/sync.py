"""Source syncs on Temporal: one Schedule per declared source, each starting SyncWorkflow.

    await apply_schedules(client, catalog, task_queue="playbook")   # worker start / `playbook schedules apply`

A Schedule `playbook-sync-<source>` (visible in the Temporal UI) starts
SyncWorkflow every `every_minutes` of the source's settings ([sources.NAME]),
overlap SKIP (a sync still running is not doubled) and a catch-up window of
one interval. The workflow runs one activity, `sync_source`, which is
`playbook sync SOURCE`: batches written all or nothing with their cursor,
so a retry after a worker died resumes after the last written batch. A
source that cannot be reached fails the attempt (retried with backoff); a
refused batch or an unusable declaration/setting fails it for good (the
data or the settings need a person), and the run is in `sync_runs` either way.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from temporalio.client import (
        Client,
        Schedule,
        ScheduleActionStartWorkflow,
        ScheduleAlreadyRunningError,
        ScheduleIntervalSpec,
        ScheduleOverlapPolicy,
        SchedulePolicy,
        ScheduleSpec,
        ScheduleUpdate,
        ScheduleUpdateInput,
    )

SCHEDULE_PREFIX = "playbook-sync-"
SYNC_TIMEOUT = dt.timedelta(hours=6)  # one sync, every batch of it
HEARTBEAT = dt.timedelta(minutes=2)  # a batch (a page, a query) must show progress within this


class SyncInput(BaseModel):
    source: str
    full: bool = False


def schedule_id(source: str) -> str:
    return SCHEDULE_PREFIX + source


@workflow.defn
class SyncWorkflow:
    """One sync of one source (the activity does the work; the workflow retries it)."""

    @workflow.run
    async def run(self, inp: SyncInput) -> dict[str, Any]:
        result: dict[str, Any] = await workflow.execute_activity(
            "sync_source", inp, start_to_close_timeout=SYNC_TIMEOUT, heartbeat_timeout=HEARTBEAT,
            retry_policy=RetryPolicy(initial_interval=dt.timedelta(seconds=30), backoff_coefficient=2.0,
                                     maximum_interval=dt.timedelta(minutes=15), maximum_attempts=5),
            result_type=dict)
        return result


class _Heartbeating:
    """A reader that heartbeats each batch, so a dead worker's sync is retried in minutes, not hours."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def batches(self, cursor: Any, *, full: bool) -> AsyncIterator[Any]:
        async for batch in self.inner.batches(cursor, full=full):
            activity.heartbeat(len(batch.records))
            yield batch

    async def aclose(self) -> None:
        await self.inner.aclose()


class SyncActivities:
    """`sync_source` over the store, with the declarations read fresh at each sync."""

    def __init__(self, store: Any, catalog: Callable[[], Any]) -> None:
        self.store, self.catalog = store, catalog

    @activity.defn(name="sync_source")
    async def sync_source(self, inp: SyncInput) -> dict[str, Any]:
        from connectors.sources import SourceSettingsError, reader_for
        from engine.sync import SourceProblem, SourceUnreachable, SyncRefused, run_sync

        catalog = self.catalog()
        decl = catalog.sources.get(inp.source)
        if decl is None:
            raise ApplicationError(f"no source named '{inp.source}' is declared any more", non_retryable=True)
        try:
            reader = reader_for(decl)
        except (SourceProblem, SourceSettingsError) as exc:
            raise ApplicationError(str(exc), non_retryable=True) from None
        try:
            result = await run_sync(self.store, catalog, decl, _Heartbeating(reader), full=inp.full)
        except (SyncRefused, SourceProblem) as exc:
            raise ApplicationError(str(exc), non_retryable=True) from None
        except SourceUnreachable as exc:
            raise ApplicationError(str(exc), type="SourceUnreachable") from None
        return result.as_json()

    def all(self) -> list[Callable[..., Any]]:
        return [self.sync_source]


def sync_worker_parts(store: Any, catalog: Callable[[], Any]) -> tuple[list[type], list[Callable[..., Any]]]:
    """(workflows, activities) a worker registers to run source syncs."""
    return [SyncWorkflow], SyncActivities(store, catalog).all()


def _schedule(source: str, every: dt.timedelta, task_queue: str) -> Schedule:
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(SyncWorkflow.run, SyncInput(source=source), id=f"sync:{source}",
                                           task_queue=task_queue),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=every),
    )
    schedule.state.note = f"playbook sync {source} every {every}"
    return schedule


async def apply_schedules(client: Client, catalog: Any, *, task_queue: str,
                          every: Callable[[str], dt.timedelta] | None = None,
                          remove_stale: bool = True) -> tuple[list[str], list[str]]:
    """Create or update one Schedule per declared source; delete those of sources no longer declared.

    Returns (applied ids, deleted ids). `every(source)`: the interval (default: the source's settings).
    """
    from connectors.sources import load_source_settings

    def interval(name: str) -> dt.timedelta:
        return dt.timedelta(minutes=load_source_settings(name).every_minutes)

    applied: list[str] = []
    for name in catalog.sources:
        sid = schedule_id(name)
        schedule = _schedule(name, (every or interval)(name), task_queue)
        try:
            await client.create_schedule(sid, schedule)
        except ScheduleAlreadyRunningError:
            def update(_: ScheduleUpdateInput, schedule: Schedule = schedule) -> ScheduleUpdate:
                return ScheduleUpdate(schedule=schedule)

            await client.get_schedule_handle(sid).update(update)
        applied.append(sid)
    deleted: list[str] = []
    if remove_stale:
        async for listed in await client.list_schedules():
            if listed.id.startswith(SCHEDULE_PREFIX) and listed.id not in applied:
                await client.get_schedule_handle(listed.id).delete()
                deleted.append(listed.id)
    return applied, deleted


__all__: Sequence[str] = ["SyncInput", "SyncWorkflow", "SyncActivities", "apply_schedules", "schedule_id",
                          "sync_worker_parts"]
