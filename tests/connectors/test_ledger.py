"""The ledger as connectors call it: a store that cannot be reached is a transient error, not a crash."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from connectors import base as cb
from connectors.ledger import in_ledger
from engine.store import Store

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_work_runs_in_one_committed_transaction(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path / 's.db'}")
    try:
        assert await in_ledger(store, lambda c: c.execute(sa.text("select 41 + 1")).scalar(), "x") == 42
    finally:
        store.close()


async def test_an_unreachable_postgresql_is_transient_and_names_the_connector():
    from peers import free_port

    # A closed loopback port: nothing listens, the connection is refused.
    store = Store.open(f"postgresql://postgres@127.0.0.1:{free_port()}/none", migrate=False)
    store.retry = lambda work, **_: Store.retry(store, work, delays=())  # type: ignore[method-assign]
    try:
        with pytest.raises(cb.TransientError, match="^slack: outbox ledger: "):
            await in_ledger(store, lambda c: c.execute(sa.text("select 1")).scalar(), "slack")
    finally:
        store.close()
