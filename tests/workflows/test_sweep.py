"""SweepWorkflow on the time-skipping server over a demo-data store; the Schedule on the dev server.

Time skipping is turned off while a sweep runs: awaiting the sweep's result
would otherwise let the server skip ahead through every enrolled play (and,
once they are done, ~10 years), so a second sweep would see another day.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest
import sqlalchemy as sa
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from connectors.base import Connectors
from connectors.store import StoreConnector
from engine import demo_data, enroll
from engine.schema import Base
from engine.settings import EngineSettings
from engine.store import Store
from workflows.accounts import StoreAccounts
from workflows.activities import PlayActivities
from workflows.client import DATA_CONVERTER, start_play
from workflows.play import PlayWorkflow
from workflows import sweep
from workflows.search_attributes import ensure_registered
from workflows.sweep import (
    SWEEP_SCHEDULE_ID,
    Playbooks,
    SweepActivities,
    SweepInput,
    SweepSummary,
    SweepWorkflow,
    ensure_schedule,
    play_inputs,
)
from workflow_support import BIN

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
ENR = Base.metadata.tables["enrollments"]


@lru_cache(maxsize=1)
def playbooks() -> Playbooks:
    return Playbooks.load([ROOT / "playbooks"])


@dataclass
class SweepHarness:
    env: WorkflowEnvironment
    client: Client
    store: Store
    task_queue: str
    today: dt.date


def demo_store(path: Path, accounts: int, today: dt.date) -> Store:
    pb = playbooks()
    store = Store.open(f"sqlite:///{path}", catalog=pb.catalog)
    demo_data.generate(pb.catalog, accounts, seed=11, today=today, store=store)
    return store


@asynccontextmanager
async def sweep_harness(tmp_path: Path, accounts: int = 120) -> AsyncIterator[SweepHarness]:
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(BIN / "temporal-test-server"), data_converter=DATA_CONVERTER
    ) as env:
        await ensure_registered(env.client)  # start_play sets them; the test server has none
        today = (await env.get_current_time()).date()
        store = demo_store(tmp_path / "sweep.db", accounts, today)
        pb = playbooks()
        tq = f"tq-{uuid.uuid4()}"
        acts = PlayActivities(Connectors.single(StoreConnector(store)), StoreAccounts(store, pb.catalog), pb.catalog)
        sweeps = SweepActivities(env.client, store, pb, task_queue=tq)
        async with Worker(env.client, task_queue=tq, workflows=[PlayWorkflow, SweepWorkflow],
                          activities=[*acts.all(), *sweeps.all()], workflow_failure_exception_types=[Exception]):
            try:
                yield SweepHarness(env, env.client, store, tq, today)
            finally:
                store.close()


async def run_sweep(h: SweepHarness, **kw: object) -> SweepSummary:
    with h.env.auto_time_skipping_disabled():
        return await asyncio.wait_for(h.client.execute_workflow(
            SweepWorkflow.run, SweepInput(today=h.today, batch_size=25, **kw),  # type: ignore[arg-type]
            id=f"sweep-{uuid.uuid4()}", task_queue=h.task_queue), 60)


def rows(store: Store) -> list[sa.Row]:
    with store.connect() as conn:
        return list(conn.execute(sa.select(ENR).order_by(ENR.c.id)))


async def test_sweep_enrolls_the_right_accounts_once(tmp_path: Path) -> None:
    async with sweep_harness(tmp_path) as h:
        pb = playbooks()
        expected = {(d.play, d.account_id)
                    for d in enroll.decision_set(h.store, pb.catalog, pb.plans, h.today) if d.enroll}
        assert len(expected) >= 10  # the demo data makes several plays fire

        dry = await run_sweep(h, dry_run=True)
        assert dry.decided.enrolled == len(expected) and rows(h.store) == []  # a dry run records nothing

        first = await run_sweep(h)
        assert first.errors == 0, first.error
        assert first.decided.enrolled == first.started == len(expected)
        assert first.batches == len(expected) // 25 + 1 and first.errors == first.failed == 0
        enrolled = rows(h.store)
        assert {(r.play, r.account_id) for r in enrolled} == expected
        assert all(r.status == "running" and r.run_id for r in enrolled)
        assert all(r.workflow_id == f"play:{r.play}:{r.account_id}" for r in enrolled)
        assert sum(first.decided.by_play.values()) == len(expected)
        # Every enrollment is a real running workflow, with the store's run id.
        for r in enrolled[:10]:
            desc = await h.client.get_workflow_handle(r.workflow_id).describe()
            assert desc.status is WorkflowExecutionStatus.RUNNING and desc.run_id == r.run_id

        # The next sweep is incremental: nothing changed, so it evaluates only
        # the accounts the first one skipped for a lapsing reason (engine/changes.py).
        second = await run_sweep(h)
        assert second.decided.enrolled == second.started == 0
        assert second.reconciled.checked == len(expected) and second.reconciled.ended == {}
        assert not second.decided.full and second.decided.scope is not None
        assert second.decided.accounts <= second.decided.scope < len(expected)
        # A full one sees every enrolled account again, and enrolls none twice.
        third = await run_sweep(h, full=True)
        assert third.decided.full and third.decided.enrolled == third.started == 0
        assert third.decided.reasons.get("already_enrolled", 0) >= len(expected)
        assert len(rows(h.store)) == len(expected)


async def test_sweep_joins_a_run_temporal_has_and_restarts_nothing(tmp_path: Path) -> None:
    async with sweep_harness(tmp_path, accounts=80) as h:
        pb = playbooks()
        chosen = sorted((d.play, d.account_id)
                        for d in enroll.decision_set(h.store, pb.catalog, pb.plans, h.today) if d.enroll)
        play, account = chosen[0]
        # Running in Temporal, unknown to the store (a lost store row, a manual start).
        now = await h.env.get_current_time()
        fake = type("Row", (), {"id": 999_999, "play": play, "account_id": account})()
        [(_, inp, why)] = play_inputs(h.store, pb, [fake], now)
        assert why is None and inp is not None
        handle = await start_play(h.client, inp, task_queue=h.task_queue)

        summary = await run_sweep(h)
        assert summary.joined == 1 and summary.started == len(chosen) - 1
        [row] = [r for r in rows(h.store) if (r.play, r.account_id) == (play, account)]
        assert row.status == "running" and row.run_id == handle.result_run_id
        assert "joined that run" in row.reason["note"]


async def test_a_closed_run_is_reconciled_and_its_cooldown_holds(tmp_path: Path) -> None:
    async with sweep_harness(tmp_path, accounts=80) as h:
        await run_sweep(h)
        first = rows(h.store)[0]
        await h.client.get_workflow_handle(first.workflow_id).terminate("test")
        summary = await run_sweep(h)
        assert summary.reconciled.ended == {"terminated": 1}
        assert summary.started == 0  # the account is in cooldown (or its play runs once): not re-enrolled
        row = [r for r in rows(h.store) if r.id == first.id][0]
        assert row.status == "terminated" and row.ended_at is not None
        assert summary.decided.reasons.get("cooldown", 0) + summary.decided.reasons.get("no_reentry", 0) >= 1


async def test_anchor_and_time_zone_come_from_the_store(tmp_path: Path) -> None:
    pb = playbooks()
    store = demo_store(tmp_path / "tz.db", 60, dt.date(2026, 6, 1))
    try:
        accounts = store.table("account", pb.catalog)
        contacts = Base.metadata.tables["contacts"]
        with store.connect() as conn:
            acc = conn.execute(sa.select(accounts.c.id, accounts.c.admin, accounts.c.renewal_date)).first()
            zone = conn.execute(sa.select(contacts.c.timezone).where(contacts.c.id == acc.admin)).scalar()
        now = dt.datetime(2026, 6, 1, 6, tzinfo=dt.timezone.utc)
        row = type("Row", (), {"id": 7, "play": "renewal_expansion", "account_id": acc.id})()
        [(_, inp, why)] = play_inputs(store, pb, [row], now)
        assert why is None and inp is not None
        assert inp.anchor == acc.renewal_date and inp.timezone == zone and zone
        assert inp.enrollment_id == "e7" and inp.enrolled_at == now
        with store.begin() as conn:
            conn.execute(accounts.update().where(accounts.c.id == acc.id).values(renewal_date=None))
        [(_, inp, why)] = play_inputs(store, pb, [row], now)
        assert inp is None and "renewal_date, which is empty" in (why or "")
    finally:
        store.close()


async def test_ensure_schedule_on_the_dev_server(tmp_path: Path) -> None:
    temporal = shutil.which("temporal") or str(BIN / "temporal")
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal, data_converter=DATA_CONVERTER, ui=False,
    ) as env:
        await ensure_registered(env.client)
        handle = await ensure_schedule(env.client, dt.timedelta(hours=1), task_queue="tq-sched")
        desc = await handle.describe()
        assert handle.id == SWEEP_SCHEDULE_ID
        assert desc.schedule.policy.overlap.name == "SKIP"
        assert desc.schedule.policy.catchup_window == dt.timedelta(hours=1)
        assert desc.schedule.spec.intervals[0].every == dt.timedelta(hours=1)
        assert desc.schedule.action.workflow == "SweepWorkflow"  # type: ignore[union-attr]
        # Idempotent: a second call updates the same schedule.
        again = await ensure_schedule(env.client, dt.timedelta(minutes=15), task_queue="tq-sched")
        desc = await again.describe()
        assert desc.schedule.spec.intervals[0].every == dt.timedelta(minutes=15)
        assert desc.schedule.policy.catchup_window == dt.timedelta(minutes=15)

        # Triggered, it runs a real sweep through a worker.
        pb = playbooks()
        today = (await env.get_current_time()).date()
        store = demo_store(tmp_path / "sched.db", 60, today)
        try:
            acts = PlayActivities(Connectors.single(StoreConnector(store)), StoreAccounts(store, pb.catalog),
                                  pb.catalog)
            sweeps = SweepActivities(env.client, store, pb, task_queue="tq-sched")
            expected = sum(1 for d in enroll.decision_set(store, pb.catalog, pb.plans, today) if d.enroll)
            async with Worker(env.client, task_queue="tq-sched", workflows=[PlayWorkflow, SweepWorkflow],
                              activities=[*acts.all(), *sweeps.all()]):
                await again.trigger()
                for _ in range(100):
                    done = [r for r in rows(store) if r.status == "running"]
                    if len(done) == expected:
                        break
                    await asyncio.sleep(0.2)
                assert len(rows(store)) == expected and all(r.status == "running" for r in rows(store))
                await again.delete()
        finally:
            store.close()


def test_decide_counts_skipped_candidates_and_reasons_apart(tmp_path: Path) -> None:
    today = dt.date(2026, 6, 1)
    store = demo_store(tmp_path / "count.db", 120, today)
    now = dt.datetime(2026, 6, 1, 6, tzinfo=dt.timezone.utc)
    try:
        dry = sweep.decide(store, playbooks(), now, today, dry_run=True, settings=EngineSettings())
        real = sweep.decide(store, playbooks(), now, today, settings=EngineSettings())
        # Again: the accounts just enrolled are now in a play, so some candidates
        # are skipped for more than one reason (in the play, and gate or in another).
        again = sweep.decide(store, playbooks(), now, today, settings=EngineSettings(), full=True)
    finally:
        store.close()
    scope = {"full", "scope", "why_full"}
    assert dry.model_dump(exclude=scope) == real.model_dump(exclude=scope)
    assert real.full and real.why_full == "no sweep recorded before"
    assert real.skipped == real.decisions - real.enrolled > 0
    assert 0 < real.accounts < real.decisions
    assert (again.decisions, again.accounts, again.enrolled, again.skipped) == (real.decisions, real.accounts, 0,
                                                                                real.decisions)
    assert sum(again.reasons.values()) > again.skipped


def test_a_decide_result_recorded_before_reasons_still_decodes() -> None:
    old = {"decisions": 10, "enrolled": 4, "skipped": {"gate_failed": 5, "cooldown": 3}, "by_play": {"p": 4}}
    got = sweep.DecideResult.model_validate(old)
    assert (got.skipped, got.reasons, got.by_play) == (6, {"gate_failed": 5, "cooldown": 3}, {"p": 4})


def _cli(*args: str) -> tuple[int, str, str]:
    import contextlib
    import io

    from cli.main import run

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(list(args))
    return code, out.getvalue(), err.getvalue()


def test_sweep_command_dry_run_and_no_server(tmp_path: Path) -> None:
    import json

    today = dt.date(2026, 6, 1)
    store = demo_store(tmp_path / "cli.db", 60, today)
    pb = playbooks()
    expected = [d for d in enroll.decision_set(store, pb.catalog, pb.plans, today)]
    store.close()
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    code, out, _ = _cli("sweep", str(ROOT / "playbooks"), "--db", url, "--dry-run", "--today", "2026-06-01",
                        "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert len(doc["decisions"]) == len(expected)
    assert sum(d["decision"] == "enroll" for d in doc["decisions"]) == sum(d.enroll for d in expected)
    code, out, _ = _cli("sweep", str(ROOT / "playbooks"), "--db", url, "--dry-run", "--today", "2026-06-01")
    assert code == 0 and "would be enrolled" in out and "nothing recorded" in out
    enrolled = sum(d.enroll for d in expected)
    accounts = len({d.account_id for d in expected})
    assert (f"{len(expected)} candidates on {accounts} accounts, {enrolled} would be enrolled, "
            f"{len(expected) - enrolled} skipped;") in out
    assert f"  why {len(expected) - enrolled} skipped (one can have several reasons): gate_failed " in out
    with Store.open(url) as s2:
        assert s2.count("enrollments") == 0 and s2.count("enrollment_decisions") == 0
    # No server: exit 4 with what to do, not a traceback.
    code, _, err = _cli("sweep", str(ROOT / "playbooks"), "--db", url, "--address", "127.0.0.1:1")
    assert code == 4 and "cannot reach Temporal" in err and "playbook dev" in err


async def test_a_scheduled_sweep_decides_with_the_worker_settings_on_the_team_date(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SweepInput without a day (as the Schedule starts it): the decide activity reads the
    settings, so the cap and the team's date are those `playbook plan` uses."""
    from zoneinfo import ZoneInfo

    from engine.plan import enrollment_plan
    from engine.settings import load_settings

    monkeypatch.setenv("PLAYBOOK_EMAIL_CAP", "0")
    async with sweep_harness(tmp_path) as h:
        now = await h.env.get_current_time()
        zone = "Pacific/Kiritimati" if now.hour >= 10 else "Pacific/Pago_Pago"  # a date other than UTC's now
        monkeypatch.setenv("PLAYBOOK_TIME_ZONE", zone)
        team_day = now.astimezone(ZoneInfo(zone)).date()
        assert team_day != now.date()
        with h.env.auto_time_skipping_disabled():
            s = await asyncio.wait_for(h.client.execute_workflow(
                SweepWorkflow.run, SweepInput(dry_run=True), id=f"sweep-{uuid.uuid4()}", task_queue=h.task_queue), 60)
        assert s.today == team_day
        pb = playbooks()
        with h.store.connect() as conn:
            capped = enrollment_plan(conn, pb.catalog, pb.plans, team_day, load_settings().enrollment())
            uncapped = enrollment_plan(conn, pb.catalog, pb.plans, team_day, enroll.Settings())
        assert s.decided.enrolled == sum(p.enroll.accounts for p in capped.plays)
        assert s.decided.enrolled < sum(p.enroll.accounts for p in uncapped.plays)


