"""Sandbox mode: every message to one inbox, channel or URL, marked, before any connector sees it."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest
import sqlalchemy as sa
from standardwebhooks import Webhook

from connectors import base as cb
from connectors.memory import MemoryConnector
from connectors.sandbox import MARK, ORIGINAL_TO, SandboxSettings, Sandboxed, load_sandbox_settings, rewrite
from connectors.settings import load_connectors
from engine import schema
from engine.settings import SettingsError
from engine.store import Store

pytestmark = pytest.mark.anyio
AT = dt.datetime(2026, 3, 9, 14, 0, tzinfo=dt.timezone.utc)
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
MODE = SandboxSettings(email="qa@ours.test", slack_channel="#playbook-sandbox", webhook_url="http://127.0.0.1:9/sb")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store(tmp_path):
    st = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    yield st
    st.close()


@pytest.fixture
def clean(tmp_path, monkeypatch):
    """No settings file, no sandbox or connector settings from the caller's environment."""
    monkeypatch.chdir(tmp_path)
    import os

    for name in list(os.environ):
        if name.startswith(("PLAYBOOK_SANDBOX_", "PLAYBOOK_CONNECTOR_", "PLAYBOOK_SLACK_", "PLAYBOOK_WEBHOOKS_")):
            monkeypatch.delenv(name)
    monkeypatch.delenv("PLAYBOOK_SETTINGS_FILE", raising=False)
    return monkeypatch


def base(key: str = "play:p:acme:h:1:s1") -> dict[str, Any]:
    return {"key": key, "account_id": "acme", "actor": "play:p", "play": "p", "step": "s1", "requested_at": AT}


def email(**extra: Any) -> cb.EmailMessage:
    return cb.EmailMessage(**base(), to="ada@customer.test", subject="Your usage", body="Hi Ada", template="t",
                           **extra)


def note(channel: str = "#cs-expansion", **extra: Any) -> cb.Notification:
    return cb.Notification(**base(), channel=channel, message="Acme is at 95%", **extra)


def hook(url: str = "https://customer.test/hook") -> cb.WebhookCall:
    return cb.WebhookCall(**base(), url=url, event="usage.limit", payload={"account_id": "acme"})


def test_an_email_goes_to_the_test_inbox_marked_and_naming_its_recipient():
    sent = rewrite(email(), MODE)
    assert isinstance(sent, cb.EmailMessage)
    assert sent.to == "qa@ours.test" and sent.subject == f"{MARK} Your usage"
    assert "ada@customer.test" in sent.body.splitlines()[0] and sent.body.endswith("Hi Ada")
    assert sent.headers == {ORIGINAL_TO: "ada@customer.test"} and sent.key == email().key


def test_a_notification_goes_to_the_test_channel_marked_with_the_channel_it_was_for():
    sent = rewrite(note("@owner", owner="carol"), MODE)
    assert isinstance(sent, cb.Notification)
    assert (sent.channel, sent.owner, sent.route) == ("#playbook-sandbox", None, None)
    assert sent.message == f"{MARK} for @owner (carol): Acme is at 95%"


def test_a_webhook_goes_to_the_test_url_with_its_original_url_in_the_payload():
    sent = rewrite(hook(), MODE)
    assert isinstance(sent, cb.WebhookCall)
    assert sent.url == "http://127.0.0.1:9/sb"
    assert sent.payload == {"account_id": "acme", "sandbox": True, "original_url": "https://customer.test/hook"}


def test_other_kinds_and_kinds_without_a_target_are_left_alone():
    task = cb.NewTask(**base(), assignee="carol", title="Call")
    assert rewrite(task, MODE) is task
    only_email = SandboxSettings(email="qa@ours.test")
    assert rewrite(note(), only_email) == note()


async def test_the_wrapped_connector_only_ever_sees_the_rewritten_message():
    inner = MemoryConnector()
    await Sandboxed(inner, MODE).act(email())
    [seen] = inner.effects
    assert isinstance(seen, cb.EmailMessage) and seen.to == "qa@ours.test"


async def test_with_the_built_in_store_the_outbox_holds_the_sandbox_recipient(store, clean):
    clean.setenv("PLAYBOOK_SANDBOX_EMAIL", "qa@ours.test")
    connectors = load_connectors(store)
    await connectors.act(email())
    await connectors.act(cb.Notification(**base("k2"), channel="#cs", message="m"))
    with store.connect() as conn:
        rows = {r.channel: r for r in conn.execute(sa.select(schema.OutboxMessage.__table__))}
    assert rows["email"].recipient == "qa@ours.test" and rows["email"].subject.startswith(MARK)
    assert rows["notify"].recipient == "#cs"  # no slack_channel set: a local connector keeps it as written


def test_sandbox_mode_refuses_to_start_when_an_outbound_kind_has_no_target(store, clean):
    clean.setenv("PLAYBOOK_SANDBOX_EMAIL", "qa@ours.test")
    clean.setenv("PLAYBOOK_CONNECTOR_NOTIFY", "slack")
    clean.setenv("PLAYBOOK_SLACK_BOT_TOKEN", "xoxb-test")
    with pytest.raises(SettingsError, match="PLAYBOOK_SANDBOX_SLACK_CHANNEL \\(for notify, served by slack\\)"):
        load_connectors(store)
    clean.setenv("PLAYBOOK_SANDBOX_SLACK_CHANNEL", "#sb")
    assert isinstance(load_connectors(store).by_kind["notify"], Sandboxed)


