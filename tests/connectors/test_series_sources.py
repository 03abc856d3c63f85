"""Metric points and events synced from a warehouse (PostgreSQL, a schema of its own) into the store (both kinds)."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connectors.sources import WarehouseReader, load_source_settings
from dsl.project import load_text
from engine import rollups
from engine import schema as db
from engine.importers import import_files
from engine.store import Store
from engine.sync import SourceUnreachable, SyncRefused, run_sync, runs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from store_backends import BACKENDS, PG_URL, fresh_store, pg_schema  # noqa: E402
from source_support import Crashing  # noqa: E402

RULES = '''\
entity account
  field arr money?

metric api_calls per day
metric seats_active per day
event funding_announced
event feature_used
event seat_added

source usage from warehouse
  query """
    select account_id, day, calls, seats, updated_at from {schema}.usage_daily
    """
  incremental by updated_at
  dated by day
  account.id          = account_id
  metric.api_calls    = calls
  metric.seats_active = seats

source rounds from warehouse
  query "select account_id, announced_at, amount, lead_investor from {schema}.funding_rounds"
  incremental by announced_at
  account.id                            = account_id
  event.funding_announced               = announced_at
  event.funding_announced.amount        = amount
  event.funding_announced.lead_investor = lead_investor

source product from warehouse
  query "select account_id, name, at, feature, seats, loaded_at from {schema}.product_events"
  incremental by loaded_at
  named by name
  account.id                 = account_id
  event.feature_used         = at
  event.feature_used.feature = feature
  event.seat_added           = at
  event.seat_added.seats     = seats
'''

D0 = dt.date(2026, 11, 1)
T0 = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def warehouse() -> Iterator[tuple[str, str]]:
    """A PostgreSQL schema of its own standing for the warehouse: (URL, schema)."""
    # `calls` is text, as loosely typed staging tables are: a bad value must be refused by name.
    with pg_schema("usage_daily (account_id text, day date, calls text, seats int, updated_at timestamptz not null, "
                   "primary key (account_id, day))",
                   "funding_rounds (account_id text, announced_at timestamptz, amount numeric, lead_investor text)",
                   "product_events (account_id text, name text, at timestamptz, feature text, seats int, "
                   "loaded_at timestamptz not null)"
                   ) as name:
        yield PG_URL, name


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with fresh_store(request.param, tmp_path) as s:
        yield s


def project(schema: str) -> Any:
    p = load_text(RULES.format(schema=schema), "sources.play")
    assert p.diagnostics == []
    return p


def product(url: str, schema: str, rows: list[tuple[str, Any, dt.datetime | None, Any, Any, dt.datetime]]) -> None:
    eng = sa.create_engine(url)
    with eng.begin() as conn:
        conn.execute(sa.text(f'INSERT INTO "{schema}".product_events VALUES (:a, :n, :t, :f, :s, :l)'),
                     [{"a": r[0], "n": r[1], "t": r[2], "f": r[3], "s": r[4], "l": r[5]} for r in rows])
    eng.dispose()


def with_accounts(store: Store, p: Any, tmp_path: Path, ids: list[str]) -> None:
    path = tmp_path / "accounts.csv"
    path.write_text("id,name\n" + "".join(f"{i},{i.upper()}\n" for i in ids))
    import_files(store, p.catalog, [("accounts", path)])


def usage(url: str, schema: str, rows: list[tuple[str, dt.date, Any, Any, dt.datetime]]) -> None:
    eng = sa.create_engine(url)
    with eng.begin() as conn:
        conn.execute(sa.text(
            f'INSERT INTO "{schema}".usage_daily VALUES (:a, :d, :c, :s, :u) ON CONFLICT (account_id, day) DO UPDATE '
            'SET calls = excluded.calls, seats = excluded.seats, updated_at = excluded.updated_at'),
            [{"a": r[0], "d": r[1], "c": r[2], "s": r[3], "u": r[4]} for r in rows])
    eng.dispose()


def rounds(url: str, schema: str, rows: list[tuple[str, dt.datetime | None, Any, Any]]) -> None:
    eng = sa.create_engine(url)
    with eng.begin() as conn:
        conn.execute(sa.text(f'INSERT INTO "{schema}".funding_rounds VALUES (:a, :t, :m, :l)'),
                     [{"a": r[0], "t": r[1], "m": r[2], "l": r[3]} for r in rows])
    eng.dispose()


def reader(p: Any, name: str, url: str, batch_size: int = 1000) -> WarehouseReader:
    return WarehouseReader(p.catalog.sources[name], load_source_settings(name, url=url, batch_size=batch_size))


def sync(store: Store, p: Any, r: Any, full: bool = False) -> Any:
    return asyncio.run(run_sync(store, p.catalog, p.catalog.sources[r.decl.name], r, full=full))


def points(store: Store) -> dict[tuple[str, str, dt.date], float]:
    t = db.MetricPoint.__table__
    with store.engine.connect() as conn:
        return {(r.metric, r.account_id, r.date): float(r.value)
                for r in conn.execute(sa.select(t.c.metric, t.c.account_id, t.c.date, t.c.value))}


def events(store: Store) -> list[tuple[str, str, dt.datetime, Any]]:
    t = db.Event.__table__
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.account_id, t.c.event, t.c.occurred_at, t.c.payload)
                            .order_by(t.c.account_id, t.c.occurred_at))
        return [(r[0], r[1], r[2].replace(tzinfo=dt.timezone.utc) if r[2].tzinfo is None else r[2], r[3])
                for r in rows]


def series(store: Store) -> dict[tuple[str, str], tuple[dt.date, float]]:
    """The metric rollup (engine/rollups.py): each series' latest point."""
    with store.engine.connect() as conn:
        return {(r[0], r[1]): (r[2] if isinstance(r[2], dt.date) else dt.date.fromisoformat(r[2]), float(r[3]))
                for r in conn.execute(sa.text("SELECT metric, account_id, last_date, last_value FROM metric_series"))}


