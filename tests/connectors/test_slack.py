"""The Slack connector against WireMock answering Slack's shapes (ok:false at HTTP 200, 429 + Retry-After)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import sqlalchemy as sa

from connectors import base as cb
from connectors.settings import choose, load_connectors
from connectors.slack import SlackConnector, SlackSettings, load_slack_settings
from dsl import nodes as n
from engine import schema
from engine.settings import SettingsError
from engine.store import Store

pytestmark = pytest.mark.anyio
AT = dt.datetime(2026, 3, 9, 14, 0, tzinfo=dt.timezone.utc)
TOKEN = "xoxb-not-a-real-token-1234"
PATH = "/api/chat.postMessage"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store(tmp_path):
    st = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    yield st
    st.close()


def slack(wiremock, store, **settings: Any) -> SlackConnector:
    values: dict[str, Any] = {"bot_token": TOKEN, "base_url": wiremock.url + "/api/", "timeout": 1.0, **settings}
    return SlackConnector(SlackSettings(**values), store)


def note(channel: str = "#cs-expansion", key: str = "play:p:acme:h:1:s1", **extra: Any) -> cb.Notification:
    return cb.Notification(key=key, account_id="acme", actor="play:p", play="p", step="s1", requested_at=AT,
                           channel=channel, message="Acme is at 95% of its seats", **extra)


def answer(body: dict[str, Any], status: int = 200, **response: Any) -> dict[str, Any]:
    return {"status": status, "headers": {"Content-Type": "application/json; charset=utf-8"},
            "jsonBody": body, **response}


def stub(wiremock, response: dict[str, Any], **mapping: Any) -> None:
    """A stub for chat.postMessage; `mapping`: top-level WireMock fields (scenarioName, ...)."""
    wiremock.stub({"request": {"method": "POST", "url": PATH}, "response": response, **mapping})


def ok(ts: str = "1503435956.000247", channel: str = "C024BE91L") -> dict[str, Any]:
    return answer({"ok": True, "channel": channel, "ts": ts, "message": {"text": "x", "ts": ts}})


def outbox(store: Store) -> list[dict[str, Any]]:
    with store.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(schema.OutboxMessage.__table__)).mappings()]


def posted(wiremock) -> list[dict[str, Any]]:
    return [json.loads(r["body"]) for r in wiremock.requests() if r["url"] == PATH]


async def test_a_notification_is_posted_with_the_bot_token_and_recorded_sent_with_slacks_ts(wiremock, store):
    stub(wiremock, ok(ts="1700000000.000100"))
    result = await slack(wiremock, store).act(note())
    assert result.external_id == "1700000000.000100" and not result.duplicate
    [request] = wiremock.requests()
    assert request["headers"]["Authorization"] == f"Bearer {TOKEN}"
    body = json.loads(request["body"])
    assert body["channel"] == "#cs-expansion" and body["text"] == "Acme is at 95% of its seats"
    assert body["metadata"]["event_payload"]["idempotency_key"] == "play:p:acme:h:1:s1"
    [row] = outbox(store)
    assert (row["status"], row["provider_message_id"], row["channel"], row["recipient"], row["attempts"]) == (
        "sent", "1700000000.000100", "slack", "#cs-expansion", 1)


async def test_text_from_account_data_cannot_ping_the_channel_or_forge_a_link(wiremock, store):
    stub(wiremock, ok())
    message = "Acme <!channel> & <https://evil.test|your bank> is *hot*"
    await slack(wiremock, store).act(note().model_copy(update={"message": message}))
    assert posted(wiremock)[0]["text"] == ("Acme &lt;!channel&gt; &amp; &lt;https://evil.test|your bank&gt; "
                                           "is *hot*")


async def test_a_key_already_sent_is_not_posted_again(wiremock, store):
    stub(wiremock, ok(ts="1700000000.000100"))
    connector = slack(wiremock, store)
    await connector.act(note())
    again = await connector.act(note())
    assert again.duplicate and again.external_id == "1700000000.000100"
    assert len(posted(wiremock)) == 1
    other = await connector.act(note(key="play:p:acme:h:1:s2"))
    assert not other.duplicate and len(posted(wiremock)) == 2


@pytest.mark.parametrize("code", ["channel_not_found", "not_in_channel", "is_archived", "msg_too_long",
                                  "invalid_auth", "account_inactive"])
async def test_slack_refusals_are_permanent_and_name_the_channel_not_the_token(wiremock, store, code):
    stub(wiremock, answer({"ok": False, "error": code}))
    with pytest.raises(cb.PermanentError) as err:
        await slack(wiremock, store).act(note("#nowhere"))
    assert "#nowhere" in str(err.value) and code in str(err.value) and TOKEN not in str(err.value)
    [row] = outbox(store)
    assert row["status"] == "failed" and code in row["last_error"] and TOKEN not in row["last_error"]


@pytest.mark.parametrize("code", ["internal_error", "fatal_error", "service_unavailable"])
async def test_slack_side_faults_are_transient(wiremock, store, code):
    stub(wiremock, answer({"ok": False, "error": code}))
    with pytest.raises(cb.TransientError, match=code):
        await slack(wiremock, store).act(note())
    assert outbox(store)[0]["status"] == "pending"


async def test_a_429_is_transient_with_slacks_retry_after_then_the_retry_posts_once(wiremock, store):
    stub(wiremock, {**answer({"ok": False, "error": "ratelimited"}, 429), "headers": {"Retry-After": "7"}},
         scenarioName="limit", requiredScenarioState="Started", newScenarioState="open")
    stub(wiremock, ok(ts="1700000000.000200"), scenarioName="limit", requiredScenarioState="open")
    connector = slack(wiremock, store)
    with pytest.raises(cb.TransientError) as err:
        await connector.act(note())
    assert err.value.retry_after == 7.0
    result = await connector.act(note())  # what Temporal's retry does, after the 7 s
    assert result.external_id == "1700000000.000200" and not result.duplicate
    assert len(posted(wiremock)) == 2
    [row] = outbox(store)
    assert (row["status"], row["attempts"]) == ("sent", 2)


async def test_an_answer_that_is_not_slacks_json_is_permanent_and_names_the_base_url_setting(wiremock, store):
    stub(wiremock, {"status": 200, "headers": {"Content-Type": "text/html"}, "body": "<html>proxy</html>"})
    with pytest.raises(cb.PermanentError, match="not Slack's JSON.*PLAYBOOK_SLACK_BASE_URL"):
        await slack(wiremock, store).act(note())


async def test_a_slack_that_does_not_answer_in_time_is_a_transient_error(wiremock, store):
    stub(wiremock, {**ok(), "fixedDelayMilliseconds": 3000})
    with pytest.raises(cb.TransientError, match="#cs-expansion"):
        await slack(wiremock, store, timeout=1.0).act(note())
    assert outbox(store)[0]["status"] == "sending"  # Slack may have it: the retry looks first


async def test_after_a_timeout_the_retry_finds_the_message_slack_did_post(wiremock, store):
    stub(wiremock, {**ok(), "fixedDelayMilliseconds": 3000})
    history(wiremock, answer({"ok": True, "messages": [
        {"type": "message", "ts": "1700000000.000300",
         "metadata": {"event_type": "playbook_step", "event_payload": {"idempotency_key": "play:p:acme:h:1:s1"}}}]}))
    connector = slack(wiremock, store, timeout=1.0)
    with pytest.raises(cb.TransientError):
        await connector.act(note("C0CS"))
    again = await connector.act(note("C0CS"))
    assert again.duplicate and again.external_id == "1700000000.000300" and len(posted(wiremock)) == 1


async def test_a_connection_reset_is_a_transient_error(wiremock, store):
    stub(wiremock, {"fault": "CONNECTION_RESET_BY_PEER"})
    with pytest.raises(cb.TransientError, match="#cs-expansion"):
        await slack(wiremock, store).act(note())


async def test_an_unreachable_slack_is_a_transient_error(store):
    from peers import free_port

    settings = SlackSettings(bot_token=TOKEN, base_url=f"http://127.0.0.1:{free_port()}/api/", timeout=1.0)
    with pytest.raises(cb.TransientError):
        await SlackConnector(settings, store).act(note())


async def test_owner_and_route_channels_come_from_the_mappings(wiremock, store):
    stub(wiremock, ok())
    connector = slack(wiremock, store, owner_channels={"carol": "U0CAROL"},
                      route_channels={"high_touch": "#ae-team"})
    await connector.act(note("@owner", key="k1", owner="carol"))
    await connector.act(note("@route.touch", key="k2", route="high_touch"))
    assert [b["channel"] for b in posted(wiremock)] == ["U0CAROL", "#ae-team"]


async def test_a_route_qualified_target_wins_over_the_bare_target(wiremock, store):
    stub(wiremock, ok())
    connector = slack(wiremock, store, route_channels={"high_touch": "#any-high", "touch.high_touch": "#ae-team"})
    await connector.act(note("@route.touch", key="k1", route="high_touch"))
    await connector.act(note("@route.region", key="k2", route="high_touch"))
    assert [b["channel"] for b in posted(wiremock)] == ["#ae-team", "#any-high"]


async def test_an_unmapped_owner_goes_to_the_default_channel_or_fails_naming_the_owner(wiremock, store):
    stub(wiremock, ok())
    await slack(wiremock, store, default_channel="#cs").act(note("@owner", key="k1", owner="dave"))
    assert posted(wiremock)[0]["channel"] == "#cs"
    with pytest.raises(cb.PermanentError, match="owner 'dave'.*owner_channels"):
        await slack(wiremock, store).act(note("@owner", key="k2", owner="dave"))
    with pytest.raises(cb.PermanentError, match="route.touch target 'low_touch'"):
        await slack(wiremock, store).act(note("@route.touch", key="k3", route="low_touch"))
    assert len(posted(wiremock)) == 1


class FakeResolver:
    base = {"key": "k", "account_id": "acme", "actor": "play:p", "play": "p", "step": "s1", "requested_at": AT}
    plan_hash = "h"

    def __init__(self, owner: str | None, route: str | None) -> None:
        self._owner, self._route = owner, route
        self.asked: list[str] = []

    async def owner(self, what: str) -> str | None:
        return self._owner

    async def value(self, expr: n.Expr, what: str) -> Any:
        assert isinstance(expr, n.Ref)
        self.asked.append(expr.dotted)
        return self._route

    async def render(self, text: str, what: str, to: Any = None) -> str:
        return text


async def test_prepare_resolves_the_owner_and_route_target_only_when_the_channel_asks():
    r = FakeResolver("carol", "high_touch")
    owner = await cb.Notification.prepare(n.NotifyStep(channel="@owner", message="m"), r)  # type: ignore[arg-type]
    route = await cb.Notification.prepare(n.NotifyStep(channel="@route.touch", message="m"), r)  # type: ignore[arg-type]
    plain = await cb.Notification.prepare(n.NotifyStep(channel="#x", message="m"), r)  # type: ignore[arg-type]
    assert (owner.owner, owner.route) == ("carol", None)
    assert (route.owner, route.route) == (None, "high_touch")
    assert (plain.owner, plain.route) == (None, None) and r.asked == ["route.touch"]


def test_settings_come_from_the_environment_and_the_slack_table(tmp_path, monkeypatch):
    file = tmp_path / "settings.toml"
    file.write_text('[slack]\ndefault_channel = "#cs"\nroute_channels = { high_touch = "#ae" }\n')
    monkeypatch.setenv("PLAYBOOK_SETTINGS_FILE", str(file))
    monkeypatch.setenv("PLAYBOOK_SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("PLAYBOOK_SLACK_OWNER_CHANNELS", '{"carol": "U0CAROL"}')
    s = load_slack_settings()
    assert s.bot_token is not None and s.bot_token.get_secret_value() == TOKEN and TOKEN not in repr(s)
    assert (s.default_channel, s.route_channels, s.owner_channels) == ("#cs", {"high_touch": "#ae"},
                                                                       {"carol": "U0CAROL"})


def test_a_misspelt_slack_setting_is_refused_with_did_you_mean(tmp_path, monkeypatch):
    file = tmp_path / "settings.toml"
    file.write_text('[slack]\ndefault_chanel = "#cs"\n')
    monkeypatch.setenv("PLAYBOOK_SETTINGS_FILE", str(file))
    with pytest.raises(SettingsError, match="default_chanel.*did you mean 'default_channel'"):
        load_slack_settings()


def test_a_bad_value_is_refused_without_echoing_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PLAYBOOK_SLACK_TIMEOUT", "xoxb-secret-in-the-wrong-place")
    with pytest.raises(SettingsError) as err:
        load_slack_settings()
    assert "PLAYBOOK_SLACK_TIMEOUT" in str(err.value) and "xoxb-secret" not in str(err.value)


def test_notify_served_by_slack_is_chosen_by_settings_and_needs_a_token(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PLAYBOOK_CONNECTOR_NOTIFY", "slack")
    monkeypatch.delenv("PLAYBOOK_SLACK_BOT_TOKEN", raising=False)
    with pytest.raises(SettingsError, match="PLAYBOOK_SLACK_BOT_TOKEN"):
        choose()  # what the worker runs before it connects
    with pytest.raises(SettingsError, match="PLAYBOOK_SLACK_BOT_TOKEN"):
        load_connectors(store)
    monkeypatch.setenv("PLAYBOOK_SLACK_BOT_TOKEN", TOKEN)
    connectors = load_connectors(store)
    assert isinstance(connectors.by_kind["notify"], SlackConnector)
    assert type(connectors.by_kind["email"]).__name__ == "StoreConnector"


HISTORY = "/api/conversations.history"


def died_mid_send(store: Store, key: str = "play:p:acme:h:1:s1", channel: str = "C0CS") -> None:
    """The outbox as an attempt leaves it when its worker is killed after claiming, before recording."""
    from engine import outbox as ledger

    with store.begin() as conn:
        ledger.claim(conn, key=key, channel="slack", recipient=channel, body="m", at=AT)


def history(wiremock, response: dict[str, Any]) -> None:
    wiremock.stub({"request": {"method": "GET", "urlPath": HISTORY}, "response": response})


async def test_after_a_dead_attempt_a_message_already_in_the_channel_is_recorded_not_posted_again(wiremock, store):
    died_mid_send(store)
    stub(wiremock, ok())
    history(wiremock, answer({"ok": True, "messages": [
        {"type": "message", "ts": "1700000000.000900", "text": "other"},
        {"type": "message", "ts": "1700000000.000500", "text": "Acme is at 95% of its seats",
         "metadata": {"event_type": "playbook_step",
                      "event_payload": {"idempotency_key": "play:p:acme:h:1:s1"}}}]}))
    result = await slack(wiremock, store).act(note("C0CS"))
    assert result.duplicate and result.external_id == "1700000000.000500"
    assert posted(wiremock) == []
    [look] = [r for r in wiremock.requests() if r["url"].startswith(HISTORY)]
    assert "channel=C0CS" in look["url"] and "include_all_metadata" in look["url"]
    [row] = outbox(store)
    assert (row["status"], row["provider_message_id"]) == ("sent", "1700000000.000500")


async def test_after_a_dead_attempt_whose_message_never_arrived_it_is_posted(wiremock, store):
    died_mid_send(store)
    stub(wiremock, ok(ts="1700000000.000700"))
    history(wiremock, answer({"ok": True, "messages": [
        {"type": "message", "ts": "1.1", "metadata": {"event_type": "playbook_step",
                                                      "event_payload": {"idempotency_key": "another-key"}}}]}))
    result = await slack(wiremock, store).act(note("C0CS"))
    assert not result.duplicate and result.external_id == "1700000000.000700" and len(posted(wiremock)) == 1


async def test_when_slack_cannot_show_the_history_the_message_is_posted_again(wiremock, store, caplog):
    died_mid_send(store)
    stub(wiremock, ok())
    history(wiremock, answer({"ok": False, "error": "missing_scope"}))
    result = await slack(wiremock, store).act(note("C0CS"))
    assert not result.duplicate and len(posted(wiremock)) == 1
    assert "missing_scope" in caplog.text and TOKEN not in caplog.text


async def test_a_first_attempt_does_not_look_in_the_history(wiremock, store):
    stub(wiremock, ok())
    await slack(wiremock, store).act(note("C0CS"))
    assert [r["url"] for r in wiremock.requests()] == [PATH]
