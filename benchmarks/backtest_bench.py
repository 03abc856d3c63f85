"""`playbook backtest` of every shipped trigger: set-wise vs one evaluation per day, same answers.

    python benchmarks/backtest_bench.py [--accounts 100000] [--days 365] [--repeat 1] [--skip-postgres]
                                        [--sample-every N] [--skip-reference] [--keep NAME]

Builds, in a fresh store of each kind, N accounts with the fields the shipped
triggers read, a field history over the period (every account known before
it; a third of them with one to three replaced values of usage_percent,
health_score, seats_active or requested_feature_tier), weekly
engagement_minutes and headcount points (generated in SQL) and a few events
per account. Then times engine.backtest.backtest (set-wise) and
backtest_by_day (the reference: today's compiler once per day and trigger),
alternating, and checks that both give the same first fire days and per-day
and per-quarter counts. --sample-every N replays only every Nth day by day
(when every day would take too long) and checks, on those days, that both
name the same accounts.

--keep NAME builds each store once and keeps it (SQLite: /work/benchdata/NAME.sqlite, or in --keep-dir; PostgreSQL:
schema NAME of --pg-db), so later runs with the same NAME reuse it instead of building again (the
100,000-account build takes 5-13 minutes on the loaded machine). A kept store records the size it
was built at; asking for another size with the same NAME is an error.
"""

from __future__ import annotations

import argparse
import os
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

PG = "postgresql+psycopg2://postgres@127.0.0.1:5432/{db}"
KEPT = Path("/work/benchdata")
END = dt.date(2026, 11, 30)
TODAY = dt.date(2026, 12, 6)


def at(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(10), dt.timezone.utc)


def build(store: Store, catalog: Any, n: int, days: int, seed: int = 11) -> None:
    """Accounts, history and events from Python (executemany in batches); the weekly metric points,
    the bulk (132 per account at 365 days), by one INSERT ... SELECT each, values from an integer hash."""
    rng = random.Random(seed)
    start = END - dt.timedelta(days=days - 1)
    accounts = schema.entity_table(catalog.account, "account")
    ev = schema.Event.__table__
    batch = 20_000
    for lo in range(0, n, batch):
        acc, hist, events = [], [], []
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
            for k in range(rng.randrange(0, 4)):
                d = END - dt.timedelta(days=rng.randrange(0, days + 30))
                name = rng.choice(["funding_announced", "hiring_spike", "feature_request", "gated_feature_explored"])
                events.append({"key": f"{aid}-{k}", "account_id": aid, "event": name, "occurred_at": at(d),
                               "occurred_on": d, "payload": None})
        with store.engine.begin() as conn:
            conn.execute(sa.insert(accounts), acc)
            conn.execute(sa.insert(HISTORY), hist)
            if events:
                conn.execute(sa.insert(ev), events)
    weeks = (days + 100) // 7
    sqlite = store.engine.dialect.name == "sqlite"
    # engagement 10..120 minutes, headcount 100 plus a slope of 0, 0.1 or 0.3 a day, weekly back from END.
    num = "CAST(substr(a.id, 4) AS INTEGER)" if sqlite else "CAST(substr(a.id, 4) AS BIGINT)"
    day = f"date('{END}', '-' || (w.k * 7) || ' days')" if sqlite else f"DATE '{END}' - (w.k * 7)"
    mod = "%" if sqlite else "%%"  # psycopg2 reads a lone % as a parameter
    hashed = f"(({num} * 2654435761 + w.k * 40503) {mod} 11000)"
    slope = f"(CASE {num} {mod} 3 WHEN 0 THEN 0.0 WHEN 1 THEN 0.1 ELSE 0.3 END)"
    head = (f"WITH RECURSIVE w(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM w WHERE k < {weeks}) " if sqlite
            else "")
    weeks_from = "w" if sqlite else f"generate_series(0, {weeks}) AS w(k)"
    with store.engine.begin() as conn:
        for metric, value in (("engagement_minutes", f"10 + {hashed} / 100.0"),
                              ("headcount", f"100.0 + ({days} - w.k * 7) * {slope}")):
            conn.exec_driver_sql(f"INSERT INTO metric_points (metric, account_id, date, value) {head}"
                                 f"SELECT '{metric}', a.id, {day}, {value} FROM accounts a CROSS JOIN {weeks_from}")
        # The rollup today's engine starts its windows from (engine/rollups.py): every series' newest
        # point is END's. (rollups.rebuild's join back to the points ran for 15+ minutes at 100k here.)
        conn.exec_driver_sql("INSERT INTO metric_series (metric, account_id, last_date, last_value) "
                             f"SELECT metric, account_id, date, value FROM metric_points WHERE date = '{END}'")
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")


