"""The metric rollup (engine/rollups.py) on SQLite and PostgreSQL: after random loads through
the importer (points out of order, replaced, repeated within a file), the rollup equals one
rebuilt from the points, and every metric window read from it equals the same window read
by scanning the points, on days before, at and after the points; windows within a series'
kept points (read from its row), reaching past them (read from the points), and series
with more points than a row keeps, with empty values, or shorter than the window."""

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
from engine.importers import import_file, import_files
from engine.schema import KEPT, Base
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
        for days in (1, 7, 30, 60):
            window = n.Duration(amount=days, unit=n.DurationUnit.DAYS)
            calls += [n.Call(func=f, args=[m, window]) for f in ("avg", "sum", "min", "max", "growth")]
    return calls


def window_values(store: Store, today: dt.date, call: n.Call, rollups: bool) -> dict[str, object]:
    rules = RuleSQL(CATALOG, today, store.dialect, rollups=rollups)
    with store.connect() as conn:
        return {row[0]: row[1] for row in conn.execute(rules.condition(call).select())}


# Values exact in binary, so sums in any order agree to the bit.
VALUES = [0.0, 0.25, 1.5, 4.0, 10.0, -2.0]
point = st.tuples(st.sampled_from(IDS), st.sampled_from(["m1", "m2"]), st.integers(-40, 3), st.sampled_from(VALUES))
# Dense loads: series with more points than a row keeps (KEPT), so windows reach past them.
dense = st.tuples(st.sampled_from(IDS[:1]), st.just("m1"), st.integers(-70, 3), st.sampled_from(VALUES))
loads = st.one_of(st.lists(st.lists(point, min_size=1, max_size=8), min_size=1, max_size=4),
                  st.lists(st.lists(dense, min_size=1, max_size=40), min_size=1, max_size=3))


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
    assert [r[:6] for r in series_rows(store)] == [("m1", "a1", DAY0, 5.0, 2, (dt.date(2026, 5, 1) - rollups.EPOCH).days)]
    load(store, tmp_path, "metrics", [{"account_id": "a1", "metric": "m1", "date": day, "value": 9}])
    assert [r[:4] for r in series_rows(store)] == [("m1", "a1", DAY0, 9.0)]


def daily(store: Store, tmp_path: Path, days: range, value: Any) -> None:
    load(store, tmp_path, "metrics", [{"account_id": "a1", "metric": "m1", "date": str(DAY0 + dt.timedelta(days=d)),
                                       "value": value(d)} for d in days])


def test_a_row_keeps_the_newest_points_and_windows_past_them_read_the_points(store: Store, tmp_path: Path) -> None:
    start_over(store, tmp_path)
    daily(store, tmp_path, range(-39, 1), lambda d: 100.0 + d)  # 40 daily points
    (row,) = series_rows(store)
    assert row[4] == KEPT
    assert row[5:7] == ((DAY0 - rollups.EPOCH).days - 1, 99.0)  # the point before the latest
    assert row[-2:] == ((DAY0 - rollups.EPOCH).days - (KEPT - 1), 100.0 - (KEPT - 1))  # the oldest kept
    # Re-imports: a point among the kept ones replaced, one older than them, then a newer one.
    daily(store, tmp_path, range(-5, -4), lambda d: 7.0)
    daily(store, tmp_path, range(-30, -29), lambda d: 3.0)
    daily(store, tmp_path, range(2, 3), lambda d: 1.0)
    kept = series_rows(store)
    with store.begin() as conn:
        rollups.rebuild(conn)
    assert kept == series_rows(store)
    for today in (DAY0 - dt.timedelta(days=3), DAY0, DAY0 + dt.timedelta(days=2), DAY0 + dt.timedelta(days=40)):
        for call in window_calls():
            assert window_values(store, today, call, True) == window_values(store, today, call, False), (today, call)


def test_empty_values_in_kept_points_are_skipped_as_the_aggregates_skip_them(store: Store, tmp_path: Path) -> None:
    """Points written without the importer (which refuses empty values), then `rebuild`."""
    start_over(store, tmp_path)
    points = Base.metadata.tables["metric_points"]
    rows = [("a1", -3, None), ("a1", -2, 4.0), ("a1", 0, None), ("a2", -1, None), ("a2", 0, None),
            ("a3", -20, 1.5), ("a3", -1, None), ("a3", 0, 10.0)]
    with store.begin() as conn:
        conn.execute(points.insert(), [{"metric": "m1", "account_id": a, "date": DAY0 + dt.timedelta(days=d),
                                        "value": v} for a, d, v in rows])
        rollups.rebuild(conn)
    for call in window_calls():
        assert window_values(store, DAY0, call, True) == window_values(store, DAY0, call, False), call


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(values=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=KEPT + 4))
def test_sums_from_a_row_equal_the_databases_sum_in_date_order_to_the_bit(store: Store, tmp_path: Path,
                                                                         values: list[float]) -> None:
    """Values not exact in binary: the row's sums add in the order a key-range read gives the
    database's aggregate (by date), so they agree to the last bit, not just within rounding.
    (PostgreSQL's float8 avg/sum add in the order its plan reads the rows, here the sorted
    subquery's.)"""
    start_over(store, tmp_path)
    daily(store, tmp_path, range(1 - len(values), 1), lambda d: values[d - 1])
    for days in (3, 7, KEPT - 1):
        window = n.Duration(amount=days, unit=n.DurationUnit.DAYS)
        cutoff = DAY0 - dt.timedelta(days=days)
        for func in ("avg", "sum"):
            got = window_values(store, DAY0, n.Call(func=func, args=[n.Symbol(name="m1"), window]), True)
            with store.connect() as conn:
                want = conn.execute(sa.text(
                    f"SELECT {func}(v) FROM (SELECT value AS v FROM metric_points WHERE metric = 'm1' "
                    "AND account_id = 'a1' AND date > :c AND date <= :t ORDER BY date) x"),
                    {"c": cutoff, "t": DAY0}).scalar()
            assert got["a1"] == want, (func, days)


