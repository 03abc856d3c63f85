"""Accounts as the activities see them, read from the store (engine/)."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from connectors.base import MissingDataError, TransientError
from dsl.catalog import Catalog
from dsl.evaluator import Account
from engine import schema
from engine.evaluate import snapshot
from engine.store import Store
from workflows.activities import Recipient, Sender

CONTACTS = schema.Contact.__table__


class StoreAccounts:
    """`AccountSource` over the store: evaluator snapshots and contacts."""

    def __init__(self, store: Store, catalog: Catalog) -> None:
        self.store = store
        self.catalog = catalog
        self.accounts = store.table("account", catalog)

    async def snapshot(self, account_id: str) -> Account:
        def read() -> Account | None:
            with self.store.connect() as conn:
                found = snapshot(conn, self.catalog, self.accounts, account_id)
                if found is not None:
                    # Core columns (name) are not declared fields but templates use them.
                    name = conn.execute(sa.select(self.accounts.c.name).where(self.accounts.c.id == account_id)).scalar()
                    found.fields.setdefault("name", name)
                return found

        try:
            account = await asyncio.to_thread(read)
        except sa.exc.OperationalError as exc:
            raise TransientError(f"store: {exc.orig}") from exc
        if account is None:
            raise MissingDataError(f"no account {account_id!r} in the store")
        return account

    async def recipient(self, account_id: str, contact: str) -> Recipient:
        """A contact field holds a contacts.id; an address is accepted as is."""

        def read() -> sa.Row | None:
            with self.store.connect() as conn:
                return conn.execute(
                    sa.select(CONTACTS.c.email, CONTACTS.c.name, CONTACTS.c.first_name, CONTACTS.c.unsubscribed_at)
                    .where(sa.or_(CONTACTS.c.id == contact, CONTACTS.c.email == contact))
                ).first()

        row = await asyncio.to_thread(read)
        if row is None:
            if "@" in contact:
                return Recipient(address=contact)
            raise MissingDataError(f"contact {contact!r} of account {account_id} is not in the store")
        if not row.email:
            raise MissingDataError(f"contact {contact!r} of account {account_id} has no email address")
        return Recipient(address=row.email, name=row.name, first_name=row.first_name,
                         unsubscribed=row.unsubscribed_at is not None)

    async def user(self, user_id: str) -> Sender:
        users = schema.User.__table__

        def read() -> sa.Row | None:
            with self.store.connect() as conn:
                return conn.execute(sa.select(users.c.name, users.c.email).where(users.c.id == user_id)).first()

        row = await asyncio.to_thread(read)
        if row is None:
            raise MissingDataError(f"user {user_id!r} is not in the store")
        return Sender(name=row.name, email=row.email)
