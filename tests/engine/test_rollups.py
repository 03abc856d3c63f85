"""The metric rollup (engine/rollups.py) on SQLite and PostgreSQL: after random loads through
the importer (points out of order, replaced, repeated within a file), the rollup equals one
rebuilt from the points, and every metric window read from it equals the same window read
by scanning the points, on days before, at and after the points."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsl import nodes as n
from dsl.project import load_text
from engine import rollups
from engine.evaluate import RuleSQL
from engine.importers import import_file
from engine.schema import Base
from engine.store import Store
from store_backends import BACKENDS, fresh_store

DAY0 = dt.date(2026, 6, 1)
IDS = ["a1", "a2", "a3"]
CATALOG = load_text("entity account\n  field x number?\n\nmetric m1\nmetric m2\n").catalog
SERIES = Base.metadata.tables["metric_series"]


@pytest.fixture(scope="module", params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with fresh_store(request.param, tmp_path_factory.mktemp("rollups"), CATALOG) as s:
        yield s


def load(store: Store, folder: Path, kind: Any, rows: list[dict[str, Any]]) -> None:
    path = folder / f"{kind}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    import_file(store, CATALOG, kind, path)


def start_over(store: Store, folder: Path) -> None:
    with store.begin() as conn:
        for t in ("account_changes", "account_field_history", "metric_series", "metric_points"):
            conn.execute(Base.metadata.tables[t].delete())
        conn.execute(store.table("account").delete())
    load(store, folder, "accounts", [{"id": i} for i in IDS])


def series_rows(store: Store) -> list[tuple[Any, ...]]:
    with store.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(sa.select(SERIES)))


def window_calls() -> list[n.Call]:
    calls = []
    for metric in ("m1", "m2"):
        m = n.Symbol(name=metric)
        calls.append(n.Call(func="latest", args=[m]))
        for days in (1, 7, 30):
            window = n.Duration(amount=days, unit=n.DurationUnit.DAYS)
            calls += [n.Call(func=f, args=[m, window]) for f in ("avg", "sum", "min", "max", "growth")]
    return calls


def window_values(store: Store, today: dt.date, call: n.Call, rollups: bool) -> dict[str, object]:
    rules = RuleSQL(CATALOG, today, store.dialect, rollups=rollups)
    with store.connect() as conn:
        return {row[0]: row[1] for row in conn.execute(rules.condition(call).select())}


# Values exact in binary, so sums in any order agree to the bit.
point = st.tuples(st.sampled_from(IDS), st.sampled_from(["m1", "m2"]), st.integers(-40, 3),
                  st.sampled_from([0.0, 0.25, 1.5, 4.0, 10.0, -2.0]))
loads = st.lists(st.lists(point, min_size=1, max_size=8), min_size=1, max_size=4)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(loads=loads)
def test_windows_from_the_rollup_equal_a_scan_of_the_points(store: Store, tmp_path: Path,
                                                            loads: list[list[tuple[str, str, int, float]]]) -> None:
    start_over(store, tmp_path)
    for rows in loads:  # each load a file; a key repeated in it: the later row wins
        load(store, tmp_path, "metrics", [{"account_id": a, "metric": m, "date": str(DAY0 + dt.timedelta(days=d)),
                                           "value": v} for a, m, d, v in rows])
    kept = series_rows(store)
    with store.begin() as conn:
        rollups.rebuild(conn)
    assert kept == series_rows(store)
    for today in (DAY0 - dt.timedelta(days=20), DAY0, DAY0 + dt.timedelta(days=10)):
        for call in window_calls():
            assert window_values(store, today, call, True) == window_values(store, today, call, False), (today, call)


def test_an_older_point_leaves_the_latest_and_a_replaced_latest_moves_its_value(store: Store, tmp_path: Path) -> None:
    start_over(store, tmp_path)
    day = DAY0.isoformat()
    load(store, tmp_path, "metrics", [{"account_id": "a1", "metric": "m1", "date": day, "value": 5}])
    load(store, tmp_path, "metrics", [{"account_id": "a1", "metric": "m1", "date": "2026-05-01", "value": 7}])
    assert series_rows(store) == [("m1", "a1", DAY0, 5.0)]
    load(store, tmp_path, "metrics", [{"account_id": "a1", "metric": "m1", "date": day, "value": 9}])
    assert series_rows(store) == [("m1", "a1", DAY0, 9.0)]
