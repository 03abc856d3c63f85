"""The seed plays, compiled and run for real; their histories replayed from files.

Each play in playbooks/ runs on the time-skipping server with a scripted
reply, and must complete or exit without a failed step. Its history is the
golden file tests/workflows/histories/<play>.<latest patch>.json; the files
recorded before each patch stay beside it (<play>.json: before any). The
replay test feeds every one of them to the Replayer with today's
PlayWorkflow, so a change to the interpreter that would break running
plays, old or new, fails CI. After a deliberate, patched() change, set
LATEST_PATCH to its id and record the new files with:

    PLAYBOOK_RECORD_HISTORIES=1 pytest tests/workflows/test_replay.py
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
from functools import lru_cache
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from dsl import nodes as n
from dsl.catalog import Catalog
from dsl.compiler import compile_plans
from dsl.evaluator import Account
from dsl.plan import Plan
from dsl.project import load
from workflows.activities import Sender, StaticAccounts
from workflows.client import DATA_CONVERTER, start_play
from workflows.model import EventKind, Outcome, Pause, PlayEvent, PlayInput, Resume
from workflows.play import PlayWorkflow, workflow_id
from workflows.play import CONNECTOR_QUEUES_PATCH
from workflows.search_attributes import NEXT_STEP_AT_PATCH, PAUSE_PATCH
from workflow_support import harness

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
HISTORIES = Path(__file__).with_name("histories")
RECORD = os.environ.get("PLAYBOOK_RECORD_HISTORIES") == "1"
LATEST_PATCH = CONNECTOR_QUEUES_PATCH  # the newest workflow.patched() id: names the histories recorded now
# Every seed play is paused from PAUSED_DAYS[0] to PAUSED_DAYS[1] (then gets its reply, if any).
PAUSED_DAYS = (0.5, 1.5)
REPLY_ON_DAY = {"usage_limit": 2, "team_growth": 8, "cross_sell": None, "feature_upsell": 4, "renewal_expansion": None}


@lru_cache(maxsize=1)
def project() -> tuple[Catalog, dict[str, Plan]]:
    proj = load([ROOT / "playbooks"])
    assert not proj.errors, [d.message for d in proj.errors]
    return proj.catalog, {p.play: p for p in compile_plans(proj)}


def sample_account(catalog: Catalog) -> Account:
    """A value of the right type for every declared field."""
    values: dict[n.TypeName, object] = {
        n.TypeName.TEXT: None, n.TypeName.MONEY: 24000.0, n.TypeName.PERCENT: 0.85, n.TypeName.INT: 12,
        n.TypeName.BOOL: True, n.TypeName.DATE: dt.date(2026, 9, 30), n.TypeName.USER: "carol",
        n.TypeName.CONTACT: "ada@acme.test", n.TypeName.DURATION: 30.0, n.TypeName.DATETIME: None,
    }
    fields: dict[str, object] = {}
    for f in catalog.account.fields:  # type: ignore[union-attr]
        t = f.type
        if t.name is n.TypeName.ENUM:
            fields[f.name] = t.values[-1]
        elif t.name is n.TypeName.NUMBER:
            fields[f.name] = t.high if t.high is not None else 70.0
        elif t.name is n.TypeName.TEXT:
            fields[f.name] = f"<{f.name}>"
        else:
            fields[f.name] = values.get(t.name)
    fields["first_name"] = "Ada"
    return Account(fields=fields)


PLAYS = sorted(REPLY_ON_DAY)


@pytest.mark.parametrize("play", PLAYS)
async def test_seed_play_runs_and_matches_its_golden_history(play):
    catalog, plans = project()
    plan = plans[play]
    accounts = StaticAccounts({"acme": sample_account(catalog)}, users={"carol": Sender(name="Carol", email="carol@us.test")})
    async with harness(accounts=accounts, catalog=catalog, connector_queue="memory") as h:
        now = await h.env.get_current_time()
        enrolled = now
        anchor = (enrolled + dt.timedelta(days=100)).date() if plan.anchor is not None else None
        inp = PlayInput(plan=plan, account_id="acme", enrolled_at=enrolled, anchor=anchor, timezone="America/New_York",
                        queues=h.queues)
        handle = await start_play(h.client, inp, task_queue=h.task_queue)
        await h.env.sleep(dt.timedelta(days=PAUSED_DAYS[0]))
        await handle.signal(PlayWorkflow.pause, Pause(at=enrolled, by="ana", reason="check", scope=play))
        await h.env.sleep(dt.timedelta(days=PAUSED_DAYS[1] - PAUSED_DAYS[0]))
        await handle.signal(PlayWorkflow.resume, Resume(at=enrolled, by="ana"))
        if (day := REPLY_ON_DAY[play]) is not None:
            await h.env.sleep(dt.timedelta(days=day - PAUSED_DAYS[1]))
            await handle.signal(PlayWorkflow.event, PlayEvent(kind=EventKind.REPLIED, id="r1"))
        result = await asyncio.wait_for(handle.result(), 60)
        history = await handle.fetch_history()
    assert result.outcome == "completed", result.reason
    assert not [d for d in result.decisions if d.outcome is Outcome.FAILED]
    assert h.connector.effects, "a seed play that does nothing"
    for mail in h.connector.effects:
        body = getattr(mail, "body", "")
        assert "None" not in body and "{{" not in body
    golden = HISTORIES / f"{play}.{LATEST_PATCH}.json"
    if RECORD or not golden.exists():
        HISTORIES.mkdir(exist_ok=True)
        golden.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*.json")), ids=lambda p: p.name.removesuffix(".json"))
async def test_golden_history_replays_deterministically(path):
    play = path.name.split(".")[0]
    history = WorkflowHistory.from_json(workflow_id(play, "acme"), path.read_text())
    replayer = Replayer(workflows=[PlayWorkflow], data_converter=DATA_CONVERTER)
    await replayer.replay_workflow(history)  # raises on any nondeterminism


def test_the_latest_histories_upsert_when_the_play_acts_next():
    """The golden files recorded after NEXT_STEP_AT_PATCH carry its marker and a
    PlaybookNextStepAt upsert; the older ones neither (they replay unchanged above)."""
    patch = base64.b64encode(json.dumps({"id": NEXT_STEP_AT_PATCH, "deprecated": False},
                                        separators=(",", ":")).encode()).decode()  # the marker's payload
    for play in PLAYS:
        latest = (HISTORIES / f"{play}.{LATEST_PATCH}.json").read_text()
        assert patch in latest and "PlaybookNextStepAt" in latest, play
        assert "PlaybookNextStepAt" not in (HISTORIES / f"{play}.json").read_text()


def test_the_latest_histories_pause_and_resume_visibly():
    """The golden files recorded after PAUSE_PATCH hold a pause and a resume, with the
    patch marker and PlaybookPaused upserts; the files before it have neither."""
    patch = base64.b64encode(json.dumps({"id": PAUSE_PATCH, "deprecated": False},
                                        separators=(",", ":")).encode()).decode()
    for play in PLAYS:
        for after in (PAUSE_PATCH, LATEST_PATCH):
            latest = (HISTORIES / f"{play}.{after}.json").read_text()
            assert patch in latest and "PlaybookPaused" in latest, play
            assert '"signalName": "pause"' in latest and '"signalName": "resume"' in latest, play
        assert "PlaybookPaused" not in (HISTORIES / f"{play}.{NEXT_STEP_AT_PATCH}.json").read_text()


def test_the_latest_histories_schedule_act_on_the_connector_queue_with_a_heartbeat_timeout():
    """After CONNECTOR_QUEUES_PATCH every `act` goes to the connector's queue and heartbeats;
    before it, `act` ran on the play's own queue with no heartbeat timeout."""
    for play in PLAYS:
        acts = _scheduled_acts(HISTORIES / f"{play}.{LATEST_PATCH}.json")
        assert acts, play
        assert {a["taskQueue"]["name"].rsplit(".", 1)[-1] for a in acts} == {"memory"}, play
        assert {a["heartbeatTimeout"] for a in acts} == {"10s"}, play
        before = _scheduled_acts(HISTORIES / f"{play}.{PAUSE_PATCH}.json")
        assert before and not any(a.get("heartbeatTimeout", "0s") != "0s" or a["taskQueue"]["name"].endswith(".memory")
                                  for a in before), play


def _scheduled_acts(path: Path) -> list[dict]:
    events = json.loads(path.read_text())["events"]
    return [attrs for e in events if (attrs := e.get("activityTaskScheduledEventAttributes"))
            and attrs["activityType"]["name"] == "act"]
