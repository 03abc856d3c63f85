"""The metric rollup (`metric_series`): each (metric, account)'s latest point, kept exact at load.

Window functions over metrics read it (engine/sqlfunctions.py) to start
from the accounts that have a metric and to find the end of its series
without scanning it. Every writer of `metric_points` keeps it exact:

* the importers (engine/importers.py) call `note_points` with the staging
  table after each upsert: one grouped pass over the loaded rows and a
  primary-key read of each series' newest loaded point;
* the demo data generator writes the rows it computes itself;
* anything else that writes or deletes points (tests, a migration) calls
  `rebuild`, which recomputes the rows from `metric_points`.

Points are only ever added or replaced by the loaders, so a series' latest
date can only move forward: a loaded point after it (or on it, replacing
its value) moves it; an older one leaves it.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

_LATEST_OF = """INSERT INTO metric_series (metric, account_id, last_date, last_value)
SELECT p.metric, p.account_id, p.date, p.value
FROM (SELECT metric, account_id, max(date) AS d FROM {source} GROUP BY metric, account_id) b
JOIN metric_points p ON p.metric = b.metric AND p.account_id = b.account_id AND p.date = b.d
WHERE 1 = 1
ON CONFLICT (metric, account_id) DO UPDATE SET last_date = excluded.last_date, last_value = excluded.last_value
WHERE excluded.last_date >= metric_series.last_date"""


def note_points(conn: Connection, source: str) -> None:
    """Bring the series up to date after the points of `source` (a table or a parenthesised
    SELECT with metric, account_id and date columns) were written to `metric_points`."""
    conn.exec_driver_sql(_LATEST_OF.format(source=source))


def rebuild(conn: Connection) -> None:
    """Recompute every row from `metric_points` (after a write that bypassed `note_points`, or a delete)."""
    conn.exec_driver_sql("DELETE FROM metric_series")
    note_points(conn, "metric_points")
