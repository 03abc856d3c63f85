"""Email over Postmark's HTTP API against WireMock answering in Postmark's documented shapes."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import sqlalchemy as sa

from connectors import base as cb
from connectors import mail
from connectors.postmark import PostmarkConnector, PostmarkSettings
from connectors.settings import choose, load_connectors
from engine import schema
from engine.settings import SettingsError
from engine.store import Store

pytestmark = pytest.mark.anyio
AT = dt.datetime(2026, 3, 9, 14, 0, tzinfo=dt.timezone.utc)
KEY = "play:usage_limit:acme:h1:e1:day1"
TOKEN = "pm-server-token-never-shown"
SENDER = "Acme Success <cs@acme.test>"
# A request Postmark's /email accepts: the token header and the fields we rely on (else WireMock answers 404).
REQUEST = {
    "method": "POST", "url": "/email",
    "headers": {"X-Postmark-Server-Token": {"equalTo": TOKEN}, "Accept": {"equalTo": "application/json"}},
    "bodyPatterns": [{"matchesJsonPath": f"$.{field}"} for field in ("From", "To", "Subject", "TextBody",
                                                                     "MessageStream", "Headers")],
}
OK = {"To": "ada@customer.test", "SubmittedAt": "2026-03-09T10:00:01.4178645-04:00",
      "MessageID": "0a129aee-e1cd-480d-b08d-4f48548ff48d", "ErrorCode": 0, "Message": "OK"}
INACTIVE = {"ErrorCode": 406, "Message": "You tried to send to recipient(s) that have been marked as inactive. "
            "Found inactive addresses: ada@customer.test. Inactive recipients are ones that have generated a "
            "hard bounce, a spam complaint, or a manual suppression."}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store(tmp_path):
    st = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    yield st
    st.close()


def postmark(wiremock, store: Store, **settings: Any) -> PostmarkConnector:
    values: dict[str, Any] = {"server_token": TOKEN, "base_url": wiremock.url, "timeout": 1.0, **settings}
    return PostmarkConnector(store, PostmarkSettings(**values), mail.MailSettings(
        from_address=SENDER, message_id_domain="mail.acme.test", unsubscribe_mailto="unsubscribe@acme.test"))


def email(key: str = KEY, **extra: Any) -> cb.EmailMessage:
    fields: dict[str, Any] = {
        "key": key, "account_id": "acme", "actor": "play:usage_limit", "play": "usage_limit", "step": "day1",
        "requested_at": AT, "to": "ada@customer.test", "subject": "Your usage at 85%",
        "body": "Hi Ada,\n\nYou use 85%.\n", "template": "usage_alert", "unsubscribe_url": "https://acme.test/u/abc",
        **extra}
    return cb.EmailMessage(**fields)


def stub(wiremock, status: int, body: dict[str, Any] | None = None, **response: Any) -> None:
    answer: dict[str, Any] = {"status": status, "headers": {"Content-Type": "application/json"}, **response}
    if body is not None:
        answer["jsonBody"] = body
    wiremock.stub({"request": REQUEST, "response": answer})


def sent(wiremock) -> list[dict[str, Any]]:
    return [json.loads(r["body"]) for r in wiremock.requests() if r["url"] == "/email"]


def outbox(store: Store) -> list[dict[str, Any]]:
    with store.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(schema.OutboxMessage.__table__)).mappings()]


async def test_the_email_is_posted_in_postmarks_shape_with_our_message_id_and_unsubscribe_headers(wiremock, store):
    stub(wiremock, 200, OK)
    result = await postmark(wiremock, store).act(email())
    [body] = sent(wiremock)
    assert (body["From"], body["To"], body["Subject"], body["MessageStream"], body["Tag"]) == (
        SENDER, "ada@customer.test", "Your usage at 85%", "outbound", "usage_limit")
    assert body["TextBody"] == "Hi Ada,\n\nYou use 85%.\n"
    headers = {h["Name"]: h["Value"] for h in body["Headers"]}
    assert headers["Message-ID"] == mail.message_id(KEY, "mail.acme.test") == result.external_id
    assert headers["List-Unsubscribe"].startswith("<https://acme.test/u/abc>")
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert not {"From", "To", "Subject", "Date", "Content-Type"} & set(headers)
    [row] = outbox(store)
    assert (row["status"], row["provider_message_id"]) == ("sent", result.external_id)


async def test_a_key_already_sent_is_not_posted_again(wiremock, store):
    stub(wiremock, 200, OK)
    connector = postmark(wiremock, store)
    first = await connector.act(email())
    again = await connector.act(email())
    assert again.duplicate and again.external_id == first.external_id and len(sent(wiremock)) == 1


async def test_an_inactive_recipient_is_a_hard_bounce(wiremock, store):
    stub(wiremock, 422, INACTIVE)
    with pytest.raises(cb.Bounced) as err:
        await postmark(wiremock, store).act(email())
    assert err.value.recipient == "ada@customer.test" and err.value.code == 406
    assert "marked as inactive" in err.value.reply and outbox(store)[0]["status"] == "failed"


async def test_other_422_error_codes_are_permanent_with_postmarks_code_and_message(wiremock, store):
    stub(wiremock, 422, {"ErrorCode": 300, "Message": "Invalid 'To' address: 'ada@customer'."})
    with pytest.raises(cb.PermanentError, match="ErrorCode 300: Invalid 'To' address") as err:
        await postmark(wiremock, store).act(email())
    assert not isinstance(err.value, cb.Bounced)


async def test_a_refused_token_names_the_setting_never_the_token(wiremock, store):
    wiremock.stub({"request": {"method": "POST", "url": "/email"},
                   "response": {"status": 401, "headers": {"Content-Type": "application/json"},
                                "jsonBody": {"ErrorCode": 10, "Message": "The Server Token you provided in the "
                                             "X-Postmark-Server-Token request header was invalid."}}})
    with pytest.raises(cb.PermanentError, match="PLAYBOOK_POSTMARK_SERVER_TOKEN") as err:
        await postmark(wiremock, store, server_token="wrong-token-never-shown").act(email())
    assert "wrong-token-never-shown" not in str(err.value) and "wrong-token" not in outbox(store)[0]["last_error"]


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_rate_limits_and_server_faults_are_transient_honouring_retry_after(wiremock, store, status):
    stub(wiremock, status, {"ErrorCode": 429 if status == 429 else 0, "Message": "slow down"},
         **{"headers": {"Content-Type": "application/json", "Retry-After": "12"}})
    with pytest.raises(cb.TransientError) as err:
        await postmark(wiremock, store).act(email())
    assert err.value.retry_after == 12.0 and outbox(store)[0]["status"] == "pending"


async def test_a_retry_after_a_429_sends_once_more_and_then_never_again(wiremock, store):
    wiremock.stub({"request": REQUEST, "scenarioName": "s", "requiredScenarioState": "Started",
                   "newScenarioState": "ok", "response": {"status": 429, "headers": {"Retry-After": "1"}}})
    wiremock.stub({"request": REQUEST, "scenarioName": "s", "requiredScenarioState": "ok",
                   "response": {"status": 200, "headers": {"Content-Type": "application/json"}, "jsonBody": OK}})
    connector = postmark(wiremock, store)
    with pytest.raises(cb.TransientError):
        await connector.act(email())
    await connector.act(email())
    assert (await connector.act(email())).duplicate
    assert len(sent(wiremock)) == 2 and outbox(store)[0]["attempts"] == 2


async def test_no_answer_within_the_timeout_is_transient(wiremock, store):
    stub(wiremock, 200, OK, fixedDelayMilliseconds=3000)
    with pytest.raises(cb.TransientError, match="no answer within 1 s"):
        await postmark(wiremock, store, timeout=1.0).act(email())


async def test_a_connection_reset_is_transient(wiremock, store):
    wiremock.stub({"request": REQUEST, "response": {"fault": "CONNECTION_RESET_BY_PEER"}})
    with pytest.raises(cb.TransientError):
        await postmark(wiremock, store).act(email())


async def test_header_injection_is_refused_before_any_request(wiremock, store):
    stub(wiremock, 200, OK)
    with pytest.raises(cb.PermanentError, match="header injection refused: Subject"):
        await postmark(wiremock, store).act(email(subject="Hi\r\nBcc: eve@evil.test"))
    assert sent(wiremock) == []


def test_postmark_is_chosen_by_settings_and_refused_without_a_token(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PLAYBOOK_CONNECTOR_EMAIL", "postmark")
    monkeypatch.setenv("PLAYBOOK_EMAIL_FROM_ADDRESS", SENDER)
    monkeypatch.delenv("PLAYBOOK_POSTMARK_SERVER_TOKEN", raising=False)
    with pytest.raises(SettingsError, match="PLAYBOOK_POSTMARK_SERVER_TOKEN"):
        choose()
    monkeypatch.setenv("PLAYBOOK_POSTMARK_SERVER_TOKEN", TOKEN)
    assert isinstance(load_connectors(store).by_kind["email"], PostmarkConnector)