def changed_accounts(store: Store) -> set[str]:
    """Accounts the next incremental sweep evaluates (engine/changes.py)."""
    t = db.AccountChange.__table__
    with store.engine.connect() as conn:
        return {r[0] for r in conn.execute(sa.select(t.c.account_id))}


def forget_changes(store: Store) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.delete(db.AccountChange.__table__))


def day(i: int) -> dt.date:
    return D0 + dt.timedelta(days=i)


def test_metric_rows_land_as_points_of_each_mapped_metric_dated_by_their_column(warehouse, store, tmp_path):
    url, schema = warehouse
    p = project(schema)
    with_accounts(store, p, tmp_path, ["a1", "a2"])
    usage(url, schema, [("a1", day(0), "100", 5, T0), ("a1", day(1), "120", 6, T0 + dt.timedelta(minutes=1)),
                        ("a2", day(0), None, 9, T0 + dt.timedelta(minutes=2))])  # no calls counted: no point
    result = sync(store, p, reader(p, "usage", url, batch_size=2))
    assert (result.status, result.read, result.batches, result.created) == ("ok", 3, 2, 5)
    assert points(store) == {
        ("api_calls", "a1", day(0)): 100, ("api_calls", "a1", day(1)): 120,
        ("seats_active", "a1", day(0)): 5, ("seats_active", "a1", day(1)): 6, ("seats_active", "a2", day(0)): 9}


def test_the_same_point_synced_twice_is_one_point_and_a_changed_row_rewrites_it(warehouse, store, tmp_path):
    url, schema = warehouse
    p = project(schema)
    with_accounts(store, p, tmp_path, ["a1"])
    usage(url, schema, [("a1", day(i), str(10 * i), 1, T0 + dt.timedelta(minutes=i)) for i in range(4)])
    sync(store, p, reader(p, "usage", url))
    first = points(store)
    again = sync(store, p, reader(p, "usage", url), full=True)
    assert again.read == 4 and points(store) == first  # eight points, not sixteen
    usage(url, schema, [("a1", day(2), "999", 1, T0 + dt.timedelta(hours=1))])
    later = sync(store, p, reader(p, "usage", url))
    assert later.read == 1  # only the row past the cursor
    assert points(store) == {**first, ("api_calls", "a1", day(2)): 999}
    assert series(store) == {("api_calls", "a1"): (day(3), 30), ("seats_active", "a1"): (day(3), 1)}
    with store.engine.begin() as conn:
        rollups.rebuild(conn)  # the rollup the loader kept equals one recomputed from the points
    assert series(store) == {("api_calls", "a1"): (day(3), 30), ("seats_active", "a1"): (day(3), 1)}