async def test_while_a_play_is_paused_the_sweep_starts_it_paused_with_each_kinds_queue(tmp_path: Path) -> None:
    from engine import pauses
    from workflows.model import PlayInput
    from workflows.play import PlayWorkflow as Play

    async with sweep_harness(tmp_path, accounts=80) as h:
        pb = playbooks()
        pauses.pause(h.store, pauses.ALL, "ana", "pricing review")
        queues = {kind: f"{h.task_queue}.memory" for kind in ("email", "task")}
        with h.env.auto_time_skipping_disabled():
            summary = await sweep.sweep_once(h.client, h.store, pb, await h.env.get_current_time(), today=h.today,
                                             task_queue=h.task_queue, queues=queues)
            assert summary.started > 0 and summary.errors == 0, summary.error
            handle = h.client.get_workflow_handle_for(Play.run, rows(h.store)[0].workflow_id)
            status = await handle.query(Play.status)
            history = await handle.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    inp = DATA_CONVERTER.payload_converter.from_payloads(started.input.payloads, [PlayInput])[0]
    assert status.paused is not None and status.paused.reason == "pricing review" and status.paused.scope == "*"
    assert inp.queues == queues


async def test_a_play_started_unpaused_as_its_pause_was_recorded_gets_the_pause_signal(tmp_path: Path) -> None:
    from engine import pauses
    from workflows.model import PlayInput
    from workflows.play import PlayWorkflow as Play

    async with sweep_harness(tmp_path, accounts=80) as h:
        pb = playbooks()
        with h.env.auto_time_skipping_disabled():
            summary = await sweep.sweep_once(h.client, h.store, pb, await h.env.get_current_time(), today=h.today,
                                             task_queue=h.task_queue)
            assert summary.started > 0
            row = rows(h.store)[0]
            before = pauses.in_force(h.store)  # what the batch read: nothing
            pauses.pause(h.store, row.play, "ana", "too late for the listing")
            started = [PlayInput(plan=pb.plans[r.play], account_id=r.account_id, enrolled_at=r.started_at)
                       for r in rows(h.store)]
            await sweep._pause_late(h.client, h.store, started, before)
            paused = {}
            for r in rows(h.store):
                status = await h.client.get_workflow_handle_for(Play.run, r.workflow_id).query(Play.status)
                paused[(r.play, r.account_id)] = status.paused is not None
    assert paused and all(held == (play == row.play) for (play, _), held in paused.items())
