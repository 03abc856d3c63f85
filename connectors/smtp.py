"""Email over SMTP (aiosmtplib): implicit TLS, STARTTLS or plain, with AUTH.

    PLAYBOOK_CONNECTOR_EMAIL=smtp  PLAYBOOK_SMTP_HOST=smtp.acme.test  PLAYBOOK_SMTP_USERNAME=...

| setting    | environment              | `[smtp]` table   | default |
|------------|--------------------------|------------------|---------|
| host       | `PLAYBOOK_SMTP_HOST`     | `host`           | `localhost` |
| port       | `PLAYBOOK_SMTP_PORT`     | `port`           | 465 (tls), 587 (starttls), 25 (none) |
| security   | `PLAYBOOK_SMTP_SECURITY` | `security`       | `starttls` (`tls`: implicit TLS; `none`: plain, loopback relays only) |
| username   | `PLAYBOOK_SMTP_USERNAME` | `username`       | none: no AUTH |
| password   | `PLAYBOOK_SMTP_PASSWORD` | `password`       | (a SecretStr: never printed) |
| CA file    | `PLAYBOOK_SMTP_CA_FILE`  | `ca_file`        | the system's roots (a PEM file for a private relay's CA) |
| timeout    | `PLAYBOOK_SMTP_TIMEOUT`  | `timeout`        | 30 seconds a command |

The sender, Message-ID domain and unsubscribe headers are the `[email]`
settings every email connector shares (connectors/mail.py).

Idempotency: the store's outbox is the ledger (engine/outbox.py). Before
connecting, the row of the action's key is claimed; a key already `sent`
returns the first result with `duplicate=True` and sends nothing. After the
server accepted the DATA the row is `sent` with the Message-ID. The
Message-ID is derived from the key, so a resend carries the same one.

The window that remains: the server accepted the message, but its answer
was lost (connection dropped after DATA, worker killed before the `sent`
mark). The retry cannot know and sends again; the recipient may get two
copies with one Message-ID (clients that thread by it show one). No SMTP
client can close that window: the protocol has no idempotency key.

Errors (SMTP reply codes):
- 5xx at RCPT: a hard bounce, `Bounced` (the activity records the contact
  as bounced, tells the play, skips the step); the outbox row is `failed`.
  Except an enhanced status 5.7.x (relay denied, authentication required,
  our reputation): the server's policy about us, not a dead address, so a
  `PermanentError` that leaves the contact alone.
- 4xx anywhere (451 greylisting, 421 shutting down, 452 mailbox full),
  connection refused, a timeout, a dropped connection: `TransientError`
  (retried; the row goes back to `pending` with the reason).
- 5xx at MAIL FROM or DATA: `PermanentError` (row `failed`).
- A refused login, a server without STARTTLS or AUTH, a certificate that
  does not verify: `PermanentError` naming the setting to fix, never the
  password.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from email.message import EmailMessage as MimeMessage
from pathlib import Path
from typing import Literal

import aiosmtplib
from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import SettingsConfigDict

from connectors import base as cb
from connectors import mail
from connectors.ledger import send_email
from engine.settings import FileBackedSettings, SettingsError, setting_problems, table_source
from engine.store import Store


ENV_PREFIX = "PLAYBOOK_SMTP_"
TABLE = "smtp"
DEFAULT_PORTS = {"tls": 465, "starttls": 587, "none": 25}
_POLICY = re.compile(r"^5\.7\.\d{1,3}\b")  # RFC 3463 enhanced status: security or policy


class SmtpSettingsError(SettingsError):
    """An SMTP setting that cannot be used (names the setting, never the password)."""


class SmtpSettings(FileBackedSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)
    file_source = table_source(TABLE)

    host: str = "localhost"
    port: int | None = Field(default=None, ge=1, le=65535)
    security: Literal["tls", "starttls", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    ca_file: Path | None = None
    timeout: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _login_pairs(self) -> SmtpSettings:
        if (self.password is not None) and not self.username:
            raise ValueError(f"a password without a username: set {ENV_PREFIX}USERNAME too")
        return self

    @property
    def port_number(self) -> int:
        return self.port or DEFAULT_PORTS[self.security]

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port_number}"

    def tls_context(self) -> ssl.SSLContext | None:
        if self.security == "none":
            return None
        try:
            return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise SmtpSettingsError(f"{ENV_PREFIX}CA_FILE: cannot read {self.ca_file}: "
                                    f"{getattr(exc, 'strerror', None) or exc}") from None


def load_settings() -> SmtpSettings:
    try:
        return SmtpSettings()
    except ValidationError as exc:
        raise SmtpSettingsError(setting_problems(exc, ENV_PREFIX, TABLE, whole="SMTP settings")) from None


class SmtpConnector:
    """Email actions over SMTP, one connection a message, the outbox as ledger."""

    def __init__(self, store: Store, settings: SmtpSettings, mail_settings: mail.MailSettings) -> None:
        self.store = store
        self.settings = settings
        self.mail = mail_settings
        self.sender = mail_settings.sender  # raises MailSettingsError at build time when unset
        self._tls = settings.tls_context()

    async def act(self, action: cb.Action) -> cb.Result:
        if not isinstance(action, cb.EmailMessage):
            raise cb.PermanentError(f"the smtp connector sends email, not {action.kind!r}: choose another connector "
                                    f"for it (PLAYBOOK_CONNECTOR_{action.kind.upper()})")
        return await self.send(action)

    async def send(self, action: cb.EmailMessage) -> cb.EmailResult:
        return await send_email(self.store, "smtp", action, self.mail, self.sender, self._deliver)

    async def _deliver(self, message: MimeMessage) -> None:
        s = self.settings
        sender, recipient = mail.envelope(message)
        client = aiosmtplib.SMTP(hostname=s.host, port=s.port_number, use_tls=s.security == "tls",
                                 start_tls=s.security == "starttls", tls_context=self._tls, timeout=s.timeout)
        phase = "connect"
        try:
            await client.connect()
            if s.username:
                phase = "login"
                password = s.password.get_secret_value() if s.password is not None else ""
                await client.login(s.username, password)
            phase = "MAIL FROM"
            await client.mail(sender)
            phase = "RCPT TO"
            await client.rcpt(recipient)
            phase = "DATA"
            await client.data(message.as_bytes())
        except aiosmtplib.SMTPRecipientRefused as exc:
            if exc.code >= 500 and _POLICY.match(_reply(exc.message)):
                # 5.7.x is the server's policy about us (relay denied, auth required, our reputation),
                # not a dead address: suppressing the contact for it would lose a good contact.
                raise cb.PermanentError(f"SMTP {s.where} refused {recipient} by policy at RCPT TO: {exc.code} "
                                        f"{_reply(exc.message)} (not taken as a bounce: check the relay's "
                                        f"settings, {ENV_PREFIX}HOST and {ENV_PREFIX}USERNAME)") from None
            if exc.code >= 500:
                raise cb.Bounced(exc.recipient or recipient, exc.code, _reply(exc.message)) from None
            raise cb.TransientError(f"SMTP {s.where} deferred {recipient} at RCPT TO: {exc.code} "
                                    f"{_reply(exc.message)}") from None
        except aiosmtplib.SMTPException as exc:
            raise self._error(exc, phase) from None
        except ssl.SSLCertVerificationError as exc:
            raise self._unverified(exc) from None
        except (OSError, asyncio.TimeoutError) as exc:
            raise cb.TransientError(f"SMTP {s.where} at {phase}: {type(exc).__name__}: {exc}") from None
        finally:
            await _close(client)

    def _unverified(self, exc: BaseException) -> cb.PermanentError:
        s = self.settings
        return cb.PermanentError(f"SMTP {s.where}: the server's TLS certificate does not verify ({_reply(str(exc))}): "
                                 f"set {ENV_PREFIX}CA_FILE to its CA, or fix {ENV_PREFIX}HOST")

    def _error(self, exc: aiosmtplib.SMTPException, phase: str) -> cb.ConnectorError:
        s = self.settings
        if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
            return cb.PermanentError(f"SMTP {s.where} refused the login ({exc.code} {_reply(exc.message)}): check "
                                     f"{ENV_PREFIX}USERNAME and {ENV_PREFIX}PASSWORD")
        text = str(exc)
        if "CERTIFICATE_VERIFY_FAILED" in text or isinstance(exc.__cause__, ssl.SSLCertVerificationError):
            return self._unverified(exc)
        if "STARTTLS" in text and phase == "connect":
            return cb.PermanentError(f"SMTP {s.where}: {_reply(text)} (check {ENV_PREFIX}SECURITY: tls, starttls "
                                     "or none)")
        if "AUTH" in text and phase == "login":
            return cb.PermanentError(f"SMTP {s.where}: {_reply(text)} (check {ENV_PREFIX}SECURITY: many servers "
                                     f"offer AUTH only over TLS; or unset {ENV_PREFIX}USERNAME)")
        if isinstance(exc, (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPTimeoutError,
                            aiosmtplib.SMTPServerDisconnected)):
            return cb.TransientError(f"SMTP {s.where} at {phase}: {_reply(text)}")
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            said = f"{exc.code} {_reply(exc.message)}"
            if 400 <= exc.code < 500:
                return cb.TransientError(f"SMTP {s.where} deferred the message at {phase}: {said}")
            return cb.PermanentError(f"SMTP {s.where} refused the message at {phase}: {said}")
        return cb.PermanentError(f"SMTP {s.where} at {phase}: {_reply(text)}")


async def _close(client: aiosmtplib.SMTP) -> None:
    if not client.is_connected:
        return
    try:
        await client.quit()
    except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
        client.close()


def _reply(text: str) -> str:
    """A server's answer on one line, short."""
    return " ".join(str(text).split())[:300]


def checked_settings() -> tuple[SmtpSettings, mail.MailSettings]:
    """The SMTP and email settings, judged without connecting (run when `smtp` is chosen, so the
    worker stops before it starts): a bad value, no sender, an unreadable CA file."""
    settings, mail_settings = load_settings(), mail.load()
    mail_settings.sender  # noqa: B018 - raises MailSettingsError when there is none
    settings.tls_context()
    return settings, mail_settings


def build(store: Store | None) -> SmtpConnector:
    """The connector the settings describe (REGISTRY's `smtp`)."""
    if store is None:
        raise SmtpSettingsError("the smtp connector keeps its ledger in the store's outbox: it needs a store "
                                "(--db or PLAYBOOK_DATABASE_URL)")
    return SmtpConnector(store, *checked_settings())


__all__ = ["SmtpConnector", "SmtpSettings", "SmtpSettingsError", "build", "checked_settings", "load_settings"]
