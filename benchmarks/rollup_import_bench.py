"""What keeping the metric rollup costs at import: metric points imported with and without
`engine.rollups.note_points`, into fresh stores, alternating, medians.

    python benchmarks/rollup_import_bench.py ACCOUNTS POINTS REPEAT sqlite[,postgresql]

Files are load_bench's (benchmarks/load_bench.py), written to a temporary folder.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import load_bench as lb  # noqa: E402

from dsl.project import load  # noqa: E402
from engine import importers, rollups  # noqa: E402


def main() -> None:
    accounts, points, repeat = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    catalog = load([ROOT / "playbooks"]).catalog
    folder = Path(tempfile.mkdtemp())
    acc, pts = folder / "accounts.csv", folder / "points.csv"
    lb.write_accounts(acc, catalog, accounts, 7)
    lb.write_points(pts, catalog, accounts, points, 7)
    real = rollups.note_points
    for kind in sys.argv[4].split(","):
        times: dict[bool, list[float]] = {True: [], False: []}
        loads, series = [], 0
        for i in range(repeat):
            for keep in ((True, False) if i % 2 == 0 else (False, True)):
                rollups.note_points = real if keep else (lambda conn, source: None)
                with lb.fresh(kind, folder, catalog) as store:
                    importers.import_files(store, catalog, [("accounts", acc)])
                    loads.append(os.getloadavg()[0])
                    t = time.perf_counter()
                    importers.import_files(store, catalog, [("metrics", pts)])
                    times[keep].append(time.perf_counter() - t)
                    if keep:
                        with store.connect() as conn:
                            series = conn.exec_driver_sql("SELECT count(*) FROM metric_series").scalar_one()
        with_, without = statistics.median(times[True]), statistics.median(times[False])
        print(f"{kind}: {accounts:,} accounts, {points:,} points: with the rollup {with_:.1f} s, without "
              f"{without:.1f} s (+{(with_ / without - 1) * 100:.0f}%); runs {times}; rollup rows {series:,}; "
              f"load average {min(loads):.1f}-{max(loads):.1f}", flush=True)


if __name__ == "__main__":
    main()
