"""Reading replies and bounces from IMAP into the same record-then-signal path as `playbook serve`.

`poll_once` reads the unseen messages (connectors/inbound_imap.py), records
each event (workflows/inbound.py `Inbound.accept`), and only then marks the
message \\Seen: a store fault leaves it unseen for the next poll, and a
message read twice records nothing new (its Message-ID is the key). A message
that names no known account or is no reply is marked \\Seen with a log line,
so it is not read again and again. `poll_forever` is `playbook serve --imap`
and `playbook imap-poll`.
"""

from __future__ import annotations

import asyncio
import imaplib
import logging
from dataclasses import dataclass

from connectors.inbound import Ignored, Refused, ServeSettings
from connectors.inbound_imap import Mailbox, MailboxSettings, classify
from engine.store import StoreUnreachable
from workflows.inbound import Inbound

log = logging.getLogger("playbook.imap")


class ImapSettingsError(ValueError):
    """The IMAP settings are incomplete."""


@dataclass
class PollReport:
    read: int = 0
    accepted: int = 0
    duplicates: int = 0
    ignored: int = 0  # not a reply or a failure report, or no account found


def mailbox_settings(settings: ServeSettings) -> MailboxSettings:
    missing = [n for n in ("imap_host", "imap_user", "imap_password") if getattr(settings, n) is None]
    if missing:
        raise ImapSettingsError(f"IMAP needs {', '.join(missing)} (PLAYBOOK_SERVE_IMAP_HOST, ... or [serve])")
    assert settings.imap_host and settings.imap_user and settings.imap_password  # checked just above
    return MailboxSettings(settings.imap_host, settings.imap_port, settings.imap_user, settings.imap_password,
                           settings.imap_mailbox, settings.imap_tls)


async def poll_once(inbound: Inbound, mailbox: MailboxSettings) -> PollReport:
    report = PollReport()
    box = await asyncio.to_thread(Mailbox, mailbox)
    try:
        uids = await asyncio.to_thread(box.unseen)
        for uid in uids:
            raw = await asyncio.to_thread(box.fetch, uid)
            if raw is None:
                continue
            report.read += 1
            event = classify(raw)
            if isinstance(event, Ignored):
                log.info("imap: %s ignored: %s", event.key, event.reason)
                report.ignored += 1
            else:
                try:
                    got = await inbound.accept(event)
                except Refused as exc:
                    log.warning("imap: %s ignored: %s", event.key, exc.reason)
                    report.ignored += 1
                else:
                    report.accepted += not got.duplicate
                    report.duplicates += got.duplicate
                    log.info("imap: %s: %s for %s%s", event.key, event.kind, got.account_id,
                             " (already recorded)" if got.duplicate else "")
            await asyncio.to_thread(box.mark_seen, uid)  # only after it is recorded
    finally:
        await asyncio.to_thread(box.close)
    return report


async def poll_forever(inbound: Inbound, settings: ServeSettings, stop: asyncio.Event) -> None:
    """Poll every `imap_poll_seconds` until `stop`; a fault is one log line and a retry next time."""
    mailbox = mailbox_settings(settings)
    while not stop.is_set():
        try:
            report = await poll_once(inbound, mailbox)
            if report.read:
                log.info("imap: %d read, %d new, %d already recorded, %d ignored", report.read, report.accepted,
                         report.duplicates, report.ignored)
        except (OSError, imaplib.IMAP4.error, StoreUnreachable) as exc:
            log.warning("imap %s:%d: %s (retrying in %.0f s)", mailbox.host, mailbox.port,
                        str(exc)[:200] or type(exc).__name__, settings.imap_poll_seconds)
        try:
            await asyncio.wait_for(stop.wait(), timeout=settings.imap_poll_seconds)
        except TimeoutError:
            pass


__all__ = ["ImapSettingsError", "PollReport", "mailbox_settings", "poll_forever", "poll_once"]
