"""benchmarks/copy_store.py: a store copied SQLite -> PostgreSQL -> SQLite keeps every row and value."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "engine"))

from store_backends import PG_URL, scratch_schema  # noqa: E402

from dsl.project import load  # noqa: E402
from engine import schema  # noqa: E402
from engine.demo_data import generate  # noqa: E402
from engine.store import Store  # noqa: E402

spec = importlib.util.spec_from_file_location("copy_store", ROOT / "benchmarks" / "copy_store.py")
assert spec is not None and spec.loader is not None
copy_store = importlib.util.module_from_spec(spec)
spec.loader.exec_module(copy_store)


@pytest.fixture
def pg_schema() -> Iterator[str]:
    with scratch_schema("pb_copy", when_down=pytest.skip) as name:
        yield f"{PG_URL}?options=-csearch_path%3D{name}"


def _source(folder: Path) -> str:
    """A small demo store plus rows with the awkward values: JSON, text needing escapes, NULLs, booleans."""
    catalog = load([ROOT / "playbooks"]).catalog
    url = f"sqlite:///{folder}/src.db"
    with Store.open(url, catalog=catalog) as store:
        generate(catalog, 60, seed=7, today=dt.date(2026, 6, 1), store=store, chunk_size=25)
        with store.begin() as conn:
            conn.execute(schema.AuditEntry.__table__.insert(), [
                {"actor": "t\\a\tb", "action": "line\nbreak\r", "subject": None,
                 "detail": {"quote": 'say "hi"', "n": 0.1, "list": [1, None]},
                 "at": dt.datetime(2026, 5, 1, 12, 30, 1, 250, tzinfo=dt.timezone.utc)}])
            conn.execute(schema.SyncRun.__table__.insert(), [
                {"source": "crm", "status": "ok", "full": True, "cursor": None},
                {"source": "crm", "status": "ok", "full": False, "cursor": {"at": "2026-05-01"}}])
    return url


def _dump(path: Path) -> dict[str, list[tuple]]:
    """Every table's rows as stored on SQLite, JSON columns parsed (PostgreSQL orders keys its own way)."""
    conn = sqlite3.connect(path)
    try:
        out = {}
        for table in schema.Base.metadata.sorted_tables:
            cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{table.name}")')]
            json_cols = {c.name for c in table.columns if isinstance(c.type, sa.JSON)}
            rows = conn.execute(f'SELECT {", ".join(chr(34) + c + chr(34) for c in cols)} FROM "{table.name}"')
            out[table.name] = sorted(
                (tuple(json.loads(v) if c in json_cols and v is not None else v for c, v in zip(cols, row))
                 for row in rows), key=repr)
        out["alembic_version"] = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        return out
    finally:
        conn.close()


def test_sqlite_to_postgresql_and_back_keeps_every_row(tmp_path: Path, pg_schema: str) -> None:
    src = _source(tmp_path)
    counts = copy_store.copy_store(src, pg_schema, analyze=True, say=lambda _m: None)
    back = f"sqlite:///{tmp_path}/back.db"
    assert copy_store.copy_store(pg_schema, back, say=lambda _m: None) == counts
    assert counts["accounts"] == 60 and counts["metric_points"] > 0 and counts["audit_log"] > 0
    before, after = _dump(tmp_path / "src.db"), _dump(tmp_path / "back.db")
    assert before.keys() == after.keys()
    for table in before:
        assert after[table] == before[table], table


def test_postgresql_copy_takes_new_ids_after_the_copied_ones(tmp_path: Path, pg_schema: str) -> None:
    copy_store.copy_store(_source(tmp_path), pg_schema, say=lambda _m: None)
    with Store.open(pg_schema, migrate=False) as store, store.begin() as conn:
        top = conn.execute(sa.text("SELECT max(id) FROM audit_log")).scalar_one()
        store.audit(conn, "t", "after-copy")
        assert conn.execute(sa.text("SELECT max(id) FROM audit_log")).scalar_one() == top + 1


def test_a_destination_holding_accounts_is_refused(tmp_path: Path) -> None:
    src = _source(tmp_path)
    with pytest.raises(copy_store.CopyError, match="already holds accounts"):
        copy_store.copy_store(src, src, say=lambda _m: None)


def test_an_analyzed_postgresql_copy_is_vacuumed_as_autovacuum_would(tmp_path: Path, pg_schema: str) -> None:
    copy_store.copy_store(_source(tmp_path), pg_schema, analyze=True, say=lambda _m: None)
    with Store.open(pg_schema, migrate=False) as store, store.begin() as conn:
        # Whether the pages became all-visible depends on other sessions' open transactions
        # (the tests run in parallel), so what is held is that VACUUM ran on the copied tables.
        vacuumed = conn.execute(sa.text(
            "SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables "
            "WHERE relid = 'metric_points'::regclass")).scalar_one()
    assert vacuumed
