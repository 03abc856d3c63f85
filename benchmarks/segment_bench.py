"""The Segment-compatible tracking API under a burst (results: docs/BENCHMARKS.md).

    .venv/bin/python benchmarks/segment_bench.py [--events 10000] [--reps 3]

serve's app (workflows/segment.py) on uvicorn in a thread of this process,
over a fresh SQLite store and the shipped playbooks/ declarations:

- client: N `track` calls through segment-analytics-python (Segment's own
  library: its consumer thread batches 100 to /v1/batch);
- httpx: N events in batches of 500 posted one after the other, then the
  same batches again (every event a duplicate, nothing written).

Reported: events per second (medians over the repetitions) and rows stored.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "workflows")]

import httpx  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from pydantic import SecretStr  # noqa: E402
from segment.analytics.client import Client  # noqa: E402
from serve_support import seeded_store, serving, settings  # noqa: E402

from dsl.project import load  # noqa: E402
from engine import schema  # noqa: E402
from workflows.inbound import Inbound  # noqa: E402
from workflows.segment import routes  # noqa: E402

KEY = "wk_bench"


def one(events: int) -> dict[str, float]:
    catalog = load([ROOT / "playbooks"]).catalog
    with tempfile.TemporaryDirectory() as tmp:
        store = seeded_store(Path(tmp) / "bench.db")
        try:
            with serving(Inbound(store, None), settings(), extra_routes=routes(store, catalog, [SecretStr(KEY)])) as url:
                c = Client(KEY, host=url, upload_size=100, max_queue_size=events + 1)
                start = time.perf_counter()
                for i in range(events):
                    c.track("c1", "feature_request", {"n": i}, message_id=f"client-{i}")
                c.flush()
                c.shutdown()
                client_s = time.perf_counter() - start
                auth = {"authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()}
                batches = [{"batch": [{"type": "track", "messageId": f"http-{i}", "event": "feature_request",
                                       "userId": "c2", "properties": {"n": i}} for i in range(b, min(b + 500, events))]}
                           for b in range(0, events, 500)]
                with httpx.Client(timeout=60) as http:
                    start = time.perf_counter()
                    for body in batches:
                        http.post(f"{url}/v1/batch", json=body, headers=auth).raise_for_status()
                    http_s = time.perf_counter() - start
                    start = time.perf_counter()
                    dups = sum(http.post(f"{url}/v1/batch", json=body, headers=auth).json()["duplicates"]
                               for body in batches)
                    again_s = time.perf_counter() - start
            with store.connect() as conn:
                rows = conn.execute(sa.select(sa.func.count()).select_from(schema.Event.__table__)).scalar_one()
        finally:
            store.close()
    return {"client": events / client_s, "httpx": events / http_s, "again": events / again_s,
            "rows": rows, "dups": dups}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    runs = [one(args.events) for _ in range(args.reps)]
    for r in runs:
        print(f"run: client {r['client']:.0f}/s, httpx x500 {r['httpx']:.0f}/s, sent again {r['again']:.0f}/s; "
              f"rows {r['rows']:.0f} (expected {2 * args.events}), duplicates {r['dups']:.0f}")
    med = {k: statistics.median(r[k] for r in runs) for k in ("client", "httpx", "again")}
    print(f"median of {args.reps}: segment-analytics-python {med['client']:.0f} events/s, httpx batches of 500 "
          f"{med['httpx']:.0f} events/s, the same batches again {med['again']:.0f} events/s")


if __name__ == "__main__":
    main()
