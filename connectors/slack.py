"""Slack: a `notify` step as `chat.postMessage`, through slack-sdk's AsyncWebClient.

Which channel (docs/connectors.md#slack): the step's channel is either a
literal Slack channel (`#cs-expansion`, a channel id `C0123`, a user id
`U0123` for a DM) or one of two names resolved per account:

- `@owner`: the play owner's channel, from `owner_channels` (user id in
  the store -> Slack channel or member id);
- `@route.NAME`: the channel of the account's target of route NAME, from
  `route_channels` (`touch.high_touch` or `high_touch` -> `#ae-team`).

An owner or route target with no entry goes to `default_channel`; with no
default either, the step fails (PermanentError naming the owner or target).

Slack has no idempotency key, so the outbox is the ledger (engine/outbox.py):
the key is recorded `sending` before the call and `sent` with Slack's `ts`
after it; a key already sent is answered `duplicate=True` without a call.
The key also travels in the message's metadata (`event_type`
`playbook_step`): when an attempt died between posting and recording
(the row still `sending`), the retry first looks for the key among the
channel's latest messages (conversations.history) and records that message
instead of posting again. That needs a channel id and the history scope;
without them Slack cannot answer and the message is posted again.

Errors: Slack answers most of them as HTTP 200 with `ok: false`. Rate limits
(429 with Retry-After, `ratelimited`) and Slack-side faults
(`internal_error`, `fatal_error`, `service_unavailable`, ...) are
TransientError; everything else (`channel_not_found`, `not_in_channel`,
`invalid_auth`, `is_archived`, `msg_too_long`, ...) is PermanentError naming
the channel and Slack's error code, never the token.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import aiohttp
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import SettingsConfigDict
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.engine import Connection

from connectors import base as cb
from connectors.http import retry_after
from connectors.ledger import in_ledger
from engine import outbox
from engine.settings import FileBackedSettings, SettingsError, settings_file, table_source
from engine.store import Store

T = TypeVar("T")
ENV_PREFIX = "PLAYBOOK_SLACK_"
TABLE = "slack"
OWNER = "@owner"
ROUTE = "@route."
EVENT_TYPE = "playbook_step"  # the metadata every message carries, with its idempotency key
HISTORY = 200  # latest messages searched for an earlier post after a dead attempt
log = logging.getLogger("playbook.slack")
# Slack's own faults and throttling: the same call can succeed later.
TRANSIENT = frozenset({"ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable",
                       "request_timeout"})
HINTS = {
    "channel_not_found": "no such channel, or the bot cannot see it",
    "not_in_channel": "invite the bot to the channel",
    "is_archived": "the channel is archived",
    "invalid_auth": f"check {ENV_PREFIX}BOT_TOKEN",
    "not_authed": f"set {ENV_PREFIX}BOT_TOKEN",
    "account_inactive": f"the token's user or app was deactivated; check {ENV_PREFIX}BOT_TOKEN",
    "token_revoked": f"the token was revoked; set a new {ENV_PREFIX}BOT_TOKEN",
    "missing_scope": "the app needs the chat:write scope",
    "msg_too_long": "the message is longer than Slack allows",
    "no_text": "the message is empty",
}


class SlackSettings(FileBackedSettings):
    """`PLAYBOOK_SLACK_*` or the settings file's `[slack]` table."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)
    file_source = table_source(TABLE)

    bot_token: SecretStr | None = None
    base_url: str = "https://slack.com/api/"
    default_channel: str | None = None
    route_channels: dict[str, str] = Field(default_factory=dict)  # route target -> channel
    owner_channels: dict[str, str] = Field(default_factory=dict)  # user id -> channel or member id
    timeout: float = Field(default=10.0, gt=0)


def load_slack_settings() -> SlackSettings:
    try:
        return SlackSettings()
    except ValidationError as exc:
        path, _ = settings_file()
        # loc and msg only: the input may be the token.
        raise SettingsError("; ".join(
            f"{ENV_PREFIX}{'_'.join(map(str, e['loc'])).upper()} or [{TABLE}] in {path}: {e['msg']}"
            for e in exc.errors())) from None


