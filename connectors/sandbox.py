"""Sandbox mode: every message goes to one test inbox, one Slack channel, one webhook URL, marked.

A revenue team tries a play on real accounts without reaching a customer:

| setting | environment | `[sandbox]` key |
|---|---|---|
| the test inbox | `PLAYBOOK_SANDBOX_EMAIL` | `email` |
| the test channel | `PLAYBOOK_SANDBOX_SLACK_CHANNEL` | `slack_channel` |
| the test webhook receiver | `PLAYBOOK_SANDBOX_WEBHOOK_URL` | `webhook_url` |

Any of them set turns sandbox mode on. `load_connectors` (connectors/settings.py)
then wraps the connectors of the message kinds in `Sandboxed`, which rewrites
each action before any connector sees it:

- email: to the test inbox, subject `[sandbox] ...`, the body opening with
  the original recipient, and header `X-Playbook-Original-To`;
- notify: to the test channel (an `@owner` / `@route.NAME` channel is not
  resolved), the text opening with `[sandbox]` and the original channel;
- webhook: to the test URL, the payload carrying `sandbox: true` and the
  original URL.

A message kind served by a connector that leaves the machine (anything but
the built-in store and memory) with no sandbox target is refused when the
connectors are loaded, naming the setting: sandbox mode never lets one kind
through to real people. The idempotency key stays the step's, so a step sent
in sandbox mode is not sent again when the mode is switched off.
Tasks, deals and stages are not rewritten: point the CRM connector at a
sandbox portal instead.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError, field_validator
from pydantic_settings import SettingsConfigDict

from connectors import base as cb
from engine.settings import FileBackedSettings, SettingsError, settings_file, table_problems, table_source

ENV_PREFIX = "PLAYBOOK_SANDBOX_"
TABLE = "sandbox"
MARK = "[sandbox]"
ORIGINAL_TO = "X-Playbook-Original-To"
# Message kind -> the setting holding its sandbox target.
TARGETS = {"email": "email", "notify": "slack_channel", "webhook": "webhook_url"}


class SandboxSettings(FileBackedSettings):
    """`PLAYBOOK_SANDBOX_*` or the settings file's `[sandbox]` table; on when any is set."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)
    file_source = table_source(TABLE)

    email: str | None = None
    slack_channel: str | None = None
    webhook_url: str | None = None

    @field_validator("email", "slack_channel", "webhook_url")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return (value.strip() or None) if value is not None else None

    @field_validator("email")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and ("@" not in value or any(c in value for c in "\r\n ,<>")):
            raise ValueError("must be one plain address (inbox@example.com)")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value

    @property
    def on(self) -> bool:
        return any((self.email, self.slack_channel, self.webhook_url))

    def target(self, kind: str) -> str | None:
        setting = TARGETS.get(kind)
        return getattr(self, setting) if setting else None

    def describe(self) -> str:
        """For the worker's log: where each message kind goes."""
        from connectors.webhooks import shown

        url = shown(self.webhook_url) if self.webhook_url else None
        return (f"sandbox mode ON: email -> {self.email or '(not rewritten)'}, "
                f"notify -> {self.slack_channel or '(not rewritten)'}, webhook -> {url or '(not rewritten)'}")


def load_sandbox_settings() -> SandboxSettings:
    try:
        return SandboxSettings()
    except ValidationError as exc:
        raise SettingsError(table_problems(exc, ENV_PREFIX, TABLE)) from None


def rewrite(action: cb.Action, settings: SandboxSettings) -> cb.Action:
    """The action as sandbox mode sends it (unchanged when its kind has no target)."""
    match action:
        case cb.EmailMessage() if settings.email:
            return action.model_copy(update={
                "to": settings.email,
                "subject": f"{MARK} {action.subject}",
                "body": f"{MARK} This message was for {action.to}.\n\n{action.body}",
                "headers": {**action.headers, ORIGINAL_TO: action.to},
            })
        case cb.Notification() if settings.slack_channel:
            return action.model_copy(update={
                "channel": settings.slack_channel, "owner": None, "route": None,
                "message": f"{MARK} for {_channel(action)}: {action.message}",
            })
        case cb.WebhookCall() if settings.webhook_url:
            return action.model_copy(update={
                "url": settings.webhook_url,
                "payload": {**action.payload, "sandbox": True, "original_url": action.url},
            })
    return action


def _channel(note: cb.Notification) -> str:
    if note.owner:
        return f"{note.channel} ({note.owner})"
    if note.route:
        return f"{note.channel} ({note.route})"
    return note.channel


class Sandboxed:
    """A connector whose messages are rewritten by sandbox mode before it sees them."""

    def __init__(self, inner: cb.Connector, settings: SandboxSettings) -> None:
        self.inner, self.settings = inner, settings

    async def act(self, action: cb.Action) -> cb.Result:
        return await self.inner.act(rewrite(action, self.settings))


def check(chosen: Mapping[str, str], settings: SandboxSettings, local: frozenset[str]) -> None:
    """Refuse sandbox mode that would let a message kind reach real people unrewritten.

    `chosen`: connector name by kind; `local`: names that keep messages on this machine (store, memory).
    """
    if not settings.on:
        return
    missing = [kind for kind in TARGETS if chosen.get(kind) not in local and not settings.target(kind)]
    if missing:
        path, _ = settings_file()
        need = ", ".join(f"{ENV_PREFIX}{TARGETS[k].upper()} (for {k}, served by {chosen[k]})" for k in missing)
        raise SettingsError(f"sandbox mode is on but would let messages out: set {need}, or [{TABLE}] in {path}")


def apply(by_kind: Mapping[str, cb.Connector], settings: SandboxSettings) -> dict[str, cb.Connector]:
    """The message kinds' connectors wrapped in `Sandboxed` when sandbox mode is on (after `check`)."""
    if not settings.on:
        return dict(by_kind)
    return {kind: Sandboxed(c, settings) if kind in TARGETS else c for kind, c in by_kind.items()}


__all__ = ["MARK", "ORIGINAL_TO", "SandboxSettings", "Sandboxed", "apply", "check", "load_sandbox_settings", "rewrite"]
