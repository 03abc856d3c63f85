"""Crash test on a real dev server: SIGKILL the worker mid-play, twice; nothing runs twice.

Three accounts enter a 5-step play (email, email, task, email, email; one
day apart) whose days last DAY seconds (PlayInput.day_seconds, test-only).
Workers run as subprocesses against one SQLite store:

1. tests/workflows/crash_worker.py: the store worker, but step `s1`'s
   emails stall after their outbox rows are committed. It is killed with
   SIGKILL while they stall: the rows exist, Temporal never heard back.
2. `python -m workflows.worker` (the real entry point) takes over: the lost
   `s1` attempts time out (activity_timeout_seconds, test-only), are
   retried and find their keys used (decision `duplicate`). It is killed
   with SIGKILL again once step `s3` has acted, between steps.
3. A third worker finishes the plays and is stopped with SIGTERM: a clean
   exit 0 and no interpreter crash at exit (sdk-python #300).

Then: every play completed, every step decided exactly once, the outbox
holds exactly one row per email (12) and `tasks` one row per task (3).
Workers use a 2 s sticky timeout (PLAYBOOK_WORKER_STICKY_TIMEOUT_SECONDS):
a play cached by a dead worker moves on after 2 s, not 10. Runs in ~30 s; `-m slow` selects it, `-m "not slow"` skips it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from dsl import nodes as n
from dsl.plan import PlanTemplate
from engine import schema
from engine.store import Store
from workflows.client import start_play
from workflows.devserver import dev_server, free_port
from workflows.model import Outcome, PlayInput
from workflows.worker import load_catalog
from wf_plans import email, plan, ref, step

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
DAY = 2.0  # seconds per day of the play
ACCOUNTS = ["acme", "globex", "initech"]
EMAIL_STEPS = ["s0", "s1", "s3", "s4"]
ENTITY = "entity account\n  field admin contact\n  field csm user\n"
TEMPLATES = {"hello": PlanTemplate(name="hello", subject="For {{ name }}", body="Hi {{ recipient.first_name }},")}
OUTBOX = schema.OutboxMessage.__table__
TASKS = schema.Task.__table__


def _rows(st: Store, table: sa.Table) -> list[str]:
    with st.connect() as conn:
        return [r[0] for r in conn.execute(sa.select(table.c.idempotency_key))]


def _acted(st: Store, label: str) -> int:
    return sum(key.endswith(f":{label}") for key in _rows(st, OUTBOX) + _rows(st, TASKS))


class Spawned:
    """A worker subprocess logging to a file."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("w") as out:
            self.proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)


async def _until(what: str, check, worker: Spawned, seconds: float = 40.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if worker.proc.poll() is not None:
            raise AssertionError(f"worker exited ({worker.proc.returncode}) before {what}:\n{worker.output()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_sigkill_mid_play_never_acts_twice(tmp_path):
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    (playbooks / "entity.play").write_text(ENTITY)
    catalog = load_catalog([playbooks])
    url = f"sqlite:///{tmp_path / 'store.db'}"
    st = Store.open(url, catalog=catalog)
    with st.begin() as conn:
        conn.execute(st.table("account").insert(), [{"id": a, "name": a.title(), "admin": f"c-{a}", "csm": "carol"} for a in ACCOUNTS])
        conn.execute(schema.Contact.__table__.insert(), [
            {"id": f"c-{a}", "account_id": a, "email": f"ada@{a}.test", "first_name": "Ada"} for a in ACCOUNTS])

    p = plan([
        step("s0", 0, email("hello")),
        step("s1", 1, email("hello")),
        step("s2", 2, n.TaskStep(assignee=ref("account.csm"), title="Call {{ name }}")),
        step("s3", 3, email("hello")),
        step("s4", 4, email("hello")),
    ], templates=TEMPLATES)

    async with dev_server(db=None, port=free_port(), headless=True, log_path=tmp_path / "temporal.log") as (server, client):
        queue = f"crash-{uuid.uuid4()}"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PLAYBOOK_DATABASE_URL": url,
               "PLAYBOOK_TEMPORAL_ADDRESS": server.address, "PLAYBOOK_TEMPORAL_TASK_QUEUE": queue,
               "PLAYBOOK_WORKER_SHUTDOWN_SECONDS": "5", "PLAYBOOK_WORKER_STICKY_TIMEOUT_SECONDS": "2",
               "CRASH_SLOW_STEP": "s1", "CRASH_SLOW_SECONDS": "30"}

        def spawn(name: str, *args: str) -> Spawned:
            return Spawned(list(args), tmp_path, env, tmp_path / f"{name}.log")

        first = spawn("first", str(Path(__file__).with_name("crash_worker.py")), str(playbooks))
        enrolled = dt.datetime.now(dt.timezone.utc)
        handles = [
            await start_play(client, PlayInput(plan=p, account_id=a, enrolled_at=enrolled, day_seconds=DAY,
                                               activity_timeout_seconds=4), task_queue=queue)
            for a in ACCOUNTS
        ]
        # 1. Every s1 email is committed and stalling: kill.
        await _until("s1 committed", lambda: _acted(st, "s1") == len(ACCOUNTS), first)
        first.kill9()
        assert _acted(st, "s2") == 0

        # 2. The real worker takes over; kill it again between steps.
        second = spawn("second", "-m", "workflows.worker", "--playbooks", str(playbooks))
        await _until("s3 acted", lambda: _acted(st, "s3") == len(ACCOUNTS), second)
        second.kill9()

        # 3. A third one finishes; SIGTERM stops it cleanly.
        third = spawn("third", "-m", "workflows.worker", "--playbooks", str(playbooks))
        try:
            results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 45)
            # Polling (it may have had nothing left to do): now SIGTERM reaches our handler.
            await _until("the third worker polls", lambda: "worker polling" in third.output(), third)
        finally:
            code = third.terminate()
        err = third.output()
    st_keys = Counter(_rows(st, OUTBOX)), Counter(_rows(st, TASKS))
    st.close()

    assert code == 0, err
    assert "worker stopped" in err
    assert "Fatal Python error" not in err
    outbox, tasks = st_keys
    assert sum(outbox.values()) == len(ACCOUNTS) * len(EMAIL_STEPS) and set(outbox.values()) == {1}
    assert sum(tasks.values()) == len(ACCOUNTS) and set(tasks.values()) == {1}
    for account, result in zip(ACCOUNTS, results):
        assert result.outcome == "completed", result.reason
        acted = [(d.step, d.outcome) for d in result.decisions if d.outcome is not Outcome.LATE]
        assert [s for s, _ in acted] == ["s0", "s1", "s2", "s3", "s4"], (account, acted)
        # s1's first attempt acted, then died unreported: the retry found the key used.
        assert dict(acted)["s1"] is Outcome.DUPLICATE
        assert dict(acted)["s0"] is Outcome.RAN
        assert {o for _, o in acted} <= {Outcome.RAN, Outcome.DUPLICATE}
        for label in EMAIL_STEPS:
            assert sum(k.startswith(f"play:usage_limit:{account}:") and k.endswith(f":{label}") for k in outbox) == 1