def checked_settings() -> SlackSettings:
    """The settings, refused when there is no bot token (run when `slack` is chosen, before anything starts)."""
    settings = load_slack_settings()
    if settings.bot_token is None or not settings.bot_token.get_secret_value().strip():
        path, _ = settings_file()
        raise SettingsError(f"the slack connector needs a bot token: {ENV_PREFIX}BOT_TOKEN or "
                            f"bot_token in [{TABLE}] of {path}")
    return settings


class SlackConnector:
    """`notify` steps as Slack messages, once per idempotency key (the outbox is the ledger)."""

    def __init__(self, settings: SlackSettings, store: Store, *, client: AsyncWebClient | None = None) -> None:
        if settings.bot_token is None and client is None:
            path, _ = settings_file()
            raise SettingsError(f"the slack connector needs a bot token: {ENV_PREFIX}BOT_TOKEN or "
                                f"bot_token in [{TABLE}] of {path}")
        self.settings, self.store = settings, store
        token = settings.bot_token.get_secret_value() if settings.bot_token else None
        # No SDK retries: Temporal's retry policy retries, with Slack's Retry-After (one place decides).
        self.client = client or AsyncWebClient(token=token, base_url=settings.base_url,
                                               timeout=max(1, round(settings.timeout)), retry_handlers=[])

    def channel(self, note: cb.Notification) -> str:
        """The Slack channel a notification goes to (see the module docstring)."""
        s = self.settings
        if note.channel == OWNER:
            found = s.owner_channels.get(note.owner or "")
            what = f"owner {note.owner!r}" if note.owner else "a play with no owner"
            setting = "owner_channels"
        elif note.channel.startswith(ROUTE):
            # `touch.high_touch` (one route's target) before `high_touch` (that target of any route).
            name = note.channel.removeprefix(ROUTE)
            found = s.route_channels.get(f"{name}.{note.route}") or s.route_channels.get(note.route or "")
            what = f"{note.channel[1:]} target {note.route!r}" if note.route else f"{note.channel[1:]} (no target)"
            setting = "route_channels"
        else:
            return note.channel
        if found:
            return found
        if s.default_channel:
            return s.default_channel
        raise cb.PermanentError(f"slack: no channel for {what}: add it to {setting} ({ENV_PREFIX}"
                                f"{setting.upper()} or [{TABLE}]) or set default_channel")

    async def act(self, action: cb.Action) -> cb.Result:
        if not isinstance(action, cb.Notification):
            raise cb.PermanentError(f"the slack connector sends notify steps, not {action.kind!r}")
        return await self.post(action)

    async def post(self, note: cb.Notification) -> cb.NotifyResult:
        channel = self.channel(note)
        claim = await self._ledger(lambda c: outbox.claim(
            c, key=note.key, channel="slack", recipient=channel, body=note.message, account_id=note.account_id,
            play=note.play, at=note.requested_at))
        if claim.sent:
            return cb.NotifyResult(key=note.key, duplicate=True, external_id=claim.provider_message_id)
        if claim.cancelled:
            return cb.NotifyResult(key=note.key, duplicate=True)
        if claim.resumed:  # an attempt died after claiming: did its message reach Slack?
            ts = await self.earlier_post(channel, note.key)
            if ts is not None:
                await self._ledger(lambda c: outbox.mark_sent(c, note.key, provider_message_id=ts,
                                                              at=dt.datetime.now(dt.timezone.utc)))
                return cb.NotifyResult(key=note.key, duplicate=True, external_id=ts)
        try:
            answer = await self.client.chat_postMessage(
                channel=channel, text=escape(note.message),
                metadata={"event_type": EVENT_TYPE,
                          "event_payload": {"idempotency_key": note.key, "play": note.play,
                                            "account_id": note.account_id}})
        except SlackApiError as exc:
            raise await self._failed(note.key, api_error(exc, channel)) from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            reason = type(exc).__name__ if isinstance(exc, asyncio.TimeoutError) else f"{type(exc).__name__}: {exc}"
            error = cb.TransientError(f"slack: posting to {channel}: {reason}")
            if isinstance(exc, aiohttp.ClientConnectorError):  # never connected: Slack has nothing
                raise await self._failed(note.key, error) from None
            # No answer: Slack may have posted it; the retry looks in the channel first.
            await self._ledger(lambda c: outbox.mark_unknown(c, note.key, str(error)))
            raise error from None
        ts = str(answer.get("ts") or "") or None
        await self._ledger(lambda c: outbox.mark_sent(c, note.key, provider_message_id=ts,
                                                      at=dt.datetime.now(dt.timezone.utc)))
        return cb.NotifyResult(key=note.key, external_id=ts)

    async def earlier_post(self, channel: str, key: str) -> str | None:
        """The ts of a message posted under `key` among the channel's latest, found by its metadata.

        Needs the `channels:history` (or `groups:history`, `im:history`) scope and a channel
        id (C..., D...): conversations.history takes no `#name`. When Slack cannot answer, None:
        the message is posted again (at least once rather than never)."""
        try:
            page = await self.client.conversations_history(channel=channel, limit=HISTORY, include_all_metadata=True)
        except SlackApiError as exc:
            data = getattr(exc.response, "data", None)
            code = data.get("error") if isinstance(data, dict) else None
            log.warning("slack: cannot look in %s for an earlier post of %s (%s): posting again", channel, key,
                        code or "no answer")
            return None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            log.warning("slack: cannot look in %s for an earlier post of %s (%s): posting again", channel, key,
                        type(exc).__name__)
            return None
        for message in page.get("messages") or []:
            meta = message.get("metadata") or {}
            if meta.get("event_type") == EVENT_TYPE and (meta.get("event_payload") or {}).get("idempotency_key") == key:
                return str(message.get("ts") or "") or None
        return None

    async def _failed(self, key: str, error: cb.ConnectorError) -> cb.ConnectorError:
        await self._ledger(lambda c: outbox.mark_failed(c, key, str(error), permanent=not error.retryable))
        return error

    async def _ledger(self, work: Callable[[Connection], T]) -> T:
        return await in_ledger(self.store, work, "slack")


