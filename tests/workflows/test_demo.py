"""`playbook demo` end to end on a small dataset: store, sweep, plays, outbox, summary."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.schema import Base
from engine.store import Store
from workflows.demo import DemoError, run_demo

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
START = dt.datetime(2030, 3, 4, 6, tzinfo=dt.timezone.utc)  # a Monday
ENR, OUT = Base.metadata.tables["enrollments"], Base.metadata.tables["outbox"]


async def test_demo_runs_end_to_end_and_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="temporalio")
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    s = await run_demo(accounts=60, days=2, db=url, paths=[ROOT / "playbooks"], start=START)
    enrolled = sum(s.enrolled_by_play.values())
    assert s.accounts == 60 and enrolled >= 5 and s.candidates >= enrolled
    assert sum(s.enrolled_by_route.values()) == enrolled
    assert s.triggers_fired and all(n > 0 for n in s.triggers_fired.values())
    assert s.outbox.get("email", 0) >= 5
    e = s.sample_email
    assert e is not None and e.subject and "{{" not in e.body and "{{" not in e.subject
    assert START <= e.created_at < s.end
    with Store.open(url) as store, store.connect() as conn:
        statuses = set(conn.execute(sa.select(ENR.c.status)).scalars())
        assert statuses <= {"completed", "cancelled", "failed"} and "cancelled" in statuses  # nothing left "running"
        assert conn.execute(sa.select(sa.func.count()).select_from(OUT)).scalar_one() == sum(s.outbox.values())
        latest = conn.execute(sa.select(sa.func.max(OUT.c.created_at))).scalar_one()
        assert latest < s.end  # nothing acted after the demo's end

    # Again on the same store: cleared first, same result.
    again = await run_demo(accounts=60, days=2, db=url, paths=[ROOT / "playbooks"], start=START)
    assert again.enrolled_by_route == s.enrolled_by_route and again.outbox == s.outbox
    assert again.sample_email == s.sample_email
    # Nothing the SDK says on the way out reaches the demo's screen (a run ends with plays in flight).
    loud = [r for r in caplog.records if r.name.startswith("temporalio") and r.levelno >= logging.WARNING]
    assert loud == [], [r.getMessage() for r in loud]


async def test_demo_refuses_a_store_with_real_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'real.db'}"
    with Store.open(url) as store, store.begin() as conn:
        conn.execute(Base.metadata.tables["accounts"].insert().values(id="acme", name="Acme"))
    with pytest.raises(DemoError, match="did not make"):
        await run_demo(accounts=10, days=1, db=url, paths=[ROOT / "playbooks"], start=START)


def test_demo_command_json(tmp_path: Path) -> None:
    import contextlib
    import io

    from cli.main import run

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(["demo", str(ROOT / "playbooks"), "--accounts", "40", "--days", "1", "--format", "json",
                    "--db", f"sqlite:///{tmp_path / 'cli.db'}"])
    assert code == 0, err.getvalue()
    doc = json.loads(out.getvalue())
    assert doc["accounts"] == 40 and doc["days"] == 1 and "enrolled_by_play" in doc and "report" in doc


async def test_the_demo_points_to_the_outbox_and_tasks_commands(tmp_path: Path) -> None:
    import contextlib
    import io

    from cli.main import run
    from workflows.demo import print_summary

    url = f"sqlite:///{tmp_path / 'look.db'}"
    s = await run_demo(accounts=40, days=1, db=url, paths=[ROOT / "playbooks"], start=START)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print_summary(s)
    text = out.getvalue()
    assert f"playbook outbox --db {url}" in text and f"playbook tasks --db {url}" in text
    assert "sqlite3" not in text
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert run(["outbox", "--db", url, "--format", "json"]) == 0
    assert json.loads(out.getvalue())["total"] == sum(s.outbox.values())
    # The reports have something to show: the demo writes a year of closed deals before its start.
    assert f"playbook report all --db {url} --format html" in text
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        # The demo runs at START (2030); the reports' default period is the year to --today.
        assert run(["report", "all", "--db", url, "--rules", str(ROOT / "playbooks"), "--format", "json",
                    "--today", START.date().isoformat()]) == 0
    reports = json.loads(out.getvalue())["reports"]
    assert reports["funnel"]["stages"][0]["count"] > 0 and reports["revenue"]["overall"]["expansions"] > 0


async def test_actions_after_the_simulation_end_are_refused_without_a_logged_traceback(caplog) -> None:
    """`./run demo` printed a 20-line temporalio traceback ("TransientError: the simulation
    has ended") in 2 runs of 5: plays woke after the end while the server skipped time,
    and the SDK logs a failed activity attempt at WARNING with its traceback unless
    the error is BENIGN. Here every action is after the end, so it happens every time."""
    import asyncio
    import logging

    from connectors.memory import MemoryConnector
    from wf_plans import email, plan, step
    from workflow_support import harness
    from workflows.client import start_play
    from workflows.model import PlayInput
    from workflows.sim_activities import SimConnector

    refused: list[str] = []

    class Counting(SimConnector):
        def __getattr__(self, name: str):
            guarded = super().__getattr__(name)

            async def counted(action):
                try:
                    return await guarded(action)
                except Exception as exc:
                    refused.append(str(exc))
                    raise

            return counted

    caplog.set_level(logging.DEBUG, logger="temporalio")
    connector = Counting(MemoryConnector(), end=dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc), lock=asyncio.Lock())
    async with harness(connector=connector) as h:
        now = await h.env.get_current_time()
        await start_play(h.client, PlayInput(plan=plan([step("hello", 0, email())]), account_id="acme",
                                             enrolled_at=now), task_queue=h.task_queue)
        for _ in range(300):  # the second attempt comes after the first one's failure was logged
            if len(refused) >= 2:
                break
            await asyncio.sleep(0.1)
    assert len(refused) >= 2 and all("the simulation has ended" in r for r in refused)
    loud = [r for r in caplog.records if r.name.startswith("temporalio") and r.levelno >= logging.WARNING]
    assert loud == [], [r.getMessage() for r in loud]
