"""PipelineWorkflow on the time-skipping server over a real SQLite store and the store connector:
a missed SLA tells the owner, then the manager; a timely stage change tells nobody; a play's
deal starts its timer; the history replays from a committed file."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from temporalio.client import Client, WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from connectors import base as cb
from connectors.base import Connectors
from connectors.store import StoreConnector
from dsl import nodes as n
from dsl.evaluator import Account
from engine import pipeline as engine_pipeline
from engine.schema import Base
from engine.store import Store
from workflows.activities import PlayActivities, StaticAccounts
from workflows.client import DATA_CONVERTER, start_play
from workflows.model import PlayInput
from workflows.pipeline import PipelineWorkflow, record_stage_change, signal, workflow_id
from workflows.pipeline_activities import PipelineActivities, SlaCalendar
from workflows.pipeline_model import PipelineStatus, StageSignal
from workflows.play import PlayWorkflow
from workflows.search_attributes import ensure_registered
from wf_plans import closed_exit, plan, ref, step
from workflow_support import BIN

pytestmark = pytest.mark.anyio
T = Base.metadata.tables
HISTORY = Path(__file__).with_name("pipeline_histories") / "breach.json"  # PipelineWorkflow only
RECORD = os.environ.get("PLAYBOOK_RECORD_HISTORIES") == "1"


PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


@contextmanager
def backend(kind: str, folder: Path) -> Iterator[Store]:
    """A fresh store: a SQLite file, or a schema of its own in PostgreSQL's `test` database (dropped after)."""
    if kind == "sqlite":
        s = Store.open(f"sqlite:///{folder}/pipeline.db")
        yield s
        s.close()
        return
    schema = f"pb_pipeline_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:  # as tests/engine/store_backends.py: skipped, with the reason
        pytest.skip(f"PostgreSQL is not reachable at 127.0.0.1:5432 ({str(exc.orig).strip()[:120]})")
    s = Store.open(f"{PG_URL}?options=-csearch_path%3D{schema}")
    try:
        yield s
    finally:
        s.close()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with backend(request.param, tmp_path) as s:
        seed(s)
        yield s


def seed(s: Store) -> None:
    with s.begin() as conn:
        conn.execute(T["accounts"].insert().values(id="acme", name="Acme"))
        conn.execute(T["users"].insert(), [{"id": "carol", "name": "Carol", "manager": "maria"},
                                           {"id": "maria", "name": "Maria", "manager": None}])


@dataclass
class Env:
    env: WorkflowEnvironment
    client: Client
    task_queue: str
    store: Store


@asynccontextmanager
async def pipeline_env(store: Store, connector: Any = None) -> AsyncIterator[Env]:
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(BIN / "temporal-test-server"), data_converter=DATA_CONVERTER
    ) as env:
        await ensure_registered(env.client)
        connectors = Connectors.single(connector or StoreConnector(store))
        task_queue = f"tq-{uuid.uuid4()}"
        plays = PlayActivities(connectors, StaticAccounts({"acme": Account(fields={"ae": "carol"})}),
                               pipeline_queue=task_queue)
        sla = PipelineActivities(store, connectors, SlaCalendar())
        async with Worker(env.client, task_queue=task_queue, workflows=[PlayWorkflow, PipelineWorkflow],
                          activities=[*plays.all(), *sla.all()], workflow_failure_exception_types=[Exception]):
            yield Env(env, env.client, task_queue, store)


def open_deal(store: Store, at: dt.datetime, owner: str | None = "carol") -> None:
    with store.begin() as conn:
        conn.execute(T["opportunities"].insert().values(id="o1", account_id="acme", play="usage_limit",
                                                        title="Usage upgrade", stage="Trigger Fired", owner=owner,
                                                        created_at=at, updated_at=at))
        conn.execute(T["stage_history"].insert().values(opportunity_id="o1", stage="Trigger Fired", at=at,
                                                        actor="play:usage_limit"))


def tasks(store: Store) -> list[tuple[str, str]]:
    with store.connect() as conn:
        return [(r.assignee, r.title) for r in conn.execute(sa.select(T["tasks"]).order_by(T["tasks"].c.id))]


def breaches(store: Store) -> list[tuple[Any, ...]]:
    with store.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(T["sla_breaches"].c.stage, T["sla_breaches"].c.level,
                                                         T["sla_breaches"].c.owner, T["sla_breaches"].c.notified)
                                               .order_by(T["sla_breaches"].c.id))]


