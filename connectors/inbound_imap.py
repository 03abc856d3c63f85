"""Replies and asynchronous bounces read from a mailbox over IMAP (stdlib imaplib, in a thread).

`classify` turns one message into an event:

- an RFC 3464 delivery status notification (multipart/report;
  report-type=delivery-status) whose recipient `Action` is `failed` ->
  `bounced`, the recipient suppressed, matched to the sent message by the
  Message-ID of the returned original (message/rfc822 or text/rfc822-headers
  part); `delayed` / `delivered` reports are ignored;
- an automatic answer (`Auto-Submitted` other than `no`: out-of-office,
  vacation) -> ignored: nobody replied;
- any other message with In-Reply-To or References -> `replied`, matched by
  those ids to outbox.provider_message_id (the Message-ID header the email
  connector sent), else by the sender's address;
- anything else -> ignored.

The key is the incoming Message-ID (`imap:<id>`; a hash of the bytes when it
has none), so a message read twice records nothing new. `Mailbox` reads the
unseen messages and marks each \\Seen once it has been handled.
"""

from __future__ import annotations

import datetime as dt
import email
import hashlib
import imaplib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime

from pydantic import SecretStr

from connectors.inbound import Ignored, Incoming

SOURCE = "imap"
TIMEOUT = 30.0  # seconds per IMAP operation


def classify(raw: bytes) -> Incoming | Ignored:
    msg = email.message_from_bytes(raw)
    own_id = (msg.get("Message-ID") or "").strip()
    key = f"{SOURCE}:{own_id or 'sha256:' + hashlib.sha256(raw).hexdigest()}"
    at = _date(msg.get("Date"))
    if msg.get_content_type() == "multipart/report" and msg.get_param("report-type") == "delivery-status":
        return _dsn(msg, key, at)
    auto = (msg.get("Auto-Submitted") or "no").strip().lower()
    if auto != "no":
        return Ignored(key, f"an automatic answer (Auto-Submitted: {auto})")
    refs = [msg.get("In-Reply-To", "")] + list(reversed((msg.get("References") or "").split()))
    refs = [r.strip() for r in refs if r and r.strip()]
    if not refs:
        return Ignored(key, "neither a reply (no In-Reply-To / References) nor a delivery report")
    sender = _address(msg.get("From"))
    return Incoming(key=key, source=SOURCE, kind="replied", email=sender, message_ids=tuple(refs), occurred_at=at,
                    payload={"from": sender, "subject": str(msg.get("Subject") or "")[:200], "message_id": own_id})


def _dsn(msg: Message, key: str, at: dt.datetime | None) -> Incoming | Ignored:
    recipients: list[tuple[str, str, str]] = []  # (address, action, status)
    original: str | None = None
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "message/delivery-status":
            # The body is a series of header blocks: one per message, then one per recipient.
            payload = part.get_payload()
            blocks = [b for b in payload if isinstance(b, Message)] if isinstance(payload, list) else []
            for block in blocks[1:] if len(blocks) > 1 else blocks:
                final = block.get("Final-Recipient") or block.get("Original-Recipient") or ""
                address = final.split(";", 1)[-1].strip()
                if address:
                    recipients.append((address, (block.get("Action") or "").strip().lower(),
                                       (block.get("Status") or "").strip()))
        elif ctype in ("message/rfc822", "text/rfc822-headers") and original is None:
            original = _original_id(part)
    failed = [r for r in recipients if r[1] == "failed"]
    if not failed:
        actions = ", ".join(sorted({r[1] or "none" for r in recipients})) or "no recipient"
        return Ignored(key, f"a delivery report that is no failure (action: {actions})")
    address, _, status = failed[0]
    return Incoming(key=key, source=SOURCE, kind="bounced", email=address, suppress=True,
                    message_ids=(original,) if original else (), occurred_at=at,
                    payload={"recipient": address, "status": status, "original": original})


def _original_id(part: Message) -> str | None:
    if part.get_content_type() == "message/rfc822":
        inner = part.get_payload()
        first = inner[0] if isinstance(inner, list) and inner else None
        return (first.get("Message-ID") or "").strip() or None if isinstance(first, Message) else None
    text = part.get_payload(decode=True)
    if not isinstance(text, bytes):
        return None
    return (email.message_from_bytes(text).get("Message-ID") or "").strip() or None


def _address(value: str | None) -> str | None:
    found = [a for _, a in getaddresses([value or ""]) if a]
    return found[0] if found else None


def _date(value: str | None) -> dt.datetime | None:
    try:
        return parsedate_to_datetime(value) if value else None
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class MailboxSettings:
    host: str
    port: int
    user: str
    password: SecretStr
    mailbox: str = "INBOX"
    tls: bool = True


class Mailbox:
    """One IMAP session: the unseen messages of one mailbox, each marked \\Seen when handled."""

    def __init__(self, settings: MailboxSettings) -> None:
        self.settings = settings
        s = settings
        if s.tls:
            self.imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(s.host, s.port, ssl_context=ssl.create_default_context(),
                                                         timeout=TIMEOUT)
        else:
            self.imap = imaplib.IMAP4(s.host, s.port, timeout=TIMEOUT)
        try:
            self.imap.login(s.user, s.password.get_secret_value())
            typ, data = self.imap.select(_quoted(s.mailbox))
            if typ != "OK":
                raise imaplib.IMAP4.error(f"cannot open mailbox {s.mailbox!r}: {_text(data)}")
        except BaseException:
            self.close()
            raise

    def unseen(self) -> list[bytes]:
        typ, data = self.imap.uid("SEARCH", None, "UNSEEN")  # type: ignore[arg-type]
        if typ != "OK":
            raise imaplib.IMAP4.error(f"UID SEARCH failed: {_text(data)}")
        return data[0].split() if data and data[0] else []

    def fetch(self, uid: bytes) -> bytes | None:
        """The whole message, without setting \\Seen (BODY.PEEK): it is set only once handled."""
        typ, data = self.imap.uid("FETCH", uid.decode(), "(BODY.PEEK[])")
        if typ != "OK":
            raise imaplib.IMAP4.error(f"UID FETCH {uid.decode()} failed: {_text(data)}")
        for item in data:
            if isinstance(item, tuple) and len(item) == 2:
                return item[1]
        return None  # expunged meanwhile

    def mark_seen(self, uid: bytes) -> None:
        typ, data = self.imap.uid("STORE", uid.decode(), "+FLAGS", "(\\Seen)")
        if typ != "OK":
            raise imaplib.IMAP4.error(f"UID STORE {uid.decode()} failed: {_text(data)}")

    def messages(self) -> Iterator[tuple[bytes, bytes]]:
        for uid in self.unseen():
            raw = self.fetch(uid)
            if raw is not None:
                yield uid, raw

    def close(self) -> None:
        try:
            self.imap.logout()
        except (OSError, imaplib.IMAP4.error):
            pass


def _quoted(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(data: object) -> str:
    if isinstance(data, list) and data and isinstance(data[0], bytes):
        return data[0].decode(errors="replace")[:200]
    return str(data)[:200]


__all__ = ["Mailbox", "MailboxSettings", "classify"]
