"""Trigger evaluation over N demo accounts on SQLite and PostgreSQL, four ways, side by side.

    python benchmarks/engine_bench.py [--accounts 1000000] [--repeat 3] [--db PATH]
        [--pg-db postgresql+psycopg2://...] [--no-sqlite]

(a) Playbook: what a sweep runs to find its candidates (engine/enroll.py
    `candidate_table`): every trigger in playbooks/ compiled to SQL
    (engine/sqlcompile.py) as a `TriggerPass` (engine/evaluate.py): one pass
    over the accounts for the triggers that read every account, one query for
    each trigger that starts from its windows, all into a temporary table
    (counted afterwards, untimed); metric windows read the rollup (engine/rollups.py).
(a') The same without the rollup (`RuleSQL(rollups=False)`): metric windows
    scan metric_points, as before the rollup existed.
(b) Hand-written SQL for the same conditions (below), one query per trigger,
    over the raw tables (no rollup).
(c) The `rule-engine` library matching the same conditions record by record:
    one streamed pass over every account (fields plus window aggregates
    computed by a hand-written SQL feature query, which is generous to it:
    rule-engine cannot compute windows), each record matched against every rule.

Each runs in its own subprocess so its peak memory is its own. All must find
the same accounts per trigger, or the run fails: a fast wrong answer is not a
result. Reported per store: medians over --repeat runs (rule-engine: one run
unless --repeat-rule-engine, after all the others; 0: none), wall and CPU
seconds, ratios, peak RSS, the load average seen.
The PostgreSQL store must hold the same data (benchmarks/copy_store.py) and
be migrated (the rollup).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import describe  # noqa: E402

TODAY = dt.date(2026, 6, 1)
SEED = 7


def d(days: int) -> str:
    """An ISO date `days` before TODAY (SQLite stores dates as ISO text)."""
    return (TODAY - dt.timedelta(days=days)).isoformat()


def hand_sql(dialect: str) -> dict[str, str]:
    """Hand-written SQL, one query per trigger of playbooks/triggers.play, as a person writes it for `dialect`."""
    pg = dialect == "postgresql"
    T = f"DATE '{TODAY.isoformat()}'" if pg else f"'{TODAY.isoformat()}'"
    true, real, least = ("true", "float8", "least") if pg else ("1", "REAL", "min")

    def days(later: str, earlier: str) -> str:
        return f"({later} - {earlier})" if pg else f"(julianday({later}) - julianday({earlier}))"

    return {
        "usage_ceiling": "SELECT id FROM accounts WHERE usage_percent > 0.8",
        "expansion_due": f"""SELECT id FROM accounts WHERE usage_percent > 0.8 AND health_score > 60
            AND (last_expansion_at IS NULL OR {days(T, "last_expansion_at")} > 90)""",
        "seat_saturation": f"SELECT id FROM accounts WHERE CAST(seats_active AS {real}) / NULLIF(seats_purchased, 0) > 0.9",
        "feature_exploration": f"""SELECT a.id FROM accounts a JOIN (
              SELECT account_id FROM events WHERE event = 'gated_feature_explored'
              AND occurred_on > '{d(14)}' AND occurred_on <= {T} GROUP BY account_id HAVING count(*) >= 3
            ) e ON e.account_id = a.id WHERE a.requested_feature IS NOT NULL""",
        "feature_request_upgrade": f"""SELECT a.id FROM accounts a WHERE a.requested_feature_tier IS NOT NULL
            AND a.requested_feature_tier != a.plan AND EXISTS (SELECT 1 FROM events e WHERE e.account_id = a.id
            AND e.event = 'feature_request' AND e.occurred_on > '{d(3)}' AND e.occurred_on <= {T})""",
        "headcount_growth": f"""SELECT s.account_id FROM (
              SELECT account_id, min(date) AS d0, max(date) AS d1, count(*) AS n FROM metric_points
              WHERE metric = 'headcount' AND date > '{d(90)}' AND date <= {T} GROUP BY account_id) s
            JOIN metric_points f ON f.metric = 'headcount' AND f.account_id = s.account_id AND f.date = s.d0
            JOIN metric_points l ON l.metric = 'headcount' AND l.account_id = s.account_id AND l.date = s.d1
            WHERE s.n >= 2 AND f.value != 0 AND l.value / f.value - 1 >= 0.2
            UNION
            SELECT account_id FROM events WHERE event = 'hiring_spike' AND occurred_on > '{d(30)}' AND occurred_on <= {T}""",
        "funding_round": f"""SELECT DISTINCT account_id FROM events WHERE event = 'funding_announced'
            AND occurred_on > '{d(30)}' AND occurred_on <= {T}""",
        "power_user_emergence": f"""SELECT a.id FROM accounts a JOIN (
              SELECT account_id, avg(value) AS v FROM metric_points WHERE metric = 'engagement_minutes'
              AND date > '{d(30)}' AND date <= {T} GROUP BY account_id
            ) m ON m.account_id = a.id WHERE m.v >= 2 * a.cohort_engagement_minutes""",
        "renewal_window": f"SELECT id FROM accounts WHERE {days('renewal_date', T)} BETWEEN 76 AND 90",
        "contract_milestone": f"""SELECT id FROM accounts WHERE {days('renewal_date', T)} BETWEEN 46 AND 60
            AND health_score >= 80""",
        "qbr_outcome": f"""SELECT a.id FROM accounts a WHERE a.qbr_need_on_roadmap = {true}
            AND a.cross_sell_product IS NOT NULL AND a.cross_sell_need IS NOT NULL
            AND a.cross_sell_outcome IS NOT NULL AND a.reference_customer IS NOT NULL
            AND EXISTS (SELECT 1 FROM events e WHERE e.account_id = a.id AND e.event = 'qbr_completed'
                        AND e.occurred_on > '{d(7)}' AND e.occurred_on <= {T})""",
        "cross_sell_fit": f"""SELECT a.id FROM accounts a LEFT JOIN (
              SELECT account_id, count(*) AS c FROM events WHERE event = 'cross_sell_interest'
              AND occurred_on > '{d(180)}' AND occurred_on <= {T} GROUP BY account_id
            ) i ON i.account_id = a.id
            WHERE a.cross_sell_product IS NOT NULL AND a.cross_sell_need IS NOT NULL
              AND a.cross_sell_outcome IS NOT NULL AND a.reference_customer IS NOT NULL
              AND (a.product_fit * 20 * 0.3 + a.adoption_percentile * 0.25
                   + {least}(coalesce(i.c, 0) * 25, 100) * 0.2 + a.budget_timing * 0.15
                   + a.champion_strength * 0.1) BETWEEN 70 AND 100""",
        "promoter_response": f"""SELECT a.id FROM accounts a WHERE a.nps >= 9
            AND a.cross_sell_product IS NOT NULL AND a.cross_sell_need IS NOT NULL
            AND a.cross_sell_outcome IS NOT NULL AND a.reference_customer IS NOT NULL
            AND EXISTS (SELECT 1 FROM events e WHERE e.account_id = a.id AND e.event = 'nps_response'
                        AND e.occurred_on > '{d(7)}' AND e.occurred_on <= {T})""",
    }



HAND_SQL = hand_sql("sqlite")

# rule-engine rules over the records of FEATURE_SQL (fields plus window aggregates).
RULES: dict[str, str] = {
    "usage_ceiling": "usage_percent != null and usage_percent > 0.8",
    "expansion_due": ("usage_percent != null and usage_percent > 0.8 and health_score != null and health_score > 60"
                      " and (days_since_expansion == null or days_since_expansion > 90)"),
    "seat_saturation": "seats_purchased != null and seats_purchased != 0 and seats_active != null"
                       " and seats_active / seats_purchased > 0.9",
    "feature_exploration": "gated_14 >= 3 and requested_feature != null",
    "feature_request_upgrade": "request_3 > 0 and requested_feature_tier != null and plan != null"
                               " and requested_feature_tier != plan",
    "headcount_growth": "(hc_growth != null and hc_growth >= 0.2) or hiring_30 > 0",
    "funding_round": "funding_30 > 0",
    "power_user_emergence": "engagement_30 != null and cohort_engagement_minutes != null"
                            " and engagement_30 >= 2 * cohort_engagement_minutes",
    "renewal_window": "days_until_renewal != null and days_until_renewal >= 76 and days_until_renewal <= 90",
    "contract_milestone": "days_until_renewal != null and days_until_renewal >= 46 and days_until_renewal <= 60"
                          " and health_score != null and health_score >= 80",
    "qbr_outcome": "qbr_7 > 0 and qbr_need_on_roadmap == 1 and brief_ready",
    "cross_sell_fit": "brief_ready and whitespace != null and whitespace >= 70 and whitespace <= 100",
    "promoter_response": "nps_7 > 0 and nps != null and nps >= 9 and brief_ready",
}


def feature_sql(dialect: str) -> str:
    """rule-engine's input: every account's fields plus the window aggregates its rules read."""
    pg = dialect == "postgresql"
    T = f"DATE '{TODAY.isoformat()}'" if pg else f"'{TODAY.isoformat()}'"

    def days(later: str, earlier: str) -> str:
        return f"({later} - {earlier})" if pg else f"(julianday({later}) - julianday({earlier}))"

    def window_count(event: str, n: int) -> str:
        return (f"(SELECT account_id, count(*) AS c FROM events WHERE event = '{event}' "
                f"AND occurred_on > '{d(n)}' AND occurred_on <= {T} GROUP BY account_id)")

    return f"""
