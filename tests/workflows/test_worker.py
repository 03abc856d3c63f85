"""Worker settings, search attributes on the time-skipping server, graceful shutdown."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from temporalio.worker import Replayer

from connectors.base import Action, EmailMessage
from connectors.memory import MemoryConnector
from dsl import nodes as n
from workflows import search_attributes as sa
from workflows.client import DATA_CONVERTER, start_play
from workflows.model import EventKind, PlayEvent, PlayInput, Schedule, ScheduledStep
from workflows.play import PlayWorkflow
from workflows.settings import SettingsError, TemporalSettings
from workflows.worker import build_worker, run_until
from wf_plans import email, plan, step, utc
from workflow_support import harness

pytestmark = pytest.mark.anyio


# ---------------------------------------------------------------- settings


def test_settings_from_env_with_overrides(tmp_path):
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_bytes(b"CERT")
    key.write_bytes(b"KEY")
    env = {"PLAYBOOK_TEMPORAL_ADDRESS": "temporal.internal:7233", "PLAYBOOK_TEMPORAL_NAMESPACE": "revops",
           "PLAYBOOK_TEMPORAL_TLS_CERT": str(cert), "PLAYBOOK_TEMPORAL_TLS_KEY": str(key),
           "PLAYBOOK_WORKER_SHUTDOWN_SECONDS": "45"}
    s = TemporalSettings.from_env(env, namespace="override", task_queue=None)
    assert (s.address, s.namespace, s.task_queue, s.shutdown_seconds) == ("temporal.internal:7233", "override", "playbook", 45)
    assert s.uses_tls
    tls = s.tls_config()
    assert tls.client_cert == b"CERT" and tls.client_private_key == b"KEY" and tls.server_root_ca_cert is None
    assert "mTLS" in s.describe()


def test_settings_defaults_are_plain_localhost():
    s = TemporalSettings.from_env({})
    assert (s.address, s.namespace, s.uses_tls, s.tls_config()) == ("localhost:7233", "default", False, False)
    assert TemporalSettings.from_env({"PLAYBOOK_TEMPORAL_TLS": "1"}).uses_tls


@pytest.mark.parametrize("env, message", [
    ({"PLAYBOOK_TEMPORAL_TLS_CERT": "/x.pem"}, "certificate and key go together"),
    ({"PLAYBOOK_WORKER_SHUTDOWN_SECONDS": "soon"}, "PLAYBOOK_WORKER_SHUTDOWN_SECONDS"),
])
def test_bad_settings_say_which_variable(env, message):
    with pytest.raises(SettingsError, match=message):
        TemporalSettings.from_env(env)


def test_unreadable_tls_file_names_the_variable(tmp_path):
    s = TemporalSettings.from_env({"PLAYBOOK_TEMPORAL_TLS_CA": str(tmp_path / "missing.pem")})
    with pytest.raises(SettingsError, match="PLAYBOOK_TEMPORAL_TLS_CA: cannot read"):
        s.tls_config()


def test_dev_server_flags_register_every_attribute_with_its_type():
    flags = sa.cli_flags()
    assert flags[::2] == ["--search-attribute"] * 7
    assert flags[1::2] == ["PlaybookPlay=Keyword", "PlaybookAccount=Keyword", "PlaybookPlanHash=Keyword",
                           "PlaybookStep=Keyword", "PlaybookStage=Keyword", "PlaybookNextStepAt=Datetime",
                           "PlaybookPaused=Bool"]


# ---------------------------------------------------------------- test-only time scale


def test_compressed_schedule_keeps_order_and_scales_days_and_waits():
    origin = utc(2026, 3, 2, 9)
    sched = Schedule(timezone="UTC", steps=[
        ScheduledStep(label="a", due_at=origin, local=""),
        ScheduledStep(label="b", due_at=origin + dt.timedelta(days=2), local="", wait_seconds={"b": 86400.0}),
        ScheduledStep(label="old", due_at=origin - dt.timedelta(days=1), local="", missed=True),
    ])
    fast = sched.compressed(origin, day_seconds=2.0)
    assert [s.due_at - origin for s in fast.steps] == [dt.timedelta(0), dt.timedelta(seconds=4), dt.timedelta(seconds=-2)]
    assert fast.steps[1].wait_seconds == {"b": 2.0} and fast.steps[2].missed


# ---------------------------------------------------------------- search attributes


def our_upserts(history: Any) -> list[Any]:
    """Upserts of PlaybookX attributes (workflow.patched also upserts Temporal's own TemporalChangeVersion)."""
    return [e for e in history.events if e.HasField("upsert_workflow_search_attributes_event_attributes")
            and set(e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields)
            - {"TemporalChangeVersion"}]


async def test_search_attributes_follow_the_play_and_its_history_replays():
    p = plan([step("hello", 0, email("hello")), step("proposal", 1, n.StageStep(stage="Proposal Sent")),
              step("followup", 3, email("followup"))])
    async with harness() as h:
        now = await h.env.get_current_time()
        handle = await start_play(h.client, PlayInput(plan=p, account_id="acme", enrolled_at=now), task_queue=h.task_queue)
        await h.env.sleep(dt.timedelta(days=2))  # after "proposal", sleeping until "followup"
        mid = (await handle.describe()).typed_search_attributes
        await handle.signal(PlayWorkflow.event, PlayEvent(kind=EventKind.STAGE_CHANGED, stage="Negotiation", id="s1"))
        result = await asyncio.wait_for(handle.result(), 30)
        end = (await handle.describe()).typed_search_attributes
        history = await handle.fetch_history()
    assert result.outcome == "completed"
    assert (mid.get(sa.PLAY), mid.get(sa.ACCOUNT), mid.get(sa.PLAN_HASH)) == ("usage_limit", "acme", p.hash)
    assert (mid.get(sa.STEP), mid.get(sa.STAGE)) == ("followup", "Proposal Sent")
    assert (end.get(sa.STEP), end.get(sa.STAGE)) == ("followup", "Negotiation")
    # Only where the play blocks: step proposal (sleeping until day 1); its stage;
    # step followup; the signalled stage. hello ran at once: never published.
    assert len(our_upserts(history)) == 4
    # The new code path is deterministic too (old histories: test_replay.py).
    await Replayer(workflows=[PlayWorkflow], data_converter=DATA_CONVERTER).replay_workflow(history)


async def test_a_play_started_without_search_attributes_upserts_none():
    p = plan([step("hello", 0, email("hello")), step("later", 1, email("followup"))])
    async with harness() as h:
        now = await h.env.get_current_time()
        handle = await start_play(h.client, PlayInput(plan=p, account_id="acme", enrolled_at=now),
                                  task_queue=h.task_queue, search_attributes=False)
        result = await asyncio.wait_for(handle.result(), 30)
        history = await handle.fetch_history()
    assert result.outcome == "completed"
    assert not our_upserts(history)


# ---------------------------------------------------------------- graceful shutdown


class SlowSend(MemoryConnector):
    """Sends take `seconds`; `started` is set when one is under way."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.started = asyncio.Event()
        self.finished = 0

    async def act(self, action: Action):
        if not isinstance(action, EmailMessage):
            return await super().act(action)
        self.started.set()
        await asyncio.sleep(self.seconds)
        result = await super().act(action)
        self.finished += 1
        return result


async def test_shutdown_lets_an_in_flight_send_finish():
    from connectors.base import Connectors
    from workflows.activities import PlayActivities, StaticAccounts
    from workflow_support import ACCOUNTS

    slow = SlowSend(1.0)
    p = plan([step("hello", 0, email("hello"))])
    async with harness() as h:  # its own worker is on another task queue
        settings = TemporalSettings(task_queue=f"{h.task_queue}-graceful", shutdown_seconds=10)
        acts = PlayActivities(Connectors.single(slow), StaticAccounts(ACCOUNTS))
        worker = build_worker(h.client, settings, acts, workflow_failure_exception_types=[Exception])
        stop = asyncio.Event()
        running = asyncio.create_task(run_until(worker, stop))
        now = await h.env.get_current_time()
        await start_play(h.client, PlayInput(plan=p, account_id="acme", enrolled_at=now), task_queue=settings.task_queue)
        await asyncio.wait_for(slow.started.wait(), 20)
        stop.set()  # what SIGTERM does
        await asyncio.wait_for(running, 20)
    assert slow.finished == 1  # the send completed instead of being cancelled
    assert len(slow.effects) == 1



# ---------------------------------------------------------------- the CLI path


async def _worker_until_polling(tmp_path, **env_extra: str) -> tuple[int, str]:
    """`playbook worker` as users run it, until it polls, then SIGTERM: (exit code, its log)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from workflows.devserver import dev_server, free_port

    root = Path(__file__).resolve().parents[2]
    (tmp_path / "plays").mkdir()
    (tmp_path / "plays" / "entity.play").write_text("entity account\n  field admin contact\n")
    async with dev_server(db=None, port=free_port(), headless=True, log_path=tmp_path / "t.log") as (server, _):
        env = {**os.environ, "PYTHONPATH": str(root), "PLAYBOOK_DATABASE_URL": f"sqlite:///{tmp_path / 's.db'}",
               **env_extra}
        with (tmp_path / "worker.log").open("w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "cli.main", "worker", "plays", "--address", server.address],
                                    cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while "worker polling" not in (tmp_path / "worker.log").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
            await asyncio.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
    return code, (tmp_path / "worker.log").read_text()


@pytest.mark.slow
async def test_playbook_worker_stops_cleanly_on_sigterm(tmp_path):
    """`playbook worker` as users run it: polls, SIGTERM -> exit 0, no crash at exit."""
    code, output = await _worker_until_polling(tmp_path)
    assert code == 0, output
    assert "worker stopped" in output and "Fatal Python error" not in output and "Traceback" not in output
    assert "sandbox mode" not in output


@pytest.mark.slow
async def test_playbook_worker_says_at_start_that_sandbox_mode_is_on(tmp_path):
    code, output = await _worker_until_polling(tmp_path, PLAYBOOK_SANDBOX_EMAIL="qa@ours.test",
                                               PLAYBOOK_SANDBOX_SLACK_CHANNEL="#playbook-sandbox")
    assert code == 0, output
    line = next(line for line in output.splitlines() if "sandbox mode ON" in line)
    assert "WARNING" in line and "email -> qa@ours.test" in line and "notify -> #playbook-sandbox" in line


def test_playbook_worker_refuses_half_a_tls_pair(monkeypatch):
    from cli.main import run

    monkeypatch.setenv("PLAYBOOK_TEMPORAL_TLS_CERT", "/etc/cert.pem")
    assert run(["worker", "--address", "127.0.0.1:1"]) == 2
