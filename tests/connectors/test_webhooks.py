"""Signed outbound webhooks against WireMock; every signature checked by `standardwebhooks` (the oracle)."""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import json
import os
from typing import Any

import pytest
import sqlalchemy as sa
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from connectors import base as cb
from connectors.settings import load_connectors
from connectors.webhooks import WebhookConnector, WebhookSettings, load_webhook_settings, message_id, shown
from engine import endpoints, schema
from engine.settings import SettingsError
from engine.store import Store

pytestmark = pytest.mark.anyio
AT = dt.datetime(2026, 3, 9, 14, 0, tzinfo=dt.timezone.utc)
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
PATH = "/hooks/playbook"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store(tmp_path):
    st = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    yield st
    st.close()


def hooks(store: Store, **settings: Any) -> WebhookConnector:
    return WebhookConnector(WebhookSettings(**{"secret": SECRET, "timeout": 1.0, **settings}), store)


def call(url: str, key: str = "play:p:acme:h:1:s1", event: str | None = "usage.limit") -> cb.WebhookCall:
    payload = {"event": event, "play": "p", "plan_hash": "h", "account_id": "acme", "step": "s1",
               "idempotency_key": key}
    return cb.WebhookCall(key=key, account_id="acme", actor="play:p", play="p", step="s1", requested_at=AT,
                          url=url, event=event, payload=payload)


def stub(wiremock, response: dict[str, Any], path: str = PATH, **mapping: Any) -> str:
    wiremock.stub({"request": {"method": "POST", "url": path}, "response": response, **mapping})
    return wiremock.url + path


def received(wiremock, path: str = PATH) -> list[dict[str, Any]]:
    return [r for r in wiremock.requests() if r["url"] == path]


def verified(request: dict[str, Any], secret: str = SECRET) -> Any:
    """What a Standard Webhooks receiver accepts: the payload, or WebhookVerificationError."""
    return Webhook(secret).verify(request["body"], request["headers"])


def outbox(store: Store) -> list[dict[str, Any]]:
    with store.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(schema.OutboxMessage.__table__)).mappings()]


async def test_a_webhook_is_signed_so_standardwebhooks_verifies_it(wiremock, store):
    url = stub(wiremock, {"status": 204})
    result = await hooks(store).act(call(url))
    [request] = received(wiremock)
    data = verified(request)
    assert data["type"] == "usage.limit" and data["data"]["account_id"] == "acme"
    assert data["timestamp"] == AT.isoformat()
    assert request["headers"]["webhook-id"] == message_id("play:p:acme:h:1:s1") == result.external_id
    assert result.status_code == 204 and not result.duplicate
    [row] = outbox(store)
    assert (row["status"], row["channel"], row["provider_message_id"]) == ("sent", "webhook", result.external_id)


async def test_a_receiver_with_another_secret_refuses_the_signature(wiremock, store):
    url = stub(wiremock, {"status": 200})
    await hooks(store).act(call(url))
    other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(WebhookVerificationError):
        verified(received(wiremock)[0], other)


async def test_a_key_already_sent_is_not_sent_again(wiremock, store):
    url = stub(wiremock, {"status": 200})
    connector = hooks(store)
    first = await connector.act(call(url))
    again = await connector.act(call(url))
    assert again.duplicate and again.external_id == first.external_id and len(received(wiremock)) == 1


async def test_a_retry_keeps_the_webhook_id_and_body_and_signs_a_fresh_timestamp(wiremock, store):
    url = stub(wiremock, {"status": 503}, scenarioName="s", requiredScenarioState="Started", newScenarioState="up")
    stub(wiremock, {"status": 200}, scenarioName="s", requiredScenarioState="up")
    times = iter([dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.timezone.utc),
                  dt.datetime(2026, 12, 1, 10, 5, tzinfo=dt.timezone.utc)] * 2)
    connector = WebhookConnector(WebhookSettings(secret=SECRET, timeout=1.0), store, clock=lambda: next(times))
    with pytest.raises(cb.TransientError, match="HTTP 503"):
        await connector.act(call(url))
    await connector.act(call(url))
    first, second = received(wiremock)
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"] and first["body"] == second["body"]
    assert first["headers"]["webhook-timestamp"] != second["headers"]["webhook-timestamp"]
    assert outbox(store)[0]["attempts"] == 2


async def test_410_disables_the_endpoint_and_later_calls_fail_at_once_saying_since_when(wiremock, store):
    url = stub(wiremock, {"status": 410})
    connector = hooks(store)
    with pytest.raises(cb.PermanentError, match="410 Gone"):
        await connector.act(call(url, key="k1"))
    with pytest.raises(cb.PermanentError, match=r"disabled since \d{4}-\d\d-\d\d .*410 Gone at play p step s1"):
        await connector.act(call(url, key="k2"))
    assert len(received(wiremock)) == 1  # the second never reached the receiver
    assert [r["status"] for r in outbox(store)] == ["failed", "failed"]
    with store.begin() as conn:  # the mark outlives the connector (a new worker reads it)
        assert endpoints.disabled(conn, url) is not None
        assert endpoints.enable(conn, url)
    stub(wiremock, {"status": 200})
    assert not (await hooks(store).act(call(url, key="k3"))).duplicate


