"""A play's notify and webhook steps through the Slack and webhooks connectors in the real workflow.

WireMock plays Slack (429 with Retry-After, then ok) and a webhook receiver
(an answer lost past the timeout, then 200): the workflow's retries meet
them, the owner's channel comes from the settings, and at the end Slack has
one message and the receiver one webhook-id, each verified by its oracle.
"""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
import sqlalchemy as sa
from standardwebhooks import Webhook

import peers
from connectors import base as cb
from connectors.slack import SlackConnector, SlackSettings
from connectors.webhooks import WebhookConnector, WebhookSettings
from dsl import nodes as n
from engine import schema
from engine.store import Store
from wf_plans import plan, ref, step
from workflow_support import harness
from workflows.client import start_play
from workflows.model import Outcome, PlayInput

pytestmark = pytest.mark.anyio
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


async def test_a_429_and_a_lost_answer_still_give_one_slack_message_and_one_webhook(wiremock: peers.WireMock,
                                                                                     tmp_path):
    json_ok = {"Content-Type": "application/json"}
    wiremock.stub({"request": {"method": "POST", "url": "/api/chat.postMessage"}, "scenarioName": "slack",
                   "requiredScenarioState": "Started", "newScenarioState": "open",
                   "response": {"status": 429, "headers": {**json_ok, "Retry-After": "1"},
                                "jsonBody": {"ok": False, "error": "ratelimited"}}})
    wiremock.stub({"request": {"method": "POST", "url": "/api/chat.postMessage"}, "scenarioName": "slack",
                   "requiredScenarioState": "open",
                   "response": {"status": 200, "headers": json_ok,
                                "jsonBody": {"ok": True, "channel": "D0CAROL", "ts": "1700000000.000100"}}})
    # The receiver takes the first webhook but answers after our timeout; the retry gets a 200.
    wiremock.stub({"request": {"method": "POST", "url": "/hook"}, "scenarioName": "hook",
                   "requiredScenarioState": "Started", "newScenarioState": "fast",
                   "response": {"status": 200, "fixedDelayMilliseconds": 2500}})
    wiremock.stub({"request": {"method": "POST", "url": "/hook"}, "scenarioName": "hook",
                   "requiredScenarioState": "fast", "response": {"status": 204}})

    store = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    slack = SlackConnector(SlackSettings(bot_token="xoxb-test", base_url=wiremock.url + "/api/", timeout=1.0,
                                         owner_channels={"carol": "U0CAROL"}), store)
    hooks = WebhookConnector(WebhookSettings(secret=SECRET, timeout=1.0), store)
    p = plan([step("tell", 0, n.NotifyStep(channel="@owner", message="{{ name }} is at {{ usage_percent }}")),
              step("hook", 0, n.WebhookStep(url=wiremock.url + "/hook", event="usage.limit"))],
             owner=ref("account.csm"))
    try:
        async with harness(cb.Connectors({"notify": slack, "webhook": hooks})) as h:
            now = await h.env.get_current_time()
            handle = await start_play(h.client, PlayInput(plan=p, account_id="acme", enrolled_at=now),
                                      task_queue=h.task_queue)
            result = await asyncio.wait_for(handle.result(), 60)
        with store.connect() as conn:
            rows = {r.channel: r for r in conn.execute(sa.select(schema.OutboxMessage.__table__))}
    finally:
        await hooks.aclose()
        store.close()

    posts = [json.loads(r["body"]) for r in wiremock.requests() if r["url"] == "/api/chat.postMessage"]
    assert [(b["channel"], b["text"]) for b in posts] == [("U0CAROL", "Acme is at 85%")] * 2  # the 429, then ok
    hooks_got = [r for r in wiremock.requests() if r["url"] == "/hook"]
    assert len(hooks_got) == 2 and len({r["headers"]["webhook-id"] for r in hooks_got}) == 1  # one id to dedupe on
    for r in hooks_got:
        assert Webhook(SECRET).verify(r["body"], r["headers"])["data"]["account_id"] == "acme"
    assert [(d.step, d.outcome) for d in result.decisions] == [("tell", Outcome.RAN), ("hook", Outcome.RAN)]
    assert (rows["slack"].status, rows["slack"].provider_message_id, rows["slack"].attempts) == (
        "sent", "1700000000.000100", 2)
    assert (rows["webhook"].status, rows["webhook"].attempts) == ("sent", 2)
