"""Shared helpers of the engine suites: `Seed` writes test data straight into a
store (the throwaway stores themselves come from store_backends.fresh_store)."""

from __future__ import annotations

import datetime as dt
from typing import Any


from engine import rollups
from engine.schema import Base
from engine.store import Store


class Seed:
    """Writes test data straight into a store's tables (accounts, signals, enrollments, outbox)."""

    def __init__(self, store: Store):
        self.store = store
        self._n = 0

    def clear(self) -> None:
        md = Base.metadata.tables
        with self.store.begin() as conn:
            for t in ("enrollment_decisions", "outcomes", "enrollments", "outbox", "events", "metric_series", "metric_points",
                      "audit_log"):
                conn.execute(md[t].delete())
            conn.execute(self.store.table("account").delete())

    def accounts(self, *rows: dict[str, Any]) -> None:
        table = self.store.table("account")
        cols = {c.name for c in table.columns}
        with self.store.begin() as conn:
            for row in rows:
                conn.execute(table.insert().values(**{k: v for k, v in row.items() if k in cols}))

    def event(self, account_id: str, event: str, *days: dt.date) -> None:
        ev = Base.metadata.tables["events"]
        with self.store.begin() as conn:
            for d in days:
                self._n += 1
                conn.execute(ev.insert().values(
                    key=f"{account_id}|{event}|{self._n}", account_id=account_id, event=event,
                    occurred_at=dt.datetime.combine(d, dt.time(12), dt.timezone.utc), occurred_on=d))

    def metric(self, account_id: str, metric: str, points: dict[dt.date, float]) -> None:
        mp = Base.metadata.tables["metric_points"]
        with self.store.begin() as conn:
            for d, v in points.items():
                conn.execute(mp.insert().values(metric=metric, account_id=account_id, date=d, value=v))
            rollups.rebuild(conn)  # written past the importer: the rollup is ours to keep

    def enrollment(self, account_id: str, play: str, status: str = "running", started: dt.date | None = None,
                   ended: dt.date | None = None, plan_hash: str = "h") -> None:
        t = Base.metadata.tables["enrollments"]
        def at(d: dt.date | None) -> dt.datetime | None:
            return dt.datetime.combine(d, dt.time(9), dt.timezone.utc) if d else None
        with self.store.begin() as conn:
            conn.execute(t.insert().values(
                workflow_id=f"play:{play}:{account_id}", play=play, account_id=account_id, plan_hash=plan_hash,
                status=status, started_at=at(started or dt.date(2026, 1, 1)), ended_at=at(ended)))

    def email(self, recipient: str, day: dt.date, status: str = "sent", account_id: str | None = None) -> None:
        t = Base.metadata.tables["outbox"]
        self._n += 1
        with self.store.begin() as conn:
            conn.execute(t.insert().values(
                idempotency_key=f"k{self._n}", channel="email", recipient=recipient, subject="s", body="b",
                status=status, account_id=account_id, created_at=dt.datetime.combine(day, dt.time(10), dt.timezone.utc)))
