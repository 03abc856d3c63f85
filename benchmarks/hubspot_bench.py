"""HubSpot tasks through the connector against Prism (HubSpot's own spec): tasks per second, none lost, none twice.

    .venv/bin/python benchmarks/hubspot_bench.py [--tasks 1000] [--concurrency 16] [--limited-every 10]

Runs side by side, the same number of tasks, each task one connector
`act` (a search for our key, then the create):

  (0) baseline: the same two requests per task with bare httpx (no connector),
      against the same Prism mock: what the peer costs on its own;
  (a) Prism mocking HubSpot (`prism mock`, answers from the spec's examples);
  (b) Prism in front of WireMock (`prism proxy`: every request and answer
      checked against the spec), WireMock answering 429 with Retry-After: 1
      to the first create of one task in `--limited-every`; the harness
      retries a TransientError after its `retry_after`, as Temporal does with
      `next_retry_delay`.

For (b) WireMock's request log is the provider's view: every task must have
exactly one create answered 201 (no loss, no duplicate). The connector's
share of the time is small: Prism (one Node process) is the bottleneck on
a 2-core machine, so the numbers say what the connector and the peers
sustain together, not what HubSpot does (its own limit is 100-190 requests
per 10 s per private app).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import peers  # noqa: E402
from machine import describe, load_average  # noqa: E402
from connectors import base as cb  # noqa: E402
from connectors.hubspot import HubSpotConnector, load_hubspot_settings  # noqa: E402
from hubspot_shapes import created, error, found  # noqa: E402

AT = dt.datetime(2026, 3, 9, 9, 0, tzinfo=dt.timezone.utc)


def task(i: int) -> cb.NewTask:
    return cb.NewTask(key=f"play:bench:acct-{i}:h:1:call", account_id=f"9{i:05d}", actor="play:bench", play="bench",
                      step="call", requested_at=AT, assignee="77", title=f"Call account {i}")


async def run(url: str, n: int, concurrency: int) -> tuple[float, int, list[float]]:
    """(seconds, retries, per-task latencies) for n tasks through the connector at `url`."""
    connector = HubSpotConnector(load_hubspot_settings(base_url=url, token="bench-token", company_field="id",
                                                       verify_pipeline=False, timeout=30.0))
    gate = asyncio.Semaphore(concurrency)
    retries = 0
    latencies: list[float] = []

    async def one(i: int) -> None:
        nonlocal retries
        async with gate:
            start = time.perf_counter()
            while True:
                try:
                    await connector.act(task(i))
                    break
                except cb.TransientError as exc:
                    retries += 1
                    await asyncio.sleep(exc.retry_after if exc.retry_after is not None else 1.0)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    try:
        await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        await connector.aclose()
    return time.perf_counter() - start, retries, latencies


async def bare(url: str, n: int, concurrency: int) -> float:
    """Seconds for n (search, create) pairs sent with httpx alone."""
    import httpx

    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": "Bearer bench-token"}) as client:
        async def one(i: int) -> None:
            async with gate:
                key = task(i).key
                found = await client.post("/crm/v3/objects/tasks/search", json={
                    "filterGroups": [{"filters": [{"propertyName": "playbook_idempotency_key", "operator": "EQ",
                                                   "value": key}]}],
                    "properties": ["playbook_idempotency_key"], "sorts": [], "limit": 1, "after": "0"})
                made = await client.post("/crm/v3/objects/tasks", json={
                    "properties": {"hs_task_subject": f"Call account {i}", "playbook_idempotency_key": key},
                    "associations": []})
                assert found.status_code == 200 and made.status_code == 201, (found.text, made.text)

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - start


def limited_stubs(wm: peers.WireMock, n: int, every: int) -> None:
    wm.stub({"request": {"method": "POST", "urlPath": "/crm/v3/objects/tasks/search"}, "response": found()})
    wm.stub({"priority": 10, "request": {"method": "POST", "urlPath": "/crm/v3/objects/tasks"},
             "response": created("4101")})
    limit = error(429, "You have reached your ten_secondly_rolling limit.", "RATE_LIMITS",
                  headers={"Retry-After": "1"}, policyName="TEN_SECONDLY_ROLLING")
    for i in range(0, n, every):
        body = [{"matchesJsonPath": f"$[?(@.properties.playbook_idempotency_key == '{task(i).key}')]"}]
        wm.stub({"priority": 1, "scenarioName": f"t{i}", "requiredScenarioState": "Started",
                 "newScenarioState": "open", "request": {"method": "POST", "urlPath": "/crm/v3/objects/tasks",
                                                         "bodyPatterns": body}, "response": limit})


def creates_by_key(wm: peers.WireMock) -> tuple[Counter[str], int]:
    """Creates answered 201 per key, and how many creates were answered 429."""
    got = wm.admin.get("/requests").json()["requests"]
    ok: Counter[str] = Counter()
    limited = 0
    for r in got:
        req = r["request"]
        if req["method"] != "POST" or req["url"] != "/crm/v3/objects/tasks":
            continue
        status = r["responseDefinition"]["status"]
        if status == 201:
            ok[json.loads(req["body"])["properties"]["playbook_idempotency_key"]] += 1
        elif status == 429:
            limited += 1
    return ok, limited


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--limited-every", type=int, default=10)
    args = parser.parse_args()
    n = args.tasks
    print(f"machine: {describe()}; load {load_average()}; {dt.date.today()}")
    with peers.prism_mock(peers.HUBSPOT / "objects.json") as url:
        base = asyncio.run(bare(url, n, args.concurrency))
        secs, retries, lat = asyncio.run(run(url, n, args.concurrency))
    print(f"(0) bare httpx, prism mock: {n} pairs in {base:.1f} s = {n / base:.0f} pairs/s")
    print(f"(a) prism mock:            {n} tasks in {secs:.1f} s = {n / secs:.0f} tasks/s "
          f"({2 * n / secs:.0f} requests/s), median {statistics.median(lat) * 1000:.0f} ms, retries {retries}")
    with peers.wiremock() as wm, peers.prism_proxy(peers.HUBSPOT / "objects.json", wm.url) as url:
        limited_stubs(wm, n, args.limited_every)
        secs_b, retries_b, lat_b = asyncio.run(run(url, n, args.concurrency))
        ok, limited = creates_by_key(wm)
    keys = {task(i).key for i in range(n)}
    lost = len(keys - set(ok))
    twice = sum(1 for c in ok.values() if c > 1)
    print(f"(b) prism proxy+wiremock:  {n} tasks in {secs_b:.1f} s = {n / secs_b:.0f} tasks/s, "
          f"median {statistics.median(lat_b) * 1000:.0f} ms, 429s {limited}, retries {retries_b}, "
          f"lost {lost}, twice {twice}")
    print(f"time ratios: (a)/(0) {secs / base:.2f}, (b)/(a) {secs_b / secs:.2f}")
    if lost or twice:
        raise SystemExit("a task was lost or made twice")


if __name__ == "__main__":
    main()
