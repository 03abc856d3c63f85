"""The metric rollup (`metric_series`): each (metric, account)'s latest KEPT points, kept exact at load.

Window functions over metrics read it (engine/sqlfunctions.py): a window
that lies within a series' kept points is computed from its row alone, any
other one seeks into `metric_points` from it. Every writer of
`metric_points` keeps it exact:

* the importers (engine/importers.py) call `note_points` with the staging
  table after each upsert: each touched series' row is recomputed from its
  newest points; a file loaded into an empty `metric_points` calls
  `rebuild` once at its end instead (the table then holds only its points,
  and one pass over them costs less than merging chunk after chunk);
* the demo data generator writes the rows it computes itself (`row`);
* anything else that writes or deletes points (tests, a migration) calls
  `rebuild`, which recomputes every row from `metric_points`.

Points are only ever added or replaced by the loaders, never deleted, so a
series' new newest KEPT points are among its old kept ones and the points
just loaded: `note_points` reads a full row's series from its oldest kept
day on (at most KEPT points plus those loaded), not the whole series.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Connection

from engine.schema import KEPT

EPOCH = dt.date(1970, 1, 1)  # p<i>_day counts days from it

_COLUMNS = ", ".join(["metric", "account_id", "last_date", "last_value", "kept"]
                     + [f"p{i}_{c}" for i in range(1, KEPT) for c in ("day", "value")])


def day_sql(dialect: str, date: str) -> str:
    """SQL for a date's day number (days since EPOCH)."""
    if dialect == "sqlite":  # ISO text; julianday('1970-01-01') is 2440587.5, so the difference is whole
        return f"CAST(julianday({date}) - 2440587.5 AS INTEGER)"
    return f"({date} - DATE '1970-01-01')"


def date_sql(dialect: str, day: str) -> str:
    """SQL for the date of a day number."""
    if dialect == "sqlite":
        return f"date({day} + 2440587.5)"
    return f"(DATE '1970-01-01' + {day})"


def _upsert(dialect: str, ranked: str, conflict: bool = True) -> str:
    """Write the rows of the series in `ranked` (metric, account_id, date, value and k, the
    point's rank from the newest, 1-based) from their newest KEPT points; without `conflict`,
    into a table that has none of their rows (a plain INSERT)."""
    # FILTER, not max(CASE ...): the same values, but a point is handed to the one aggregate
    # pair of its rank instead of to all KEPT pairs (SQLite, the SELECT over 2,000,000 points:
    # 10.2 -> 8.0 s CPU).
    pivot = ["max(date) FILTER (WHERE k = 1)", "max(value) FILTER (WHERE k = 1)", "count(*)"]
    for i in range(1, KEPT):
        pivot += [f"max({day_sql(dialect, 'date')}) FILTER (WHERE k = {i + 1})",
                  f"max(value) FILTER (WHERE k = {i + 1})"]
    updates = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS.split(", ")[2:])
    return (f"WITH ranked AS ({ranked})\n"
            f"INSERT INTO metric_series ({_COLUMNS})\n"
            f"SELECT metric, account_id, {', '.join(pivot)}\n"
            f"FROM ranked WHERE k <= {KEPT} GROUP BY metric, account_id"
            + (f"\nON CONFLICT (metric, account_id) DO UPDATE SET {updates}" if conflict else ""))


# A point's rank from the newest: itself and the points after it, counted up to KEPT + 1 (a
# series' dates are distinct). Oldest first is the order SQLite's clustered key holds a series
# in, so over all of `metric_points` (rebuild) the window reads the key as it is instead of
# sorting every point by date descending (SQLite, 2,000,000 points: rebuild 12.7 -> 11.7 s CPU).
_RANK = (f"count(*) OVER (PARTITION BY p.metric, p.account_id ORDER BY p.date "
         f"ROWS BETWEEN CURRENT ROW AND {KEPT} FOLLOWING) AS k")


