"""Notify and webhook steps through the Slack and webhooks connectors vs the built-in store
(results: docs/BENCHMARKS.md).

    .venv/bin/python benchmarks/webhooks_bench.py [--messages 500] [--concurrency 20] [--reps 3]

One run, one WireMock on loopback (tests/peers.py) answering Slack's
chat.postMessage and a webhook receiver, one SQLite store per repetition:

- webhooks: connectors/webhooks.py (outbox claim, Standard Webhooks signature,
  POST, mark `sent`);
- slack: connectors/slack.py (outbox claim, chat.postMessage through slack-sdk's
  AsyncWebClient, mark `sent`);
- store: the built-in store connector writing the same webhook actions as
  `pending` outbox rows (the default: nothing leaves).

N actions with distinct keys, `--concurrency` at a time (as a worker runs
that many activities), then the same N again: the second pass must send
nothing. Reported: messages per second (medians, kinds alternating),
requests WireMock received per pass, distinct webhook-ids.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(Path(__file__).parent)]

from connectors import base as cb  # noqa: E402
from connectors.slack import SlackConnector, SlackSettings  # noqa: E402
from connectors.store import StoreConnector  # noqa: E402
from connectors.webhooks import WebhookConnector, WebhookSettings  # noqa: E402
from engine.store import Store  # noqa: E402
from machine import describe, load_average  # noqa: E402
from peers import WireMock, wiremock  # noqa: E402

AT = dt.datetime(2026, 3, 9, 14, 0, tzinfo=dt.timezone.utc)
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
KINDS = ("webhooks", "slack", "store")


def action(kind: str, url: str, rep: str, i: int) -> cb.Action:
    base = {"key": f"play:bench:acc{i}:h:{rep}:s1", "account_id": f"acc{i}", "actor": "play:bench", "play": "bench",
            "step": "s1", "requested_at": AT}
    if kind == "slack":
        return cb.Notification(**base, channel="C0BENCH", message=f"Account acc{i} is at {i % 100}% of its seats")
    return cb.WebhookCall(**base, url=url + "/hook", event="usage.limit",
                          payload={"account_id": f"acc{i}", "play": "bench", "step": "s1", "idempotency_key": base["key"]})


async def run(connector: object, kind: str, url: str, rep: str, n: int, concurrency: int) -> tuple[float, float]:
    """(seconds for N first sends, seconds for N repeated keys)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> cb.Result:
        async with gate:
            return await connector.act(action(kind, url, rep, i))  # type: ignore[attr-defined]

    started = time.perf_counter()
    first = await asyncio.gather(*(one(i) for i in range(n)))
    middle = time.perf_counter()
    again = await asyncio.gather(*(one(i) for i in range(n)))
    ended = time.perf_counter()
    assert not any(r.duplicate for r in first) and all(r.duplicate for r in again)
    if isinstance(connector, WebhookConnector):
        await connector.aclose()
    return middle - started, ended - middle


def build(kind: str, store: Store, wm: WireMock) -> object:
    if kind == "webhooks":
        return WebhookConnector(WebhookSettings(secret=SECRET, timeout=30), store)
    if kind == "slack":
        return SlackConnector(SlackSettings(bot_token="xoxb-bench", base_url=wm.url + "/api/", timeout=30), store)
    return StoreConnector(store)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    n = args.messages
    rates: dict[str, list[float]] = {k: [] for k in KINDS}
    repeat: dict[str, list[float]] = {k: [] for k in KINDS}
    received: dict[str, list[int]] = {"webhooks": [], "slack": []}
    ids: set[str] = set()
    with wiremock() as wm, tempfile.TemporaryDirectory() as tmp:
        wm.stub({"request": {"method": "POST", "url": "/hook"}, "response": {"status": 204}})
        wm.stub({"request": {"method": "POST", "url": "/api/chat.postMessage"},
                 "response": {"status": 200, "headers": {"Content-Type": "application/json"},
                              "jsonBody": {"ok": True, "channel": "C0BENCH", "ts": "1700000000.000100"}}})
        for r in range(args.reps + 1):  # the first of each is a warm-up
            for kind in KINDS:
                wm.admin.delete("/requests").raise_for_status()
                store = Store.open(f"sqlite:///{tmp}/{kind}{r}.db")
                first, again = asyncio.run(run(build(kind, store, wm), kind, wm.url, f"r{r}{kind}", n,
                                               args.concurrency))
                store.close()
                if kind != "store":
                    got = wm.requests()
                    received[kind].append(len(got))
                    if kind == "webhooks":
                        ids.update(req["headers"]["webhook-id"] for req in got)
                if r:
                    rates[kind].append(n / first)
                    repeat[kind].append(n / again)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"machine: {describe()}; load {load_average()}")
    print(f"{n} messages, {args.concurrency} at a time, {args.reps} repetitions (+1 warm-up), medians")
    for kind, what in [("webhooks", "claim + sign + POST + mark"), ("slack", "claim + chat.postMessage + mark"),
                       ("store", "pending outbox row")]:
        print(f"  {kind:8s} ({what}): {med[kind]:7.0f} messages/s; repeated keys "
              f"{statistics.median(repeat[kind]):7.0f}/s")
    print(f"  ratio store/webhooks {med['store'] / med['webhooks']:.1f}x, store/slack {med['store'] / med['slack']:.1f}x")
    print(f"  requests per pass (first + repeat): webhooks {received['webhooks']}, slack {received['slack']} "
          f"(expected {n} each); distinct webhook-ids {len(ids)} (expected {n * (args.reps + 1)})")


if __name__ == "__main__":
    main()
