"""Reads of single records for the layers above: an account's fields, a
contact, a user. The activities and the sweep's start step use these instead
of querying tables themselves (workflows/ touches no table)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from dsl.catalog import Catalog
from dsl.evaluator import Account
from engine import schema
from engine.evaluate import snapshot
from engine.store import Store

CONTACTS = schema.Contact.__table__
USERS = schema.User.__table__


def account(store: Store, catalog: Catalog, account_id: str) -> Account | None:
    """Everything a rule may read about the account, plus its `name` (templates use it); None: no such account.

    A fault of the store is `StoreUnreachable`, at once: the activities that
    read accounts have Temporal's retries, which outlast a server restart.
    """
    accounts = store.table("account", catalog)

    def read() -> Account | None:
        with store.connect() as conn:
            found = snapshot(conn, catalog, accounts, account_id)
            if found is not None:
                # Core columns (name) are not declared fields but templates use them.
                name = conn.execute(sa.select(accounts.c.name).where(accounts.c.id == account_id)).scalar()
                found.fields.setdefault("name", name)
            return found

    return store.retry(read, delays=())


def account_fields(store: Store, catalog: Catalog, ids: Collection[str],
                   fields: Sequence[str]) -> dict[str, dict[str, Any]]:
    """account id -> {"id": ..., field: value} for the accounts in `ids` that exist.

    `fields` the account table does not have are left out."""
    accounts = store.table("account", catalog)
    if not ids:
        return {}
    cols = [accounts.c.id, *(accounts.c[f] for f in fields if f in accounts.c)]
    with store.connect() as conn:
        return {r[0]: dict(r._mapping) for r in conn.execute(sa.select(*cols).where(accounts.c.id.in_(sorted(ids))))}


def contact_zones(store: Store, refs: Collection[str]) -> dict[str, str | None]:
    """Contact id or email address -> that contact's time zone (None: not set), for the contacts in `refs`."""
    zones: dict[str, str | None] = {}
    if not refs:
        return zones
    with store.connect() as conn:
        for cid, email, tz in conn.execute(sa.select(CONTACTS.c.id, CONTACTS.c.email, CONTACTS.c.timezone)
                                           .where(sa.or_(CONTACTS.c.id.in_(refs), CONTACTS.c.email.in_(refs)))):
            zones[cid] = tz
            if email:
                zones.setdefault(email, tz)
    return zones


@dataclass(frozen=True)
class Contact:
    email: str | None
    name: str | None
    first_name: str | None
    unsubscribed: bool
    bounced: bool = False  # a mail server refused the address for good


def contact(store: Store, ref: str) -> Contact | None:
    """The contact whose id or email address is `ref`."""
    with store.connect() as conn:
        row = conn.execute(
            sa.select(CONTACTS.c.email, CONTACTS.c.name, CONTACTS.c.first_name, CONTACTS.c.unsubscribed_at,
                      CONTACTS.c.bounced_at)
            .where(sa.or_(CONTACTS.c.id == ref, CONTACTS.c.email == ref))).first()
    if row is None:
        return None
    return Contact(row.email, row.name, row.first_name, row.unsubscribed_at is not None, row.bounced_at is not None)


@dataclass(frozen=True)
class User:
    name: str | None
    email: str | None


def user(store: Store, user_id: str) -> User | None:
    with store.connect() as conn:
        row = conn.execute(sa.select(USERS.c.name, USERS.c.email).where(USERS.c.id == user_id)).first()
    return None if row is None else User(row.name, row.email)


__all__ = ["Contact", "User", "account", "account_fields", "contact", "contact_zones", "user"]
