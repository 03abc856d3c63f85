"""A throwaway store on SQLite or PostgreSQL for the store's own suites.

PostgreSQL: one schema per store (created, used through `search_path`, and
dropped with CASCADE afterwards), so suites can run side by side in the
shared `test` database. Skipped, with the reason, when the server is down.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from dsl.catalog import Catalog
from engine.store import Store

PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
BACKENDS = ["sqlite", "postgresql"]


def pg_reason() -> str | None:
    """None if PostgreSQL answers, else why not."""
    try:
        eng = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with eng.connect():
            pass
        eng.dispose()
        return None
    except Exception as e:  # any failure means: skip, and say why
        return f"PostgreSQL is not reachable at 127.0.0.1:5432 ({type(e).__name__}: {str(e).strip()[:120]})"


@contextmanager
def scratch_schema(prefix: str, *tables: str, when_down: Callable[[str], Any] = pytest.fail) -> Iterator[str]:
    """A PostgreSQL schema of its own, named PREFIX_<random>, holding `tables` (each the text after
    `CREATE TABLE "SCHEMA".`); dropped with CASCADE afterwards. A server that is down calls `when_down`
    with the reason (pytest.fail or pytest.skip)."""
    reason = pg_reason()
    if reason:
        when_down(reason)
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        for table in tables:
            conn.execute(sa.text(f'CREATE TABLE "{schema}".{table}'))
    try:
        yield schema
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def pg_schema(*tables: str) -> AbstractContextManager[str]:
    """A warehouse schema for the source tests (scratch_schema); fails, not skips, when the server is down."""
    return scratch_schema("pb_wh", *tables)


@contextmanager
def fresh_store(kind: str, folder: Path, catalog: Catalog | None = None, *, migrate: bool = True) -> Iterator[Store]:
    if kind == "sqlite":
        store = Store.open(f"sqlite:///{folder}/store-{uuid.uuid4().hex[:8]}.db", catalog=catalog, migrate=migrate)
        try:
            yield store
        finally:
            store.close()
        return
    with scratch_schema("pb_store", when_down=pytest.skip) as schema:
        store = Store.open(f"{PG_URL}?options=-csearch_path%3D{schema}", catalog=catalog, migrate=migrate)
        try:
            yield store
        finally:
            store.close()
