"""Faults between the worker and a real provider: kill -9 mid-send and during an outage; every email once.

Three accounts enter a play of three emails (s0, s1, s2, a day apart; a day
lasts DAY seconds) sent over SMTP (connectors/smtp.py) to aiosmtpd on
loopback, each `act` on the SMTP connector's own task queue
(`<queue>.smtp`, workflows/queues.py), with the real 60 s start-to-close
timeout and 10 s heartbeat timeout. Workers are `python -m workflows.worker`
subprocesses over one SQLite store:

1. The provider holds step s1's DATA unanswered (the message is not
   accepted until it answers 250). The first worker is killed with SIGKILL
   while all three are held: the provider drops them, Temporal never heard
   back. A second worker starts; the attempts are retried once their
   heartbeats stop (seconds, not the 60 s timeout) and are accepted.
2. The moment the last s1 is accepted, the provider goes down: it answers
   421 to every MAIL FROM (a provider refusing for a while). Step s2's
   attempts fail and back off; the second worker is killed with SIGKILL
   during the outage, a third starts and keeps retrying, then the provider
   comes back and the third worker finishes; SIGTERM stops it cleanly.

Asserted: each (play, account, step) reached the provider exactly once
(one accepted message each, its Message-ID the one of the dropped attempt
for s1), the outbox has nine `sent` rows, and the time from the kill to the
retried s1 at the provider is printed and under 30 s (with only the
start-to-close timeout it would be about 60 s). `-m slow` selects it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import os
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connectors.base import ACTIONS
from dsl.plan import PlanTemplate
from engine import schema
from engine.store import Store
from peers import SmtpPeer, smtp_server
from test_crash import ENTITY, Spawned, _until
from workflows.client import start_play
from workflows.devserver import dev_server, free_port
from workflows.model import Outcome, PlayInput
from workflows.queues import step_queues
from workflows.worker import load_catalog
from wf_plans import email as email_step
from wf_plans import plan, step

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
DAY = 3.0  # seconds per day of the play
ACCOUNTS = ["acme", "globex", "initech"]
STEPS = ["s0", "s1", "s2"]
STALL, DOWN = "s1", "s2"  # held mid-send; sent during the outage
TEMPLATES = {s: PlanTemplate(name=s, subject=f"{s} for {{{{ name }}}}", body="Hi {{ recipient.first_name }},")
             for s in STEPS}


class Provider(SmtpPeer):
    """aiosmtpd that holds the first attempt of STALL until its sender is gone, and goes
    down (421 at MAIL FROM) from the moment every STALL message was accepted until `restore`."""

    def __init__(self) -> None:
        super().__init__()
        self.stalling = True
        self.outage = False
        self.held: list[tuple[str, str]] = []  # (To, Message-ID) of the attempts whose sender died
        self.holding = 0  # senders held right now (their DATA is in, unanswered)
        self.refused = 0
        self.accepted: list[tuple[float, str, str, str]] = []  # (monotonic, step, To, Message-ID)

    def restore(self) -> None:
        self.outage = False

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if self.outage:
            self.refused += 1
            return "421 4.3.2 Service not available, try again later"
        return await super().handle_MAIL(server, session, envelope, address, options)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        label, to, mid = str(msg["Subject"]).split()[0], str(msg["To"]), str(msg["Message-ID"])
        if label == STALL and self.stalling:
            self.holding += 1
            try:  # not accepted until we answer: wait for the sender to die
                while not server.transport.is_closing():
                    await asyncio.sleep(0.05)
            finally:
                self.holding -= 1
                self.held.append((to, mid))
            return "451 4.4.2 Connection lost before the message was accepted"
        reply = await super().handle_DATA(server, session, envelope)
        self.accepted.append((time.monotonic(), label, to, mid))
        if label == STALL and sum(a[1] == STALL for a in self.accepted) == len(ACCOUNTS):
            self.outage = True
        return reply


async def test_kill_9_mid_send_and_during_an_outage_reaches_the_provider_once_each(tmp_path):
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    (playbooks / "entity.play").write_text(ENTITY)
    catalog = load_catalog([playbooks])
    url = f"sqlite:///{tmp_path / 'store.db'}"
    st = Store.open(url, catalog=catalog)
    with st.begin() as conn:
        conn.execute(st.table("account").insert(),
                     [{"id": a, "name": a.title(), "admin": f"c-{a}", "csm": "carol"} for a in ACCOUNTS])
        conn.execute(schema.Contact.__table__.insert(), [
            {"id": f"c-{a}", "account_id": a, "email": f"ada@{a}.test", "first_name": "Ada"} for a in ACCOUNTS])
    p = plan([step(s, i, email_step(s)) for i, s in enumerate(STEPS)], templates=TEMPLATES)
    provider = Provider()

    with smtp_server(provider) as (_, smtp_port):
        async with dev_server(db=None, port=free_port(), headless=True,
                              log_path=tmp_path / "temporal.log") as (server, client):
            queue = f"faults-{uuid.uuid4()}"
            env = {**os.environ, "PYTHONPATH": str(ROOT), "PLAYBOOK_DATABASE_URL": url,
                   "PLAYBOOK_TEMPORAL_ADDRESS": server.address, "PLAYBOOK_TEMPORAL_TASK_QUEUE": queue,
                   "PLAYBOOK_WORKER_SHUTDOWN_SECONDS": "5", "PLAYBOOK_WORKER_STICKY_TIMEOUT_SECONDS": "2",
                   "PLAYBOOK_SETTINGS_FILE": str(tmp_path / "settings.toml"),
                   "PLAYBOOK_CONNECTOR_EMAIL": "smtp", "PLAYBOOK_SMTP_HOST": "127.0.0.1",
                   "PLAYBOOK_SMTP_PORT": str(smtp_port), "PLAYBOOK_SMTP_SECURITY": "none",
                   "PLAYBOOK_SMTP_TIMEOUT": "120",  # the kill, not the client's timeout, ends the held send
                   "PLAYBOOK_EMAIL_FROM_ADDRESS": "Acme Success <cs@acme.test>",
                   "PLAYBOOK_EMAIL_UNSUBSCRIBE_MAILTO": "unsubscribe@acme.test"}
            (tmp_path / "settings.toml").write_text("")

            spawned: list[Spawned] = []

            def spawn(name: str) -> Spawned:
                worker = Spawned(["-m", "workflows.worker", "--playbooks", str(playbooks)], tmp_path, env,
                                 tmp_path / f"{name}.log")
                spawned.append(worker)
                return worker

            try:
                first = spawn("first")
                queues = step_queues(queue, {**dict.fromkeys(ACTIONS, "store"), "email": "smtp"})
                enrolled = dt.datetime.now(dt.timezone.utc)
                handles = [await start_play(client, PlayInput(plan=p, account_id=a, enrolled_at=enrolled, day_seconds=DAY,
                                                              queues=queues), task_queue=queue)
                           for a in ACCOUNTS]

                # 1. Every s1 held mid-send: kill the worker.
                await _until("s1 held", lambda: provider.holding == len(ACCOUNTS), first, 60)
                first.kill9()
                killed = time.monotonic()
                provider.stalling = False
                second = spawn("second")
                await _until("s1 accepted", lambda: provider.outage, second, 60)
                retried = min(t for t, label, _, _ in provider.accepted if label == STALL) - killed

                # 2. Down since the last s1: kill -9 during the outage, a third worker keeps trying.
                await _until("s2 refused", lambda: provider.refused >= len(ACCOUNTS), second, 60)
                second.kill9()
                refused_before = provider.refused
                third = spawn("third")
                try:
                    await _until("the third worker tried", lambda: provider.refused > refused_before, third, 60)
                    provider.restore()
                    results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 120)
                    await _until("the third worker polls", lambda: "worker polling" in third.output(), third)
                finally:
                    code = third.terminate()
                out = third.output()
            finally:  # a failed wait must not leave a worker behind
                for worker in spawned:
                    if worker.proc.poll() is None:
                        worker.kill9()
    with st.connect() as conn:
        rows = conn.execute(sa.select(schema.OutboxMessage.__table__.c.status)).scalars().all()
    st.close()

    print(f"kill -9 mid-send -> retried s1 accepted by the provider after {retried:.1f} s; "
          f"{provider.refused} attempts refused during the outage")
    assert code == 0 and "Fatal Python error" not in out, out
    reached = Counter((label, to.split("@")[1].split(".")[0]) for _, label, to, _ in provider.accepted)
    assert reached == Counter({(s, a): 1 for s in STEPS for a in ACCOUNTS}), reached
    # The dropped s1 attempts were never accepted; their resend carried the same Message-ID.
    assert len(provider.held) == len(ACCOUNTS)
    sent_ids = {(label, to): mid for _, label, to, mid in provider.accepted}
    assert all(sent_ids[(STALL, to)] == mid for to, mid in provider.held)
    assert rows == ["sent"] * len(ACCOUNTS) * len(STEPS)
    assert provider.refused > refused_before >= len(ACCOUNTS)
    assert retried < 30, f"the retry after the kill took {retried:.1f} s: heartbeats should make it seconds"
    for account, result in zip(ACCOUNTS, results):
        assert result.outcome == "completed", result.reason
        assert [d.step for d in result.decisions if d.outcome is Outcome.RAN] == STEPS, (account, result.decisions)