def test_without_sandbox_settings_nothing_is_wrapped(store, clean):
    assert not load_sandbox_settings().on
    assert not any(isinstance(c, Sandboxed) for c in load_connectors(store).by_kind.values())


def test_the_sandbox_table_of_the_settings_file_turns_it_on(clean, tmp_path):
    (tmp_path / ".playbook").mkdir()
    (tmp_path / ".playbook" / "settings.toml").write_text('[sandbox]\nslack_channel = "#sb"\n')
    mode = load_sandbox_settings()
    assert mode.on and mode.slack_channel == "#sb" and "sandbox mode ON" in mode.describe()


@pytest.mark.parametrize("name, value, problem", [("EMAIL", "qa@ours.test, boss@customer.test", "one plain address"),
                                                  ("EMAIL", "nobody", "one plain address"),
                                                  ("WEBHOOK_URL", "ftp://x", "http\\(s\\) URL")])
def test_a_bad_sandbox_target_is_refused(clean, name, value, problem):
    clean.setenv(f"PLAYBOOK_SANDBOX_{name}", value)
    with pytest.raises(SettingsError, match=f"PLAYBOOK_SANDBOX_{name}.*{problem}"):
        load_sandbox_settings()


async def test_slack_and_webhooks_in_sandbox_mode_reach_only_the_sandbox_targets(store, clean, wiremock):
    clean.setenv("PLAYBOOK_CONNECTOR_NOTIFY", "slack")
    clean.setenv("PLAYBOOK_CONNECTOR_WEBHOOK", "webhooks")
    clean.setenv("PLAYBOOK_SLACK_BOT_TOKEN", "xoxb-test")
    clean.setenv("PLAYBOOK_SLACK_BASE_URL", wiremock.url + "/api/")
    clean.setenv("PLAYBOOK_WEBHOOKS_SECRET", SECRET)
    clean.setenv("PLAYBOOK_SANDBOX_SLACK_CHANNEL", "#playbook-sandbox")
    clean.setenv("PLAYBOOK_SANDBOX_WEBHOOK_URL", wiremock.url + "/sandbox-hook")
    clean.setenv("PLAYBOOK_SANDBOX_EMAIL", "qa@ours.test")
    wiremock.stub({"request": {"method": "POST", "url": "/api/chat.postMessage"},
                   "response": {"status": 200, "headers": {"Content-Type": "application/json"},
                                "jsonBody": {"ok": True, "channel": "C1", "ts": "1.2"}}})
    wiremock.stub({"request": {"method": "POST", "url": "/sandbox-hook"}, "response": {"status": 200}})
    connectors = load_connectors(store)
    await connectors.act(cb.Notification(**base("n1"), channel="#customers-channel", message="hello"))
    await connectors.act(cb.WebhookCall(**base("w1"), url=wiremock.url + "/customer-hook", event="e",
                                        payload={"account_id": "acme"}))
    got = {r["url"]: r for r in wiremock.requests()}
    assert set(got) == {"/api/chat.postMessage", "/sandbox-hook"}
    slack = json.loads(got["/api/chat.postMessage"]["body"])
    assert slack["channel"] == "#playbook-sandbox" and slack["text"] == f"{MARK} for #customers-channel: hello"
    data = Webhook(SECRET).verify(got["/sandbox-hook"]["body"], got["/sandbox-hook"]["headers"])
    assert data["data"]["sandbox"] is True and data["data"]["original_url"].endswith("/customer-hook")


async def test_an_email_over_smtp_in_sandbox_mode_arrives_only_at_the_test_inbox_with_its_original_recipient(
        store, clean):
    from peers import smtp_server

    with smtp_server() as (peer, port):
        clean.setenv("PLAYBOOK_CONNECTOR_EMAIL", "smtp")
        clean.setenv("PLAYBOOK_SMTP_HOST", "127.0.0.1")
        clean.setenv("PLAYBOOK_SMTP_PORT", str(port))
        clean.setenv("PLAYBOOK_SMTP_SECURITY", "none")
        clean.setenv("PLAYBOOK_EMAIL_FROM_ADDRESS", "Acme <cs@acme.test>")
        with pytest.raises(SettingsError, match="PLAYBOOK_SANDBOX_EMAIL \\(for email, served by smtp\\)"):
            clean.setenv("PLAYBOOK_SANDBOX_SLACK_CHANNEL", "#sb")  # sandbox on, but no inbox for email
            load_connectors(store)
        clean.setenv("PLAYBOOK_SANDBOX_EMAIL", "qa@ours.test")
        await load_connectors(store).act(email())
    [msg] = peer.messages
    assert peer.envelopes == [("cs@acme.test", ["qa@ours.test"])]
    assert msg["To"] == "qa@ours.test" and msg["Subject"] == f"{MARK} Your usage"
    assert msg[ORIGINAL_TO] == "ada@customer.test" and "ada@customer.test" in msg.get_content()