def same_answers(a: Any, b: Any, sample: list[dt.date] | None) -> bool:
    """Every day: first fire day per account, accounts per day and per quarter. A sample: who fires on those days."""
    if sample is None:
        return all((x.first, x.per_day, x.per_quarter) == (y.first, y.per_day, y.per_quarter)
                   for x, y in zip(a.results, b.results, strict=True))
    return all(x.on_days == y.on_days and all(x.per_day.get(d, 0) == len(y.on_days[d]) for d in sample)
               for x, y in zip(a.results, b.results, strict=True))


def cpu(conn: Any) -> float:
    """CPU seconds spent so far by this process and, on PostgreSQL, by the connection's backend
    (read from /proc: the server is local; parallel workers are not counted)."""
    used = time.process_time()
    if conn.dialect.name == "postgresql":
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        used += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


def built_size(store: Store) -> tuple[int, int] | None:
    """(accounts, days) a kept store was built at; None if it was never finished."""
    with store.engine.connect() as conn:
        if not sa.inspect(conn).has_table("_bench_built"):
            return None
        row = conn.exec_driver_sql("SELECT accounts, days FROM _bench_built").first()
    return None if row is None else (int(row[0]), int(row[1]))


def trace(engine: sa.engine.Engine, over: float) -> None:
    """Print the statements slower than `over` seconds: wall, CPU (this process: SQLite's work; the
    PostgreSQL backend's is not in it), row count and first words."""
    started: dict[int, tuple[float, float]] = {}

    @sa.event.listens_for(engine, "before_cursor_execute")
    def before(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        started[id(cursor)] = (time.perf_counter(), time.process_time())

    @sa.event.listens_for(engine, "after_cursor_execute")
    def after(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        wall, used = started.pop(id(cursor), (time.perf_counter(), time.process_time()))
        took = time.perf_counter() - wall
        if took >= over:
            text = " ".join(statement.split())
            print(f"    {took:8.2f} s (CPU {time.process_time() - used:6.2f} s) rows {cursor.rowcount:>9}  "
                  f"{text[:150]}", flush=True)


def run(kind: str, url: str, catalog: Any, args: argparse.Namespace) -> dict[str, Any] | None:
    store = Store.open(url, catalog=catalog)
    size = built_size(store) if args.keep else None
    built = 0.0
    if size is None:
        t0 = time.perf_counter()
        build(store, catalog, args.accounts, args.days)
        built = time.perf_counter() - t0
        if args.keep:  # marks the store finished, for the next run to reuse
            with store.engine.begin() as conn:
                conn.exec_driver_sql("CREATE TABLE _bench_built (accounts INTEGER, days INTEGER)")
                conn.exec_driver_sql(f"INSERT INTO _bench_built VALUES ({args.accounts}, {args.days})")
        print(f"  {kind}: built in {built:.1f} s (load {load_average()})", flush=True)
    elif size != (args.accounts, args.days):
        sys.exit(f"--keep {args.keep}: that {kind} store was built with {size[0]} accounts x {size[1]} days")
    else:
        print(f"  {kind}: reusing the kept store {args.keep}", flush=True)
    if args.repeat == 0:  # --keep with --repeat 0: build only
        store.close()
        return None
    if args.trace is not None:
        trace(store.engine, args.trace)
    start = END - dt.timedelta(days=args.days - 1)
    sample = ([start + dt.timedelta(days=i) for i in range(0, args.days, args.sample_every)]
              if args.sample_every > 1 else None)
    triggers = list(catalog.triggers)
    fast_times, slow_times, fast_cpu, slow_cpu, same = [], [], [], [], True
    full: Any = None
    for _ in range(args.repeat):  # alternating sides
        with store.engine.connect() as conn:
            c, t = cpu(conn), time.perf_counter()
            full = backtest(conn, catalog, triggers, start, END, today=TODAY, on_days=sample or ())
            fast_times.append(time.perf_counter() - t)
            fast_cpu.append(cpu(conn) - c)
        print(f"  {kind}: set-wise {fast_times[-1]:.2f} s, CPU {fast_cpu[-1]:.1f} s (load {load_average()})",
              flush=True)
        if args.skip_reference:
            continue
        with store.engine.connect() as conn:
            c, t = cpu(conn), time.perf_counter()
            slow = backtest_by_day(conn, catalog, triggers, start, END, today=TODAY, only=sample)
            slow_times.append(time.perf_counter() - t)
            slow_cpu.append(cpu(conn) - c)
        print(f"  {kind}: by day {slow_times[-1]:.2f} s, CPU {slow_cpu[-1]:.1f} s (load {load_average()})",
              flush=True)
        same = same and same_answers(full, slow, sample)
    store.close()
    return {"kind": kind, "built": built, "fast": statistics.median(fast_times), "fast_cpu": statistics.median(fast_cpu),
            "slow_cpu": statistics.median(slow_cpu) if slow_cpu else None,
            "slow": statistics.median(slow_times) if slow_times else None, "same": same,
            "replayed": len(sample) if sample else args.days, "fired": {r.trigger: r.accounts for r in full.results},
            "fire_days": sum(sum(r.per_day.values()) for r in full.results)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--accounts", type=int, default=100_000)
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--sample-every", type=int, default=1,
                   help="the reference replays every Nth day only (and the answers on those days are compared)")
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--repeat", type=int, default=1, help="0: only build (with --keep)")
    p.add_argument("--skip-postgres", action="store_true")
    p.add_argument("--skip-sqlite", action="store_true")
    p.add_argument("--trace", type=float, metavar="SECONDS",
                   help="print each set-wise statement that takes longer than this (wall), to see where time goes")
    p.add_argument("--keep", metavar="NAME", help="build the stores once under NAME and reuse them in later runs")
    p.add_argument("--pg-db", default="test", help="the PostgreSQL database (the store is a schema in it)")
    p.add_argument("--keep-dir", type=Path, default=KEPT, help="where --keep puts the SQLite store")
    args = p.parse_args()
    catalog = load([ROOT / "playbooks"]).catalog
    print(describe(), "| load", load_average())
    print(f"{args.accounts:,} accounts, {args.days} days, {len(catalog.triggers)} triggers "
          f"(reference: {'every day' if args.sample_every <= 1 else f'every {args.sample_every}th day'})", flush=True)
    results: list[dict[str, Any] | None] = []
    if not args.skip_sqlite:
        if args.keep:
            path = args.keep_dir / f"{args.keep}.sqlite"
        else:
            folder = Path("/tmp") / f"backtest-bench-{uuid.uuid4().hex[:8]}"
            folder.mkdir()
            path = folder / "bench.db"
        results.append(run("sqlite", f"sqlite:///{path}", catalog, args))
    if not args.skip_postgres:
        pg = PG.format(db=args.pg_db)
        schema_name = args.keep or f"bt_bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(pg, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema_name}"')
        try:
            results.append(run("postgresql", f"{pg}?options=-csearch_path%3D{schema_name}", catalog, args))
        finally:
            if not args.keep:
                with admin.connect() as conn:
                    conn.exec_driver_sql(f'DROP SCHEMA "{schema_name}" CASCADE')
    for r in results:
        if r is None:
            continue
        line = (f"{r['kind']:<10} build {r['built']:.1f} s | set-wise {args.days} days {r['fast']:.2f} s "
                f"(CPU {r['fast_cpu']:.1f} s)")
        if r["slow"] is not None:
            per_day = r["slow"] / r["replayed"]
            full = per_day * args.days
            line += (f" | by day {r['replayed']} days {r['slow']:.2f} s ({per_day:.2f} s a day"
                     + (f", {args.days} days ~{full:.0f} s" if r["replayed"] != args.days else "")
                     + f"; CPU {r['slow_cpu']:.1f} s) = {full / r['fast']:.1f}x | same answers: {r['same']}")
        print(line + f" | fire-days {r['fire_days']:,} | load {load_average()}")
        print("   fired accounts:", r["fired"])


if __name__ == "__main__":
    main()
