"""engine/pipeline.py on SQLite and PostgreSQL: stage changes with actor and reason, refusals that
write nothing, where a deal stands, breaches recorded once per key and counted by stage and owner."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from engine_support import Seed
from store_backends import BACKENDS, fresh_store
from engine import demo_data, pipeline
from engine.schema import Base
from engine.store import Store

T = Base.metadata.tables
AT = dt.datetime(2026, 6, 1, 9, 0, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module", params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with fresh_store(request.param, tmp_path_factory.mktemp("pipeline")) as s:
        yield s


@pytest.fixture()
def seed(store: Store) -> Seed:
    demo_data.clear(store)
    s = Seed(store)
    s.accounts({"id": "a1"})
    with store.begin() as conn:
        conn.execute(T["users"].insert(), [{"id": "carol", "manager": "maria"}, {"id": "maria", "manager": None}])
        conn.execute(T["opportunities"].insert().values(id="o1", account_id="a1", play="upsell", title="Upgrade",
                                                        stage="Trigger Fired", owner="carol", created_at=AT,
                                                        updated_at=AT))
        conn.execute(T["stage_history"].insert().values(opportunity_id="o1", stage="Trigger Fired", at=AT,
                                                        actor="play:upsell"))
    return s


def history(store: Store) -> list[tuple[str | None, str, str | None, str | None]]:
    h = T["stage_history"]
    with store.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(h.c.from_stage, h.c.stage, h.c.actor, h.c.reason)
                                               .order_by(h.c.id))]


def test_a_stage_change_records_time_actor_and_reason_and_closing_sets_closed_at(store: Store, seed: Seed) -> None:
    pipeline.change_stage(store, "o1", "CSQL Created", at=AT + dt.timedelta(hours=5), actor="carol",
                          reason="validated")
    won = pipeline.change_stage(store, "o1", "Closed Won", at=AT + dt.timedelta(days=9), actor="sam",
                                reason="won:seats")
    assert won.changed and won.previous == "CSQL Created"
    assert history(store)[1:] == [("Trigger Fired", "CSQL Created", "carol", "validated"),
                                  ("CSQL Created", "Closed Won", "sam", "won:seats")]
    [e] = pipeline.entries(store, include_closed=True)
    assert (e.stage, e.closed, e.entered_at) == ("Closed Won", True, AT + dt.timedelta(days=9))
    assert pipeline.entries(store) == []
    with store.connect() as conn:
        assert conn.execute(sa.select(T["opportunities"].c.closed_at)).scalar_one() == AT + dt.timedelta(days=9)


def test_moving_to_the_stage_a_deal_is_at_writes_nothing(store: Store, seed: Seed) -> None:
    move = pipeline.change_stage(store, "o1", "Trigger Fired", at=AT, actor="crm")
    assert not move.changed and len(history(store)) == 1


@pytest.mark.parametrize("stage, reason, message", [
    ("Discovery", None, "unknown stage 'Discovery'"),
    ("Qualified", "not a code!", "not a code"),
])
def test_a_refused_change_writes_nothing(store: Store, seed: Seed, stage: str, reason: str | None,
                                         message: str) -> None:
    with pytest.raises(pipeline.PipelineError, match=message):
        pipeline.change_stage(store, "o1", stage, at=AT, actor="carol", reason=reason)
    assert len(history(store)) == 1


def test_a_closed_deal_cannot_move_and_an_unknown_deal_is_named(store: Store, seed: Seed) -> None:
    pipeline.change_stage(store, "o1", "Closed Lost", at=AT, actor="carol", reason="lost:timing")
    with pytest.raises(pipeline.PipelineError, match="closed"):
        pipeline.change_stage(store, "o1", "Negotiation", at=AT, actor="carol")
    with pytest.raises(pipeline.UnknownOpportunity, match="no opportunity 'o9'"):
        pipeline.change_stage(store, "o9", "Negotiation", at=AT, actor="carol")
    assert len(history(store)) == 2


def test_where_a_deal_stands_is_its_latest_entry_into_its_stage(store: Store, seed: Seed) -> None:
    pipeline.change_stage(store, "o1", "Negotiation", at=AT + dt.timedelta(days=1), actor="carol")
    pipeline.change_stage(store, "o1", "Proposal Sent", at=AT + dt.timedelta(days=2), actor="carol")
    pipeline.change_stage(store, "o1", "Negotiation", at=AT + dt.timedelta(days=3), actor="carol")
    with store.connect() as conn:
        e = pipeline.entry(conn, "o1")
        assert pipeline.entry(conn, "nope") is None
    assert e is not None and (e.stage, e.entered_at, e.owner, e.closed) == ("Negotiation", AT + dt.timedelta(days=3),
                                                                            "carol", False)
    assert pipeline.entries(store)[0].entered_at == AT + dt.timedelta(days=3)


def test_a_breach_is_recorded_once_per_key_and_counted_by_stage_and_owner(store: Store, seed: Seed) -> None:
    with store.begin() as conn:
        e = pipeline.entry(conn, "o1")
        assert e is not None and pipeline.manager_of(conn, "carol") == "maria"
        due = AT + dt.timedelta(hours=48)
        keys = [pipeline.record_breach(conn, e, level=level, due_at=due, at=due, notified=who)
                for level, who in (("owner", "carol"), ("owner", "carol"), ("manager", "maria"))]
    assert keys[0] == keys[1] != keys[2]
    assert keys[0] == "sla:o1:Trigger Fired:20260601T090000.000000Z:owner"
    assert pipeline.breach_counts(store) == {("Trigger Fired", "carol"): 1}
