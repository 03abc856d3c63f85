"""The outbox as a ledger: claim before acting, mark after; a sent key is never claimed again."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from engine import outbox, schema
from engine.store import Store
from store_backends import BACKENDS, fresh_store

AT = dt.datetime(2026, 3, 9, 14, 0, tzinfo=dt.timezone.utc)


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    with fresh_store(request.param, tmp_path) as st:
        yield st


def claim(store: Store, key: str = "k1") -> outbox.Claim:
    with store.begin() as conn:
        return outbox.claim(conn, key=key, channel="slack", recipient="#cs", body="hello", at=AT, play="p")


def row(store: Store, key: str = "k1") -> dict:
    with store.connect() as conn:
        t = schema.OutboxMessage.__table__
        return dict(conn.execute(sa.select(t).where(t.c.idempotency_key == key)).mappings().one())


def test_a_new_key_is_written_sending_before_the_provider_is_called(store):
    c = claim(store)
    assert (c.previous, c.status, c.attempts, c.sent, c.resumed) == ("new", "sending", 1, False, False)
    assert row(store)["status"] == "sending" and row(store)["created_at"] == AT


def test_a_sent_key_is_left_alone_and_reports_the_provider_id(store):
    claim(store)
    with store.begin() as conn:
        outbox.mark_sent(conn, "k1", provider_message_id="1700.1", at=AT)
    again = claim(store)
    assert again.sent and again.provider_message_id == "1700.1" and again.attempts == 1
    assert row(store)["sent_at"] == AT


def test_a_key_left_sending_by_a_dead_attempt_is_resumed(store):
    claim(store)
    again = claim(store)
    assert again.resumed and again.attempts == 2 and again.status == "sending"


def test_a_transient_failure_goes_back_to_pending_and_a_permanent_one_to_failed(store):
    claim(store)
    with store.begin() as conn:
        outbox.mark_failed(conn, "k1", "slack: rate limited", permanent=False)
    assert (row(store)["status"], row(store)["last_error"]) == ("pending", "slack: rate limited")
    assert not claim(store).resumed
    with store.begin() as conn:
        outbox.mark_failed(conn, "k1", "x" * 5000, permanent=True)
    assert row(store)["status"] == "failed" and len(row(store)["last_error"]) == outbox.ERROR_CHARS


def test_a_cancelled_row_is_never_claimed(store):
    with store.begin() as conn:
        conn.execute(schema.OutboxMessage.__table__.insert().values(
            idempotency_key="k1", channel="email", recipient="gone@x.test", body="", status="cancelled",
            created_at=AT, attempts=0))
    c = claim(store)
    assert c.cancelled and row(store)["status"] == "cancelled" and row(store)["attempts"] == 0


def test_a_message_id_given_at_the_claim_is_on_the_row_before_the_send(store):
    with store.begin() as conn:
        outbox.claim(conn, key="k1", channel="email", recipient="ada@x.test", body="hi", at=AT,
                     account_id="acme", play="p", message_id="<abc@mail.test>")
    assert row(store)["provider_message_id"] == "<abc@mail.test>"


def test_a_row_is_found_by_its_message_id_with_or_without_brackets(store):
    with store.begin() as conn:
        outbox.claim(conn, key="k1", channel="email", recipient="ada@x.test", body="hi", at=AT,
                     account_id="acme", play="p", message_id="<abc@mail.test>")
        outbox.mark_sent(conn, "k1", provider_message_id="<abc@mail.test>", at=AT)
    with store.connect() as conn:
        found, bare = outbox.by_message_id(conn, "<abc@mail.test>"), outbox.by_message_id(conn, "abc@mail.test")
        missing = outbox.by_message_id(conn, "<other@mail.test>")
    assert found is not None and found == bare and missing is None
    assert (found.key, found.account_id, found.play, found.status) == ("k1", "acme", "p", "sent")


def test_no_answer_leaves_the_row_sending_so_the_next_claim_is_resumed(store):
    claim(store)
    with store.begin() as conn:
        outbox.mark_unknown(conn, "k1", "slack: posting to #cs: TimeoutError")
    assert (row(store)["status"], row(store)["last_error"]) == ("sending", "slack: posting to #cs: TimeoutError")
    assert claim(store).resumed
