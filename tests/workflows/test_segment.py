"""The Segment-compatible tracking API (workflows/segment.py) on a real uvicorn server, fed by Segment's
own client (segment-analytics-python) and by httpx: each event stored once, identify and group as fields."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from segment.analytics.client import Client

from dsl.project import load
from engine import schema
from engine.store import Store
from serve_support import seeded_store, serving, settings
from workflows.inbound import Inbound
from workflows.segment import routes

KEY = "wk_test_0123456789"
PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"


@pytest.fixture(scope="module")
def catalog() -> Any:
    return load([PLAYBOOKS]).catalog


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    st = seeded_store(tmp_path / "segment.db")
    yield st
    st.close()


def server(store: Store, catalog: Any, wrap: Any = None) -> Any:
    return serving(Inbound(store, None), settings(), extra_routes=routes(store, catalog, [SecretStr(KEY)]),
                   wrap=wrap)


def client(url: str, key: str = KEY, errors: list[Any] | None = None) -> Client:
    return Client(key, host=url, max_retries=3, upload_size=100,
                  on_error=(lambda e, batch: errors.append(e)) if errors is not None else None)


def stored_events(store: Store) -> list[dict[str, Any]]:
    t = schema.Event.__table__
    with store.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(t).order_by(t.c.id)).mappings()]


def auth(key: str = KEY) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def track(mid: str, event: str = "feature_request", **extra: Any) -> dict[str, Any]:
    return {"type": "track", "messageId": mid, "event": event, "userId": "c1",
            "timestamp": "2026-12-01T10:00:00Z", "properties": {"feature": "sso"}, **extra}


class LoseFirstAnswer:
    """Around the app: the first /v1/batch is handled (and stored) but answered 503, as if the answer was
    lost, so the client sends the same batch again."""

    def __init__(self, app: Any) -> None:
        self.app, self.lost = app, 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/batch" or self.lost:
            await self.app(scope, receive, send)
            return
        self.lost += 1

        async def swallow(message: Any) -> None:
            pass

        await self.app(scope, receive, swallow)
        await send({"type": "http.response.start", "status": 503, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"lost"})


def test_client_events_are_stored_once_when_the_client_sends_a_batch_again(store, catalog):
    wrapper: list[LoseFirstAnswer] = []

    def wrap(app: Any) -> Any:
        wrapper.append(LoseFirstAnswer(app))
        return wrapper[0]

    with server(store, catalog, wrap) as url:
        c = client(url)
        for i in range(5):
            c.track("c1", "feature_request", {"feature": f"f{i}"}, message_id=f"m-{i}")
        c.track("c2", "qbr_completed", {}, message_id="m-beta")
        c.flush()
        c.shutdown()
    assert wrapper[0].lost == 1
    rows = stored_events(store)
    assert sorted(r["key"] for r in rows) == sorted(
        [f"id:feature_request:m-{i}" for i in range(5)] + ["id:qbr_completed:m-beta"])
    assert {r["account_id"] for r in rows if r["event"] == "feature_request"} == {"acme"}
    assert next(r for r in rows if r["event"] == "qbr_completed")["account_id"] == "beta"
    assert next(r for r in rows if r["key"] == "id:feature_request:m-3")["payload"]["feature"] == "f3"


def test_a_batch_sent_twice_stores_each_event_once_and_says_so(store, catalog):
    batch = {"batch": [track(f"b-{i}", context={"groupId": "beta"}) for i in range(20)]}
    with server(store, catalog) as url:
        first = httpx.post(f"{url}/v1/batch", json=batch, headers=auth())
        again = httpx.post(f"{url}/v1/batch", json=batch, headers=auth())
    assert first.status_code == again.status_code == 200
    assert (first.json()["accepted"], first.json()["duplicates"]) == (20, 0)
    assert (again.json()["accepted"], again.json()["duplicates"]) == (0, 20)
    rows = stored_events(store)
    assert len(rows) == 20 and {r["account_id"] for r in rows} == {"beta"}


def test_an_undeclared_event_is_ignored_with_its_reason_and_the_rest_stored(store, catalog):
    no_id = {k: v for k, v in track("x").items() if k != "messageId"}
    batch = {"batch": [track("ok-1"), track("bad-1", event="Signed Up"), {"type": "page", "messageId": "p-1"}, no_id]}
    with server(store, catalog) as url:
        got = httpx.post(f"{url}/v1/batch", json=batch, headers=auth())
    assert got.status_code == 200
    body = got.json()
    assert body["accepted"] == 1
    reasons = {i["messageId"]: i["reason"] for i in body["ignored"]}
    assert "'Signed Up' is not a declared event" in reasons["bad-1"]
    assert "page" in reasons["p-1"]
    assert "no messageId" in reasons["(none)"]
    assert [r["key"] for r in stored_events(store)] == ["id:feature_request:ok-1"]


def test_identify_and_group_set_contact_and_account_fields_with_history(store, catalog):
    with server(store, catalog) as url:
        c = client(url)
        c.identify("c1", {"title": "VP Operations", "first_name": "Ada", "plan": "Scale",
                          "company": {"id": "acme", "seats_active": 42}, "favourite_colour": "teal"},
                   message_id="i-1")
        c.group("c2", "beta", {"name": "Beta Inc", "open_tickets": 3, "unknown_trait": 1}, message_id="g-1")
        c.flush()
        c.group("c2", "beta", {"name": "Beta Corp"}, message_id="g-2")  # a change: the old name to history
        c.flush()
        c.shutdown()
        got = httpx.post(f"{url}/v1/identify", headers=auth(), json={
            "messageId": "i-2", "userId": "c1", "traits": {"plan": "Enterprise", "email": "not an address"}})
    assert got.status_code == 200
    assert got.json()["ignored"][0]["messageId"] == "i-2"
    assert "not an email address" in got.json()["ignored"][0]["reason"]
    contacts, accounts = store.table("contact", catalog), store.table("account", catalog)
    history = schema.AccountFieldHistory.__table__
    with store.connect() as conn:
        ada = conn.execute(sa.select(contacts).where(contacts.c.id == "c1")).mappings().one()
        acme = conn.execute(sa.select(accounts).where(accounts.c.id == "acme")).mappings().one()
        beta = conn.execute(sa.select(accounts).where(accounts.c.id == "beta")).mappings().one()
        fields = set(conn.execute(sa.select(history.c.account_id, history.c.field)).all())
    assert (ada["title"], ada["first_name"], ada["account_id"]) == ("VP Operations", "Ada", "acme")
    assert (acme["plan"], acme["seats_active"]) == ("Scale", 42)  # i-2 refused whole: plan not Enterprise
    assert (beta["name"], beta["open_tickets"]) == ("Beta Corp", 3)
    assert ("acme", "*") in fields and ("beta", "name") in fields  # through the importer's history
    with store.connect() as conn:
        old = conn.execute(sa.select(history.c.value_text).where(history.c.field == "name")).scalar_one()
    assert old == "Beta Inc"


def test_a_wrong_or_missing_write_key_is_refused_and_never_logged(store, catalog, caplog):
    caplog.set_level(logging.INFO)
    errors: list[Any] = []
    with server(store, catalog) as url:
        c = client(url, key="wk_wrong_secret", errors=errors)
        c.track("c1", "feature_request", {}, message_id="w-1")
        c.flush()
        c.shutdown()
        missing = httpx.post(f"{url}/v1/track", json=track("w-2"))
        wrong = httpx.post(f"{url}/v1/track", json=track("w-3"), headers=auth("wk_other_secret"))
    assert errors and getattr(errors[0], "status", None) == 401
    assert (missing.status_code, wrong.status_code) == (401, 401)
    assert "write key" in wrong.json()["error"]
    assert stored_events(store) == []
    assert "wk_" not in caplog.text and KEY not in caplog.text
    assert "unknown write key" in caplog.text


@pytest.mark.parametrize("body, reason", [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (json.dumps({"batch": "x"}).encode(), "a list of message"),
    (json.dumps({"batch": [track("big", properties={"blob": "x" * 40_000})]}).encode(), "32 KB"),
    (json.dumps({"batch": [track(f"many-{i}", properties={"blob": "x" * 20_000}) for i in range(30)]}).encode(),
     "500 KB"),
])
def test_a_bad_or_oversized_body_is_400_with_a_message(store, catalog, body, reason):
    with server(store, catalog) as url:
        got = httpx.post(f"{url}/v1/batch", content=body, headers={**auth(), "content-type": "application/json"})
    assert got.status_code == 400
    assert reason in got.json()["error"]
    assert stored_events(store) == []


def test_a_burst_of_10000_events_from_the_client_is_stored_once_each(store, catalog):
    with server(store, catalog) as url:
        c = client(url)
        start = time.monotonic()
        for i in range(10_000):
            c.track("c1" if i % 2 else "c2", "feature_request", {"n": i}, message_id=f"burst-{i}")
        c.flush()
        c.shutdown()
        took = time.monotonic() - start
    rows = stored_events(store)
    assert len(rows) == 10_000 and len({r["key"] for r in rows}) == 10_000
    print(f"\n10,000 events through segment-analytics-python in {took:.1f} s ({10_000 / took:.0f}/s)")
