"""A play's CRM steps through the HubSpot connector in the real workflow, against Prism and WireMock.

The workflow's retries meet HubSpot's failures: an answer lost past the
timeout and a 429 with Retry-After each cost an attempt, and still each
step's object exists once in HubSpot.
"""

from __future__ import annotations

import asyncio

import pytest

import peers
from connectors.hubspot import HubSpotConnector, load_hubspot_settings
from dsl import nodes as n
from hubspot_shapes import DEAL_BY_KEY, PROP, SpecChecked, created, error, found, found_by_key, no_deal, received, stub
from wf_plans import plan, ref, step
from workflow_support import harness
from workflows.client import start_play
from workflows.model import Outcome, PlayInput

pytestmark = pytest.mark.anyio
TOKEN = "pat-na1-00000000-0000-0000-0000-000000000000"


async def test_a_lost_answer_and_a_429_still_make_one_task_and_one_deal(hubspot_proxy: str, wiremock: peers.WireMock,
                                                                         monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no settings file of the machine's
    # The task: HubSpot makes it, but its answer comes after our timeout; the retry's search finds it.
    # (Timeout and delay far apart: a busy machine slowing an ordinary answer past the timeout would
    # add attempts the stubs do not model.)
    stub(wiremock, "POST", "/crm/v3/objects/tasks/search", found(), scenario="task")
    stub(wiremock, "POST", "/crm/v3/objects/tasks", {**created("4101"), "fixedDelayMilliseconds": 8000},
         scenario="task", then="made")
    stub(wiremock, "POST", "/crm/v3/objects/tasks/search", found_by_key("4101"), scenario="task", state="made")
    # The deal: rate limited once with Retry-After, then made.
    stub(wiremock, "GET", DEAL_BY_KEY, no_deal(), path_regex=True)
    stub(wiremock, "POST", "/crm/v3/objects/deals",
         error(429, "You have reached your secondly limit.", "RATE_LIMITS", headers={"Retry-After": "1"}),
         scenario="deal", then="open")
    stub(wiremock, "POST", "/crm/v3/objects/deals", created("7001"), scenario="deal", state="open")

    spec = SpecChecked()
    connector = HubSpotConnector(load_hubspot_settings(base_url=hubspot_proxy, token=TOKEN, company_field="id",
                                                       timeout=3.0, owners={"carol": "77"},
                                                       verify_pipeline=False), transport=spec)
    p = plan([step("call", 0, n.TaskStep(assignee=ref("account.csm"), title="Call about seats")),
              step("deal", 0, n.OpportunityStep(title="Seat expansion", amount=n.Number(value=12000)))])
    try:
        async with harness(connector) as h:
            now = await h.env.get_current_time()
            handle = await start_play(h.client, PlayInput(plan=p, account_id="acme", enrolled_at=now),
                                      task_queue=h.task_queue)
            result = await asyncio.wait_for(handle.result(), 60)
    finally:
        await connector.aclose()

    assert spec.violations == []
    [task] = received(wiremock, "POST", "/crm/v3/objects/tasks")
    assert task["properties"]["hs_task_subject"] == "Call about seats"
    assert task["properties"][PROP].startswith("play:usage_limit:acme:")
    deals = received(wiremock, "POST", "/crm/v3/objects/deals")
    assert len(deals) == 2 and deals[0] == deals[1]  # the 429'd request, then the same one again
    assert [(d.step, d.outcome) for d in result.decisions] == [("call", Outcome.DUPLICATE), ("deal", Outcome.RAN)]