def escape(text: str) -> str:
    """Slack's control characters escaped (api.slack.com/reference/surfaces/formatting#escaping): text
    rendered from account data cannot ping `<!channel>` or forge a link; *bold* and _italic_ still work."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def api_error(exc: SlackApiError, channel: str) -> cb.ConnectorError:
    """Slack's answer as a connector error: throttling and Slack's faults retryable, the rest not."""
    response: Any = exc.response
    status = int(getattr(response, "status_code", 200) or 200)
    data = getattr(response, "data", None)
    code = str(data.get("error") or "") if isinstance(data, dict) else ""
    headers = dict(getattr(response, "headers", None) or {})
    where = f"slack: posting to {channel}"
    if status == 429 or code in ("ratelimited", "rate_limited"):
        return cb.TransientError(f"{where}: rate limited", retry_after=retry_after(headers))
    if code in TRANSIENT or status >= 500:
        return cb.TransientError(f"{where}: {code or f'HTTP {status}'}", retry_after=retry_after(headers))
    if not code and status < 300:
        return cb.PermanentError(f"{where}: the answer is not Slack's JSON (check {ENV_PREFIX}BASE_URL)")
    hint = HINTS.get(code)
    return cb.PermanentError(f"{where}: {code or f'HTTP {status}'}" + (f" ({hint})" if hint else ""))


def build(store: Store | None) -> SlackConnector:
    if store is None:
        raise SettingsError("the slack connector needs a store for its outbox ledger (--db or PLAYBOOK_DATABASE_URL)")
    return SlackConnector(checked_settings(), store)


__all__ = ["SlackConnector", "SlackSettings", "api_error", "escape", "build", "checked_settings", "load_slack_settings"]
