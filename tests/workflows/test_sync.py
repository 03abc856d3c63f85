"""Source syncs as Temporal Schedules on the dev server: created, updated, triggered, deleted."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from dsl.project import load_text
from engine.store import Store
from engine.sync import runs
from workflows.client import DATA_CONVERTER
from workflows.sync import SyncWorkflow, apply_schedules, schedule_id, sync_worker_parts

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from store_backends import PG_URL, pg_schema  # noqa: E402

pytestmark = pytest.mark.anyio
BIN = Path(sys.executable).parent

RULES = '''\
entity account
  field arr money?

source usage from warehouse
  query "select account_id, arr, updated_at from {schema}.usage"
  incremental by updated_at
  account.id  = account_id
  account.arr = arr
'''


@pytest.fixture
def warehouse(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with pg_schema("usage (account_id text, arr numeric, updated_at timestamptz)") as schema:
        engine = sa.create_engine(PG_URL)
        with engine.begin() as conn:
            conn.execute(sa.text(f"INSERT INTO \"{schema}\".usage VALUES ('a1', 10, now()), ('a2', 20, now())"))
        engine.dispose()
        monkeypatch.setenv("PLAYBOOK_SOURCE_USAGE_URL", PG_URL)
        yield schema


async def test_each_source_gets_a_schedule_that_syncs_it_when_triggered(warehouse: str, tmp_path: Path) -> None:
    project = load_text(RULES.format(schema=warehouse), "sources.play")
    assert project.diagnostics == []
    store = Store.open(f"sqlite:///{tmp_path}/store.db", catalog=project.catalog)
    temporal = shutil.which("temporal") or str(BIN / "temporal")
    try:
        async with await WorkflowEnvironment.start_local(
                dev_server_existing_path=temporal, data_converter=DATA_CONVERTER, ui=False) as env:
            applied, deleted = await apply_schedules(env.client, project.catalog, task_queue="tq-sync")
            assert (applied, deleted) == (["playbook-sync-usage"], [])
            handle = env.client.get_schedule_handle(schedule_id("usage"))
            desc = await handle.describe()
            assert desc.schedule.spec.intervals[0].every == dt.timedelta(hours=1)  # every_minutes' default
            assert desc.schedule.policy.overlap.name == "SKIP"
            assert desc.schedule.action.workflow == "SyncWorkflow"  # type: ignore[union-attr]
            # Applying again updates the same schedule.
            await apply_schedules(env.client, project.catalog, task_queue="tq-sync",
                                  every=lambda _: dt.timedelta(minutes=15))
            desc = await handle.describe()
            assert desc.schedule.spec.intervals[0].every == dt.timedelta(minutes=15)

            flows, acts = sync_worker_parts(store, lambda: project.catalog)
            async with Worker(env.client, task_queue="tq-sync", workflows=flows, activities=acts):
                assert flows == [SyncWorkflow]
                await handle.trigger()
                for _ in range(150):
                    with store.engine.connect() as conn:
                        done = [r for r in runs(conn, "usage") if r["status"] != "running"]
                    if done:
                        break
                    await asyncio.sleep(0.2)
            assert [(r["status"], r["read"], r["created"]) for r in done] == [("ok", 2, 2)]
            with store.engine.connect() as conn:
                assert sorted(conn.execute(sa.text("SELECT id, arr FROM accounts")).all()) == [("a1", 10), ("a2", 20)]

            # A source no longer declared loses its schedule.
            gone = load_text("entity account\n  field arr money?\n", "sources.play")
            assert await apply_schedules(env.client, gone.catalog, task_queue="tq-sync") == (
                [], ["playbook-sync-usage"])
    finally:
        store.close()
