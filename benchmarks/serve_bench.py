"""`playbook serve` under a burst of signed events (results: docs/BENCHMARKS.md).

    .venv/bin/python benchmarks/serve_bench.py [--events 1000] [--concurrency 100] [--reps 3]

The real command (`python -m cli.main serve --port 0`) in its own process over
a fresh SQLite store, Temporal down (a closed loopback port: every event is
stored and left pending, the path that must lose nothing); this process is the
provider, sending with httpx `--concurrency` requests at a time:

- stored: N Standard Webhooks events with distinct ids (verify, map the
  account, record, answer 202), then the same N again (answered 200, nothing
  written);
- refused: N requests with a wrong signature (401): HTTP and verification
  alone, the baseline the store's share is read against.

Reported: requests per second (medians over the repetitions), rows stored,
and how many answers were not the expected status.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]

import httpx  # noqa: E402
from standardwebhooks.webhooks import Webhook  # noqa: E402

from engine import schema  # noqa: E402
from engine.store import Store  # noqa: E402
from machine import describe, load_average  # noqa: E402

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
WRONG = "whsec_" + "A" * 32


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def signed(i: int, secret: str, run: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"type": "replied", "data": {"account_id": f"a{i % 50}"}}).encode()
    now = dt.datetime.now(dt.timezone.utc)
    msg_id = f"msg_{run}_{i}"
    return body, {"webhook-id": msg_id, "webhook-timestamp": str(int(now.timestamp())),
                  "webhook-signature": Webhook(secret).sign(msg_id, now, body)}


async def send(url: str, deliveries: list[tuple[bytes, dict[str, str]]], concurrency: int) -> tuple[float, list[int]]:
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def one(body: bytes, headers: dict[str, str]) -> int:
            async with gate:
                return (await client.post("/events", content=body, headers=headers)).status_code

        started = time.perf_counter()
        statuses = await asyncio.gather(*(one(b, h) for b, h in deliveries))
    return time.perf_counter() - started, list(statuses)


def run_once(n: int, concurrency: int, folder: Path, rep: int) -> dict[str, float]:
    url = f"sqlite:///{folder / f'serve-{rep}.db'}"
    with Store.open(url) as store, store.begin() as conn:
        conn.execute(schema.Account.__table__.insert(), [{"id": f"a{i}"} for i in range(50)])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PLAYBOOK_DATABASE_URL": url, "PLAYBOOK_SETTINGS_FILE": "",
           "PLAYBOOK_SERVE_WEBHOOK_SECRET": SECRET, "PLAYBOOK_TEMPORAL_ADDRESS": f"127.0.0.1:{closed_port()}",
           "PLAYBOOK_SERVE_RETRY_SECONDS": "3600"}
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--port", "0"], env=env, cwd=folder,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        base = line.split("listening on ", 1)[1].split()[0]
        fresh = [signed(i, SECRET, f"r{rep}") for i in range(n)]
        bad = [signed(i, WRONG, f"x{rep}") for i in range(n)]
        t_new, s_new = asyncio.run(send(base, fresh, concurrency))
        t_again, s_again = asyncio.run(send(base, fresh, concurrency))
        t_bad, s_bad = asyncio.run(send(base, bad, concurrency))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    with Store.open(url) as store:
        stored = store.count("inbound_events")
    unexpected = (sum(s != 202 for s in s_new) + sum(s != 200 for s in s_again) + sum(s != 401 for s in s_bad))
    return {"stored_per_s": n / t_new, "again_per_s": n / t_again, "refused_per_s": n / t_bad,
            "stored": stored, "unexpected": unexpected}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    print(f"machine: {describe()}; load average {load_average()}")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(a.reps):
            r = run_once(a.events, a.concurrency, Path(tmp), rep)
            runs.append(r)
            print(f"rep {rep}: " + ", ".join(f"{k} {v:,.0f}" for k, v in r.items()), flush=True)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"medians of {a.reps}: new events stored {med['stored_per_s']:,.0f}/s, redeliveries "
          f"{med['again_per_s']:,.0f}/s, refused at the signature {med['refused_per_s']:,.0f}/s; "
          f"refused / stored {med['refused_per_s'] / med['stored_per_s']:.1f}x; "
          f"stored rows {[int(r['stored']) for r in runs]}, unexpected answers {[int(r['unexpected']) for r in runs]}; "
          f"load average {load_average()}")


if __name__ == "__main__":
    main()