async def until(check: Any, seconds: float = 30) -> None:
    """Poll (real time) until check() is true: activities finish a moment after time skips."""
    async def loop() -> None:
        while not check():
            await asyncio.sleep(0.1)
    await asyncio.wait_for(loop(), seconds)


async def status(e: Env) -> PipelineStatus:
    return await e.client.get_workflow_handle(workflow_id("o1")).query(PipelineWorkflow.status)


async def test_a_missed_sla_tells_the_owner_then_after_the_grace_the_manager(store: Store) -> None:
    async with pipeline_env(store) as e:
        now = await e.env.get_current_time()
        open_deal(store, now)
        await signal(e.client, "o1", StageSignal(stage="Trigger Fired", at=now), task_queue=e.task_queue)
        await e.env.sleep(dt.timedelta(hours=47))
        assert tasks(store) == []  # 48 hours to create the CSQL
        await e.env.sleep(dt.timedelta(hours=2))
        await until(lambda: len(tasks(store)) == 1)
        [(who, title)] = tasks(store)
        assert who == "carol" and title.startswith("SLA missed: Usage upgrade (acme) is still at Trigger Fired")
        await e.env.sleep(dt.timedelta(days=4))  # one business day of grace, whatever the weekday
        await until(lambda: len(tasks(store)) == 2)
        assert tasks(store)[1][0] == "maria" and tasks(store)[1][1].startswith("Escalation:")
        st = await status(e)
        assert st.waiting == "a stage change" and len(st.told) == 2
        await e.env.sleep(dt.timedelta(days=30))
        history = await e.client.get_workflow_handle(workflow_id("o1")).fetch_history()
    assert len(tasks(store)) == 2  # each level told once
    assert breaches(store) == [("Trigger Fired", "owner", "carol", "carol"),
                               ("Trigger Fired", "manager", "carol", "maria")]
    if RECORD and store.engine.dialect.name == "sqlite":
        HISTORY.write_text(history.to_json())


async def test_a_stage_change_before_the_deadline_tells_nobody_and_restarts_the_clock(store: Store) -> None:
    async with pipeline_env(store) as e:
        now = await e.env.get_current_time()
        open_deal(store, now)
        await signal(e.client, "o1", StageSignal(stage="Trigger Fired", at=now), task_queue=e.task_queue)
        await e.env.sleep(dt.timedelta(hours=30))
        move = await record_stage_change(e.client, store, "o1", "CSQL Created", actor="carol", reason="validated",
                                         at=now + dt.timedelta(hours=30), task_queue=e.task_queue)
        assert move.changed and move.previous == "Trigger Fired"
        await e.env.sleep(dt.timedelta(hours=30))  # past the first 48 hours
        st = await status(e)
        assert st.state is not None and st.state.stage == "CSQL Created" and st.told == []
        assert st.state.due_at is not None and st.state.due_at - st.state.entered_at >= dt.timedelta(days=5)
        await record_stage_change(e.client, store, "o1", "Closed Won", actor="carol", reason="won:seats",
                                  at=now + dt.timedelta(hours=60), task_queue=e.task_queue)
        handle = e.client.get_workflow_handle(workflow_id("o1"))
        assert await asyncio.wait_for(handle.result(), 30) == "closed at Closed Won"
        await e.env.sleep(dt.timedelta(days=30))
    assert tasks(store) == [] and breaches(store) == []


async def test_a_deal_with_no_owner_records_the_breach_and_tells_nobody(store: Store) -> None:
    async with pipeline_env(store) as e:
        now = await e.env.get_current_time()
        open_deal(store, now, owner=None)
        await signal(e.client, "o1", StageSignal(stage="Trigger Fired", at=now), task_queue=e.task_queue)
        await e.env.sleep(dt.timedelta(hours=49))
        await until(lambda: len(breaches(store)) == 1)
    assert breaches(store) == [("Trigger Fired", "owner", None, None)] and tasks(store) == []


class RefusesCarol:
    """The store connector, except that a task for carol is refused for good (as a CRM refuses an unknown user)."""

    def __init__(self, store: Store) -> None:
        self.inner = StoreConnector(store)

    async def act(self, action: cb.Action) -> cb.Result:
        if isinstance(action, cb.NewTask) and action.assignee == "carol":
            raise cb.PermanentError("no user carol in the CRM")
        return await self.inner.act(action)