def test_rows_sharing_an_updated_at_across_batch_edges_are_all_read_once(warehouse, store, tmp_path):
    url, schema = warehouse
    p = project(schema)
    with_accounts(store, p, tmp_path, ["a1", "a2"])
    # One nightly load: every row has the same updated_at, and each account several days.
    usage(url, schema, [(a, day(i), "1", 1, T0) for a in ("a1", "a2") for i in range(4)])
    result = sync(store, p, reader(p, "usage", url, batch_size=3))
    assert (result.read, result.batches) == (8, 3)
    assert len(points(store)) == 16


def test_a_metric_sync_that_dies_resumes_from_the_cursor_of_its_last_written_batch(warehouse, store, tmp_path):
    url, schema = warehouse
    p = project(schema)
    with_accounts(store, p, tmp_path, ["a1"])
    usage(url, schema, [("a1", day(i), str(i), None, T0 + dt.timedelta(minutes=i)) for i in range(7)])
    with pytest.raises(SourceUnreachable):
        sync(store, p, Crashing(reader(p, "usage", url, batch_size=3), batches=1))
    assert sorted(d for (_, _, d) in points(store)) == [day(i) for i in range(3)]
    with store.engine.connect() as conn:
        died = runs(conn, "usage")[0]
    assert (died["status"], died["batches"], died["read"]) == ("failed", 1, 3)
    assert died["cursor"]["keys"] == ["a1", {"date": day(2).isoformat()}]
    resumed = sync(store, p, reader(p, "usage", url, batch_size=3))
    assert (resumed.status, resumed.read, resumed.created) == ("ok", 4, 4)  # only what was not written
    assert len(points(store)) == 7


def test_a_bad_metric_value_refuses_its_batch_naming_source_record_and_field(warehouse, store, tmp_path):
    url, schema = warehouse
    p = project(schema)
    with_accounts(store, p, tmp_path, ["a1"])
    usage(url, schema, [("a1", day(0), "12", 1, T0), ("a1", day(1), "lots", 1, T0 + dt.timedelta(minutes=1)),
                        ("a9", day(0), "3", 1, T0 + dt.timedelta(minutes=2))])
    with pytest.raises(SyncRefused) as err:
        sync(store, p, reader(p, "usage", url))
    bad, unknown, unknown2 = err.value.errors
    assert (bad.source, bad.record, bad.field) == ("usage", "a1 2026-11-02 (account_id, day)",
                                                   "metric.api_calls <- calls")
    assert "lots" in bad.reason
    assert str(bad).startswith("source usage: record a1 2026-11-02 (account_id, day): metric.api_calls <- calls: ")
    assert (unknown.record, unknown.field) == ("a9 2026-11-01 (account_id, day)", "account.id <- account_id")
    assert unknown2.record == unknown.record  # its seats point: the same record
    assert points(store) == {}
    with store.engine.connect() as conn:
        run = runs(conn, "usage")[0]
    assert (run["status"], run["read"], run["refused"], run["cursor"]) == ("refused", 3, 2, None)


def test_event_rows_land_as_the_declared_event_with_their_properties_once(warehouse, store, tmp_path):
    url, schema = warehouse
    p = project(schema)
    with_accounts(store, p, tmp_path, ["a1", "a2"])
    rounds(url, schema, [("a1", T0, 5_000_000, "Acme Ventures"), ("a2", T0 + dt.timedelta(days=1), None, None),
                         ("a2", None, 1, "never announced")])  # no time: no event
    first = sync(store, p, reader(p, "rounds", url, batch_size=1))
    assert (first.status, first.read, first.created) == ("ok", 2, 2)
    expected = [("a1", "funding_announced", T0, {"amount": "5000000", "lead_investor": "Acme Ventures"}),
                ("a2", "funding_announced", T0 + dt.timedelta(days=1), None)]
    assert events(store) == expected
    again = sync(store, p, reader(p, "rounds", url), full=True)
    assert again.read == 2 and events(store) == expected  # the same event twice is one event
    rounds(url, schema, [("a1", T0 + dt.timedelta(days=5), 7, "Beta")])
    later = sync(store, p, reader(p, "rounds", url))
    assert later.read == 1 and len(events(store)) == 3


