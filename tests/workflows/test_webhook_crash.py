"""SIGKILL the worker while a signed webhook is in flight: the receiver can tell the resend is the same message.

The real worker (`python -m workflows.worker`, the webhooks connector chosen
by the environment) posts a play's webhook to WireMock, which holds the
answer; the worker is killed with SIGKILL meanwhile. Whether the receiver
acted is unknown to us, so the step must be sent again, and it is: a second
worker's retry finds the key `sending` in the outbox (claimed, never
recorded) and resends under the same `webhook-id` and body, signed afresh.
At the end the receiver has two deliveries of ONE message (a Standard
Webhooks receiver dedupes them by webhook-id), both verified by
`standardwebhooks`, and the outbox one row, `sent`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import os
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from standardwebhooks import Webhook

import peers
from dsl import nodes as n
from engine import schema
from engine.store import Store
from test_crash import Spawned, _until
from wf_plans import plan, step
from workflows.client import start_play
from workflows.devserver import dev_server, free_port
from workflows.model import Outcome, PlayInput
from workflows.worker import load_catalog

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


async def test_a_webhook_in_flight_when_the_worker_dies_is_resent_as_the_same_message(wiremock: peers.WireMock,
                                                                                      tmp_path):
    # The first delivery is held (the worker dies waiting); the next is answered at once.
    wiremock.stub({"request": {"method": "POST", "url": "/hook"}, "scenarioName": "hook",
                   "requiredScenarioState": "Started", "newScenarioState": "back",
                   "response": {"status": 200, "fixedDelayMilliseconds": 60000}})
    wiremock.stub({"request": {"method": "POST", "url": "/hook"}, "scenarioName": "hook",
                   "requiredScenarioState": "back", "response": {"status": 204}})
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    (playbooks / "entity.play").write_text("entity account\n  field admin contact\n")
    catalog = load_catalog([playbooks])
    url = f"sqlite:///{tmp_path / 'store.db'}"
    st = Store.open(url, catalog=catalog)
    with st.begin() as conn:
        conn.execute(st.table("account").insert(), [{"id": "acme", "name": "Acme"}])
    p = plan([step("hook", 0, n.WebhookStep(url=wiremock.url + "/hook", event="usage.limit"))])

    async with dev_server(db=None, port=free_port(), headless=True, log_path=tmp_path / "temporal.log") as (server, client):
        queue = f"hook-crash-{uuid.uuid4()}"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PLAYBOOK_DATABASE_URL": url,
               "PLAYBOOK_TEMPORAL_ADDRESS": server.address, "PLAYBOOK_TEMPORAL_TASK_QUEUE": queue,
               "PLAYBOOK_WORKER_SHUTDOWN_SECONDS": "5", "PLAYBOOK_WORKER_STICKY_TIMEOUT_SECONDS": "2",
               "PLAYBOOK_CONNECTOR_WEBHOOK": "webhooks", "PLAYBOOK_WEBHOOKS_SECRET": SECRET,
               "PLAYBOOK_WEBHOOKS_TIMEOUT": "120", "PLAYBOOK_SETTINGS_FILE": str(tmp_path / "none.toml")}
        (tmp_path / "none.toml").write_text("")

        def spawn(name: str) -> Spawned:
            return Spawned(["-m", "workflows.worker", "--playbooks", str(playbooks)], tmp_path, env,
                           tmp_path / f"{name}.log")

        first = spawn("first")
        handle = await start_play(client, PlayInput(plan=p, account_id="acme",
                                                     enrolled_at=dt.datetime.now(dt.timezone.utc)), task_queue=queue)
        await _until("the webhook is in flight", lambda: len(wiremock.requests()) == 1, first)
        first.kill9()
        second = spawn("second")
        try:
            result = await asyncio.wait_for(handle.result(), 60)
        finally:
            code = second.terminate()
    with st.connect() as conn:
        [row] = conn.execute(sa.select(schema.OutboxMessage.__table__)).mappings().all()
    st.close()

    deliveries = [r for r in wiremock.requests() if r["url"] == "/hook"]
    assert len(deliveries) == 2, second.output()
    assert len({r["headers"]["webhook-id"] for r in deliveries}) == 1 and deliveries[0]["body"] == deliveries[1]["body"]
    for r in deliveries:
        assert Webhook(SECRET).verify(r["body"], r["headers"])["data"]["account_id"] == "acme"
    assert (row["status"], row["attempts"], row["provider_message_id"]) == (
        "sent", 2, deliveries[0]["headers"]["webhook-id"])
    assert [(d.step, d.outcome) for d in result.decisions] == [("hook", Outcome.RAN)]
    assert code == 0, second.output()