def note_points(conn: Connection, source: str) -> None:
    """Bring the series up to date after the points of `source` (a table or a parenthesised
    SELECT with metric and account_id columns) were written to `metric_points`."""
    dialect = conn.dialect.name
    # A full row: its series' points from its oldest kept day on (see the module docstring);
    # otherwise the row held the whole series (or there is none): all its points.
    since = f"CASE WHEN s.kept = {KEPT} THEN {date_sql(dialect, f's.p{KEPT - 1}_day')} END"
    ranked = (f"SELECT p.metric, p.account_id, p.date, p.value, {_RANK}\n"
              f"FROM (SELECT DISTINCT metric, account_id FROM {source}) t\n"
              f"LEFT JOIN metric_series s ON s.metric = t.metric AND s.account_id = t.account_id\n"
              f"JOIN metric_points p ON p.metric = t.metric AND p.account_id = t.account_id\n"
              f"AND p.date >= coalesce({since}, '0001-01-01')")
    conn.exec_driver_sql(_upsert(dialect, ranked))


def rebuild(conn: Connection, *, iso_days: bool = False) -> None:
    """Recompute every row from `metric_points` (after a write that bypassed `note_points`, or a delete).

    `iso_days`: every stored date is a day of 10 characters, `YYYY-MM-DD`, as the importers write
    them; SQLite then reads the table once in key order without a window (`_ordered_sqlite`).
    """
    conn.exec_driver_sql("DELETE FROM metric_series")
    if iso_days and conn.dialect.name == "sqlite":
        conn.exec_driver_sql(_ordered_sqlite())
        return
    # Into the emptied table: a plain INSERT (PostgreSQL, 1,000,000 rows: 7.4 s CPU against 11.1 s
    # for the upsert, which tests each row's key first).
    conn.exec_driver_sql(_upsert(conn.dialect.name, f"SELECT p.metric, p.account_id, p.date, p.value, {_RANK} "
                                                    "FROM metric_points p", conflict=False))


def _ordered_sqlite() -> str:
    """`rebuild` on SQLite where every date has 10 characters: one GROUP BY over the table in key order
    gives each series its count, its newest point and all its days oldest first, concatenated (fixed
    width, so the i-th newest is `substr(g, -10 * (i + 1), 10)`); each older kept point's value is then
    read by its key. No window and no sort: 2,000,000 points in 1,000,000 series (lab, load ~5), 13.5
    -> 7.2 s CPU, the same rows.

    The order is the table's: NOT INDEXED scans a WITHOUT ROWID table's own b-tree, which is its primary
    key (metric, account_id, date), so the GROUP BY needs no sorter and each group's rows reach
    group_concat in date order (tests/engine/test_rollups.py checks the plan and the rows). With
    max() the only min/max aggregate, the bare `value` is the newest point's (SQLite's documented rule
    for bare columns)."""
    slots = []
    for i in range(1, KEPT):
        day = f"substr(s.g, {-10 * (i + 1)}, 10)"
        slots += [f"CASE WHEN s.n > {i} THEN {day_sql('sqlite', day)} END",
                  f"CASE WHEN s.n > {i} THEN (SELECT p.value FROM metric_points p WHERE p.metric = s.metric "
                  f"AND p.account_id = s.account_id AND p.date = {day}) END"]
    return (f"WITH s AS (SELECT metric, account_id, max(date) AS last_date, value AS last_value, count(*) AS n, "
            f"group_concat(date, '') AS g FROM metric_points NOT INDEXED GROUP BY metric, account_id)\n"
            f"INSERT INTO metric_series ({_COLUMNS})\n"
            f"SELECT s.metric, s.account_id, s.last_date, s.last_value, min(s.n, {KEPT}), {', '.join(slots)} FROM s")


def row(metric: str, account_id: str, points: Sequence[tuple[Any, float | None]],
        day_number: Any) -> list[Any]:
    """The row of one series from its points (date, value), oldest first, in `_COLUMNS` order;
    `day_number(date)` gives a point's day number (the caller's dates may be text)."""
    newest = points[-1]
    out: list[Any] = [metric, account_id, newest[0], newest[1], min(len(points), KEPT)]
    for i in range(1, KEPT):
        if i < len(points):
            d, v = points[-1 - i]
            out += [day_number(d), v]
        else:
            out += [None, None]
    return out
