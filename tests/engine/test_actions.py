"""engine/actions.py and the demo's store functions, on SQLite and PostgreSQL: what the
simulated CRM writes (stage moves, unsubscribes) and what reports read back."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from engine_support import Seed
from store_backends import BACKENDS, fresh_store
from dsl.pipeline import PipelineError
from engine import actions, demo_data
from engine.schema import Base
from engine.store import Store

T = Base.metadata.tables
AT = dt.datetime(2026, 6, 1, 9, 0, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module", params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with fresh_store(request.param, tmp_path_factory.mktemp("actions")) as s:
        yield s


@pytest.fixture()
def seed(store: Store) -> Seed:
    demo_data.clear(store)  # everything, pipeline and contacts included
    s = Seed(store)
    s.accounts({"id": "a1"}, {"id": "a2"})
    return s


def opportunity(store: Store, opp_id: str, account: str, play: str, stage: str = "CSQL Created") -> None:
    with store.begin() as conn:
        conn.execute(T["opportunities"].insert().values(id=opp_id, account_id=account, play=play, stage=stage,
                                                        created_at=AT, updated_at=AT))


def test_closing_deals_moves_the_open_ones_of_the_play_with_history(store: Store, seed: Seed) -> None:
    opportunity(store, "o1", "a1", "upsell")
    opportunity(store, "o2", "a1", "growth")
    opportunity(store, "o3", "a2", "upsell")
    later = AT + dt.timedelta(days=2)
    assert actions.close_open_deals(store, "a1", "upsell", "Closed Won", later, "crm") == 1
    assert actions.close_open_deals(store, "a1", "upsell", "Closed Lost", later, "crm") == 0  # closed already
    assert actions.close_open_deals(store, "a1", None, "Closed Lost", later, "crm") == 1  # any play: o2
    with store.connect() as conn:
        opps = {r.id: r for r in conn.execute(sa.select(T["opportunities"]))}
    assert (opps["o1"].stage, opps["o1"].closed_at) == ("Closed Won", later)
    assert (opps["o2"].stage, opps["o3"].stage, opps["o3"].closed_at) == ("Closed Lost", "CSQL Created", None)
    moves = sorted((m.account_id, m.from_stage, m.stage, m.actor) for m in actions.stage_moves(store, later
                                                                                                 + dt.timedelta(1)))
    assert moves == [("a1", "CSQL Created", "Closed Lost", "crm"), ("a1", "CSQL Created", "Closed Won", "crm")]
    assert actions.stage_moves(store, later) == []  # only moves before the instant


def test_a_stage_move_off_a_closed_stage_is_refused_and_writes_nothing(store: Store, seed: Seed) -> None:
    opportunity(store, "o1", "a1", "upsell")
    with store.begin() as conn:
        actions.move_stage(conn, "o1", "CSQL Created", "Closed Lost", AT, "crm", "lost:price")
    with pytest.raises(PipelineError, match="closed"), store.begin() as conn:
        actions.move_stage(conn, "o1", "Closed Lost", "Negotiation", AT + dt.timedelta(hours=1), "play:upsell")
    with store.connect() as conn:
        row = conn.execute(sa.select(T["opportunities"])).one()
        history = conn.execute(sa.select(T["stage_history"].c.stage, T["stage_history"].c.reason)).all()
    assert (row.stage, row.closed_at) == ("Closed Lost", AT)
    assert [tuple(h) for h in history] == [("Closed Lost", "lost:price")]


def test_an_unsubscribe_keeps_the_first_date(store: Store, seed: Seed) -> None:
    with store.begin() as conn:
        conn.execute(T["contacts"].insert().values(id="c1", account_id="a1", email="x@example.com"))
    actions.unsubscribe(store, "x@example.com", AT)
    actions.unsubscribe(store, "x@example.com", AT + dt.timedelta(days=1))
    with store.connect() as conn:
        assert conn.execute(sa.select(T["contacts"].c.unsubscribed_at)).scalar_one() == AT


def test_outbox_totals_and_the_reads_of_reports(store: Store, seed: Seed) -> None:
    seed.email("b@example.com", AT.date(), status="pending", account_id="a2")
    seed.email("a@example.com", AT.date(), status="pending", account_id="a1")
    seed.email("c@example.com", AT.date(), status="cancelled", account_id="a1")
    with store.begin() as conn:
        conn.execute(T["outbox"].insert().values(idempotency_key="n1", channel="notify", recipient="#cs", body="x",
                                                 created_at=AT))
        for i, who in enumerate(["u1", "u1", None]):
            conn.execute(T["tasks"].insert().values(idempotency_key=f"t{i}", account_id="a1", assignee=who,
                                                    title="Call", created_at=AT))
    got = actions.outbox_totals(store)
    assert (got.by_channel, got.emails_cancelled) == ({"email": 3, "notify": 1}, 1)
    assert got.first_pending_email is not None and got.first_pending_email.recipient == "a@example.com"
    assert got.top_assignees == {"u1": 2, None: 1}
    end = AT + dt.timedelta(days=1)
    assert sorted(e.status for e in actions.emails(store, end)) == ["cancelled", "pending", "pending"]
    assert [(t.assignee, t.title) for t in actions.tasks(store, end) if t.assignee] == [("u1", "Call")] * 2
    assert actions.emails(store, AT - dt.timedelta(days=1)) == []


def test_the_demo_clears_only_a_store_it_made(store: Store, seed: Seed) -> None:
    assert not demo_data.is_generated(store)  # accounts nobody generated
    with store.begin() as conn:
        store.audit(conn, "demo-data", "demo.generate", None, {})
    assert demo_data.is_generated(store)
    demo_data.clear(store)
    assert store.count("accounts") == store.count("audit_log") == 0
    assert demo_data.is_generated(store)  # empty: the demo may fill it
