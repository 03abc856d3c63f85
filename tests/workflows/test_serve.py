"""`playbook serve` over real HTTP (uvicorn on loopback): verified, recorded once, refused with a status.

Temporal is not running in these tests (connect=None): every accepted event
stays pending for its signal; test_inbound.py delivers them to real plays.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from connectors import base as cb
from connectors import unsubscribe
from connectors.store import StoreConnector
from engine import lookup
from engine.schema import OutboxMessage
from serve_support import (AT, HUBSPOT_SECRET, POSTMARK, SENT_ID, UNSUB_SECRET, deal_stage, events, hubspot,
                           seeded_store, serving, settings, standard, unsubscribed)
from workflows.inbound import Inbound


@pytest.fixture
def store(tmp_path):
    st = seeded_store(tmp_path / "serve.db")
    yield st
    st.close()


@pytest.fixture
def url(store):
    with serving(Inbound(store, None), settings()) as base:
        yield base


def post(url: str, path: str, body: bytes, headers: dict[str, str], **kw) -> httpx.Response:
    return httpx.post(url + path, content=body, headers=headers, timeout=10, **kw)


# -- Standard Webhooks ------------------------------------------------------------


def test_a_signed_event_is_stored_once_and_left_pending_for_its_signal(url, store):
    body, headers = standard("replied", {"account_id": "acme"})
    first = post(url, "/events", body, headers)
    again = post(url, "/events", body, headers)  # the provider's redelivery: same webhook-id
    assert first.status_code == 202 and first.json()["accepted"] == 1
    assert again.status_code == 200 and again.json()["duplicates"] == 1 and again.json()["accepted"] == 0
    [row] = events(store)
    assert (row["key"], row["kind"], row["account_id"], row["signal_state"]) == (
        f"standard:{headers['webhook-id']}", "replied", "acme", "pending")
    assert row["occurred_at"] == AT


def test_an_event_naming_a_contact_address_is_mapped_to_its_account(url, store):
    body, headers = standard("meeting_booked", {"email": "ada@ACME.test"})
    assert post(url, "/events", body, headers).status_code == 202
    assert [(r["kind"], r["account_id"], r["contact"]) for r in events(store)] == [
        ("meeting_booked", "acme", "ada@ACME.test")]


@pytest.mark.parametrize("case, status, says", [
    ("unsigned", 401, "Missing required headers"),
    ("wrong secret", 401, "No matching signature"),
    ("old timestamp", 401, "5 minute tolerance"),
    ("tampered body", 401, "No matching signature"),
    ("malformed json", 400, "not JSON"),
    ("unknown account", 422, "unknown account 'nobody'"),
    ("unknown address", 422, "no account found for address who@else.test"),
    ("unknown type", 422, "did you mean 'replied'"),
    ("stage without stage", 422, "stage_changed needs data.stage"),
])
def test_a_bad_request_is_refused_with_a_status_a_log_line_and_nothing_stored(url, store, caplog, case, status, says):
    body, headers = standard("replied", {"account_id": "acme"})
    if case == "unsigned":
        headers = {"content-type": "application/json"}
    elif case == "wrong secret":
        body, headers = standard("replied", {"account_id": "acme"},
                                 secret="whsec_" + base64.b64encode(b"another secret, 24 bytes").decode())
    elif case == "old timestamp":
        body, headers = standard("replied", {"account_id": "acme"},
                                 at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=6))
    elif case == "tampered body":
        body = body.replace(b"acme", b"beta")
    elif case == "malformed json":
        body, headers = standard("replied", {})
        body = b'{"type": "replied", '
        headers = standard_headers_for(body)
    elif case == "unknown account":
        body, headers = standard("replied", {"account_id": "nobody"})
    elif case == "unknown address":
        body, headers = standard("replied", {"email": "who@else.test"})
    elif case == "unknown type":
        body, headers = standard("replyed", {"account_id": "acme"})
    elif case == "stage without stage":
        body, headers = standard("stage_changed", {"account_id": "acme"})
    with caplog.at_level(logging.WARNING, logger="playbook.serve"):
        got = post(url, "/events", body, headers)
    assert got.status_code == status and says in got.json()["error"]
    assert events(store) == []
    assert [r for r in caplog.records if r.name == "playbook.serve" and str(status) in r.getMessage()]
    assert not any(r.exc_info for r in caplog.records)


def standard_headers_for(body: bytes) -> dict[str, str]:
    from standardwebhooks.webhooks import Webhook

    from serve_support import WEBHOOK_SECRET

    now = dt.datetime.now(dt.timezone.utc)
    return {"webhook-id": "msg_raw", "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(WEBHOOK_SECRET).sign("msg_raw", now, body)}


def test_an_endpoint_without_its_secret_is_off(store):
    with serving(Inbound(store, None), settings(webhook_secret=None)) as base:
        body, headers = standard("replied", {"account_id": "acme"})
        got = post(base, "/events", body, headers)
    assert got.status_code == 404 and "webhook_secret" in got.json()["error"]


@pytest.mark.anyio
async def test_an_unsubscribe_event_stops_every_later_email_to_the_contact(url, store):
    body, headers = standard("unsubscribed", {"email": "ada@acme.test"})
    assert post(url, "/events", body, headers).status_code == 202
    assert unsubscribed(store, "c1") is not None and unsubscribed(store, "c2") is None
    # The store connector (and `prepare`, through the same column) never sends to it again, in any play.
    message = cb.EmailMessage(key="play:other:acme:h:e:d1", account_id="acme", actor="play:other", play="other",
                              step="d1", requested_at=AT, to="Ada@acme.test", subject="Hi", body="Hi",
                              template="hello")
    await StoreConnector(store).send_email(message)
    with store.connect() as conn:
        status = conn.execute(sa.select(OutboxMessage.__table__.c.status).where(
            OutboxMessage.__table__.c.idempotency_key == "play:other:acme:h:e:d1")).scalar_one()
    assert status == "cancelled"
    assert lookup.contact(store, "c1").unsubscribed  # type: ignore[union-attr]


# -- HubSpot ----------------------------------------------------------------------


def test_a_hubspot_deal_stage_change_becomes_a_stage_event_for_the_deals_account(url, store):
    body, headers = hubspot(url + "/hubspot", [deal_stage(101, 9001, "closedwon")])
    got = post(url, "/hubspot", body, headers)
    assert got.status_code == 202 and got.json()["accepted"] == 1
    [row] = events(store)
    assert (row["key"], row["kind"], row["account_id"], row["stage"]) == (
        "hubspot:101", "stage_changed", "acme", "Closed Won")
    again = post(url, "/hubspot", *hubspot(url + "/hubspot", [deal_stage(101, 9001, "closedwon")]))
    assert again.status_code == 200 and len(events(store)) == 1


def test_hubspot_events_that_map_to_nothing_are_answered_202_and_listed(url, store):
    batch = [deal_stage(102, 4242, "closedwon"),
             {"eventId": 103, "subscriptionType": "contact.creation", "objectId": 5, "occurredAt": 1773064800000}]
    got = post(url, "/hubspot", *hubspot(url + "/hubspot", batch))
    assert got.status_code == 202
    assert [i["key"] for i in got.json()["ignored"]] == ["hubspot:102", "hubspot:103"]
    assert "no account found for deal 4242" in got.json()["ignored"][0]["reason"]
    assert events(store) == []


@pytest.mark.parametrize("age_ms, secret, status", [(6 * 60 * 1000, HUBSPOT_SECRET, 401), (0, "not-it", 401)])
def test_a_stale_or_wrongly_signed_hubspot_request_is_refused(url, store, age_ms, secret, status):
    body, headers = hubspot(url + "/hubspot", [deal_stage(104, 9001, "closedwon")], age_ms=age_ms, secret=secret)
    got = post(url, "/hubspot", body, headers)
    assert got.status_code == status and events(store) == []


# -- Postmark ---------------------------------------------------------------------


def postmark_auth(user: str = POSTMARK[0], password: str = POSTMARK[1]) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode(),
            "content-type": "application/json"}


def test_a_postmark_inbound_reply_is_matched_to_the_message_it_answers(url, store):
    reply = {"From": "ada@acme.test", "FromFull": {"Email": "ada@acme.test", "Name": "Ada"}, "Subject": "Re: Hi",
             "MessageID": "a8c1040e-db1c-4e18-ac79-bc5f64c7ce2c", "Date": "Mon, 9 Mar 2026 15:00:00 +0000",
             "Headers": [{"Name": "Message-ID", "Value": "<reply-1@acme.test>"},
                         {"Name": "In-Reply-To", "Value": SENT_ID}]}
    got = post(url, "/postmark", json.dumps(reply).encode(), postmark_auth())
    assert got.status_code == 202
    [row] = events(store)
    assert (row["key"], row["kind"], row["account_id"], row["play"]) == (
        "postmark:inbound:<reply-1@acme.test>", "replied", "acme", "usage_limit")


def test_a_postmark_hard_bounce_suppresses_the_address_and_a_soft_one_is_ignored(url, store):
    hard = {"RecordType": "Bounce", "ID": 42, "Type": "HardBounce", "TypeCode": 1, "Email": "bob@beta.test",
            "BouncedAt": "2026-03-09T15:00:00Z", "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483"}
    soft = hard | {"ID": 43, "Type": "SoftBounce", "TypeCode": 4096}
    assert post(url, "/postmark", json.dumps(hard).encode(), postmark_auth()).status_code == 202
    got = post(url, "/postmark", json.dumps(soft).encode(), postmark_auth())
    assert got.status_code == 202 and got.json()["ignored"][0]["key"] == "postmark:bounce:43"
    assert [(r["kind"], r["account_id"]) for r in events(store)] == [("bounced", "beta")]
    assert unsubscribed(store, "c2", "bounced_at") is not None and unsubscribed(store, "c2") is None


def test_postmark_without_the_right_basic_auth_is_refused(url, store):
    got = post(url, "/postmark", b"{}", postmark_auth(password="guess"))
    assert got.status_code == 401 and events(store) == []


# -- One-click unsubscribe (RFC 8058) -----------------------------------------------


def test_one_click_unsubscribe_needs_the_post_and_a_token_for_that_contact(url, store):
    link = unsubscribe.link(url, SecretStr(UNSUB_SECRET), "c1", "acme", "usage_limit")
    page = httpx.get(link, timeout=10)  # a mail scanner's prefetch: a page, nothing changes
    assert page.status_code == 200 and "List-Unsubscribe" in page.text and unsubscribed(store, "c1") is None
    forged = link.replace("c=c1", "c=c2")
    assert httpx.post(forged, data={"List-Unsubscribe": "One-Click"}, timeout=10).status_code == 403
    assert httpx.post(link, data={"other": "x"}, timeout=10).status_code == 400
    done = httpx.post(link, data={"List-Unsubscribe": "One-Click"}, timeout=10)
    again = httpx.post(link, data={"List-Unsubscribe": "One-Click"}, timeout=10)
    assert done.status_code == again.status_code == 200
    assert unsubscribed(store, "c1") is not None and unsubscribed(store, "c2") is None
    assert [(r["kind"], r["account_id"], r["source"]) for r in events(store)] == [("unsubscribed", "acme", "unsubscribe")]
    query = parse_qs(urlsplit(link).query)
    assert query["c"] == ["c1"] and query["p"] == ["usage_limit"]


# -- A burst ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_burst_of_1000_signed_events_loses_none_and_records_duplicates_once(url, store):
    kinds = ["replied", "meeting_booked", "bounced", "stage_changed"]
    deliveries = []
    for i in range(1000):
        account = "acme" if i % 2 else "beta"
        deliveries.append(standard(kinds[i % 4], {"account_id": account, "stage": "Negotiation"},
                                   msg_id=f"msg_burst_{i}"))
    deliveries += deliveries[:100]  # the provider retried a hundred of them

    async def send_all() -> list[int]:
        # A connection per delivery: all in flight at once (a pool of 100 with 1,000 waiters
        # spends its time in httpx's queue, not in the server).
        limits = httpx.Limits(max_connections=len(deliveries), max_keepalive_connections=len(deliveries))
        async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
            sent = await asyncio.gather(*(client.post("/events", content=b, headers=h) for b, h in deliveries))
        return [r.status_code for r in sent]

    started = time.perf_counter()
    statuses = asyncio.run(send_all())
    took = time.perf_counter() - started
    assert all(s in (200, 202) for s in statuses), sorted(set(statuses))
    rows = events(store)
    assert len(rows) == 1000 and len({r["key"] for r in rows}) == 1000
    assert statuses.count(202) == 1000
    print(f"\nburst: 1,100 deliveries (1,000 distinct) in {took:.2f} s, {len(rows)} stored")
