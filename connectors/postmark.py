"""Email over Postmark's HTTP API (`POST /email`), with httpx.

The message is the one every email connector sends (connectors/mail.py:
Message-ID from the idempotency key, List-Unsubscribe and one-click
List-Unsubscribe-Post, header injection refused), put in Postmark's JSON:
`From`, `To`, `Subject`, `TextBody`, `Headers` (every header of that message
but From, To, Subject and the MIME ones, which Postmark writes itself),
`MessageStream` and `Tag` (the play). The server token goes in
`X-Postmark-Server-Token` and is a SecretStr, never shown.

Postmark has no idempotency key: the outbox is the ledger (engine/outbox.py),
the row claimed `sending` with our Message-ID before the call, `sent` after;
a key already sent is not sent again.

Answers (Postmark's API reference, "Email API" and "API error codes"):

| Postmark answers | the step |
|---|---|
| 200, `ErrorCode` 0 | sent; Postmark's `MessageID` logged |
| 422 with `ErrorCode` 406 (inactive recipient: it hard-bounced or complained) | `Bounced`: the contact is marked bounced, the step skipped |
| 422 with any other `ErrorCode` (300 invalid request, 400 unknown sender signature, ...) | fails, with Postmark's code and message |
| 401 (bad or missing server token) | fails, naming `PLAYBOOK_POSTMARK_SERVER_TOKEN` |
| 429, 500, 503, no answer, a refused or reset connection | retried (after `Retry-After` when sent) |
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import SettingsConfigDict

from connectors import base as cb
from connectors import mail
from connectors.http import status_error
from connectors.ledger import send_email
from engine.settings import FileBackedSettings, SettingsError, settings_file, table_problems, table_source
from engine.store import Store

ENV_PREFIX = "PLAYBOOK_POSTMARK_"
TABLE = "postmark"
INACTIVE_RECIPIENT = 406  # Postmark's ErrorCode: the address hard-bounced or complained before
# Headers Postmark writes from its own fields (or from the MIME body): never repeated in `Headers`.
OWN_HEADERS = frozenset({"from", "to", "subject", "date", "mime-version", "content-type",
                         "content-transfer-encoding"})


class PostmarkSettings(FileBackedSettings):
    """`PLAYBOOK_POSTMARK_*` or the settings file's `[postmark]` table."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)
    file_source = table_source(TABLE)

    server_token: SecretStr | None = None
    base_url: str = "https://api.postmarkapp.com"
    message_stream: str = "outbound"
    timeout: float = Field(default=10.0, gt=0)


def load_postmark_settings() -> PostmarkSettings:
    try:
        return PostmarkSettings()
    except ValidationError as exc:
        raise SettingsError(table_problems(exc, ENV_PREFIX, TABLE)) from None


def checked_settings() -> PostmarkSettings:
    """The settings, refused without a server token (run when `postmark` is chosen)."""
    settings = load_postmark_settings()
    if settings.server_token is None or not settings.server_token.get_secret_value().strip():
        path, _ = settings_file()
        raise SettingsError(f"the postmark connector needs a server token: {ENV_PREFIX}SERVER_TOKEN or "
                            f"server_token in [{TABLE}] of {path}")
    return settings


def payload(action: cb.EmailMessage, message: Any, stream: str) -> dict[str, Any]:
    """Postmark's JSON for a message built by connectors/mail.py."""
    return {
        "From": str(message["From"]), "To": action.to, "Subject": action.subject, "TextBody": action.body,
        "Headers": [{"Name": name, "Value": str(value)} for name, value in message.items()
                    if name.lower() not in OWN_HEADERS],
        "MessageStream": stream, "Tag": action.play,
    }


class PostmarkConnector:
    """Email actions through Postmark's `POST /email`, once per idempotency key."""

    def __init__(self, store: Store, settings: PostmarkSettings, mail_settings: mail.MailSettings,
                 *, client: httpx.AsyncClient | None = None) -> None:
        if settings.server_token is None:
            raise SettingsError(f"the postmark connector needs a server token: {ENV_PREFIX}SERVER_TOKEN")
        self.store, self.settings, self.mail = store, settings, mail_settings
        self.sender = mail_settings.sender  # MailSettingsError now, not at the first email
        self.client = client or httpx.AsyncClient(
            base_url=settings.base_url, timeout=settings.timeout,
            headers={"Accept": "application/json",
                     "X-Postmark-Server-Token": settings.server_token.get_secret_value()})

    async def act(self, action: cb.Action) -> cb.Result:
        if not isinstance(action, cb.EmailMessage):
            raise cb.PermanentError(f"the postmark connector sends email, not {action.kind!r}: choose another "
                                    f"connector for it (PLAYBOOK_CONNECTOR_{action.kind.upper()})")
        return await self.send(action)

    async def send(self, action: cb.EmailMessage) -> cb.EmailResult:
        return await send_email(self.store, "postmark", action, self.mail, self.sender,
                                lambda message: self._post(action, message))

    async def _post(self, action: cb.EmailMessage, message: Any) -> str | None:
        where = f"postmark {self.settings.base_url}"
        try:
            response = await self.client.post("/email", json=payload(action, message, self.settings.message_stream))
        except httpx.TimeoutException:
            raise cb.TransientError(f"{where}: no answer within {self.settings.timeout:g} s") from None
        except httpx.TransportError as exc:
            raise cb.TransientError(f"{where}: {type(exc).__name__}") from None
        answer = _json(response)
        code, said = answer.get("ErrorCode"), " ".join(str(answer.get("Message") or "").split())[:300]
        if response.status_code == 200 and code in (0, None):
            return str(answer.get("MessageID") or "") or None
        if response.status_code == 422 and code == INACTIVE_RECIPIENT:
            raise cb.Bounced(action.to, INACTIVE_RECIPIENT, said or "inactive recipient")
        if response.status_code == 401:
            raise cb.PermanentError(f"{where} refused the server token ({said or 'HTTP 401'}): check "
                                    f"{ENV_PREFIX}SERVER_TOKEN")
        if response.status_code == 422:
            raise cb.PermanentError(f"{where} refused the message: ErrorCode {code}: {said}")
        raise status_error(response.status_code, where, response.headers,
                           f"ErrorCode {code}: {said}" if code is not None else said)

    async def aclose(self) -> None:
        await self.client.aclose()



def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def build(store: Store | None) -> PostmarkConnector:
    if store is None:
        raise SettingsError("the postmark connector keeps its ledger in the store's outbox: it needs a store "
                            "(--db or PLAYBOOK_DATABASE_URL)")
    return PostmarkConnector(store, checked_settings(), mail.load())


__all__ = ["PostmarkConnector", "PostmarkSettings", "build", "checked_settings", "load_postmark_settings", "payload"]
