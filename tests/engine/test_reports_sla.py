"""engine/reports/sla.py on SQLite and PostgreSQL: SLA breaches by stage and owner."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from store_backends import BACKENDS, fresh_store
from engine import pipeline
from engine.reports.sla import sla_report
from engine.schema import Base
from engine.store import Store

T = Base.metadata.tables
AT = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module", params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with fresh_store(request.param, tmp_path_factory.mktemp("sla")) as s:
        with s.begin() as conn:
            conn.execute(T["accounts"].insert(), [{"id": "a1"}, {"id": "a2"}, {"id": "a3"}])
            conn.execute(T["opportunities"].insert(), [
                {"id": f"o{i}", "account_id": f"a{i}", "play": "p", "stage": "Trigger Fired", "owner": owner,
                 "created_at": AT, "updated_at": AT} for i, owner in ((1, "ann"), (2, "ann"), (3, "bob"))])
            conn.execute(T["stage_history"].insert(), [
                {"opportunity_id": f"o{i}", "from_stage": None, "stage": "Trigger Fired", "at": AT, "actor": "play:p"}
                for i in (1, 2, 3)])
        for opp in ("o1", "o3"):
            pipeline.change_stage(s, opp, "CSQL Created", at=AT + dt.timedelta(hours=50), actor="csm")
        with s.begin() as conn:
            for opp, levels in (("o1", ("owner",)), ("o2", ("owner", "manager")), ("o3", ())):
                e = pipeline.entry(conn, opp)
                assert e is not None
                if opp == "o1":  # breached while in Trigger Fired, before moving on
                    e = pipeline.Entry(e.opportunity_id, e.account_id, e.play, e.title, "Trigger Fired", AT, "ann",
                                       False)
                for level in levels:
                    pipeline.record_breach(conn, e, level=level, due_at=AT + dt.timedelta(hours=48),
                                           at=AT + dt.timedelta(hours=48), notified="ann")
        yield s


def test_breaches_and_escalations_by_stage_and_owner(store: Store) -> None:
    with store.connect() as conn:
        r = sla_report(conn)
    assert [(x.stage, x.owner, x.entered, x.breaches, x.escalations) for x in r.rows] == [
        ("Trigger Fired", "ann", 2, 2, 1), ("Trigger Fired", "bob", 1, 0, 0),
        ("CSQL Created", "ann", 1, 0, 0), ("CSQL Created", "bob", 1, 0, 0)]
    doc = r.to_json()
    assert (doc["breaches"], doc["escalations"]) == (2, 1)
    assert doc["rows"][0]["breach_rate_percent"] == "100%"
    assert doc["rows"][0]["sla"] == "CSQL Created within 48 hours"


def test_a_period_counts_the_stays_that_began_in_it(store: Store) -> None:
    with store.connect() as conn:
        r = sla_report(conn, since=dt.date(2026, 3, 3))
    assert [(x.stage, x.owner, x.entered, x.breaches) for x in r.rows] == [
        ("CSQL Created", "ann", 1, 0), ("CSQL Created", "bob", 1, 0)]