async def test_a_refused_notification_keeps_the_timer_going_to_the_manager(store: Store) -> None:
    async with pipeline_env(store, RefusesCarol(store)) as e:
        now = await e.env.get_current_time()
        open_deal(store, now)
        await signal(e.client, "o1", StageSignal(stage="Trigger Fired", at=now), task_queue=e.task_queue)
        await e.env.sleep(dt.timedelta(hours=49))
        await until(lambda: len(breaches(store)) == 1)
        await e.env.sleep(dt.timedelta(days=4))
        await until(lambda: len(tasks(store)) == 1)
        st = await status(e)
    assert [who for who, _ in tasks(store)] == ["maria"] and len(st.told) == 2
    assert [b[1] for b in breaches(store)] == ["owner", "manager"]


async def test_a_deal_a_play_opens_starts_its_sla_timer(store: Store) -> None:
    p = plan([step("deal", 0, n.OpportunityStep(title="Usage upgrade", owner=ref("account.ae")))])
    async with pipeline_env(store) as e:
        now = await e.env.get_current_time()
        handle = await start_play(e.client, PlayInput(plan=p, account_id="acme", enrolled_at=now),
                                  task_queue=e.task_queue)
        assert (await asyncio.wait_for(handle.result(), 30)).outcome == "completed"
        with store.connect() as conn:
            opp_id = conn.execute(sa.select(T["opportunities"].c.id)).scalar_one()
        timer = e.client.get_workflow_handle(workflow_id(opp_id))

        async def waiting() -> PipelineStatus:
            while True:
                st = await timer.query(PipelineWorkflow.status)
                if st.waiting == "owner deadline":
                    return st
                await asyncio.sleep(0.1)

        st = await asyncio.wait_for(waiting(), 30)
    assert st.state is not None and st.state.stage == "Trigger Fired"
    assert st.state.due_at == st.state.entered_at + dt.timedelta(hours=48)


async def test_closing_a_deal_by_hand_ends_the_play_that_opened_it(store: Store) -> None:
    p = plan([step("deal", 0, n.OpportunityStep(title="Usage upgrade", owner=ref("account.ae"))),
              step("follow_up", 10, n.TaskStep(assignee=ref("account.ae"), title="Follow up"))], exit=closed_exit())
    async with pipeline_env(store) as e:
        now = await e.env.get_current_time()
        handle = await start_play(e.client, PlayInput(plan=p, account_id="acme", enrolled_at=now),
                                  task_queue=e.task_queue)
        await until(lambda: bool(engine_pipeline.entries(store)))
        [deal] = engine_pipeline.entries(store)
        await record_stage_change(e.client, store, deal.opportunity_id, "Closed Lost", actor="carol",
                                  reason="lost:timing", at=now + dt.timedelta(hours=1), task_queue=e.task_queue)
        result = await asyncio.wait_for(handle.result(), 30)
    assert result.outcome == "exited" and "Closed Lost" in result.reason
    assert tasks(store) == []  # neither the follow-up nor an SLA reminder


async def test_the_breach_history_replays_with_todays_workflow() -> None:
    history = WorkflowHistory.from_json(workflow_id("o1"), json.loads(HISTORY.read_text()))
    await Replayer(workflows=[PipelineWorkflow], data_converter=DATA_CONVERTER).replay_workflow(history)


def test_refused_moves_through_record_stage_change_write_nothing(store: Store) -> None:
    open_deal(store, dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc))
    with pytest.raises(engine_pipeline.PipelineError, match="unknown stage 'Qualify'; did you mean 'Qualified'"):
        engine_pipeline.change_stage(store, "o1", "Qualify", at=dt.datetime(2026, 6, 2, tzinfo=dt.timezone.utc),
                                     actor="carol")
    assert engine_pipeline.entries(store)[0].stage == "Trigger Fired"


def test_the_worker_times_deals_only_when_the_store_keeps_them(store: Store) -> None:
    from connectors.memory import MemoryConnector
    from workflows.worker import pipeline_worker_parts

    kept = PlayActivities(Connectors.single(StoreConnector(store)), StaticAccounts({}))
    flows, acts = pipeline_worker_parts(store, kept, "q")
    assert flows == [PipelineWorkflow] and len(acts) == 2 and kept.pipeline_queue == "q"
    elsewhere = PlayActivities(Connectors.single(MemoryConnector()), StaticAccounts({}))
    pipeline_worker_parts(store, elsewhere, "q")
    assert elsewhere.pipeline_queue is None
