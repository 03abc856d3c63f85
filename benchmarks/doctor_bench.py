"""`playbook doctor` over a demo store: each check's time (median of --repeat runs), on SQLite
and, unless skipped, PostgreSQL side by side.

    python benchmarks/doctor_bench.py [--accounts 20000] [--repeat 3] [--skip-postgres]

Fills a fresh store of each kind with `playbook demo-data`'s generator (seed 7), then times
every row of engine.doctor.CHECKS. The gate shares are checked against the issue's numbers
(enterprise 2.7%, mid-market 4.7% at 20,000 accounts): a fast wrong answer is no result.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import describe, load_average  # noqa: E402

from dsl.project import load  # noqa: E402
from engine import doctor as d  # noqa: E402
from engine.demo_data import generate  # noqa: E402
from engine.store import Store  # noqa: E402

PG = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
TODAY = dt.date(2026, 6, 1)


def bench(url: str, accounts: int, repeat: int) -> dict[str, float]:
    cat = load([ROOT / "playbooks"]).catalog
    with Store.open(url, catalog=cat) as store:
        t = time.perf_counter()
        generate(cat, accounts, seed=7, today=TODAY, store=store)
        print(f"  demo data: {time.perf_counter() - t:.1f} s", flush=True)
        times: dict[str, float] = {}
        with store.connect() as conn:
            for check in d.CHECKS:
                runs = []
                for _ in range(repeat):
                    t = time.perf_counter()
                    findings = check.run(d.Context(conn, cat, TODAY))
                    runs.append(time.perf_counter() - t)
                times[check.name] = statistics.median(runs)
                if check.name == "gate_share":
                    shares = {f.subject: f.shown for f in findings}
                    print("  " + "\n  ".join(f"{k}: {v}" for k, v in shares.items()))
        return times


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--accounts", type=int, default=20_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--skip-postgres", action="store_true")
    a = p.parse_args()
    print(describe(), f"load {load_average()}", flush=True)
    results = {}
    folder = Path("/tmp") / f"doctor-bench-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    print("sqlite", flush=True)
    results["sqlite"] = bench(f"sqlite:///{folder}/store.db", a.accounts, a.repeat)
    if not a.skip_postgres:
        schema = f"doctor_bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(PG, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        try:
            print("postgresql", flush=True)
            results["postgresql"] = bench(f"{PG}?options=-csearch_path%3D{schema}", a.accounts, a.repeat)
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    kinds = list(results)
    print("check".ljust(22) + "".join(k.rjust(12) for k in kinds))
    for c in d.CHECKS:
        print(c.name.ljust(22) + "".join(f"{results[k][c.name]:11.3f}s" for k in kinds))
    print("total".ljust(22) + "".join(f"{sum(results[k].values()):11.3f}s" for k in kinds))


if __name__ == "__main__":
    main()
