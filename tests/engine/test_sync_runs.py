"""Sync runs left 'running' by a process that is gone (killed mid-sync) are marked interrupted."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from dsl.project import load_text
from engine import schema
from engine.store import Store
from engine.sync import LEASE, Batch, run_sync, runs

ROOT = Path(__file__).resolve().parents[2]
PROJECT = '''\
entity account
  field arr money?

source crm from warehouse
  query """
    select id, arr, at from accounts_source
    """
  incremental by at
  account.id  = id
  account.arr = arr
'''


class ListReader:
    """Batches from a list; with `hang`, waits forever after the first (for a kill to land)."""

    def __init__(self, batches: list[Batch], hang: Path | None = None) -> None:
        self.items, self.hang = batches, hang

    async def batches(self, cursor: Any, *, full: bool) -> AsyncIterator[Batch]:
        for b in self.items:
            yield b
            if self.hang is not None:
                self.hang.write_text("written")
                await asyncio.sleep(3600)

    async def aclose(self) -> None:
        pass


KILLED = textwrap.dedent('''
    import asyncio, sys
    from pathlib import Path
    sys.path[:0] = [{root!r}, {tests!r}]
    from dsl.project import load_text
    from engine.store import Store
    from engine.sync import Batch, run_sync
    from test_sync_runs import PROJECT, ListReader
    p = load_text(PROJECT, "p.play")
    store = Store.open({url!r})
    reader = ListReader([Batch([{{"id": "a1", "arr": 100, "at": "t1"}}], "t1")], hang=Path({marker!r}))
    asyncio.run(run_sync(store, p.catalog, p.catalog.sources["crm"], reader))
''')


def test_a_killed_sync_is_marked_interrupted_by_the_next_and_its_batches_stay(tmp_path: Path) -> None:
    url, marker = f"sqlite:///{tmp_path}/store.db", tmp_path / "written"
    p = load_text(PROJECT, "p.play")
    Store.open(url).close()  # migrated before the child starts
    script = KILLED.format(root=str(ROOT), tests=str(Path(__file__).parent), url=url, marker=str(marker))
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, "the sync process ended before its first batch"
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    store = Store.open(url)
    try:
        with store.engine.connect() as conn:
            (shown,) = runs(conn, "crm")
            stored = conn.execute(sa.text("SELECT status FROM sync_runs")).scalar_one()
        assert (shown["status"], stored) == ("interrupted", "running")  # the listing tells; the next sync writes
        assert str(child.pid) in shown["error"]
        reader = ListReader([Batch([{"id": "a2", "arr": 5, "at": "t2"}], "t2")])
        result = asyncio.run(run_sync(store, p.catalog, p.catalog.sources["crm"], reader))
        assert result.status == "ok"
        with store.engine.connect() as conn:
            old, new = runs(conn, "crm")[::-1]
            stored = conn.execute(sa.text("SELECT status FROM sync_runs ORDER BY id")).scalars().all()
            ids = conn.execute(sa.text("SELECT id FROM accounts ORDER BY id")).scalars().all()
        assert stored == ["interrupted", "ok"]
        assert (old["status"], old["batches"], old["finished_at"] is not None) == ("interrupted", 1, True)
        assert ids == ["a1", "a2"]  # the killed run's written batch stays
    finally:
        store.close()


def _running(store: Store, owner: str, alive_at: dt.datetime) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.insert(schema.SyncRun.__table__).values(
            source="crm", started_at=alive_at, status="running", full=False, batches=0, read=0, created=0,
            updated=0, changed=0, refused=0, owner=owner, heartbeat_at=alive_at))


def test_a_run_elsewhere_counts_as_interrupted_only_after_its_lease(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path}/store.db")
    try:
        now = schema.utcnow()
        _running(store, "other-host 12", now - LEASE - dt.timedelta(minutes=1))
        _running(store, "other-host 13", now - dt.timedelta(minutes=5))
        with store.engine.connect() as conn:
            assert [r["status"] for r in runs(conn, "crm")] == ["running", "interrupted"]
    finally:
        store.close()


def test_a_run_of_a_live_process_on_this_host_stays_running(tmp_path: Path) -> None:
    import socket

    store = Store.open(f"sqlite:///{tmp_path}/store.db")
    try:
        _running(store, f"{socket.gethostname()} {os.getpid()}", schema.utcnow() - LEASE * 3)
        with store.engine.connect() as conn:
            assert [r["status"] for r in runs(conn, "crm")] == ["running"]
    finally:
        store.close()
