"""The outbox ledger (engine/outbox.py) as connectors call it: one transaction in a thread,
a store that cannot be reached a TransientError (the step is retried, nothing is sent meanwhile)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connectors import base as cb
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


__all__ = ["in_ledger"]
