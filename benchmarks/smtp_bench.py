"""Email steps through the SMTP connector vs the built-in store (results: docs/BENCHMARKS.md).

    .venv/bin/python benchmarks/smtp_bench.py [--messages 1000] [--concurrency 20] [--reps 3]

One run, one SMTP server on loopback (aiosmtpd in this process, on its own
thread: it counts what arrives), one SQLite store per repetition:

- smtp: connectors/smtp.py over plain SMTP on 127.0.0.1 (one connection a
  message, as in production), the outbox as its ledger (claim, send, mark);
- store: the built-in store connector writing the same actions as `pending`
  outbox rows (what the default setup does; nothing leaves).

N actions with distinct keys are sent `--concurrency` at a time (as a
worker runs that many activities), then all N again: the second pass must
send nothing (every key is already `sent`). Reported: messages per second
(medians over the repetitions, alternating smtp/store), messages that
arrived, distinct Message-IDs, and what the second pass sent.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]

from aiosmtpd.controller import Controller  # noqa: E402

from connectors import base as cb  # noqa: E402
from connectors import mail  # noqa: E402
from connectors.smtp import SmtpConnector, SmtpSettings  # noqa: E402
from connectors.store import StoreConnector  # noqa: E402
from engine.store import Store  # noqa: E402
from machine import describe, load_average  # noqa: E402

AT = dt.datetime(2026, 3, 9, 14, 0, tzinfo=dt.timezone.utc)


class Counter:
    def __init__(self) -> None:
        self.count = 0
        self.ids: set[str] = set()
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, ANN201 - aiosmtpd's hook
        mid = next((line.split(b":", 1)[1].strip().decode() for line in envelope.content.splitlines()
                    if line.lower().startswith(b"message-id:")), "")
        with self.lock:
            self.count += 1
            self.ids.add(mid)
        return "250 OK"


def action(rep: str, i: int) -> cb.EmailMessage:
    return cb.EmailMessage(key=f"play:bench:acc{i}:h:{rep}:day1", account_id=f"acc{i}", actor="play:bench",
                           play="bench", step="day1", requested_at=AT, to=f"user{i}@customer.test",
                           subject=f"Your usage at {i % 100}%", body="Hi,\n\nYou use a lot of it.\n" * 5,
                           template="usage_alert", unsubscribe_url=f"https://acme.test/u/{i}")


async def run(connector: object, rep: str, n: int, concurrency: int) -> tuple[float, float]:
    """(seconds for N first sends, seconds for N repeated keys)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> cb.Result:
        async with gate:
            return await connector.act(action(rep, i))  # type: ignore[attr-defined]

    started = time.perf_counter()
    first = await asyncio.gather(*(one(i) for i in range(n)))
    middle = time.perf_counter()
    again = await asyncio.gather(*(one(i) for i in range(n)))
    ended = time.perf_counter()
    assert not any(r.duplicate for r in first) and all(r.duplicate for r in again)
    return middle - started, ended - middle


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    n = args.messages
    counter = Counter()
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    controller = Controller(counter, hostname="127.0.0.1", port=port)
    controller.start()
    rates: dict[str, list[float]] = {"smtp": [], "store": []}
    repeat: dict[str, list[float]] = {"smtp": [], "store": []}
    arrived, sent_again = [], []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.reps + 1):  # the first of each is a warm-up
                for kind in ("smtp", "store"):
                    store = Store.open(f"sqlite:///{tmp}/{kind}{r}.db")
                    if kind == "smtp":
                        connector: object = SmtpConnector(
                            store, SmtpSettings(host="127.0.0.1", port=port, security="none", timeout=30),
                            mail.MailSettings(from_address="cs@acme.test"))
                    else:
                        connector = StoreConnector(store)
                    before = counter.count
                    first, again = asyncio.run(run(connector, f"r{r}{kind}", n, args.concurrency))
                    store.close()
                    if kind == "smtp":
                        arrived.append(counter.count - before)
                        sent_again.append(counter.count - before - n)
                    if r:
                        rates[kind].append(n / first)
                        repeat[kind].append(n / again)
    finally:
        controller.stop()
    smtp, store_rate = statistics.median(rates["smtp"]), statistics.median(rates["store"])
    print(f"machine: {describe()}; load {load_average()}")
    print(f"{n} emails, {args.concurrency} at a time, {args.reps} repetitions (+1 warm-up), medians")
    print(f"  smtp  (send + outbox ledger): {smtp:8.0f} messages/s; repeated keys {statistics.median(repeat['smtp']):8.0f}/s")
    print(f"  store (pending outbox row):   {store_rate:8.0f} messages/s; repeated keys "
          f"{statistics.median(repeat['store']):8.0f}/s")
    print(f"  ratio store/smtp: {store_rate / smtp:.1f}x")
    print(f"  arrived per smtp pass: {arrived} (expected {n} each); sent again by the repeat pass: {sent_again}; "
          f"distinct Message-IDs: {len(counter.ids)} of {counter.count}")


if __name__ == "__main__":
    main()
