"""inbound_events in the store, on SQLite and PostgreSQL: one row per key, suppression in the same
transaction, the pending-signal marker, and the look-ups that find an event's account."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from engine import inbound as ie
from engine import schema
from engine.store import Store
from store_backends import BACKENDS, fresh_store

AT = dt.datetime(2026, 3, 9, 14, 0, tzinfo=dt.timezone.utc)


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    with fresh_store(request.param, tmp_path) as st:
        with st.begin() as conn:
            conn.execute(schema.Account.__table__.insert(), [{"id": "acme"}, {"id": "beta"}])
            conn.execute(schema.Contact.__table__.insert(), [
                {"id": "c1", "account_id": "acme", "email": "Ada@acme.test"},
                {"id": "c2", "account_id": "beta", "email": "shared@x.test"},
                {"id": "c3", "account_id": "acme", "email": "shared@x.test"}])
            conn.execute(schema.OutboxMessage.__table__.insert(), [
                {"idempotency_key": "k1", "channel": "email", "recipient": "Ada@acme.test", "body": "", "account_id": "acme",
                 "play": "p", "provider_message_id": "<m1@pb.test>"},
                {"idempotency_key": "k2", "channel": "email", "recipient": "Ada@acme.test", "body": "", "account_id": "acme",
                 "play": "q", "provider_message_id": "pm-123"}])
        yield st


def contact(store: Store, cid: str) -> dict:
    with store.connect() as conn:
        t = schema.Contact.__table__
        return dict(conn.execute(sa.select(t).where(t.c.id == cid)).mappings().one())


def event(key: str, **kw) -> ie.NewEvent:
    return ie.NewEvent(key=key, source="test", kind=kw.pop("kind", "replied"), account_id=kw.pop("account_id", "acme"),
                       **kw)


def test_a_key_is_recorded_once_even_when_two_deliveries_race(store):
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: ie.record(store, event("k")), range(16)))
    assert sum(not r.duplicate for r in results) == 1 and len({r.id for r in results}) == 1
    assert ie.counts(store) == {"pending": 1}


def test_an_unsubscribe_marks_the_contact_of_that_account_only_and_keeps_the_first_date(store):
    ie.record(store, event("u1", kind="unsubscribed", contact="shared@X.test", suppress=True, occurred_at=AT))
    ie.record(store, event("u2", kind="unsubscribed", contact="shared@x.test", suppress=True,
                           occurred_at=AT + dt.timedelta(days=1)))
    assert contact(store, "c3")["unsubscribed_at"] == AT and contact(store, "c2")["unsubscribed_at"] is None


def test_a_bounce_marks_bounced_at_not_unsubscribed_at(store):
    ie.record(store, event("b1", kind="bounced", contact="c1", suppress=True, occurred_at=AT))
    c1 = contact(store, "c1")
    assert c1["bounced_at"] == AT and c1["unsubscribed_at"] is None


def test_a_replayed_unsubscribe_changes_nothing(store):
    ie.record(store, event("u1", kind="unsubscribed", contact="c1", suppress=True, occurred_at=AT))
    with store.begin() as conn:  # the contact opted in again since
        t = schema.Contact.__table__
        conn.execute(t.update().where(t.c.id == "c1").values(unsubscribed_at=None))
    assert ie.record(store, event("u1", kind="unsubscribed", contact="c1", suppress=True, occurred_at=AT)).duplicate
    assert contact(store, "c1")["unsubscribed_at"] is None


def test_signalled_events_leave_the_pending_list_and_repeated_refusals_give_up(store):
    first, second = (ie.record(store, event(k)).id for k in ("e1", "e2"))
    assert [p.key for p in ie.pending(store)] == ["e1", "e2"]
    ie.mark_signalled(store, [(first, ["p"])])
    assert [p.key for p in ie.pending(store)] == ["e2"]
    assert not ie.mark_retry(store, second, "INVALID_ARGUMENT: no", give_up_after=2)
    assert ie.mark_retry(store, second, "INVALID_ARGUMENT: no", give_up_after=2)
    assert ie.pending(store) == [] and ie.counts(store) == {"done": 1, "failed": 1}


def test_accounts_are_found_by_address_deal_and_sent_message(store):
    assert ie.account_of_contact(store, "ada@ACME.test") == "acme"
    assert ie.account_of_contact(store, "nobody@x.test") is None
    with pytest.raises(ie.Ambiguous, match="2 accounts"):
        ie.account_of_contact(store, "shared@x.test")
    sent = ie.sent_message(store, ["<other@x>", "m1@pb.test"])  # a bare id finds the bracketed one
    assert sent is not None and (sent.account_id, sent.play) == ("acme", "p")
    found = ie.sent_message(store, ["<pm-123>"])  # a provider's bare id, asked for with brackets
    assert found is not None and found.play == "q"
    assert ie.sent_message(store, ["<never@x>"]) is None
