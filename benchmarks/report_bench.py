"""`playbook report ...` queries over a large pipeline, on SQLite and PostgreSQL side by side.

    python benchmarks/report_bench.py [--deals 100000] [--repeat 3] [--skip-postgres]

Builds, in a fresh store of each kind, N deals in the seeds' funnel proportions (1,000 :
600 : 400 : 250 : 150 : 75, so the answers are known: 60%, 67%, 63%, 60%, 50%, 7.5%),
with their stage history (one row a stage), an outcome for every closed deal, one
enrollment, two emails and a reply for every second deal, and a sweep decision naming
two triggers for every deal. Then times each report's engine function (median of
--repeat runs) and checks the funnel's answer: a fast wrong answer is not a result.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import describe, load_average  # noqa: E402

from dsl.project import load_text  # noqa: E402
from engine.reports.funnel import funnel  # noqa: E402
from engine.reports.plays import plays_report  # noqa: E402
from engine.reports.revenue import revenue_report  # noqa: E402
from engine.reports.sla import sla_report  # noqa: E402
from engine.reports.triggers import triggers_report  # noqa: E402
from engine.schema import Base  # noqa: E402
from engine.store import Store  # noqa: E402

T = Base.metadata.tables
PG = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
STAGES = ("Trigger Fired", "CSQL Created", "Qualified", "Proposal Sent", "Negotiation", "Closed Won")
SHARES = (1000, 600, 400, 250, 150, 75)
START = dt.datetime(2025, 7, 1, tzinfo=dt.timezone.utc)
CATALOG = load_text("entity account\n  field segment enum(smb, mid_market, enterprise)?\n  field arr money?\n"
                    "  field contract_started_at date?\n", "a.play").catalog
CHUNK = 20000


def build(store: Store, deals: int) -> None:
    scale = deals // SHARES[0]
    tops = [i for i, n in enumerate(SHARES) for _ in range((n - (SHARES[i + 1] if i + 1 < len(SHARES) else 0)) * scale)]
    accounts = store.table("account", CATALOG)
    segs = ("smb", "mid_market", "enterprise")
    rows: dict[str, list[dict[str, Any]]] = {k: [] for k in ("acc", "opp", "hist", "out", "enr", "mail", "ev", "dec")}
    for k, top in enumerate(tops):
        acc, opp = f"b{k:07d}", f"o{k:07d}"
        created = START + dt.timedelta(minutes=7 * k)
        won = top == len(STAGES) - 1
        moves = [STAGES[j] for j in range(top + 1)] + ([] if won else ["Closed Lost"])
        at = [created + dt.timedelta(days=2 * j) for j in range(len(moves))]
        rows["acc"].append({"id": acc, "segment": segs[k % 3], "arr": 10000.0 + k % 50 * 1000,
                            "contract_started_at": (created - dt.timedelta(days=200)).date()})
        rows["opp"].append({"id": opp, "account_id": acc, "play": "p", "stage": moves[-1], "amount": 2000.0,
                            "owner": f"u{k % 20}", "created_at": created, "updated_at": at[-1], "closed_at": at[-1]})
        rows["hist"] += [{"opportunity_id": opp, "from_stage": moves[j - 1] if j else None, "stage": moves[j],
                          "at": at[j], "actor": "crm"} for j in range(len(moves))]
        rows["out"].append({"account_id": acc, "play": "p", "outcome": "won" if won else "lost", "value": 2000.0,
                            "opportunity_id": opp, "at": at[-1], "days_to_close": 2.0 * (len(moves) - 1),
                            "key": f"opportunity:{opp}", "source": "crm"})
        rows["dec"].append({"account_id": acc, "play": "p", "decision": "enrolled", "trigger": "t1",
                            "reasons": {"triggers": ["t1", f"t{2 + k % 3}"]}, "at": created})
        if k % 2 == 0:
            rows["enr"].append({"id": k + 1, "workflow_id": f"play:p:{acc}", "play": "p", "account_id": acc,
                                "plan_hash": "h", "status": "completed", "started_at": created, "ended_at": at[-1]})
            for step in ("day0-email", "day3-email"):
                rows["mail"].append({"idempotency_key": f"play:p:{acc}:h:e{k + 1}:{step}", "channel": "email",
                                     "recipient": f"x@{acc}", "subject": step, "body": "", "status": "sent",
                                     "account_id": acc, "play": "p", "created_at": created, "attempts": 0})
            rows["ev"].append({"key": f"r{k}", "source": "imap", "kind": "replied", "account_id": acc, "play": "p",
                               "occurred_at": at[0], "received_at": at[0], "signal_state": "done",
                               "signal_attempts": 0,
                               "payload": {"message": f"play:p:{acc}:h:e{k + 1}:day0-email"} if k % 4 else None})
    plan = (("acc", accounts), ("opp", T["opportunities"]), ("hist", T["stage_history"]), ("enr", T["enrollments"]),
            ("out", T["outcomes"]), ("mail", T["outbox"]), ("ev", T["inbound_events"]), ("dec", T["enrollment_decisions"]))
    with store.begin() as conn:
        for key, table in plan:
            for i in range(0, len(rows[key]), CHUNK):
                conn.execute(table.insert(), rows[key][i:i + CHUNK])
    if store.dialect == "postgresql":
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("ANALYZE"))


REPORTS: dict[str, Callable[[Any, Store], Any]] = {
    "funnel": lambda conn, store: funnel(conn, STAGES),
    "plays": lambda conn, store: plays_report(conn),
    "triggers": lambda conn, store: triggers_report(conn),
    "revenue": lambda conn, store: revenue_report(conn, store.table("account", CATALOG), as_of=dt.date(2026, 9, 1)),
    "sla": lambda conn, store: sla_report(conn),
}


def measure(store: Store, repeat: int) -> dict[str, float]:
    times: dict[str, float] = {}
    for name, work in REPORTS.items():
        runs = []
        for _ in range(repeat):
            with store.connect() as conn:
                t0 = time.perf_counter()
                result = work(conn, store)
                runs.append(time.perf_counter() - t0)
            if name == "funnel":
                doc = result.to_json()
                got = [s["step_conversion_percent"] for s in doc["stages"]][1:] + [doc["overall_conversion_percent"]]
                assert got == ["60%", "67%", "63%", "60%", "50%", "7.5%"], got
        times[name] = statistics.median(runs)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--deals", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-postgres", action="store_true")
    args = ap.parse_args()
    print(f"{describe()}; load {load_average()}; {args.deals:,} deals, median of {args.repeat}")
    results: dict[str, dict[str, float]] = {}
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(f"sqlite:///{tmp}/bench.db", catalog=CATALOG)
        t0 = time.perf_counter()
        build(store, args.deals)
        print(f"sqlite: built in {time.perf_counter() - t0:.1f} s")
        results["sqlite"] = measure(store, args.repeat)
        store.close()
    if not args.skip_postgres:
        schema = f"pb_bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(PG, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        try:
            store = Store.open(f"{PG}?options=-csearch_path%3D{schema}", catalog=CATALOG)
            t0 = time.perf_counter()
            build(store, args.deals)
            print(f"postgresql: built in {time.perf_counter() - t0:.1f} s")
            results["postgresql"] = measure(store, args.repeat)
            store.close()
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
    kinds = list(results)
    print("| report | " + " | ".join(kinds) + " |")
    print("|---|" + "---:|" * len(kinds))
    for name in REPORTS:
        print(f"| {name} | " + " | ".join(f"{results[k][name] * 1000:,.0f} ms" for k in kinds) + " |")


if __name__ == "__main__":
    main()