SELECT a.*, {days(T, 'a.last_expansion_at')} AS days_since_expansion,
       {days('a.renewal_date', T)} AS days_until_renewal,
       coalesce(g.c, 0) AS gated_14, coalesce(r.c, 0) AS request_3, coalesce(h.c, 0) AS hiring_30,
       coalesce(f.c, 0) AS funding_30, coalesce(q.c, 0) AS qbr_7, coalesce(np.c, 0) AS nps_7,
       coalesce(ci.c, 0) AS interest_180, em.v AS engagement_30,
       CASE WHEN hc.n >= 2 AND hc.first != 0 THEN hc.last / hc.first - 1 END AS hc_growth
FROM accounts a
LEFT JOIN {window_count('gated_feature_explored', 14)} g ON g.account_id = a.id
LEFT JOIN {window_count('feature_request', 3)} r ON r.account_id = a.id
LEFT JOIN {window_count('hiring_spike', 30)} h ON h.account_id = a.id
LEFT JOIN {window_count('funding_announced', 30)} f ON f.account_id = a.id
LEFT JOIN {window_count('qbr_completed', 7)} q ON q.account_id = a.id
LEFT JOIN {window_count('nps_response', 7)} np ON np.account_id = a.id
LEFT JOIN {window_count('cross_sell_interest', 180)} ci ON ci.account_id = a.id
LEFT JOIN (SELECT account_id, avg(value) AS v FROM metric_points WHERE metric = 'engagement_minutes'
           AND date > '{d(30)}' AND date <= {T} GROUP BY account_id) em ON em.account_id = a.id
