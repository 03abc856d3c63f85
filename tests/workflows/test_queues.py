"""One task queue per connector, rate-limited by the server across workers (workflows/queues.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from contextlib import AsyncExitStack

import pytest
from temporalio.worker import Worker

from connectors import base as cb
from connectors.memory import MemoryConnector
from connectors.settings import REGISTRY
from workflows.activities import PlayActivities, StaticAccounts
from workflows.client import start_play
from workflows.devserver import dev_server, free_port
from workflows.model import PlayInput
from workflows.play import PlayWorkflow
from workflows.queues import connector_queues, step_queues
from workflows.settings import TemporalSettings, connect
from workflows.worker import connector_workers
from wf_plans import email, plan, step
from workflow_support import ACCOUNTS

pytestmark = pytest.mark.anyio


def test_each_kind_goes_to_the_queue_of_the_connector_serving_it():
    chosen = {"email": "memory", "task": "hubspot", "notify": "store"}
    assert step_queues("playbook", chosen) == {
        "email": "playbook.memory", "task": "playbook.hubspot", "notify": "playbook.store"}
    assert set(connector_queues("pb")) == set(REGISTRY)  # every registered connector's queue is polled


class _Timed(MemoryConnector):
    """Remembers when each action reached it, and on which worker."""

    def __init__(self) -> None:
        super().__init__()
        self.at: list[float] = []

    async def act(self, action: cb.Action) -> cb.Result:
        self.at.append(time.monotonic())
        return await super().act(action)


async def test_a_connector_rate_holds_across_two_workers(tmp_path):
    """Two workers poll the connector's queue, each with 2 activities/s: together they
    still act 2 a second (the server enforces it), and every play's email is sent once."""
    plays = 12
    rate = 2.0
    p = plan([step("hello", 0, email("hello"))])
    accounts = {f"a{i}": ACCOUNTS["acme"] for i in range(plays)}
    connector = _Timed()
    acts = PlayActivities(cb.Connectors.single(connector), StaticAccounts(accounts))
    async with dev_server(db=None, port=free_port(), headless=True, log_path=tmp_path / "t.log") as (server, client):
        settings = TemporalSettings(address=server.address, task_queue=f"tq-{uuid.uuid4()}", shutdown_seconds=1)
        queues = step_queues(settings.task_queue, dict.fromkeys(cb.ACTIONS, "memory"))
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(Worker(client, task_queue=settings.task_queue, workflows=[PlayWorkflow],
                                                   activities=acts.all()))
            for c in (client, await connect(settings)):  # two workers (one client each), as two processes would
                for w in connector_workers(c, settings, acts, {"memory": rate}):
                    await stack.enter_async_context(w)
            now = dt.datetime.now(dt.timezone.utc)
            handles = await asyncio.gather(*(
                start_play(client, PlayInput(plan=p, account_id=a, enrolled_at=now, queues=queues),
                           task_queue=settings.task_queue) for a in accounts))
            results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 60)
            history = await handles[0].fetch_history()
    assert all(r.outcome == "completed" for r in results)
    assert sorted(e.account_id for e in connector.effects) == sorted(accounts)  # once each
    span = max(connector.at) - min(connector.at)
    # 12 acts at 2/s need about 5.5 s after the first (a burst of at most a few is allowed);
    # unlimited, they take well under a second here.
    print(f"{plays} acts at {rate:g}/s over two workers took {span:.1f} s")
    assert span >= (plays - 3) / rate, span
    scheduled = [e.activity_task_scheduled_event_attributes for e in history.events
                 if e.HasField("activity_task_scheduled_event_attributes")]
    assert [s.task_queue.name for s in scheduled if s.activity_type.name == "act"] == [f"{settings.task_queue}.memory"]
