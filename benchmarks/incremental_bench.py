"""The sweep after a small load: incremental evaluation vs a full one, on SQLite and PostgreSQL.

    python benchmarks/incremental_bench.py [--accounts 100000] [--changed 0.01] [--repeat 3]
                                           [--stores sqlite,postgresql]
                                           [--db demo.sqlite] [--pg-db NAME] [--prepared]

--db: start from this demo SQLite store (copied, never written) instead of
generating one; --pg-db: a PostgreSQL database holding demo data, used and
changed in place (make it a copy: `createdb -T bench1m NAME`); --prepared: the
store given (--db used in place, not copied, or --pg-db) already holds the
recorded sweep and the load (an earlier run of this script on it, or the same
two steps by hand), so only the evaluations run: at 1,000,000 accounts the
first recorded sweep takes ten minutes and more.

Per store: demo data (`playbook demo-data`'s generator, seed 7, today 2026-06-01)
and the shipped playbooks/; one recorded sweep (the mark the next one starts
from); then an accounts file changing `usage_percent` of --changed of the
accounts is imported (engine/importers.py, which marks them). Timed, each
in a transaction rolled back so every run sees the same state:

* full: every candidate's decision over all accounts (`enroll.prepare`, streamed);
* incremental: `changes.begin` (the scope: changed, rechecked, time-sensitive
  accounts) plus the decisions of that scope, on the same day as the mark
  (a load between two sweeps of one day) and on the next day (windows slide,
  renewals approach).

CPU seconds are this process's plus, on PostgreSQL, the backend's (/proc/<pid>/stat).
Both sides must enroll the same (play, account) pairs among the changed
accounts, or the run fails. Medians of --repeat, sides alternating.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import describe, load_average  # noqa: E402

from engine import changes, demo_data, enrollment  # noqa: E402
from engine.enroll import Scratch, plan_map, prepare  # noqa: E402
from engine.importers import import_file  # noqa: E402
from engine.store import Store  # noqa: E402
from workflows.sweep import Playbooks  # noqa: E402

TODAY = dt.date(2026, 6, 1)
PG_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432"
PG_URL = f"{PG_SERVER}/test"


def open_store(kind: str, folder: Path, catalog: Any, source: str | None) -> tuple[Store, Any]:
    """The store to run on (migrated, so it has this code's indexes), and what to drop after."""
    if kind == "sqlite":
        if source is not None:
            shutil.copy(source, folder / "bench.db")
        return Store.open(f"sqlite:///{folder}/bench.db", catalog=catalog), None
    if source is not None:
        return Store.open(f"{PG_SERVER}/{source}", catalog=catalog), None
    schema = f"pb_incbench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    return Store.open(f"{PG_URL}?options=-csearch_path%3D{schema}", catalog=catalog), (admin, schema)


def backend_cpu(conn: Any) -> float:
    """CPU seconds of the connection's PostgreSQL backend so far (0 on SQLite: it runs in this process)."""
    if conn.dialect.name != "postgresql":
        return 0.0
    pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    conn.rollback()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def evaluate(store: Store, pb: Playbooks, knobs: Any, today: dt.date,
             incremental: bool) -> tuple[float, float, int, set]:
    """Wall seconds, CPU seconds (this process and the database backend), accounts in scope (-1: all),
    enrolled (play, account) pairs; rolled back."""
    pm = plan_map(pb.plans)
    with store.engine.connect() as conn:
        b0 = backend_cpu(conn)
        t0, c0 = time.perf_counter(), time.process_time()
        trans = conn.begin()
        with Scratch(conn) as scratch:
            ids, narrow = None, None
            scope = -1
            if incremental:
                s = changes.begin(conn, scratch, pb.catalog, pm, knobs, today)
                assert not s.full, s.why
                ids, narrow = s.ids, s.narrow
                scope = int(conn.execute(sa.select(sa.func.count()).select_from(ids)).scalar_one())
            enrolled = {(d.play, d.account_id) for d in prepare(scratch, pb.catalog, pm, today, knobs, ids, narrow)
                        if d.enroll}
        trans.rollback()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        cpu += backend_cpu(conn) - b0
    return wall, cpu, scope, enrolled


def run(kind: str, n: int, share: float, repeat: int, source: str | None, prepared: bool = False) -> dict[str, Any]:
    pb = Playbooks.load([ROOT / "playbooks"])
    knobs = enrollment.Settings()
    out: dict[str, Any] = {"store": kind}
    if source:
        (ROOT / ".bench").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ROOT / ".bench" if source else None) as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        if prepared and kind == "sqlite":
            assert source is not None, "--prepared needs --db"
            store, pg = Store.open(f"sqlite:///{source}", catalog=pb.catalog), None
        else:
            store, pg = open_store(kind, folder, pb.catalog, source)
        try:
            if source is None:
                demo_data.generate(pb.catalog, n, seed=7, today=TODAY, store=store)
            out["accounts"] = store.count(store.table("account").name)
            out["generate_s"] = time.perf_counter() - t0
            if prepared:
                with store.connect() as conn:
                    ids = sorted({r[0] for r in conn.execute(sa.select(changes.CHANGES.c.account_id))})
                out["first_sweep_s"], out["first_enrolled"], out["load_s"], out["changed"] = 0.0, 0, 0.0, len(ids)
            else:
                t0 = time.perf_counter()
                first = enrollment.record(store, pb.catalog, pb.plans, TODAY, knobs)
                out["first_sweep_s"], out["first_enrolled"] = time.perf_counter() - t0, len(first.enrolled)
                step = max(1, round(1 / share))
                with store.connect() as conn:
                    acc = store.table("account")
                    ids = [r[0] for r in conn.execute(sa.select(acc.c.id).order_by(acc.c.id))][::step]
                path = folder / "changed.csv"
                with path.open("w", newline="") as fh:
                    w = csv.writer(fh)
                    w.writerow(["id", "usage_percent"])
                    w.writerows([i, "0.95"] for i in ids)
                t0 = time.perf_counter()
                import_file(store, pb.catalog, "accounts", path)
                out["load_s"], out["changed"] = time.perf_counter() - t0, len(ids)
            changed = set(ids)
            for label, day in (("same day", TODAY), ("next day", TODAY + dt.timedelta(days=1))):
                fulls, incs, full_cpu, inc_cpu = [], [], [], []
                for _ in range(repeat):
                    tf, cf, _, full_set = evaluate(store, pb, knobs, day, False)
                    ti, ci, scope, inc_set = evaluate(store, pb, knobs, day, True)
                    fulls.append(tf)
                    incs.append(ti)
                    full_cpu.append(cf)
                    inc_cpu.append(ci)
                    # Unchanged accounts the first sweep enrolled are already_enrolled on both sides now.
                    lost = {p for p in full_set if p[1] in changed} - inc_set
                    assert not lost, f"{kind} {label}: incremental missed {sorted(lost)[:5]}"
                    assert inc_set <= full_set, f"{kind} {label}: incremental enrolled more"
                out[label] = {"full": statistics.median(fulls), "incremental": statistics.median(incs),
                              "full_cpu": statistics.median(full_cpu), "incremental_cpu": statistics.median(inc_cpu),
                              "scope": scope, "enrolled": len(inc_set), "load": load_average()}
        finally:
            store.close()
            if pg is not None:
                admin, schema = pg
                with admin.connect() as conn:
                    conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
                admin.dispose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=100_000)
    ap.add_argument("--changed", type=float, default=0.01)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--stores", type=lambda s: s.split(","), default=["sqlite", "postgresql"])
    ap.add_argument("--db", help="a demo SQLite store to copy instead of generating one")
    ap.add_argument("--pg-db", help="a PostgreSQL database with demo data, changed in place")
    ap.add_argument("--prepared", action="store_true",
                    help="the store (--db in place, or --pg-db) holds the recorded sweep and the load already")
    args = ap.parse_args()
    print(f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; {describe()}; load {load_average()}")
    print(f"{args.changed:.0%} of the demo accounts changed by an accounts import, medians of {args.repeat}")
    for kind in args.stores:
        r = run(kind, args.accounts, args.changed, args.repeat, args.db if kind == "sqlite" else args.pg_db,
                args.prepared)
        print(f"\n[{kind}] {r['accounts']:,} accounts; store ready in {r['generate_s']:.1f} s; first (full, recorded) "
              f"sweep {r['first_sweep_s']:.2f} s, {r['first_enrolled']:,} enrolled; load of {r['changed']:,} changed "
              f"accounts {r['load_s']:.2f} s; load average {load_average()}")
        print("| sweep after the load | scope (accounts) | full evaluation (s) | incremental (s) | incremental / full "
              "| full CPU (s) | incremental CPU (s) | CPU incremental / full | load average after |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for label in ("same day", "next day"):
            x = r[label]
            print(f"| {label} | {x['scope']:,} | {x['full']:.3f} | {x['incremental']:.3f} | "
                  f"{x['incremental'] / x['full']:.1%} | {x['full_cpu']:.3f} | {x['incremental_cpu']:.3f} | "
                  f"{x['incremental_cpu'] / x['full_cpu']:.1%} | {x['load']} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
