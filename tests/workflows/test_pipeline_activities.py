"""SLA deadlines of the pipeline (workflows/pipeline_activities.py `deadlines`): hours are elapsed
time, business days follow the pipeline calendar's zone and holidays, the manager's grace comes after."""

from __future__ import annotations

import datetime as dt

import pytest

from dsl.calendars import DaysOff
from workflows.pipeline_activities import SlaCalendar, deadlines

UTC = dt.timezone.utc


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def test_the_csql_is_due_48_elapsed_hours_after_the_trigger_even_over_a_weekend():
    due, escalate = deadlines("Trigger Fired", utc(2026, 6, 5, 10), SlaCalendar())  # a Friday
    assert due == utc(2026, 6, 7, 10)  # Sunday: hours are hours
    assert escalate == utc(2026, 6, 8, 10)  # one business day later: Monday


def test_qualification_is_due_five_business_days_later_at_the_same_local_time():
    cal = SlaCalendar(timezone="America/New_York")
    due, _ = deadlines("CSQL Created", utc(2026, 6, 5, 19), cal)  # Friday 15:00 EDT
    assert due == utc(2026, 6, 12, 19)  # the next Friday 15:00 EDT


def test_a_public_holiday_of_the_pipeline_calendar_is_no_business_day():
    entered = utc(2026, 6, 29, 9)  # Monday; Friday July 3 is the observed Independence Day
    plain, _ = deadlines("Qualified", entered, SlaCalendar())
    us, _ = deadlines("Qualified", entered, SlaCalendar(holidays=DaysOff((), ["US"])))
    assert (plain, us) == (utc(2026, 7, 13, 9), utc(2026, 7, 14, 9))


def test_negotiation_keeps_local_time_across_the_end_of_daylight_saving():
    due, escalate = deadlines("Negotiation", utc(2026, 10, 23, 14), SlaCalendar(timezone="America/New_York",
                                                                               grace_days=2))
    assert due == utc(2026, 11, 13, 15)  # Friday 10:00 EST, 15 business days after Friday 10:00 EDT
    assert escalate == utc(2026, 11, 17, 15)  # two business days later: Tuesday


def test_no_grace_tells_the_manager_with_the_owner():
    due, escalate = deadlines("Trigger Fired", utc(2026, 6, 1, 9), SlaCalendar(grace_days=0))
    assert due == escalate


@pytest.mark.parametrize("stage", ["Proposal Sent", "Closed Won", "Closed Lost", "New"])
def test_stages_without_an_sla_have_no_deadline(stage):
    assert deadlines(stage, utc(2026, 6, 1), SlaCalendar()) is None


@pytest.mark.anyio
async def test_a_retried_breach_tells_the_owner_once(tmp_path):
    import sqlalchemy as sa
    from temporalio.testing import ActivityEnvironment

    from connectors.base import Connectors
    from connectors.store import StoreConnector
    from engine.schema import Base
    from engine.store import Store
    from workflows.pipeline_activities import PipelineActivities
    from workflows.pipeline_model import BreachRequest

    t = Base.metadata.tables
    store = Store.open(f"sqlite:///{tmp_path}/s.db")
    entered = utc(2026, 6, 1, 9)
    with store.begin() as conn:
        conn.execute(t["accounts"].insert().values(id="acme"))
        conn.execute(t["opportunities"].insert().values(id="o1", account_id="acme", stage="Trigger Fired",
                                                        owner="carol", created_at=entered, updated_at=entered))
        conn.execute(t["stage_history"].insert().values(opportunity_id="o1", stage="Trigger Fired", at=entered))
    acts = PipelineActivities(store, Connectors.single(StoreConnector(store)), SlaCalendar())
    req = BreachRequest(opportunity_id="o1", stage="Trigger Fired", entered_at=entered,
                        due_at=entered + dt.timedelta(hours=48), level="owner", at=entered + dt.timedelta(hours=48))
    first = await ActivityEnvironment().run(acts.breach, req)
    again = await ActivityEnvironment().run(acts.breach, req)
    moved = await ActivityEnvironment().run(acts.breach, req.model_copy(update={"stage": "Qualified"}))
    with store.connect() as conn:
        n_tasks = conn.execute(sa.select(sa.func.count()).select_from(t["tasks"])).scalar_one()
        n_breaches = conn.execute(sa.select(sa.func.count()).select_from(t["sla_breaches"])).scalar_one()
    store.close()
    assert (first.outcome, first.notified, again.key) == ("notified", "carol", first.key)
    assert moved.outcome == "moved" and (n_tasks, n_breaches) == (1, 1)