LEFT JOIN (SELECT s.account_id, s.n, f.value AS first, l.value AS last FROM (
             SELECT account_id, min(date) AS d0, max(date) AS d1, count(*) AS n FROM metric_points
             WHERE metric = 'headcount' AND date > '{d(90)}' AND date <= {T} GROUP BY account_id) s
           JOIN metric_points f ON f.metric = 'headcount' AND f.account_id = s.account_id AND f.date = s.d0
           JOIN metric_points l ON l.metric = 'headcount' AND l.account_id = s.account_id AND l.date = s.d1
          ) hc ON hc.account_id = a.id
"""


FEATURE_SQL = feature_sql("sqlite")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- children
#
# `db` is a SQLite file's path or a PostgreSQL URL (postgresql+psycopg2://...).


def _is_pg(db: str) -> bool:
    return db.startswith("postgresql")


def _dbapi(db: str, dicts: bool = False) -> tuple[Any, Any]:
    """(connection, cursor factory) of the plain driver; rows as dicts when asked."""
    if _is_pg(db):
        import psycopg2
        import psycopg2.extras

        conn = psycopg2.connect(db.replace("postgresql+psycopg2://", "postgresql://"))
        factory = psycopg2.extras.RealDictCursor if dicts else None
        # A named (server-side) cursor streams rows as SQLite's does.
        return conn, lambda: conn.cursor(name="bench", cursor_factory=factory, withhold=False)
    import sqlite3

    conn = sqlite3.connect(db)
    if dicts:
        conn.row_factory = sqlite3.Row
    return conn, conn.cursor


def _run(db: str, sql: str, dicts: bool = False, cpu: list[float] | None = None) -> Iterator[Any]:
    """The rows of `sql`, streamed; `cpu`, if given, gets the CPU seconds spent (ours and the backend's)."""
    conn, cursor = _dbapi(db, dicts)
    pid = None
    if _is_pg(db) and cpu is not None:
        with conn.cursor() as c:
            c.execute("SELECT pg_backend_pid()")
            pid = c.fetchone()[0]
    start = _cpu(pid)
    cur = cursor()
    if _is_pg(db):
        cur.itersize = 10_000
    cur.execute(sql)
    while batch := cur.fetchmany(10_000):
        yield from batch
    cur.close()
    if cpu is not None:
        cpu.append(_cpu(pid) - start)
    conn.close()


def _warm(db: str) -> None:
    """Read the tables once untimed, so no side pays for a cold page cache."""
    for table in ("accounts", "metric_points", "metric_series", "events"):
        for _ in _run(db, f"SELECT count(*) FROM {table}"):
            pass


def _url(db: str) -> str:
    return db if _is_pg(db) else f"sqlite:///{db}"


def _child_playbook(db: str, rollups: bool) -> dict:
    """What a sweep runs to find its candidates (engine/enroll.py `candidate_table`):
    the triggers' `TriggerPass` into a temporary table, statement by statement."""
    import sqlalchemy as sa

    from dsl.project import load
    from engine.evaluate import RuleSQL, TriggerPass, planner_settings, without_jit
    from engine.store import Store

    catalog = load([ROOT / "playbooks"]).catalog
    store = Store.open(_url(db), catalog=catalog, migrate=False)
    found = TriggerPass(RuleSQL(catalog, TODAY, store.dialect, rollups=rollups), sorted(catalog.triggers))
    times: dict[str, float] = {}
    _warm(db)
    with store.connect() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() if _is_pg(db) else None
        cpu = _cpu(pid)
        table = sa.Table("bench_candidates", sa.MetaData(), *found.columns(), prefixes=["TEMPORARY"])
        table.create(conn)
        with without_jit(conn):  # as TriggerPass.fill runs them
            for label, statement in found.inserts(table):
                t = time.perf_counter()
                with planner_settings(conn, found.settings(label)):
                    conn.execute(statement)
                times[label] = time.perf_counter() - t
        cpu = _cpu(pid) - cpu
        # Untimed: what each trigger found, for the comparison with the other sides.
        counts = {name: conn.execute(sa.select(sa.func.count(sa.distinct(table.c.id)))
                                     .where(table.c[f"t_{k}"])).scalar() for k, name in enumerate(found.triggers)}
    return {"counts": counts, "times": times, "cpu": cpu, "joined": found.joined, "rss_mb": _peak_rss_mb()}


def _cpu(backend_pid: int | None) -> float:
    """CPU seconds of this process, plus those of the PostgreSQL backend serving it."""
    own = time.process_time()
    if backend_pid is None:
        return own
    fields = Path(f"/proc/{backend_pid}/stat").read_text().rsplit(")", 1)[1].split()
    return own + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_playbook(db: str) -> dict:
    return _child_playbook(db, True)


def child_playbook_scan(db: str) -> dict:
    """The compiler as before the rollup: metric windows scan metric_points."""
    return _child_playbook(db, False)


def child_hand(db: str) -> dict:
    _warm(db)
    counts, times = {}, {}
    cpu: list[float] = []
    for name, sql in sorted(hand_sql("postgresql" if _is_pg(db) else "sqlite").items()):
        t = time.perf_counter()
        counts[name] = sum(1 for _ in _run(db, sql, cpu=cpu))
        times[name] = time.perf_counter() - t
    return {"counts": counts, "times": times, "cpu": sum(cpu), "rss_mb": _peak_rss_mb()}


def child_rule_engine(db: str) -> dict:
    import rule_engine

    rules = {name: rule_engine.Rule(text) for name, text in RULES.items()}
    counts = dict.fromkeys(rules, 0)
    cpu: list[float] = []
    t = time.perf_counter()
    for row in _run(db, feature_sql("postgresql" if _is_pg(db) else "sqlite"), dicts=True, cpu=cpu):
        record = dict(row)
        ready = all(record[k] is not None for k in
                    ("cross_sell_product", "cross_sell_need", "cross_sell_outcome", "reference_customer"))
        record["brief_ready"] = ready
        if record["qbr_need_on_roadmap"] is not None:  # PostgreSQL's booleans, SQLite's 0/1
            record["qbr_need_on_roadmap"] = int(record["qbr_need_on_roadmap"])
        for k, v in record.items():
            if isinstance(v, Decimal):
                record[k] = float(v)
        if None in (record["product_fit"], record["adoption_percentile"], record["budget_timing"],
                    record["champion_strength"]):
            record["whitespace"] = None
        else:
            record["whitespace"] = (record["product_fit"] * 20 * 0.3 + record["adoption_percentile"] * 0.25
                                    + min(record["interest_180"] * 25, 100) * 0.2
                                    + record["budget_timing"] * 0.15 + record["champion_strength"] * 0.1)
        for name, rule in rules.items():
            if rule.matches(record):
                counts[name] += 1
    total = time.perf_counter() - t
    return {"counts": counts, "times": {"all": total}, "cpu": sum(cpu), "rss_mb": _peak_rss_mb()}


def child_features(db: str) -> dict:
    """rule-engine's input alone: the feature query, fetched and turned into dicts, no matching."""
    cpu: list[float] = []
    t = time.perf_counter()
    rows = sum(1 for row in _run(db, feature_sql("postgresql" if _is_pg(db) else "sqlite"), dicts=True, cpu=cpu)
               if dict(row))
    return {"counts": {}, "times": {"all": time.perf_counter() - t}, "cpu": sum(cpu), "rows": rows,
            "rss_mb": _peak_rss_mb()}


CHILDREN = {"playbook": child_playbook, "playbook_scan": child_playbook_scan, "hand": child_hand,
            "rule_engine": child_rule_engine, "features": child_features}


def run_child(kind: str, db: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, "--db", db],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- parent


def ensure_db(db: Path, accounts: int, regenerate: bool = False) -> float | None:
    """Generate the data set once; reuse it while the marker says it is the same.

    A file that is there without a matching marker is never replaced unasked
    (`regenerate`): it may be a store that took an hour to make.
    """
    marker = db.with_suffix(".json")
    want = {"accounts": accounts, "seed": SEED, "today": TODAY.isoformat()}
    found = json.loads(marker.read_text()) if marker.exists() else None
    if db.exists() and found == want and not regenerate:
        return None
    if db.exists() and not regenerate:
        why = f"its marker {marker} says {found}" if found is not None else f"it has no marker {marker}"
        raise SystemExit(f"engine_bench: {db} exists but {why}, not {want}: pass --regenerate to replace it, "
                         "or name another --db")
    from dsl.project import load
    from engine.demo_data import generate
    from engine.store import Store

    db.parent.mkdir(parents=True, exist_ok=True)
    for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        p.unlink(missing_ok=True)
    catalog = load([ROOT / "playbooks"]).catalog
    store = Store.open(f"sqlite:///{db}", catalog=catalog)
    t = time.perf_counter()
    generate(catalog, accounts, seed=SEED, today=TODAY, store=store,
             progress=lambda phase, done, total: print(f"  {phase} {done}/{total}", file=sys.stderr, flush=True))
    store.close()
    marker.write_text(json.dumps(want))
    return time.perf_counter() - t


def store_version(db: str) -> str:
    if _is_pg(db):
        return "PostgreSQL " + next(_run(db, "SELECT current_setting('server_version')"))[0]
    import sqlite3

    return f"SQLite {sqlite3.sqlite_version}"


def measure(db: str, args: argparse.Namespace) -> tuple[list[str], bool]:
    """Every side on one store, alternating, rule-engine last; the report's lines and whether all sides agreed."""
    sides = ["playbook", "playbook_scan", "hand"]
    runs: dict[str, list[dict]] = {k: [] for k in (*sides, "rule_engine", "features")}
    loads: list[float] = []
    for i in range(args.repeat):
        # Rotate the order so no side always runs on a warmer cache.
        for kind in sides[i % 3:] + sides[:i % 3]:
            loads.append(os.getloadavg()[0])
            runs[kind].append(run_child(kind, db))
    for _ in range(args.repeat_rule_engine):
        loads.append(os.getloadavg()[0])
        runs["rule_engine"].append(run_child("rule_engine", db))
        if args.features:
            runs["features"].append(run_child("features", db))
    loads.append(os.getloadavg()[0])

    counts = {k: v[0]["counts"] for k, v in runs.items() if k != "features" and v}
    triggers = sorted(HAND_SQL)
    mismatches = [t for t in triggers if len({counts[k].get(t) for k in counts}) != 1]
    missing = sorted(set(counts["playbook"]) - set(HAND_SQL))
    joined = runs["playbook"][0]["joined"]

    def median(kind: str, key: str | None = None) -> float:
        """Median total wall time of a side (or of one statement), or its CPU with key="cpu"."""
        if key == "cpu":
            return statistics.median(r["cpu"] for r in runs[kind])
        return statistics.median(sum(r["times"].values()) if key is None else r["times"].get(key, 0.0)
                                 for r in runs[kind])

    def cell(kind: str, key: str) -> str:
        return "in the pass" if kind != "hand" and key in joined else f"{median(kind, key):.3f}"

    ours, scan, hand = median("playbook"), median("playbook_scan"), median("hand")
    lines = [
        f"Trigger evaluation, {args.accounts:,} demo accounts on {store_version(db)}, {len(triggers)} triggers "
        f"({dt.date.today().isoformat()}; {describe()}; load average {min(loads):.1f}-{max(loads):.1f} "
        "during the runs).",
        "",
        "| trigger | fires on | playbook (s) | playbook without the rollup (s) | hand SQL (s) |",
        "|---|---:|---:|---:|---:|",
        f"| one pass over the accounts: {', '.join(joined)} | | {median('playbook', 'pass'):.3f} "
        f"| {median('playbook_scan', 'pass'):.3f} | {sum(median('hand', t) for t in joined):.3f} (their sum) |",
    ]
    for t in triggers:
        lines.append(f"| {t} | {counts['playbook'].get(t, 0):,} | {cell('playbook', t)} | {cell('playbook_scan', t)} "
                     f"| {cell('hand', t)} |")
    lines += [
        "",
        f"- playbook, all triggers (what a sweep runs: the pass and the other triggers' queries into a temporary "
        f"table): **{ours:.2f} s** wall, {median('playbook', 'cpu'):.2f} s CPU (median of {args.repeat}); peak RSS "
        f"{max(r['rss_mb'] for r in runs['playbook']):.0f} MB; without the rollup (metric windows scanning "
        f"the points): {scan:.2f} s",
        f"- hand-written SQL, ids streamed to the client: {hand:.2f} s wall, {median('hand', 'cpu'):.2f} s CPU; "
        f"playbook / hand = **{ours / hand:.2f}x** wall, {median('playbook', 'cpu') / median('hand', 'cpu'):.2f}x "
        "CPU (goal: within 1.3x)",
    ]
    if runs["rule_engine"]:
        reng = median("rule_engine")
        lines.append(
            f"- rule-engine, record by record: {reng:.1f} s wall, {median('rule_engine', 'cpu'):.1f} s CPU "
            f"({args.repeat_rule_engine} run, after the others); peak RSS "
            f"{max(r['rss_mb'] for r in runs['rule_engine']):.0f} MB; rule-engine / playbook = **{reng / ours:.1f}x** "
            f"wall, {median('rule_engine', 'cpu') / median('playbook', 'cpu'):.1f}x CPU (goal: at least 30x)")
    if runs["features"]:
        features = median("features")
        lines.append(
            f"- of which rule-engine's input (the feature query, fetched as dicts, no matching): {features:.1f} s; "
            f"matching alone: {reng - features:.1f} s = {(reng - features) / ours:.1f}x playbook's whole evaluation")
    lines += [
        "- CPU: this process's, plus on PostgreSQL the backend's (/proc/PID/stat; parallel workers not included)",
        f"- same accounts found by all sides for every trigger: {'yes' if not mismatches else 'NO: ' + ', '.join(mismatches)}",
    ]
    if missing:
        lines.append(f"- triggers without a hand-written baseline (not compared): {', '.join(missing)}")
    return lines, not mismatches


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--repeat-rule-engine", type=int, default=1)
    ap.add_argument("--no-features", dest="features", action="store_false",
                    help="skip timing rule-engine's input alone (the feature query)")
    ap.add_argument("--db", default=None, help="a SQLite file (generated unless it is there)")
    ap.add_argument("--regenerate", action="store_true",
                    help="replace --db even if it is there without a matching marker (<db>.json)")
    ap.add_argument("--pg-db", default=None,
                    help="also a PostgreSQL store holding the same data (a URL; e.g. a copy of the SQLite file)")
    ap.add_argument("--no-sqlite", action="store_true", help="only the PostgreSQL store")
    ap.add_argument("--child", choices=sorted(CHILDREN))
    args = ap.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](args.db)))
        return 0

    stores: list[str] = []
    if not args.no_sqlite:
        db = Path(args.db or ROOT / ".playbook" / f"bench-{args.accounts}.db")
        generated = ensure_db(db, args.accounts, args.regenerate)
        if generated is not None:
            print(f"generated {args.accounts:,} accounts in {generated:.0f} s", flush=True)
        stores.append(str(db))
    if args.pg_db:
        stores.append(args.pg_db)
    ok = True
    for store in stores:
        lines, agreed = measure(store, args)
        ok = ok and agreed
        print("\n".join(lines) + "\n", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
