"""Imports at bulk speed: `playbook import` of accounts and metric points against a bare load of the same rows.

    python benchmarks/load_bench.py [--accounts 200000] [--points 2000000] [--repeat 3]
                                    [--stores sqlite,postgresql] [--write]

For each store and repetition, into empty stores (migrated, declared columns
added), each bare load timed right next to the import of the same rows (the
bare one first in odd repetitions, second in even ones; the stores in turn
first), so the machine's load is shared fairly:

(a) bare: the same CSV files into the same tables with no checks at all:
    PostgreSQL `COPY accounts FROM STDIN WITH (FORMAT csv, HEADER)` (psycopg2
    copy_expert, the file as is); SQLite csv.reader + executemany of the
    text values in one transaction (SQLite's column affinity types them).
(b) import: `engine.importers.import_files` (checks, staging, history).
(c) import without history: (b) with `engine.history.record_changes` off,
    to show what keeping the field history costs.
Then, on store (b), a re-import of the accounts file with 1% of the accounts
changed in one field: its time and the history rows it adds.

Files are generated from playbooks/' declarations (every account field, in
the plain forms exports use), deterministic for a seed. Medians; ratios are
(b)/(a). `--write` puts the table into docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import datetime as dt
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import sqlalchemy as sa  # noqa: E402
from machine import describe, load_average  # noqa: E402

from dsl import nodes as n  # noqa: E402
from dsl.catalog import Catalog  # noqa: E402
from dsl.project import load  # noqa: E402
from engine import history, importers  # noqa: E402
from engine.store import Store  # noqa: E402

PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
TODAY = dt.date(2026, 6, 1)
T = n.TypeName


# --------------------------------------------------------------------------
# Files


def _value(rng: random.Random, f: n.FieldDecl, i: int) -> str:
    t = f.type
    if t.nullable and rng.random() < 0.1:
        return ""
    lo = t.low if t.low is not None else 0.0
    hi = t.high if t.high is not None else 1000.0
    if t.name is T.INT:
        return str(rng.randint(int(lo), int(hi)))
    if t.name in (T.NUMBER, T.DURATION):
        return str(round(rng.uniform(lo, hi), 2))
    if t.name is T.MONEY:
        return str(rng.randint(3, 400) * 100)
    if t.name is T.PERCENT:
        return str(round(rng.random(), 4))
    if t.name is T.BOOL:
        return "true" if rng.random() < 0.5 else "false"
    if t.name is T.ENUM:
        return rng.choice(t.values)
    if t.name is T.DATE:
        return (TODAY + dt.timedelta(days=rng.randint(-900, 365))).isoformat()
    if t.name is T.DATETIME:
        return f"{(TODAY - dt.timedelta(days=rng.randint(0, 900))).isoformat()}T{rng.randint(8, 18):02d}:00:00Z"
    if t.name is T.USER:
        return f"usr-{i % 300:04d}"
    if t.name is T.CONTACT:
        return f"con-{i:07d}-1"
    return f"{f.name} {rng.randint(1, 50)}"


def account_fields(catalog: Catalog) -> list[n.FieldDecl]:
    return [f for f in (catalog.account.fields if catalog.account else []) if f.name not in ("id", "name")]


def write_accounts(path: Path, catalog: Catalog, count: int, seed: int, changed: float = 0.0) -> None:
    """`count` accounts; with `changed`, the same file with that share of accounts' first numeric field changed."""
    rng = random.Random(seed)
    fields = account_fields(catalog)
    first_number = next(k for k, f in enumerate(fields) if f.type.name in (T.INT, T.NUMBER, T.MONEY))
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["id", "name", *(f.name for f in fields)])
        change = random.Random(seed + 1)
        for i in range(count):
            values = [_value(rng, f, i) for f in fields]
            if changed and change.random() < changed:
                values[first_number] = str(int(float(values[first_number] or 0)) + 1)
            w.writerow([f"acc-{i:07d}", f"Company {i}", *values])


