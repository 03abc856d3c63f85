"""Inbound events from providers, before they are mapped to an account: the shape every
inbound format (connectors/inbound_*.py) parses into, the refusal they raise, and the
settings of `playbook serve` and the IMAP reader.

A provider module verifies a request (signature, token, basic auth) and turns it
into `Incoming` events that say *how* to find the account (an account id, an
address, a CRM deal, the Message-IDs a reply refers to); workflows/inbound.py
finds it in the store, records the event and signals the plays. Nothing here
touches the store or Temporal.

Settings (`PLAYBOOK_SERVE_<NAME>` or the `[serve]` table of the settings file,
engine/settings.py; secrets are SecretStr and never printed):

| setting | default | what |
|---|---|---|
| `host`, `port` | `127.0.0.1`, `8787` | where `playbook serve` listens |
| `public_url` | (the request's own URL) | the address providers and recipients reach serve at: unsubscribe links, the URI HubSpot signs |
| `webhook_secret` | none: endpoint off | Standard Webhooks secret (`whsec_...`) of `/events` |
| `hubspot_client_secret` | none: endpoint off | the HubSpot app's client secret (v3 signatures) of `/hubspot` |
| `hubspot_stages` | `closedwon`, `closedlost` | HubSpot deal stage id -> pipeline stage name |
| `postmark_user`, `postmark_password` | none: endpoint off | basic auth of `/postmark` |
| `unsubscribe_secret` | none: links off | HMAC key of one-click unsubscribe tokens |
| `segment_write_keys` | none: `/v1/*` off | write keys of the Segment-compatible tracking API (a JSON list in the environment) |
| `retry_seconds` | `10` | how often undelivered signals are tried again |
| `give_up_after` | `50` | attempts before an event's signal is marked failed |
| `imap_host`, `imap_port`, `imap_user`, `imap_password`, `imap_mailbox`, `imap_tls`, `imap_poll_seconds` | -, `993`, -, -, `INBOX`, true, `60` | the mailbox replies and bounces arrive in |
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import SettingsConfigDict

from dsl.catalog import INBOUND_EVENTS
from engine.settings import FileBackedSettings, SettingsError, table_source

KINDS = tuple(INBOUND_EVENTS)  # event names a play can react to
TABLE = "serve"
ENV_PREFIX = "PLAYBOOK_SERVE_"
DEFAULT_STAGES = {"closedwon": "Closed Won", "closedlost": "Closed Lost"}  # HubSpot's default pipeline


class Refused(Exception):
    """A request or event not accepted: the HTTP status to answer and why (one line, no secret)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class Incoming:
    """One provider event, with what identifies its account (at least one of the refs)."""

    key: str  # `<source>:<provider's event id>`: the idempotency key
    source: str
    kind: str  # one of KINDS
    account_id: str | None = None
    email: str | None = None  # a contact's address (-> contacts.email -> account)
    deal_id: str | None = None  # a CRM deal id (-> opportunities.external_id -> account)
    message_ids: tuple[str, ...] = ()  # In-Reply-To, then References newest first (-> outbox)
    stage: str | None = None
    occurred_at: dt.datetime | None = None
    suppress: bool = False  # stop emailing this contact (unsubscribe, hard bounce)
    payload: dict[str, Any] = field(default_factory=dict)  # what is kept of the provider's body

    def names(self) -> str:
        """How the event names its account, for messages."""
        refs = [f"account {self.account_id}" if self.account_id else "", f"address {self.email}" if self.email else "",
                f"deal {self.deal_id}" if self.deal_id else "",
                f"message {self.message_ids[0]}" if self.message_ids else ""]
        return ", ".join(r for r in refs if r) or "no account"


@dataclass(frozen=True)
class Ignored:
    """An event of a batch we understood but do not act on (a contact change, an unknown deal stage)."""

    key: str
    reason: str


class ServeSettings(FileBackedSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)
    file_source = table_source(TABLE)

    host: str = "127.0.0.1"
    port: int = Field(default=8787, ge=0, le=65535)
    public_url: str | None = None
    webhook_secret: SecretStr | None = None
    hubspot_client_secret: SecretStr | None = None
    hubspot_stages: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_STAGES))
    postmark_user: str | None = None
    postmark_password: SecretStr | None = None
    unsubscribe_secret: SecretStr | None = None
    segment_write_keys: list[SecretStr] = Field(default_factory=list)
    retry_seconds: float = Field(default=10.0, gt=0)
    give_up_after: int = Field(default=50, ge=1)
    imap_host: str | None = None
    imap_port: int = Field(default=993, ge=1, le=65535)
    imap_user: str | None = None
    imap_password: SecretStr | None = None
    imap_mailbox: str = "INBOX"
    imap_tls: bool = True
    imap_poll_seconds: float = Field(default=60.0, gt=0)


def load_serve_settings(**overrides: Any) -> ServeSettings:
    """`overrides` (CLI options; None ignored), then the environment, the `[serve]` table, the defaults.
    A bad value is a SettingsError naming the setting, never its value."""
    try:
        return ServeSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise SettingsError("; ".join(
            f"{ENV_PREFIX}{str(e['loc'][0]).upper()} or '{e['loc'][0]}' in [{TABLE}]: {e['msg']}"
            if e.get("loc") else str(e["msg"]) for e in exc.errors())) from None


def parse_time(value: Any, what: str) -> dt.datetime | None:
    """An ISO 8601 instant or epoch milliseconds as an aware UTC datetime (None stays None)."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return dt.datetime.fromtimestamp(value / 1000, dt.timezone.utc)
        at = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        raise Refused(422, f"{what}: not a time: {str(value)[:40]!r}") from None
    return at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)


__all__ = ["DEFAULT_STAGES", "Ignored", "Incoming", "KINDS", "Refused", "ServeSettings", "load_serve_settings",
           "parse_time"]