def test_an_event_of_an_unknown_account_is_refused_naming_record_and_field(warehouse, store, tmp_path):
    url, schema = warehouse
    p = project(schema)
    rounds(url, schema, [("a7", T0, 1, "x")])
    with pytest.raises(SyncRefused) as err:
        sync(store, p, reader(p, "rounds", url))
    (problem,) = err.value.errors
    assert problem.record.startswith("a7 2026-12-01") and problem.record.endswith("(account_id, announced_at)")
    assert problem.field == "account.id <- account_id"
    assert events(store) == []


def test_synced_points_and_events_mark_their_accounts_for_the_next_sweep_and_a_refused_batch_none(
        warehouse, store, tmp_path):
    url, schema = warehouse
    p = project(schema)
    with_accounts(store, p, tmp_path, ["a1", "a2", "a3"])
    forget_changes(store)
    usage(url, schema, [("a1", day(0), "1", 1, T0)])
    rounds(url, schema, [("a2", T0, 1, "x")])
    sync(store, p, reader(p, "usage", url))
    sync(store, p, reader(p, "rounds", url))
    assert changed_accounts(store) == {"a1", "a2"}
    forget_changes(store)
    usage(url, schema, [("a3", day(0), "bad", 1, T0 + dt.timedelta(hours=1))])
    with pytest.raises(SyncRefused):
        sync(store, p, reader(p, "usage", url))
    assert changed_accounts(store) == set()


def test_a_named_by_source_lands_each_row_as_the_event_its_column_names_with_that_events_properties(
        warehouse, store, tmp_path):
    url, schema = warehouse
    p = project(schema)
    with_accounts(store, p, tmp_path, ["a1", "a2"])
    # Two events of a1 at the same time: both land, and a batch edge between them loses neither.
    product(url, schema, [("a1", "feature_used", T0, "sso", None, T0),
                          ("a1", "seat_added", T0, None, 3, T0),
                          ("a2", "seat_added", T0 + dt.timedelta(hours=1), "ignored", 2, T0)])
    result = sync(store, p, reader(p, "product", url, batch_size=1))
    assert (result.status, result.read, result.created, result.skipped) == ("ok", 3, 3, 0)
    assert events(store) == [("a1", "feature_used", T0, {"feature": "sso"}),
                             ("a1", "seat_added", T0, {"seats": 3}),
                             ("a2", "seat_added", T0 + dt.timedelta(hours=1), {"seats": 2})]


def test_a_named_by_source_skips_rows_naming_an_event_it_does_not_land_and_counts_them_by_name(
        warehouse, store, tmp_path):
    url, schema = warehouse
    p = project(schema)
    with_accounts(store, p, tmp_path, ["a1"])
    product(url, schema, [("a1", "Signed Up", T0, None, None, T0),
                          ("a1", "Signed Up", T0 + dt.timedelta(minutes=1), None, None, T0),
                          ("a1", "feature_usd", T0, "sso", None, T0),
                          ("a1", "feature_used", T0, "sso", None, T0),
                          ("a1", None, T0, "no name: not read", None, T0)])
    result = sync(store, p, reader(p, "product", url, batch_size=2))
    assert (result.status, result.read, result.created, result.skipped) == ("ok", 4, 1, 3)
    assert result.skipped_names == {"Signed Up": 2, "feature_usd": 1}
    assert events(store) == [("a1", "feature_used", T0, {"feature": "sso"})]
    with store.engine.connect() as conn:
        (last,) = runs(conn, "product", limit=1)
    assert (last["skipped"], last["skipped_names"]) == (3, {"Signed Up": 2, "feature_usd": 1})


def test_a_named_by_event_of_an_unknown_account_is_refused_naming_record_name_and_field(warehouse, store, tmp_path):
    url, schema = warehouse
    p = project(schema)
    product(url, schema, [("a9", "seat_added", T0, None, 1, T0)])
    with pytest.raises(SyncRefused) as err:
        sync(store, p, reader(p, "product", url))
    (problem,) = err.value.errors
    assert problem.record.startswith("a9 seat_added 2026-12-01")
    assert problem.record.endswith("(account_id, name, at)")
    assert problem.field == "account.id <- account_id"
    assert events(store) == []
