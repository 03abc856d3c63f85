"""An email as it goes on the wire, shared by every email connector (SMTP, an HTTP email API).

`build` turns a prepared `EmailMessage` action into an `email.message.EmailMessage`:
From, To, Subject, Date (the step's time, so a retry sends the same bytes),
Message-ID (derived from the idempotency key), `List-Unsubscribe` and RFC
8058's one-click `List-Unsubscribe-Post` when the message has an
unsubscribe URL, and a plain-text UTF-8 body.

Header injection is refused before anything is sent: a CR, LF or other
control character in any header value (a subject rendered from account
data, a recipient address, a setting) is a `PermanentError` naming the
field. Bodies may hold any text.

Settings every email connector shares, read here:

| setting              | environment                        | `[email]` table of the settings file |
|----------------------|------------------------------------|--------------------------------------|
| sender               | `PLAYBOOK_EMAIL_FROM_ADDRESS`      | `from_address = "Acme <cs@acme.test>"` |
| Message-ID domain    | `PLAYBOOK_EMAIL_MESSAGE_ID_DOMAIN` | `message_id_domain` (default: the sender's domain) |
| unsubscribe link     | `PLAYBOOK_EMAIL_UNSUBSCRIBE_URL`   | `unsubscribe_url = "https://x/u/{key}"` |
| unsubscribe by mail  | `PLAYBOOK_EMAIL_UNSUBSCRIBE_MAILTO`| `unsubscribe_mailto = "unsubscribe@acme.test"` |

`unsubscribe_url` is a format with `{key}`, `{account_id}`, `{play}` and
`{contact}` (each percent-encoded); the worker gives it to the activities,
which put the formatted link in `{{ unsubscribe_url }}` and on the action.
"""

from __future__ import annotations

import email.policy
import email.utils
import hashlib
import re
import string
from email.message import EmailMessage as MimeMessage
from urllib.parse import quote

from pydantic import ValidationError, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from connectors import base as cb
from engine.settings import FileBackedSettings, SettingsError, setting_problems, settings_file, table_source

ENV_PREFIX = "PLAYBOOK_EMAIL_"
TABLE = "email"
# The placeholders unsubscribe_url may use; {token} is filled by the worker when the `unsubscribe_secret`
# setting of `playbook serve` is set (connectors/unsubscribe.py: the link's signature).
URL_FIELDS = ("key", "account_id", "play", "contact", "token")
# C0 controls (CR and LF among them), DEL, and the characters Python's str.splitlines also breaks on:
# any of them in a header value could start a header of the attacker's choosing.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
_HEADER_NAME = re.compile(r"^X-[A-Za-z0-9-]+$")  # extra headers: X- only, so never a second From or Bcc
_ADDRESS = re.compile(r"^[^@\s<>(),;:\"\[\]\\]+@[^@\s<>(),;:\"\[\]\\]+\.[^@\s<>(),;:\"\[\]\\]+$")


# CRLF line ends; headers folded only past RFC 5322's 998 characters, so a long
# List-Unsubscribe stays on one line (some receivers read only the first).
POLICY = email.policy.SMTP.clone(max_line_length=998)


class MailSettingsError(SettingsError):
    """An email setting that cannot be used (names the setting, never a secret)."""


def refuse_control(field: str, value: str) -> str:
    """`value` unchanged, or PermanentError naming `field` when it holds a control character."""
    bad = _CONTROL.search(value)
    if bad is not None:
        raise cb.PermanentError(f"header injection refused: {field} holds a control character "
                                f"({bad.group()!r} at position {bad.start()})")
    return value


def address(field: str, value: str) -> str:
    """The bare address (addr-spec) of `value` ("Name <a@b.c>" or "a@b.c"), or PermanentError naming `field`."""
    refuse_control(field, value)
    found = email.utils.getaddresses([value])
    addr = found[0][1] if len(found) == 1 else ""
    if not addr or not _ADDRESS.match(addr):
        raise cb.PermanentError(f"{field}: not an email address: {value!r}")
    if not addr.isascii():
        # Would need SMTPUTF8 end to end (and RFC 2047 cannot carry an address): refused, said plainly,
        # rather than sent garbled. A domain can be written in its xn-- form.
        raise cb.PermanentError(f"{field}: {addr!r} is not an ASCII address; internationalised addresses "
                                "(SMTPUTF8) are not supported")
    return addr


