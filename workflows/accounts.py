"""Accounts as the activities see them, read from the store (engine/)."""

from __future__ import annotations

import asyncio
import datetime as dt

from connectors.base import MissingDataError, TransientError
from dsl.catalog import Catalog
from dsl.evaluator import Account
from engine import actions, lookup
from engine.store import Store, StoreUnreachable
from workflows.activities import Recipient, Sender


class StoreAccounts:
    """`AccountSource` over the store: evaluator snapshots and contacts (engine/lookup.py)."""

    def __init__(self, store: Store, catalog: Catalog) -> None:
        self.store = store
        self.catalog = catalog

    async def snapshot(self, account_id: str) -> Account:
        try:
            account = await asyncio.to_thread(lookup.account, self.store, self.catalog, account_id)
        except StoreUnreachable as exc:
            raise TransientError(f"store: {exc.cause}") from exc
        if account is None:
            raise MissingDataError(f"no account {account_id!r} in the store")
        return account

    async def recipient(self, account_id: str, contact: str) -> Recipient:
        """A contact field holds a contacts.id; an address is accepted as is."""
        found = await asyncio.to_thread(lookup.contact, self.store, contact)
        if found is None:
            if "@" in contact:
                return Recipient(address=contact)
            raise MissingDataError(f"contact {contact!r} of account {account_id} is not in the store")
        if not found.email:
            raise MissingDataError(f"contact {contact!r} of account {account_id} has no email address")
        return Recipient(address=found.email, name=found.name, first_name=found.first_name,
                         unsubscribed=found.unsubscribed, bounced=found.bounced)

    async def user(self, user_id: str) -> Sender:
        found = await asyncio.to_thread(lookup.user, self.store, user_id)
        if found is None:
            raise MissingDataError(f"user {user_id!r} is not in the store")
        return Sender(name=found.name, email=found.email)

    async def record_bounce(self, address: str, at: dt.datetime) -> None:
        try:
            await asyncio.to_thread(self.store.retry, lambda: actions.bounce(self.store, address, at))
        except StoreUnreachable as exc:
            raise TransientError(f"store: {exc.cause}") from exc
