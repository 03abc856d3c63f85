"""Outbound webhooks signed per the Standard Webhooks spec (standardwebhooks.com), over httpx.

Each `webhook` step is one POST of a JSON body

    {"type": EVENT, "timestamp": STEP TIME, "data": {event, play, plan_hash, account_id, step, idempotency_key}}

with the spec's three headers:

- `webhook-id`: `msg_` + a UUID derived from the step's idempotency key, the
  same on every retry, so the receiver drops a copy it already has;
- `webhook-timestamp`: this attempt's Unix time (receivers refuse old ones,
  so a retry is signed afresh);
- `webhook-signature`: `v1,` + base64 HMAC-SHA256 of `id.timestamp.body`
  with the secret (`whsec_` + base64), a SecretStr from the settings.

Answers: 2xx sent; 410 Gone disables the endpoint in the store
(engine/endpoints.py) and fails, and later calls to that URL fail at once
saying since when; 429, 502, 503, 504 (and other 5xx, 408, timeouts, refused
or reset connections) are retried, after Retry-After when given (seconds or
an HTTP-date); any other answer (4xx, 3xx: redirects are not followed) fails
for good. The outbox is the ledger (engine/outbox.py): a key already sent is
not sent again. URLs in errors lose their user info and query, where a
receiver's token may sit.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import SettingsConfigDict
from sqlalchemy.engine import Connection

from connectors import base as cb
from connectors.http import status_error
from connectors.ledger import in_ledger
from engine import endpoints, outbox
from engine.settings import FileBackedSettings, SettingsError, settings_file, table_problems, table_source
from engine.store import Store

T = TypeVar("T")
ENV_PREFIX = "PLAYBOOK_WEBHOOKS_"
TABLE = "webhooks"
SECRET_PREFIX = "whsec_"


class WebhookSettings(FileBackedSettings):
    """`PLAYBOOK_WEBHOOKS_*` or the settings file's `[webhooks]` table."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)
    file_source = table_source(TABLE)

    secret: SecretStr | None = None  # whsec_<base64>, shared with the receivers
    timeout: float = Field(default=10.0, gt=0)
    user_agent: str = "playbook-webhooks/1"

    @field_validator("secret")
    @classmethod
    def _whsec(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            key_bytes(value)  # the message says what is wrong, never the value
        return value


def key_bytes(secret: SecretStr) -> bytes:
    """The HMAC key a `whsec_` secret stands for."""
    text = secret.get_secret_value().strip()
    if not text.startswith(SECRET_PREFIX):
        raise ValueError(f"the secret must start with {SECRET_PREFIX} (Standard Webhooks' format)")
    try:
        encoded = text.removeprefix(SECRET_PREFIX)
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the secret after {SECRET_PREFIX} must be base64") from None
    if len(key) < 16:
        raise ValueError("the secret is shorter than 16 bytes; generate one with "
                         "`python -c \"import base64,os; print('whsec_'+base64.b64encode(os.urandom(32)).decode())\"`")
    return key


def load_webhook_settings() -> WebhookSettings:
    try:
        return WebhookSettings()
    except ValidationError as exc:
        raise SettingsError(table_problems(exc, ENV_PREFIX, TABLE)) from None


def checked_settings() -> WebhookSettings:
    """The settings, refused without a secret (run when `webhooks` is chosen, before anything starts)."""
    settings = load_webhook_settings()
    if settings.secret is None:
        path, _ = settings_file()
        raise SettingsError(f"the webhooks connector needs a signing secret: {ENV_PREFIX}SECRET or secret in "
                            f"[{TABLE}] of {path} (whsec_ + base64)")
    return settings


def message_id(key: str) -> str:
    """The webhook-id of a step: stable across retries, unique per idempotency key."""
    return f"msg_{uuid.uuid5(uuid.NAMESPACE_URL, 'playbook:' + key).hex}"


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """`webhook-signature`: v1, base64 HMAC-SHA256 over `id.timestamp.body`."""
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def body(call: cb.WebhookCall) -> bytes:
    """The JSON body, the same bytes on every attempt (sorted keys, compact)."""
    return json.dumps({"type": call.event or "playbook.step", "timestamp": call.requested_at.isoformat(),
                       "data": call.payload}, sort_keys=True, separators=(",", ":"), default=str).encode()


def shown(url: str) -> str:
    """A URL as errors show it: without user info, query or fragment (a receiver's token may be there)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "(an unreadable URL)"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class WebhookConnector:
    """`webhook` steps as signed POSTs, once per idempotency key; 410 disables the URL."""

    def __init__(self, settings: WebhookSettings, store: Store, *, client: httpx.AsyncClient | None = None,
                 clock: Callable[[], dt.datetime] | None = None) -> None:
        if settings.secret is None:
            path, _ = settings_file()
            raise SettingsError(f"the webhooks connector needs a signing secret: {ENV_PREFIX}SECRET or secret in "
                                f"[{TABLE}] of {path} (whsec_ + base64)")
        self.settings, self.store = settings, store
        self._key = key_bytes(settings.secret)
        self.client = client or httpx.AsyncClient(timeout=settings.timeout, follow_redirects=False,
                                                  headers={"User-Agent": settings.user_agent})
        self.clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))

    async def act(self, action: cb.Action) -> cb.Result:
        if not isinstance(action, cb.WebhookCall):
            raise cb.PermanentError(f"the webhooks connector sends webhook steps, not {action.kind!r}")
        return await self.send(action)

    async def send(self, call: cb.WebhookCall) -> cb.WebhookResult:
        msg_id, payload, where = message_id(call.key), body(call), f"webhook {shown(call.url)}"

        def begin(conn: Connection) -> tuple[outbox.Claim, endpoints.Disabled | None]:
            claim = outbox.claim(conn, key=call.key, channel="webhook", recipient=call.url, subject=call.event,
                                 body=payload.decode(), account_id=call.account_id, play=call.play,
                                 at=call.requested_at)
            return claim, None if claim.sent else endpoints.disabled(conn, call.url)

        claim, gone = await self._ledger(begin)
        if claim.sent or claim.cancelled:
            return cb.WebhookResult(key=call.key, duplicate=True, external_id=claim.provider_message_id)
        if gone is not None:
            raise await self._failed(call.key, cb.PermanentError(
                f"{where}: endpoint disabled since {gone.at:%Y-%m-%d %H:%M:%S} UTC ({gone.reason}); "
                "`playbook webhooks --enable URL` once the receiver is back"))
        stamp = int(self.clock().timestamp())
        headers = {"content-type": "application/json", "webhook-id": msg_id, "webhook-timestamp": str(stamp),
                   "webhook-signature": sign(self._key, msg_id, stamp, payload)}
        try:
            response = await self.client.post(call.url, content=payload, headers=headers)
        except httpx.TimeoutException:
            raise await self._failed(call.key, cb.TransientError(
                f"{where}: no answer within {self.settings.timeout:g} s")) from None
        except httpx.TransportError as exc:  # refused, reset, DNS: the receiver may be back soon
            raise await self._failed(call.key, cb.TransientError(f"{where}: {type(exc).__name__}")) from None
        if 200 <= response.status_code < 300:
            await self._ledger(lambda c: outbox.mark_sent(c, call.key, provider_message_id=msg_id, at=self.clock()))
            return cb.WebhookResult(key=call.key, external_id=msg_id, status_code=response.status_code)
        if response.status_code == 410:
            at = self.clock()
            reason = f"HTTP 410 Gone at play {call.play} step {call.step}"
            await self._ledger(lambda c: endpoints.disable(c, call.url, at=at, reason=reason))
            raise await self._failed(call.key, cb.PermanentError(
                f"{where}: HTTP 410 Gone: the receiver removed this endpoint; it is disabled from now on"))
        error = status_error(response.status_code, where, response.headers, _snippet(response))
        raise await self._failed(call.key, error)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _failed(self, key: str, error: cb.ConnectorError) -> cb.ConnectorError:
        await self._ledger(lambda c: outbox.mark_failed(c, key, str(error), permanent=not error.retryable))
        return error

    async def _ledger(self, work: Callable[[Connection], T]) -> T:
        return await in_ledger(self.store, work, "webhooks")


def _snippet(response: httpx.Response, size: int = 200) -> str:
    """The start of a refusal's body, on one line (receivers often say why)."""
    try:
        text = response.text
    except (UnicodeDecodeError, httpx.ResponseNotRead):
        return ""
    text = " ".join(text.split())
    return text[:size] + ("…" if len(text) > size else "")


def build(store: Store | None) -> WebhookConnector:
    if store is None:
        raise SettingsError("the webhooks connector needs a store for its outbox ledger and disabled endpoints "
                            "(--db or PLAYBOOK_DATABASE_URL)")
    return WebhookConnector(checked_settings(), store)


__all__ = ["WebhookConnector", "WebhookSettings", "body", "build", "checked_settings", "load_webhook_settings", "message_id", "shown",
           "sign"]
