"""`playbook simulate`: the real plays on the time-skipping server, reproducible from a seed."""

from __future__ import annotations

import datetime as dt
import json
from functools import lru_cache
from pathlib import Path

import pytest

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent

from workflows.model import EventKind
from workflows.sim_activities import play_at_rest
from workflows.sim_customer import Customer, draw
from workflows.sim_model import ScriptedEvent, SimConfig, SimReport
from workflows.simulate import simulate, simulation_end
from workflows.sweep import Playbooks

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
# A fixed Monday far enough ahead of the test server's clock (the wall clock).
START = dt.datetime(2030, 3, 4, 6, tzinfo=dt.timezone.utc)


@lru_cache(maxsize=1)
def playbooks() -> Playbooks:
    return Playbooks.load([ROOT / "playbooks"])


async def run(seed: int = 3, days: int = 8, accounts: int = 80, **kw: object) -> SimReport:
    config = SimConfig.model_validate({"reply_rate": 0.5, **kw, "days": days, "seed": seed, "start": START})
    return await simulate(config, playbooks(), accounts=accounts)


def view(report: SimReport) -> str:
    return json.dumps(report.deterministic_view(), sort_keys=True, default=str)


async def test_same_seed_same_simulation_and_the_report_adds_up() -> None:
    first, second = await run(), await run()
    assert view(first) == view(second)
    assert first.totals["enrollments"] >= 5 and first.totals["emails"] >= 10 and first.totals["replies"] >= 1
    # The daily rows add up to the totals; days are the calendar days simulated.
    assert [d.date for d in first.daily] == [START.date() + dt.timedelta(days=i) for i in range(8)]
    assert sum(d.emails for d in first.daily) == first.totals["emails"]
    assert sum(d.tasks for d in first.daily) == first.totals.get("tasks", 0)
    assert sum(d.replies for d in first.daily) == first.totals["replies"]
    assert sum(sum(d.tasks_by_assignee.values()) for d in first.daily) == first.totals.get("tasks", 0)
    assert first.end == simulation_end(START, 8) == dt.datetime(2030, 3, 12, tzinfo=dt.timezone.utc)
    # Timelines: enrolled accounts chosen by the seed, each starting with its enrollment,
    # nothing outside the simulated window.
    assert len(first.timelines) == 5
    for entries in first.timelines.values():
        assert entries[0].kind == "enrolled"
        assert all(START <= e.at <= first.end for e in entries)
        assert [e.at for e in entries] == sorted(e.at for e in entries)
    # Weekday-only send windows: no email on the weekend (March 9-10, 2030).
    weekend = [d for d in first.daily if d.date.weekday() >= 5]
    assert weekend and all(d.emails == 0 for d in weekend)


async def test_another_seed_another_simulation() -> None:
    assert view(await run(seed=3, days=4)) != view(await run(seed=4, days=4))


async def test_a_scripted_reply_reaches_the_play_at_its_time() -> None:
    base = await run(days=3, reply_rate=0.0)
    account, entries = next(iter(base.timelines.items()))
    play = entries[0].play
    assert play is not None and base.totals.get("replies", 0) == 0
    scripted = await run(days=3, reply_rate=0.0, timeline_accounts=[account],
                         script=[ScriptedEvent(day=1, hour=15, account=account, event=EventKind.REPLIED)])
    timeline = scripted.timelines[account]
    [reply] = [e for e in timeline if e.kind == "customer"]
    assert reply.at == dt.datetime(2030, 3, 5, 15, tzinfo=dt.timezone.utc) and reply.play == play
    assert "replied (scripted)" in reply.text and "already ended" not in reply.text
    assert scripted.totals["replies"] == 1 and scripted.daily[1].replies == 1


def test_the_customer_draws_depend_on_the_email_not_on_the_order() -> None:
    assert draw(7, "k", "reply") == draw(7, "k", "reply") != draw(8, "k", "reply")
    assert 0 <= draw(1, "x") < 1

    class Email:
        def __init__(self, key: str) -> None:
            self.idempotency_key, self.account_id, self.play = key, "a1", "p"
            self.recipient, self.subject = "x@y.test", "Hi"
            self.created_at = START

    always = SimConfig(seed=1, reply_rate=1.0, unsubscribe_rate=0.0, win_rate=1.0)
    tick = lambda t: t  # noqa: E731
    got = Customer(always).react(Email("play:p:a1:h:e1:day1"), tick)  # type: ignore[arg-type]
    assert [p.kind for p in got] == ["replied", "closed_won"]
    assert dt.timedelta(hours=2) <= got[0].due - START <= dt.timedelta(hours=48)
    customer = Customer(always)
    customer.react(Email("play:p:a1:h:e1:day1"), tick)  # type: ignore[arg-type]
    # One reply per enrollment: the second email of the same enrollment gets none.
    assert customer.react(Email("play:p:a1:h:e1:day3"), tick) == []  # type: ignore[arg-type]



def test_a_signalled_play_counts_as_settled_only_once_it_waits_again() -> None:
    t = EventType

    def history(*types: EventType.ValueType) -> list[HistoryEvent]:
        events = [HistoryEvent(event_id=i + 1, event_type=k) for i, k in enumerate(types)]
        for e in events:  # an activity's end names the last activity scheduled before it
            if e.event_type == t.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                e.activity_task_completed_event_attributes.scheduled_event_id = max(
                    x.event_id for x in events[:e.event_id] if x.event_type == t.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
        return events

    waiting = (t.EVENT_TYPE_WORKFLOW_TASK_COMPLETED, t.EVENT_TYPE_TIMER_STARTED)
    signalled = (t.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED, t.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
                 t.EVENT_TYPE_WORKFLOW_TASK_STARTED)
    acting = (*waiting, *signalled, t.EVENT_TYPE_WORKFLOW_TASK_COMPLETED, t.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    assert play_at_rest(history(*waiting))
    assert not play_at_rest(history(*waiting, *signalled))  # not handled yet: the sweep must wait
    assert not play_at_rest(history(*acting))  # handled, but a step is under way
    assert play_at_rest(history(*acting, t.EVENT_TYPE_ACTIVITY_TASK_COMPLETED, *signalled[1:],
                            t.EVENT_TYPE_WORKFLOW_TASK_COMPLETED))


async def test_the_simulation_records_closed_deals_as_outcomes_and_replies_as_inbound_events(tmp_path: Path) -> None:
    import sqlalchemy as sa

    from engine.schema import Base
    from engine.store import Store

    url = f"sqlite:///{tmp_path / 'sim.db'}"
    config = SimConfig(reply_rate=0.6, win_rate=0.7, loss_rate=0.3, days=12, seed=3, start=START)
    report = await simulate(config, playbooks(), accounts=80, db=url, write_to_store=True, generate=80)
    closed = report.totals.get("won", 0) + report.totals.get("lost", 0)
    assert closed >= 1
    outcomes, inbound = Base.metadata.tables["outcomes"], Base.metadata.tables["inbound_events"]
    with Store.open(url) as store, store.connect() as conn:
        rows = conn.execute(sa.select(outcomes)).all()
        replies = conn.execute(sa.select(sa.func.count()).select_from(inbound)
                               .where(inbound.c.kind == "replied", inbound.c.signal_state == "done")).scalar_one()
    # A deal that closes after its play ended has no open deal or running enrollment to close.
    assert 1 <= len(rows) <= closed
    assert {r.source for r in rows} == {"simulation"} and {r.outcome for r in rows} <= {"won", "lost"}
    assert all(r.enrollment_id is not None and r.days_to_close is not None for r in rows)
    assert replies == report.totals["replies"]
