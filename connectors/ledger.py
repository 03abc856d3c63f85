"""The outbox ledger (engine/outbox.py) as connectors call it: one transaction in a thread,
a store that cannot be reached a TransientError (the step is retried, nothing is sent meanwhile);
and the claim-build-deliver-record round every email connector makes (`send_email`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from email.message import EmailMessage as MimeMessage
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connectors import base as cb
from connectors import mail
from engine import outbox
from engine.store import Store, StoreUnreachable

T = TypeVar("T")


async def in_ledger(store: Store, work: Callable[[Connection], T], what: str) -> T:
    """`work` in one transaction of `store` (retried by the store on a dropped connection)."""

    def once() -> T:
        with store.begin() as conn:
            return work(conn)

    def run() -> T:
        try:
            return store.retry(once)
        except StoreUnreachable as exc:
            raise cb.TransientError(f"{what}: outbox ledger: {exc.cause}") from exc
        except sa.exc.OperationalError as exc:  # locked
            raise cb.TransientError(f"{what}: outbox ledger: {exc.orig}") from exc

    return await asyncio.to_thread(run)


async def send_email(store: Store, what: str, action: cb.EmailMessage, settings: mail.MailSettings, sender: str,
                     deliver: Callable[[MimeMessage], Awaitable[str | None]]) -> cb.EmailResult:
    """One email through `deliver` (which returns the provider's own id, if any), once per key:
    claimed in the outbox with its Message-ID first, then marked sent or failed."""
    message_id = mail.message_id(action.key, settings.domain)
    claim = await in_ledger(store, lambda c: outbox.claim(
        c, key=action.key, channel="email", recipient=action.to, subject=action.subject, body=action.body,
        account_id=action.account_id, play=action.play, at=action.requested_at, message_id=message_id), what)
    if claim.sent or claim.cancelled:
        return cb.EmailResult(key=action.key, duplicate=True, external_id=claim.provider_message_id)
    try:
        message = mail.build(action, settings, sender=sender)  # injection refused before the provider is called
        provider_id = await deliver(message)
    except cb.ConnectorError as exc:
        error = exc
        await in_ledger(store, lambda c: outbox.mark_failed(c, action.key, str(error), permanent=not error.retryable),
                        what)
        raise
    await in_ledger(store, lambda c: outbox.mark_sent(c, action.key, provider_message_id=message_id,
                                                      at=dt.datetime.now(dt.timezone.utc)), what)
    logging.getLogger(f"playbook.{what}").info("sent %s to %s (%s%s)", action.template, action.to, message_id,
                                               f", {what} {provider_id}" if provider_id else "")
    return cb.EmailResult(key=action.key, external_id=message_id)


__all__ = ["in_ledger", "send_email"]