def message_id(key: str, domain: str) -> str:
    """The Message-ID of the message sent under `key`: the same for every retry, angle brackets included."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]
    return f"<{digest}@{domain}>"


class MailSettings(FileBackedSettings):
    """What every email connector puts in a message; build with `load()`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)
    file_source = table_source(TABLE)

    from_address: str | None = None
    message_id_domain: str | None = None
    unsubscribe_url: str | None = None
    unsubscribe_mailto: str | None = None

    @field_validator("from_address", "message_id_domain", "unsubscribe_url", "unsubscribe_mailto")
    @classmethod
    def _plain(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if _CONTROL.search(value):
            raise ValueError("holds a control character (a line break?)")
        return value.strip()

    @field_validator("from_address", "unsubscribe_mailto")
    @classmethod
    def _an_address(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                address("address", value)
            except cb.PermanentError:
                raise ValueError(f"not an email address: {value!r}") from None
        return value

    @field_validator("unsubscribe_url")
    @classmethod
    def _a_url_format(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an https:// URL (RFC 8058 one-click unsubscribe needs HTTPS)")
        for _, name, _, _ in string.Formatter().parse(value):
            if name is not None and name not in URL_FIELDS:
                raise ValueError(f"unknown placeholder {{{name}}}; known: " + ", ".join(f"{{{f}}}" for f in URL_FIELDS))
        return value

    @model_validator(mode="after")
    def _domain(self) -> MailSettings:
        if self.message_id_domain is not None and not re.fullmatch(r"[A-Za-z0-9.-]+", self.message_id_domain):
            raise ValueError("message_id_domain: a domain name such as mail.acme.test")
        return self

    @property
    def sender(self) -> str:
        if self.from_address is None:
            raise MailSettingsError(f"no sender address: set {ENV_PREFIX}FROM_ADDRESS or `from_address` in [{TABLE}] "
                                    f"of {settings_file()[0]}")
        return self.from_address

    @property
    def domain(self) -> str:
        """Where Message-IDs are made: the setting, else the sender's domain."""
        if self.message_id_domain:
            return self.message_id_domain
        return address("from_address", self.sender).rpartition("@")[2]

    def unsubscribe_link(self, *, key: str, account_id: str, play: str, contact: str) -> str | None:
        """The formatted unsubscribe URL for one message (values percent-encoded), or None."""
        if self.unsubscribe_url is None:
            return None
        return format_unsubscribe_url(self.unsubscribe_url, key=key, account_id=account_id, play=play, contact=contact)


def format_unsubscribe_url(template: str, **values: str) -> str:
    """`template` with {key}, {account_id}, {play}, {contact}, each percent-encoded (a key holds ':')."""
    return template.format(**{k: quote(v, safe="") for k, v in values.items()})


def load() -> MailSettings:
    """The email settings: the environment, then the settings file's `[email]` table."""
    try:
        return MailSettings()
    except ValidationError as exc:
        raise MailSettingsError(setting_problems(exc, ENV_PREFIX, TABLE, whole="email settings")) from None


def list_unsubscribe(url: str | None, mailto: str | None) -> dict[str, str]:
    """The List-Unsubscribe headers (RFC 2369, RFC 8058 one-click when there is a URL), or none."""
    targets = []
    if url is not None:
        targets.append(f"<{refuse_control('unsubscribe URL', url)}>")
    if mailto is not None:
        targets.append(f"<mailto:{address('unsubscribe mailto', mailto)}?subject=unsubscribe>")
    if not targets:
        return {}
    headers = {"List-Unsubscribe": ", ".join(targets)}
    if url is not None:
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return headers


def build(action: cb.EmailMessage, settings: MailSettings, *, sender: str | None = None) -> MimeMessage:
    """The message to send for `action` (PermanentError naming the field on a bad header value)."""
    sender = sender if sender is not None else settings.sender
    address("From", sender)
    address("To", action.to)
    refuse_control("Subject", action.subject)
    msg = MimeMessage(policy=POLICY)
    msg["From"] = sender
    msg["To"] = action.to
    msg["Subject"] = action.subject
    msg["Date"] = email.utils.format_datetime(action.requested_at)  # the step's time: the same on a retry
    msg["Message-ID"] = message_id(action.key, settings.domain)
    for name, value in list_unsubscribe(action.unsubscribe_url, settings.unsubscribe_mailto).items():
        msg[name] = value
    for name, value in action.headers.items():  # extra headers (sandbox mode's X-Playbook-Original-To)
        if not _HEADER_NAME.match(name):
            raise cb.PermanentError(f"header {name!r} cannot be added: extra headers are X- headers")
        msg[name] = refuse_control(name, value)
    msg.set_content(action.body)
    return msg


def envelope(msg: MimeMessage) -> tuple[str, str]:
    """(MAIL FROM, RCPT TO) addresses of a built message."""
    return address("From", str(msg["From"])), address("To", str(msg["To"]))


__all__ = ["MailSettings", "MailSettingsError", "address", "build", "envelope", "format_unsubscribe_url",
           "list_unsubscribe", "load", "message_id", "refuse_control"]
