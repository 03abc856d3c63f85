"""`playbook backtest` of every shipped trigger: set-wise vs one evaluation per day, same answers.

    python benchmarks/backtest_bench.py [--accounts 100000] [--days 365] [--repeat 1] [--skip-postgres]
                                        [--reference-days N]

Builds, in a fresh store of each kind, N accounts with the fields the shipped
triggers read, a field history over the period (every account known before
it; a third of them with one to three replaced values of usage_percent,
health_score, seats_active or requested_feature_tier), weekly
engagement_minutes and headcount points and a few events per account. Then
times engine.backtest.backtest (set-wise) and backtest_by_day (the reference:
today's compiler once per day and trigger) over the same days, and checks that
both give the same first fire days and per-day counts. --reference-days
replays only the last N days by day (and set-wise over the same N days for
the check), when the full reference would not finish.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import describe, load_average  # noqa: E402

from dsl.project import load  # noqa: E402
from engine import schema  # noqa: E402
from engine.backtest import backtest, backtest_by_day  # noqa: E402
from engine.history import HISTORY  # noqa: E402
from engine.store import Store  # noqa: E402

PG = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
END = dt.date(2026, 11, 30)
TODAY = dt.date(2026, 12, 6)


def at(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(10), dt.timezone.utc)


def build(store: Store, catalog: Any, n: int, days: int, seed: int = 11) -> None:
    rng = random.Random(seed)
    start = END - dt.timedelta(days=days - 1)
    accounts = schema.entity_table(catalog.account, "account")
    mp, ev = schema.MetricPoint.__table__, schema.Event.__table__
    batch = 5000
    for lo in range(0, n, batch):
        acc, hist, points, events = [], [], [], []
        for i in range(lo, min(n, lo + batch)):
            aid = f"acc{i:07d}"
            acc.append({"id": aid, "name": aid, "plan": rng.choice(["Growth", "Scale"]),
                        "usage_percent": rng.choice([None, rng.random()]), "health_score": rng.uniform(20, 100),
                        "last_expansion_at": rng.choice([None, END - dt.timedelta(days=rng.randrange(0, 400))]),
                        "seats_purchased": 50, "seats_active": rng.randrange(20, 51),
                        "requested_feature": rng.choice([None, "sso"]),
                        "requested_feature_tier": rng.choice([None, "Growth", "Scale"]),
                        "renewal_date": END + dt.timedelta(days=rng.randrange(-300, 200)),
                        "cohort_engagement_minutes": 40.0})
            hist.append({"account_id": aid, "field": "*", "valid_from": at(start - dt.timedelta(days=1)),
                         "valid_to": None, "value_number": None, "value_text": None})
            if rng.random() < 0.33:
                since = at(start - dt.timedelta(days=1))
                for name in rng.sample(["usage_percent", "health_score", "seats_active", "requested_feature_tier"],
                                       rng.randrange(1, 4)):
                    until = at(start + dt.timedelta(days=rng.randrange(1, days)))
                    text = rng.choice(["Growth", "Scale"]) if name == "requested_feature_tier" else None
                    number = None if text else {"usage_percent": rng.random(), "health_score": rng.uniform(20, 100),
                                                "seats_active": float(rng.randrange(20, 51))}[name]
                    hist.append({"account_id": aid, "field": name, "valid_from": since, "valid_to": until,
                                 "value_number": number, "value_text": text})
            for w in range(0, days + 100, 7):
                d = END - dt.timedelta(days=w)
                points.append({"metric": "engagement_minutes", "account_id": aid, "date": d,
                               "value": rng.uniform(10, 120)})
                points.append({"metric": "headcount", "account_id": aid, "date": d, "value": 100.0 + (days - w) *
                               rng.choice([0.0, 0.1, 0.3])})
            for k in range(rng.randrange(0, 4)):
                d = END - dt.timedelta(days=rng.randrange(0, days + 30))
                name = rng.choice(["funding_announced", "hiring_spike", "feature_request", "gated_feature_explored"])
                events.append({"key": f"{aid}-{k}", "account_id": aid, "event": name, "occurred_at": at(d),
                               "occurred_on": d, "payload": None})
        with store.engine.begin() as conn:
            conn.execute(sa.insert(accounts), acc)
            conn.execute(sa.insert(HISTORY), hist)
            conn.execute(sa.insert(mp), points)
            if events:
                conn.execute(sa.insert(ev), events)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")


def run(kind: str, url: str, catalog: Any, args: argparse.Namespace) -> dict[str, Any]:
    store = Store.open(url, catalog=catalog)
    t0 = time.perf_counter()
    build(store, catalog, args.accounts, args.days)
    built = time.perf_counter() - t0
    start = END - dt.timedelta(days=args.days - 1)
    ref_start = END - dt.timedelta(days=(args.reference_days or args.days) - 1)
    triggers = list(catalog.triggers)
    fast_times, check = [], None
    for _ in range(args.repeat):
        with store.engine.connect() as conn:
            t = time.perf_counter()
            full = backtest(conn, catalog, triggers, start, END, today=TODAY)
            fast_times.append(time.perf_counter() - t)
    with store.engine.connect() as conn:
        t = time.perf_counter()
        check = backtest(conn, catalog, triggers, ref_start, END, today=TODAY)
        fast_ref_span = time.perf_counter() - t
        t = time.perf_counter()
        slow = backtest_by_day(conn, catalog, triggers, ref_start, END, today=TODAY)
        slow_time = time.perf_counter() - t
    same = all((a.first, a.per_day, a.per_quarter) == (b.first, b.per_day, b.per_quarter)
               for a, b in zip(check.results, slow.results, strict=True))
    store.close()
    return {"kind": kind, "built": built, "fast": statistics.median(fast_times), "fast_ref_span": fast_ref_span,
            "slow": slow_time, "same": same, "fired": {r.trigger: r.accounts for r in full.results},
            "fire_days": sum(sum(r.per_day.values()) for r in full.results)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--accounts", type=int, default=100_000)
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--reference-days", type=int, default=0)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--skip-postgres", action="store_true")
    p.add_argument("--skip-sqlite", action="store_true")
    args = p.parse_args()
    catalog = load([ROOT / "playbooks"]).catalog
    print(describe(), "| load", load_average())
    print(f"{args.accounts:,} accounts, {args.days} days, {len(catalog.triggers)} triggers "
          f"(reference over the last {args.reference_days or args.days} days)")
    results = []
    if not args.skip_sqlite:
        folder = Path("/tmp") / f"backtest-bench-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        results.append(run("sqlite", f"sqlite:///{folder}/bench.db", catalog, args))
    if not args.skip_postgres:
        schema_name = f"bt_bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(PG, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema_name}"')
        try:
            results.append(run("postgresql", f"{PG}?options=-csearch_path%3D{schema_name}", catalog, args))
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA "{schema_name}" CASCADE')
    for r in results:
        ratio = r["slow"] / r["fast_ref_span"] if r["fast_ref_span"] else float("nan")
        print(f"{r['kind']:<10} build {r['built']:.1f} s | set-wise {args.days} days {r['fast']:.2f} s | "
              f"same span: set-wise {r['fast_ref_span']:.2f} s vs by day {r['slow']:.2f} s = {ratio:.1f}x | "
              f"same answers: {r['same']} | fire-days {r['fire_days']:,}")
        print("   fired accounts:", r["fired"])


if __name__ == "__main__":
    main()