def points_file(folder: Path, name: str, rows: list[tuple[str, str, int, Any]], kind: str) -> Path:
    """A metrics file: CSV (PostgreSQL COPYs it whole) or JSON Lines (read in chunks on both stores)."""
    path = folder / f"{name}.{kind}"
    if kind == "csv":
        path.write_text("account_id,metric,date,value\n" + "".join(
            f"{a},{m},{DAY0 + dt.timedelta(days=d)},{v}\n" for a, m, d, v in rows))
    else:
        path.write_text("".join(json.dumps({"account_id": a, "metric": m, "date": str(DAY0 + dt.timedelta(days=d)),
                                            "value": v}) + "\n" for a, m, d, v in rows))
    return path


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_a_first_load_and_a_re_import_leave_the_rollup_rebuild_would_make(store: Store, tmp_path: Path,
                                                                         kind: str) -> None:
    """A first load (an empty table: the rollup is computed once, at the end of the file) in chunks
    of 7 rows, with series across chunks, longer than a row keeps, and a key repeated (the later row
    wins); then re-imports that add new series, older, newer and replaced points."""
    start_over(store, tmp_path)
    first = [(a, m, -d, float(d % 5)) for d in range(30) for a in IDS for m in ("m1", "m2") if (d + len(a)) % 4]
    first += [("a1", "m1", -3, 99.0), ("a2", "m2", 0, 7.5)]  # repeated keys, later in the file
    import_files(store, CATALOG, [("metrics", points_file(tmp_path, "first", first, kind))], chunk_size=7)
    loaded = series_rows(store)
    assert {(r[0], r[1]) for r in loaded} == {("m1", a) for a in IDS} | {("m2", a) for a in IDS}
    assert any(r[4] == KEPT for r in loaded)  # a row that keeps only the newest of its points
    with store.begin() as conn:
        rollups.rebuild(conn)
    assert loaded == series_rows(store)
    again = [("a3", "m1", 5, 1.0), ("a1", "m1", -3, 4.0), ("a2", "m2", -60, 2.0), ("a1", "m2", 2, 3.0)]
    with store.begin() as conn:  # a series with no points yet, for the re-import to start
        conn.exec_driver_sql("DELETE FROM metric_points WHERE metric = 'm1' AND account_id = 'a2'")
        rollups.rebuild(conn)
    again += [("a2", "m1", -d, float(d)) for d in range(20)]
    import_files(store, CATALOG, [("metrics", points_file(tmp_path, "again", again, kind))], chunk_size=7)
    reimported = series_rows(store)
    with store.begin() as conn:
        rollups.rebuild(conn)
    assert reimported == series_rows(store)
    assert reimported != loaded


# Points written directly (no importer): values not exact in binary and empty ones, days from far
# apart years (before 1970, before the year 1000), series up to twice as long as a row keeps.
direct_point = st.tuples(st.sampled_from(IDS), st.sampled_from(["m1", "m2"]),
                         st.sampled_from([-700_000, -20_000, -400, -40, -17, -16, -15, -2, -1, 0, 1, 30]),
                         st.one_of(st.none(), st.floats(-1e9, 1e9, allow_nan=False)))


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rows=st.lists(direct_point, max_size=2 * KEPT + 8),
       dense=st.integers(0, 2 * KEPT + 3))
def test_rebuild_of_iso_days_in_key_order_equals_the_window_rebuild(store: Store, tmp_path: Path,
                                                                  rows: list[tuple[str, str, int, Any]],
                                                                  dense: int) -> None:
    """`rebuild(iso_days=True)` (SQLite: one GROUP BY in key order, no window) leaves the rows `rebuild`
    leaves, for series of 1 to more than KEPT points, with empty values and days of any year."""
    start_over(store, tmp_path)
    points = Base.metadata.tables["metric_points"]
    keyed = {(a, m, DAY0 + dt.timedelta(days=d)): v for a, m, d, v in rows}
    keyed.update({("a3", "m2", DAY0 - dt.timedelta(days=d)): float(d) / 3 for d in range(dense)})
    with store.begin() as conn:
        if keyed:
            conn.execute(points.insert(), [{"account_id": a, "metric": m, "date": d, "value": v}
                                           for (a, m, d), v in keyed.items()])
        rollups.rebuild(conn)
    want = series_rows(store)
    with store.begin() as conn:
        rollups.rebuild(conn, iso_days=True)
    assert series_rows(store) == want
    assert len(want) == len({(a, m) for a, m, _ in keyed})


def test_the_ordered_rebuild_reads_the_table_in_key_order_without_a_sort(store: Store) -> None:
    """What `rebuild(iso_days=True)` relies on, on SQLite: the GROUP BY reads metric_points' own b-tree
    (its primary key order), so the days reach group_concat oldest first and nothing is sorted."""
    if store.dialect != "sqlite":
        pytest.skip("SQLite's plan")
    with store.connect() as conn:
        plan = [r[3] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + rollups._ordered_sqlite())]
    assert "SCAN metric_points" in plan, plan
    assert not any("TEMP B-TREE" in step for step in plan), plan
    assert all(step.startswith("SEARCH p USING PRIMARY KEY") for step in plan if step.startswith("SEARCH")), plan