@pytest.mark.parametrize("status", [429, 502, 503, 504])
async def test_throttling_answers_are_transient_and_honour_retry_after_in_seconds(wiremock, store, status):
    url = stub(wiremock, {"status": status, "headers": {"Retry-After": "42"}})
    with pytest.raises(cb.TransientError) as err:
        await hooks(store).act(call(url))
    assert err.value.retry_after == 42.0 and outbox(store)[0]["status"] == "pending"


async def test_retry_after_as_an_http_date_is_honoured(wiremock, store):
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=120)
    url = stub(wiremock, {"status": 429, "headers": {"Retry-After": email.utils.format_datetime(later, usegmt=True)}})
    with pytest.raises(cb.TransientError) as err:
        await hooks(store).act(call(url))
    assert err.value.retry_after is not None and 100 < err.value.retry_after <= 120


async def test_other_server_errors_are_transient_without_a_delay(wiremock, store):
    url = stub(wiremock, {"status": 500})
    with pytest.raises(cb.TransientError) as err:
        await hooks(store).act(call(url))
    assert err.value.retry_after is None


@pytest.mark.parametrize("status", [400, 401, 404, 422, 301])
async def test_other_answers_are_permanent_with_the_receivers_reason(wiremock, store, status):
    url = stub(wiremock, {"status": status, "body": "bad\nsignature"})
    with pytest.raises(cb.PermanentError, match=f"HTTP {status}") as err:
        await hooks(store).act(call(url))
    assert "bad signature" in str(err.value) and outbox(store)[0]["status"] == "failed"


async def test_a_receiver_slower_than_the_timeout_is_transient(wiremock, store):
    url = stub(wiremock, {"status": 200, "fixedDelayMilliseconds": 3000})
    with pytest.raises(cb.TransientError, match="no answer within 1 s"):
        await hooks(store, timeout=1.0).act(call(url))


async def test_a_connection_reset_is_transient(wiremock, store):
    url = stub(wiremock, {"fault": "CONNECTION_RESET_BY_PEER"})
    with pytest.raises(cb.TransientError):
        await hooks(store).act(call(url))


async def test_a_refused_connection_is_transient(store):
    from peers import free_port

    with pytest.raises(cb.TransientError):
        await hooks(store).act(call(f"http://127.0.0.1:{free_port()}/hook"))


async def test_errors_show_the_url_without_its_credentials_or_query(wiremock, store):
    url = stub(wiremock, {"status": 404}, path="/hooks/x?token=s3cret-token")
    authed = url.replace("http://", "http://user:pa55word@")
    with pytest.raises(cb.PermanentError) as err:
        await hooks(store).act(call(authed))
    assert "s3cret-token" not in str(err.value) and "pa55word" not in str(err.value)
    assert shown(authed) in str(err.value) and shown(authed).endswith("/hooks/x")


@pytest.mark.parametrize("secret, problem", [("not-whsec", "must start with whsec_"),
                                             ("whsec_***not-base64***", "must be base64"),
                                             ("whsec_c2hvcnQ=", "shorter than 16 bytes")])
def test_a_bad_secret_is_refused_without_echoing_it(tmp_path, monkeypatch, secret, problem):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PLAYBOOK_WEBHOOKS_SECRET", secret)
    with pytest.raises(SettingsError, match=problem) as err:
        load_webhook_settings()
    assert secret not in str(err.value) and "PLAYBOOK_WEBHOOKS_SECRET" in str(err.value)


def test_webhooks_served_by_the_connector_need_a_secret(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PLAYBOOK_CONNECTOR_WEBHOOK", "webhooks")
    monkeypatch.delenv("PLAYBOOK_WEBHOOKS_SECRET", raising=False)
    with pytest.raises(SettingsError, match="PLAYBOOK_WEBHOOKS_SECRET"):
        load_connectors(store)
    (tmp_path / ".playbook").mkdir()
    (tmp_path / ".playbook" / "settings.toml").write_text(f'[webhooks]\nsecret = "{SECRET}"\n')
    assert isinstance(load_connectors(store).by_kind["webhook"], WebhookConnector)


def test_the_body_is_the_same_bytes_for_the_same_step():
    from connectors.webhooks import body

    assert body(call("http://x.test/h")) == body(call("http://x.test/h"))
    assert json.loads(body(call("http://x.test/h", event=None)))["type"] == "playbook.step"
