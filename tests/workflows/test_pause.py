"""Pausing a play (signals `pause` / `resume`, PlayInput.pause) on the time-skipping server."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest

from connectors.base import EmailMessage
from workflows import search_attributes as sa
from workflows.client import start_play
from workflows.model import EventKind, Outcome, Pause, PlayEvent, PlayInput, Resume
from workflows.play import PlayWorkflow
from wf_plans import closed_exit, email, plan, step
from workflow_support import harness

pytestmark = pytest.mark.anyio
TIMEOUT = 30


def _pause(at: dt.datetime, reason: str | None = "pricing email is wrong") -> Pause:
    return Pause(at=at, by="ana", reason=reason, scope="usage_limit")


async def _start(h, p, **kw):
    now = await h.env.get_current_time()
    return await start_play(h.client, PlayInput(plan=p, account_id="acme", enrolled_at=now, **kw),
                            task_queue=h.task_queue), now


async def _until(check, seconds: float = TIMEOUT) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_step_due_while_paused_waits_and_runs_at_once_after_resume():
    p = plan([step("hello", 0, email("hello")), step("followup", 2, email("followup"))])
    async with harness() as h:
        handle, start = await _start(h, p)
        await _until(lambda: _sent(h, 1))
        await handle.signal(PlayWorkflow.pause, _pause(start))
        await h.env.sleep(dt.timedelta(days=5))  # day 2 passes while paused
        status = await handle.query(PlayWorkflow.status)
        assert len(h.connector.effects) == 1, "a paused play acted"
        assert status.state == "paused" and status.paused is not None and status.paused.by == "ana"
        desc = await handle.describe()
        assert desc.typed_search_attributes.get(sa.PAUSED) is True
        resumed_at = await h.env.get_current_time()
        await handle.signal(PlayWorkflow.resume, Resume(at=start, by="ana"))
        result = await asyncio.wait_for(handle.result(), TIMEOUT)
        desc = await handle.describe()
    followup = h.connector.effects[1]
    assert [e.template for e in h.connector.of_kind(EmailMessage)] == ["hello", "followup"]  # nothing skipped
    # It ran when resumed (day 5), not at day 2 and not at a later step time.
    assert followup.requested_at - start >= dt.timedelta(days=5)
    assert followup.requested_at - resumed_at < dt.timedelta(hours=1)
    assert ("followup", Outcome.LATE) in [(d.step, d.outcome) for d in result.decisions]
    assert desc.typed_search_attributes.get(sa.PAUSED) is False


async def test_a_play_started_paused_acts_on_nothing_until_resumed():
    p = plan([step("hello", 0, email("hello"))])
    async with harness() as h:
        now = await h.env.get_current_time()
        handle, _ = await _start(h, p, pause=_pause(now))
        await h.env.sleep(dt.timedelta(days=1))
        assert h.connector.effects == []
        assert (await handle.describe()).typed_search_attributes.get(sa.PAUSED) is True
        await handle.signal(PlayWorkflow.resume, Resume(at=now, by="ana"))
        result = await asyncio.wait_for(handle.result(), TIMEOUT)
    assert result.outcome == "completed"
    assert len(h.connector.effects) == 1


async def test_an_exit_still_ends_a_paused_play():
    p = plan([step("hello", 0, email("hello")), step("followup", 2, email("followup"))], exit=closed_exit())
    async with harness() as h:
        handle, start = await _start(h, p)
        await _until(lambda: _sent(h, 1))
        await handle.signal(PlayWorkflow.pause, _pause(start))
        await h.env.sleep(dt.timedelta(days=3))
        await handle.signal(PlayWorkflow.event, PlayEvent(kind=EventKind.REPLIED, id="r1"))
        result = await asyncio.wait_for(handle.result(), TIMEOUT)
    assert result.outcome == "exited"
    assert len(h.connector.effects) == 1


async def test_a_pause_is_carried_across_continue_as_new():
    p = plan([step("a", 0, email("hello")), step("b", 1, email("followup")), step("c", 2, email("hello"))])
    async with harness() as h:
        handle, start = await _start(h, p, steps_per_run=1)
        await _until(lambda: _sent(h, 1))
        await handle.signal(PlayWorkflow.pause, _pause(start))
        await h.env.sleep(dt.timedelta(days=4))
        assert len(h.connector.effects) == 1
        status = await handle.query(PlayWorkflow.status)
        assert status.paused is not None and status.runs >= 2  # paused in a later run than the signal's
        await handle.signal(PlayWorkflow.resume, Resume(at=start, by="ana"))
        result = await asyncio.wait_for(handle.result(), TIMEOUT)
    assert result.outcome == "completed" and len(h.connector.effects) == 3


async def test_resume_of_a_play_that_is_not_paused_changes_nothing():
    p = plan([step("hello", 0, email("hello")), step("followup", 1, email("followup"))])
    async with harness() as h:
        handle, start = await _start(h, p)
        await handle.signal(PlayWorkflow.resume, Resume(at=start, by="ana"))
        result = await asyncio.wait_for(handle.result(), TIMEOUT)
        desc = await handle.describe()
    assert [d.outcome for d in result.decisions] == [Outcome.RAN, Outcome.RAN]
    assert desc.typed_search_attributes.get(sa.PAUSED) is None


async def _sent(h, n: int) -> bool:
    return len(h.connector.effects) >= n


# ---------------------------------------------------------------------------
# `playbook pause` / `resume` (workflows/pause.py) on a real dev server: visibility lists the plays


async def test_pause_holds_one_plays_running_and_later_enrollments_until_resume(tmp_path):
    import contextlib
    import io
    import uuid

    from temporalio.worker import Worker

    from connectors.base import Connectors
    from connectors.memory import MemoryConnector
    from engine import pauses
    from engine import schema
    from engine.store import Store
    from workflows.activities import PlayActivities, StaticAccounts
    from workflows.devserver import dev_server, free_port
    from workflows.play import workflow_id
    from workflows.status import running_plays
    from workflows.sweep import _paused
    from workflow_support import ACCOUNTS

    def cli(*args: str) -> tuple[int, str, str]:
        from cli.main import run

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = run(list(args))
        return code, out.getvalue(), err.getvalue()

    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = Store.open(url)
    with store.begin() as conn:  # a store `status` may read holds accounts
        conn.execute(schema.Account.__table__.insert(), [{"id": f"a{i}", "name": f"A{i}"} for i in range(4)])
    usage = plan([step("hello", 0, email("hello")), step("followup", 30, email("followup"))])
    growth = plan([step("intro", 0, email("hello")), step("later", 30, email("followup"))], play="team_growth",
                  title="Team growth")
    connector = MemoryConnector()
    acts = PlayActivities(Connectors.single(connector), StaticAccounts({f"a{i}": ACCOUNTS["acme"] for i in range(4)}))
    async with dev_server(db=None, port=free_port(), headless=True, log_path=tmp_path / "t.log") as (server, client):
        queue = f"tq-{uuid.uuid4()}"
        async with Worker(client, task_queue=queue, workflows=[PlayWorkflow], activities=acts.all()):
            now = dt.datetime.now(dt.timezone.utc)
            for p, account in [(usage, "a0"), (usage, "a1"), (growth, "a2")]:
                await start_play(client, PlayInput(plan=p, account_id=account, enrolled_at=now), task_queue=queue)
            await _until(lambda: _sent_n(connector, 3))

            async def listed(n: int) -> bool:  # visibility is eventually consistent
                return (await client.count_workflows("ExecutionStatus = 'Running'")).count == n

            await _until(lambda: listed(3))
            args = ("--address", server.address, "--db", url)
            paused = await asyncio.to_thread(cli, "pause", "usage_limit", "--reason", "wrong price", "--by", "ana",
                                             *args)

            async def handled() -> bool:  # each play handles the signal in its own next workflow task
                for account in ("a0", "a1"):
                    desc = await client.get_workflow_handle(workflow_id("usage_limit", account)).describe()
                    if desc.typed_search_attributes.get(sa.PAUSED) is None:
                        return False
                return True

            await _until(handled)
            attrs = {a: (await client.get_workflow_handle(workflow_id(p, a)).describe()).typed_search_attributes
                     for p, a in [("usage_limit", "a0"), ("usage_limit", "a1"), ("team_growth", "a2")]}
            # Enrolled after the pause (as the sweep does it): starts paused, acts on nothing.
            held = _paused(PlayInput(plan=usage, account_id="a3", enrolled_at=now), pauses.in_force(store))
            assert held is not None and held.pause is not None and held.pause.reason == "wrong price"
            await start_play(client, held, task_queue=queue)

            async def counted_paused() -> bool:
                return (await running_plays(client)).paused == 3

            await _until(counted_paused)
            status = await asyncio.to_thread(cli, "status", "--address", server.address, "--db", url)
            await asyncio.sleep(1.0)
            acted_while_paused = len(connector.effects)
            resumed = await asyncio.to_thread(cli, "resume", "usage_limit", "--by", "ana", *args)
            await _until(lambda: _sent_n(connector, 4))
            after = (await client.get_workflow_handle(workflow_id("usage_limit", "a0")).describe())
            every = await asyncio.to_thread(cli, "pause", "--all", *args)
            one_of_all = await asyncio.to_thread(cli, "resume", "team_growth", *args)
            all_resumed = await asyncio.to_thread(cli, "resume", "--all", "--format", "json", *args)
            typo = await asyncio.to_thread(cli, "pause", "usage_limt", *args)
    left = pauses.in_force(store)
    store.close()

    code, out, err = paused
    assert code == 0, err
    assert out.startswith("paused play usage_limit: 2 running plays hold their steps")
    assert attrs["a0"].get(sa.PAUSED) is True and attrs["a1"].get(sa.PAUSED) is True
    assert attrs["a2"].get(sa.PAUSED) is None  # another play: untouched
    code, out, err = status
    assert code == 0 and "PAUSED" in out.splitlines()[0] and "4 running in 2 plays, 3 paused" in out, err
    assert "\npaused: play usage_limit since " in out and " by ana: wrong price (plays started later start paused)" in out
    assert acted_while_paused == 3  # a3's day-0 email waited
    code, out, err = resumed
    assert code == 0 and out.startswith("resumed play usage_limit: 3 running plays signalled"), err
    assert after.typed_search_attributes.get(sa.PAUSED) is False
    assert [e.account_id for e in connector.effects][3:] == ["a3"]  # sent once resumed; nothing else acted twice
    assert every[0] == 0 and "paused every play: 4 running plays" in every[1]
    code, out, err = one_of_all  # a play cannot leave a pause of every play alone
    assert code == 2 and "resume --all" in err
    code, out, err = all_resumed
    doc = json.loads(out)
    assert code == 0 and doc["resumed"] == ["*"] and doc["signalled"] == 4, err
    assert left == {}
    assert typo[0] == 2 and "usage_limit" in typo[2]  # did you mean


async def _sent_n(connector, n: int) -> bool:
    return len(connector.effects) >= n