def write_account_ids(path: Path, count: int) -> None:
    """`count` accounts with an id and a name only: what the points of `--points-only` refer to."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        fh.write("id,name\n")
        fh.writelines(f"acc-{i:07d},Company {i}\n" for i in range(count))


def write_points(path: Path, catalog: Catalog, accounts: int, points: int, seed: int) -> None:
    """`points` metric points spread over the accounts and the declared metrics, weekly dates back from TODAY."""
    rng = random.Random(seed)
    metrics = sorted(catalog.metrics)
    per_account = max(1, points // accounts)
    weeks = max(1, per_account // len(metrics) + 1)
    written = 0
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["account_id", "metric", "date", "value"])
        dates = [(TODAY - dt.timedelta(days=7 * k)).isoformat() for k in range(weeks)]
        for i in range(accounts):
            account = f"acc-{i:07d}"
            for k in range(per_account):
                if written >= points:
                    return
                w.writerow([account, metrics[k % len(metrics)], dates[k // len(metrics)], rng.randint(0, 5000)])
                written += 1


# --------------------------------------------------------------------------
# Stores


@contextmanager
def fresh(kind: str, folder: Path, catalog: Catalog) -> Iterator[Store]:
    if kind == "sqlite":
        path = folder / f"bench-{uuid.uuid4().hex[:8]}.db"
        store = Store.open(f"sqlite:///{path}", catalog=catalog)
        try:
            yield store
        finally:
            store.close()
            for extra in ("", "-wal", "-shm"):
                Path(str(path) + extra).unlink(missing_ok=True)
        return
    schema_name = f"pb_loadbench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema_name}"')
    store = Store.open(f"{PG_URL}?options=-csearch_path%3D{schema_name}", catalog=catalog)
    count_backend_cpu(store.engine)
    try:
        yield store
    finally:
        store.close()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema_name}" CASCADE')
        admin.dispose()


def size_bytes(store: Store, table: str) -> int:
    with store.engine.connect() as conn:
        if store.dialect == "postgresql":
            return int(conn.exec_driver_sql(f"SELECT pg_total_relation_size('{table}')").scalar_one())
        try:
            return int(conn.exec_driver_sql(f"SELECT sum(pgsize) FROM dbstat WHERE name = '{table}'").scalar_one() or 0)
        except sa.exc.OperationalError:
            return -1  # SQLite built without dbstat


def bare_load(store: Store, table: str, path: Path) -> None:
    with store.engine.connect() as conn:
        with conn.begin():
            if store.dialect == "postgresql":
                with path.open(encoding="utf-8") as fh:
                    header = fh.readline().strip()
                    fh.seek(0)
                    cursor = conn.connection.cursor()
                    cursor.copy_expert(f"COPY {table} ({header}) FROM STDIN WITH (FORMAT csv, HEADER)", fh)
                    cursor.close()
                return
            with path.open(encoding="utf-8", newline="") as fh:
                reader = csv.reader(fh)
                header = next(reader)
                sql = f"INSERT INTO {table} ({', '.join(header)}) VALUES ({', '.join('?' * len(header))})"
                cursor = conn.connection.cursor()
                while True:
                    batch = [[v if v != "" else None for v in r] for _, r in zip(range(100_000), reader)]
                    if not batch:
                        break
                    cursor.executemany(sql, batch)
                cursor.close()


FIRST = dt.datetime(2026, 5, 1, 9, tzinfo=dt.timezone.utc)
SECOND = dt.datetime(2026, 6, 1, 9, tzinfo=dt.timezone.utc)


def read_all(store: Store, catalog: Catalog, day: dt.date | None) -> None:
    """Every field of every account, in SQL (values counted per column, so each one is computed):
    as of `day`, or now."""
    source = (history.as_of_select(catalog, day, store.dialect) if day else
              sa.select(store.table("account", catalog))).subquery()
    with store.engine.connect() as conn:
        conn.execute(sa.select(*(sa.func.count(c) for c in source.c))).one()


# CPU seconds of the PostgreSQL backends this process used (each connection's, from
# /proc/<backend pid>/stat between its checkout and its checkin), and of the last `timed` step.
_BACKEND_CPU = [0.0]
LAST_CPU = [0.0]


def _proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0  # the server is not on this machine: client CPU only
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count_backend_cpu(engine: sa.engine.Engine) -> None:
    @sa.event.listens_for(engine, "checkout")
    def checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        record.info["pid"] = dbapi_conn.get_backend_pid()
        record.info["cpu0"] = _proc_cpu(record.info["pid"])

    @sa.event.listens_for(engine, "checkin")
    def checkin(dbapi_conn: Any, record: Any) -> None:
        if "cpu0" in record.info:
            _BACKEND_CPU[0] += _proc_cpu(record.info["pid"]) - record.info.pop("cpu0")


def _own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(work: Callable[[], Any]) -> float:
    """Wall seconds of `work`; its CPU seconds (this process + PostgreSQL backends) in LAST_CPU."""
    cpu0, backend0 = _own_cpu(), _BACKEND_CPU[0]
    started = time.perf_counter()
    work()
    wall = time.perf_counter() - started
    LAST_CPU[0] = _own_cpu() - cpu0 + _BACKEND_CPU[0] - backend0
    return wall


# --------------------------------------------------------------------------
# The run


def run(args: argparse.Namespace) -> str:
    catalog = load([str(ROOT / "playbooks")]).catalog
    if args.dir is not None:
        Path(args.dir).mkdir(parents=True, exist_ok=True)  # a folder named on the command line need not exist yet
    folder = Path(tempfile.mkdtemp(prefix="loadbench-", dir=args.dir))
    files = Path(args.files) if args.files else folder
    files.mkdir(parents=True, exist_ok=True)
    accounts_csv, changed_csv, points_csv = files / "accounts.csv", files / "accounts_changed.csv", files / "points.csv"
    if args.points_only:
        accounts_csv = files / "account_ids.csv"
    t0 = time.perf_counter()
    if args.points_only:
        if not (args.files and accounts_csv.exists() and points_csv.exists()):
            write_account_ids(accounts_csv, args.accounts)
            write_points(points_csv, catalog, args.accounts, args.points, seed=7)
    elif not (args.files and accounts_csv.exists() and changed_csv.exists() and points_csv.exists()):
        write_accounts(accounts_csv, catalog, args.accounts, seed=7)
        write_accounts(changed_csv, catalog, args.accounts, seed=7, changed=0.01)
        write_points(points_csv, catalog, args.accounts, args.points, seed=7)
    print(f"files written in {time.perf_counter() - t0:.0f} s: {accounts_csv.stat().st_size / 1e6:.0f} MB accounts, "
          f"{points_csv.stat().st_size / 1e6:.0f} MB points", flush=True)
    load_start = load_average()
    started = dt.datetime.now(dt.timezone.utc)
    results: dict[str, dict[str, list[float]]] = {}
    notes: dict[str, dict[str, Any]] = {}
    real_record, real_known = history.record_changes, history.known_since_sql
    loads: list[str] = []
    for rep in range(args.repeat):
        loads.append(load_average())
        # Side by side: each bare load next to the import of the same rows, in
        # turn first and second, and the stores in turn first and second.
        bare_first = rep % 2 == 0
        for kind in (args.stores if bare_first else args.stores[::-1]):
            r = results.setdefault(kind, {})
            with fresh(kind, folder, catalog) as bare, fresh(kind, folder, catalog) as store:
                if args.points_only:  # the accounts the points refer to, untimed, in both stores
                    bare_load(bare, "accounts", accounts_csv)
                    bare_load(store, "accounts", accounts_csv)
                for name, table, kind_, path in (("accounts", "accounts", "accounts", accounts_csv),
                                                 ("points", "metric_points", "metrics", points_csv)):
                    if args.points_only and name == "accounts":
                        continue
                    def bare_step(table: str = table, path: Path = path) -> float:
                        return timed(lambda: bare_load(bare, table, path))

                    def import_step(kind_: str = kind_, path: Path = path) -> float:
                        known = {"known_at": FIRST} if kind_ == "accounts" else {}
                        return timed(lambda: importers.import_file(store, catalog, kind_, path, **known))

                    for step in (("bare", bare_step), ("import", import_step))[::1 if bare_first else -1]:
                        r.setdefault(f"{step[0]}_{name}", []).append(step[1]())
                        r.setdefault(f"cpu_{step[0]}_{name}", []).append(LAST_CPU[0])
                if args.points_only:
                    notes[kind] = {"points": store.count("metric_points")}
                    print(f"rep {rep + 1} {kind} (load {loads[-1]} -> {load_average()}): "
                          + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in r.items()), flush=True)
                    continue
                bare_size = size_bytes(bare, "accounts")
                rows_before = store.count("account_field_history")
                hist_bytes = size_bytes(store, "account_field_history")
                r.setdefault("reimport_changed", []).append(timed(
                    lambda: importers.import_file(store, catalog, "accounts", changed_csv, known_at=SECOND)))
                r.setdefault("cpu_reimport_changed", []).append(LAST_CPU[0])
                changed_bytes = size_bytes(store, "account_field_history") - hist_bytes
                r.setdefault("as_of_before", []).append(timed(lambda: read_all(store, catalog, FIRST.date())))
                r.setdefault("current", []).append(timed(lambda: read_all(store, catalog, None)))
                notes[kind] = {"history_rows": rows_before, "history_bytes": hist_bytes,
                               "changed_rows": store.count("account_field_history") - rows_before,
                               "changed_bytes": changed_bytes,
                               "accounts_bytes": bare_size, "points": store.count("metric_points")}
            if not args.skip_without_history:
                with fresh(kind, folder, catalog) as store:
                    history.record_changes = lambda *a, **k: 0  # type: ignore[assignment]
                    # PostgreSQL's first load writes the "known since" rows in its INSERT's statement.
                    history.known_since_sql = lambda source, at, **_: (  # type: ignore[assignment]
                        f"SELECT 1 FROM {source} LIMIT 0", at)
                    try:
                        r.setdefault("nohist_accounts", []).append(timed(
                            lambda: importers.import_file(store, catalog, "accounts", accounts_csv)))
                    finally:
                        history.record_changes = real_record  # type: ignore[assignment]
                        history.known_since_sql = real_known  # type: ignore[assignment]
            print(f"rep {rep + 1} {kind} (load {loads[-1]}): " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in r.items()),
                  flush=True)
    ended = dt.datetime.now(dt.timezone.utc)
    text = report(args, results, notes, started, ended, load_start, load_average(), loads)
    for p in (accounts_csv, changed_csv, points_csv) if not args.files else ():
        p.unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass  # someone else's clean-up of the temp dir got there first
    return text


def report(args: argparse.Namespace, results: dict[str, dict[str, list[float]]], notes: dict[str, dict[str, Any]],
           started: dt.datetime, ended: dt.datetime, load_start: str, load_end: str, loads: list[str]) -> str:
    med = {k: {m: statistics.median(v) for m, v in r.items()} for k, r in results.items()}
    if args.points_only:
        out = [f"{started:%Y-%m-%d %H:%M}-{ended:%H:%M} UTC, --points-only, {args.accounts:,} accounts, "
               f"{args.points:,} points, medians of {args.repeat}; load {load_start} -> {load_end}",
               "| store | bare (s) | import (s) | wall ratio | CPU bare / import (s) | CPU ratio |",
               "|---|---:|---:|---:|---:|---:|"]
        for kind, m in med.items():
            out.append(f"| {kind} | {m['bare_points']:.2f} | {m['import_points']:.2f} | "
                       f"{m['import_points'] / m['bare_points']:.2f}x | {m['cpu_bare_points']:.2f} / "
                       f"{m['cpu_import_points']:.2f} | {m['cpu_import_points'] / m['cpu_bare_points']:.2f}x |")
        out += [f"- {kind} {step}: {', '.join(f'{x:.2f}' for x in v)}" for kind, r in results.items() for step, v in r.items()]
        return "\n".join(out + [f"- loads at each repetition's start: {'; '.join(loads)}"])
    lines = [
        f"<!-- {args.marker}: begin -->",
        "## Imports at bulk speed (benchmarks/load_bench.py)",
        "",
        f"Run {started:%Y-%m-%d %H:%M}-{ended:%H:%M} UTC with `benchmarks/load_bench.py --accounts {args.accounts} "
        f"--points {args.points} --repeat {args.repeat}` on {describe()}; load average {load_start} at start, "
        f"{load_end} at end (the machine is shared with other sessions). Empty stores; "
        f"{args.accounts:,} accounts of playbooks/' {len(account_fields(load([str(ROOT / 'playbooks')]).catalog)) + 2} "
        f"columns and {args.points:,} metric points, CSV; medians of {args.repeat}.",
        "",
        "| store | rows | bare load (s) | `import` (s) | import / bare | import without history (s) | "
        "CPU (s): bare / import, client + server |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for kind, m in med.items():
        bare_name = "COPY" if kind == "postgresql" else "executemany"
        for name, rows in (("accounts", f"{args.accounts:,} accounts"), ("points", f"{args.points:,} metric points")):
            nohist = "" if name == "points" else f"{m['nohist_accounts']:.2f}" if "nohist_accounts" in m else "not run"
            cpu = (f"{m[f'cpu_bare_{name}']:.2f} / {m[f'cpu_import_{name}']:.2f}"
                   if f"cpu_bare_{name}" in m else "")
            lines.append(f"| {kind} | {rows} | {m[f'bare_{name}']:.2f} ({bare_name}) | {m[f'import_{name}']:.2f} | "
                         f"**{m[f'import_{name}'] / m[f'bare_{name}']:.2f}x** | {nohist} | {cpu} |")
    lines += ["", "Field history (store (b), after the first import, then a re-import with 1% of the accounts "
              "changed in one field):", "",
              "| store | history rows after the first import (bytes) | re-import with 1% changed (s; CPU s) | "
              "history rows it added (bytes) | every account as of a day before (s) | "
              "every account now, from `accounts` (s) |", "|---|---:|---:|---:|---:|---:|"]
    for kind, note in notes.items():
        lines.append(f"| {kind} | {note['history_rows']:,} ({note['history_bytes']:,}) | "
                     f"{med[kind]['reimport_changed']:.2f}; {med[kind].get('cpu_reimport_changed', 0):.2f} | "
                     f"{note['changed_rows']:,} "
                     f"({note.get('changed_bytes', 0):,}) | {med[kind]['as_of_before']:.2f} | "
                     f"{med[kind]['current']:.2f} |")
    lines += ["", "All runs (s; each bare load next to its import, the bare one first in repetitions 1, 3, ..., "
              f"second in 2, 4, ...; load average at each repetition's start: {'; '.join(loads)}):", ""]
    for kind, r in results.items():
        for m, v in r.items():
            lines.append(f"- {kind} {m}: {', '.join(f'{x:.2f}' for x in v)}")
    lines += ["", f"Reproduce: `.venv/bin/python benchmarks/load_bench.py --accounts {args.accounts} "
              f"--points {args.points} --repeat {args.repeat} --write`.", f"<!-- {args.marker}: end -->"]
    return "\n".join(lines)


def write_section(text: str, marker: str) -> None:
    doc = ROOT / "docs" / "BENCHMARKS.md"
    current = doc.read_text(encoding="utf-8")
    begin, end = f"<!-- {marker}: begin -->", f"<!-- {marker}: end -->"
    if begin in current:
        head, rest = current.split(begin, 1)
        current = head + text + rest.split(end, 1)[1]
    else:
        current = current.rstrip("\n") + "\n\n" + text + "\n"
    doc.write_text(current, encoding="utf-8")


def main() -> None:
    global PG_URL
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=200_000)
    ap.add_argument("--points", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--stores", type=lambda s: s.split(","), default=["sqlite", "postgresql"])
    ap.add_argument("--dir", default=None, help="where the files and SQLite stores go (default: the temp dir)")
    ap.add_argument("--files", default=None, help="a folder to keep the generated files in and reuse them from "
                    "(they must be of the same --accounts and --points)")
    ap.add_argument("--skip-without-history", action="store_true", help="do not run (c)")
    ap.add_argument("--points-only", action="store_true", help="only the metric points (a bare and an import); "
                    "the accounts they refer to (id and name) are loaded bare, untimed, into both stores first")
    ap.add_argument("--pg-url", default=PG_URL, help="the PostgreSQL database the scratch schemas go into")
    ap.add_argument("--marker", default="load_bench", help="the docs section's marker (one per size)")
    ap.add_argument("--write", action="store_true", help="write the section into docs/BENCHMARKS.md")
    args = ap.parse_args()
    PG_URL = args.pg_url
    text = run(args)
    print(text)
    if args.write:
        write_section(text, args.marker)


if __name__ == "__main__":
    main()
