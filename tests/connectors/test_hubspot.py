"""The HubSpot connector (connectors/hubspot.py) against Prism serving HubSpot's own CRM spec.

Every request goes through Prism: `prism mock` answers from the spec's
examples, `prism proxy` checks requests and WireMock's answers against the
spec and passes them on (WireMock holds the state: search empty, then the
object; 429, 503, delays, resets). A request or a stub answer Prism finds
outside HubSpot's spec fails the test (`SpecChecked`), so the shapes we send
are HubSpot's, not ours.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

import peers
from connectors import base as cb
from connectors import settings as cs
from connectors.hubspot import DEFAULT_STAGES, HubSpotConnector, HubSpotSettingsError, load_hubspot_settings
from engine.settings import SettingsError
from hubspot_shapes import DEAL_BY_KEY, JSON, PROP, SpecChecked, created, error, found, no_deal, obj, received, stub

pytestmark = pytest.mark.anyio

TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"
AT = dt.datetime(2026, 3, 9, 9, 0, tzinfo=dt.timezone.utc)
KEY = "play:usage_limit:acct-1:abc123:1:day1.0"


# ---------------------------------------------------------------------------
# Peers and the spec check


@pytest.fixture
def spec() -> Iterator[SpecChecked]:
    checked = SpecChecked()
    yield checked
    assert checked.violations == [], "Prism found requests or answers outside HubSpot's spec"


def make(url: str, transport: httpx.AsyncBaseTransport | None, **settings: Any) -> HubSpotConnector:
    # The pipeline check reads /crm/v3/pipelines, another spec than objects.json: its own tests below.
    values: dict[str, Any] = {"base_url": url, "token": TOKEN, "company_field": "id", "timeout": 5.0,
                              "owners": {"csm@example.com": "77"}, "verify_pipeline": False}
    return HubSpotConnector(load_hubspot_settings(**{**values, **settings}), transport=transport)


@pytest.fixture
async def hubspot(hubspot_proxy: str, wiremock: peers.WireMock,
                  spec: SpecChecked) -> AsyncIterator[HubSpotConnector]:
    """The connector through Prism to a WireMock with no stubs (account ids are company ids)."""
    connector = make(hubspot_proxy, spec)
    yield connector
    await connector.aclose()


@pytest.fixture(autouse=True)
def no_machine_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("PLAYBOOK_HUBSPOT_", "PLAYBOOK_CONNECTOR_")) or name == "PLAYBOOK_SETTINGS_FILE":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def task(key: str = KEY, **fields: Any) -> cb.NewTask:
    values = {"key": key, "account_id": "9001", "actor": "play:usage_limit", "play": "usage_limit",
              "step": "day1.0", "requested_at": AT, "assignee": "csm@example.com",
              "title": "Schedule a usage review call", "due_at": AT + dt.timedelta(days=2)}
    return cb.NewTask(**{**values, **fields})


def opportunity(key: str = KEY, **fields: Any) -> cb.NewOpportunity:
    values = {"key": key, "account_id": "9001", "actor": "play:usage_limit", "play": "usage_limit",
              "step": "day3.0", "requested_at": AT, "title": "Seat expansion", "amount": 12000.0}
    return cb.NewOpportunity(**{**values, **fields})


def stage(stage_name: str, key: str = "play:usage_limit:9001:abc123:1:day9.0") -> cb.StageChange:
    return cb.StageChange(key=key, account_id="9001", actor="play:usage_limit", play="usage_limit", step="day9.0",
                          requested_at=AT, stage=stage_name)


# ---------------------------------------------------------------------------
# Tasks and deals: created once, with our key, on the company


async def test_a_task_is_created_with_our_key_its_owner_and_the_company(hubspot, wiremock):
    stub(wiremock, "POST", "/crm/v3/objects/tasks/search", found())
    stub(wiremock, "POST", "/crm/v3/objects/tasks", created("4101"))
    result = await hubspot.act(task())
    assert (result.external_id, result.duplicate) == ("4101", False)
    [search] = received(wiremock, "POST", "/crm/v3/objects/tasks/search")
    assert search["filterGroups"] == [{"filters": [{"propertyName": PROP, "operator": "EQ", "value": KEY}]}]
    [body] = received(wiremock, "POST", "/crm/v3/objects/tasks")
    props = body["properties"]
    assert props[PROP] == KEY and props["hs_task_subject"] == "Schedule a usage review call"
    assert props["hubspot_owner_id"] == "77" and props["hs_task_status"] == "NOT_STARTED"
    assert props["hs_timestamp"] == str(int((AT + dt.timedelta(days=2)).timestamp() * 1000))
    assert body["associations"] == [{"to": {"id": "9001"}, "types": [
        {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 192}]}]
    auth = [r["headers"].get("Authorization") for r in wiremock.requests()]
    assert auth == [f"Bearer {TOKEN}"] * 2


async def test_a_task_already_made_with_our_key_is_found_not_made_again(hubspot, wiremock):
    stub(wiremock, "POST", "/crm/v3/objects/tasks/search", found(obj("4101", **{PROP: KEY})))
    result = await hubspot.act(task())
    assert (result.external_id, result.duplicate) == ("4101", True)
    assert received(wiremock, "POST", "/crm/v3/objects/tasks") == []


async def test_a_deal_starts_in_the_pipeline_at_the_csql_stage_with_its_amount(hubspot, wiremock):
    stub(wiremock, "GET", DEAL_BY_KEY, no_deal(), path_regex=True)
    stub(wiremock, "POST", "/crm/v3/objects/deals", created("7001"))
    result = await hubspot.act(opportunity())
    assert (result.external_id, result.duplicate) == ("7001", False)
    [body] = received(wiremock, "POST", "/crm/v3/objects/deals")
    assert body["properties"] == {"dealname": "Seat expansion", "pipeline": "default",
                                  "dealstage": DEFAULT_STAGES["CSQL Created"], "amount": "12000", PROP: KEY}
    assert body["associations"][0]["types"][0]["associationTypeId"] == 5


async def test_a_retry_after_a_lost_answer_does_not_create_a_second_deal(hubspot_proxy, wiremock, spec):
    # The first create reaches HubSpot, but its answer never arrives (past our
    # timeout); HubSpot has the deal all the same, and the retry reads it by our key.
    stub(wiremock, "GET", DEAL_BY_KEY, no_deal(), path_regex=True, scenario="lost", state="Started")
    stub(wiremock, "POST", "/crm/v3/objects/deals", {**created("7001"), "fixedDelayMilliseconds": 8000},
         scenario="lost", state="Started", then="made")
    stub(wiremock, "GET", DEAL_BY_KEY, {"status": 200, "headers": JSON, "jsonBody": obj("7001", **{PROP: KEY})},
         path_regex=True, scenario="lost", state="made")
    connector = make(hubspot_proxy, spec, timeout=3.0)
    try:
        with pytest.raises(cb.TransientError, match="no answer within 3 s"):
            await connector.act(opportunity())
        retry = await connector.act(opportunity())
    finally:
        await connector.aclose()
    assert (retry.external_id, retry.duplicate) == ("7001", True)
    assert len(received(wiremock, "POST", "/crm/v3/objects/deals")) == 1
    # Read by the key itself, which HubSpot answers at once (its search index lags).
    assert [r["url"].split("?")[1] for r in wiremock.requests() if r["method"] == "GET"] == [
        f"idProperty={PROP}&properties={PROP}"] * 2


async def test_without_a_unique_deal_key_deals_are_searched_for(hubspot_proxy, wiremock, spec):
    stub(wiremock, "POST", "/crm/v3/objects/deals/search", found(obj("7001", **{PROP: KEY})))
    connector = make(hubspot_proxy, spec, unique_deal_key=False)
    try:
        result = await connector.act(opportunity())
    finally:
        await connector.aclose()
    assert (result.external_id, result.duplicate) == ("7001", True)
    [search] = received(wiremock, "POST", "/crm/v3/objects/deals/search")
    assert search["filterGroups"][0]["filters"] == [{"propertyName": PROP, "operator": "EQ", "value": KEY}]


async def test_a_409_on_our_unique_key_is_the_object_a_lost_attempt_made(hubspot, wiremock):
    # A portal whose key property has unique values refuses the second create itself.
    stub(wiremock, "GET", DEAL_BY_KEY, no_deal(), path_regex=True, scenario="unique", then="searched")
    stub(wiremock, "POST", "/crm/v3/objects/deals",
         error(409, "A deal with playbook_idempotency_key already exists", "CONFLICT"),
         scenario="unique", state="searched", then="conflict")
    stub(wiremock, "GET", DEAL_BY_KEY, {"status": 200, "headers": JSON, "jsonBody": obj("7002", **{PROP: KEY})},
         path_regex=True, scenario="unique", state="conflict")
    result = await hubspot.act(opportunity())
    assert (result.external_id, result.duplicate) == ("7002", True)


# ---------------------------------------------------------------------------
# Stage moves


async def test_a_stage_move_patches_the_plays_newest_open_deal(hubspot, wiremock):
    older = obj("7001", **{PROP: "play:usage_limit:9001:abc123:0:day3.0", "dealstage": "qualifiedtobuy"})
    newer = {**obj("7005", **{PROP: "play:usage_limit:9001:abc123:1:day3.0", "dealstage": "qualifiedtobuy"}),
             "createdAt": "2026-03-10T09:00:00.000Z"}
    other_play = {**obj("7009", **{PROP: "play:renewal:9001:def456:1:day3.0", "dealstage": "qualifiedtobuy"}),
                  "createdAt": "2026-03-11T09:00:00.000Z"}
    stub(wiremock, "POST", "/crm/v3/objects/deals/search", found(older, newer, other_play))
    stub(wiremock, "PATCH", "/crm/v3/objects/deals/7005", {"status": 200, "headers": JSON,
                                                          "jsonBody": obj("7005", dealstage="decisionmakerboughtin")})
    result = await hubspot.act(stage("Proposal Sent"))
    assert (result.external_id, result.previous, result.stage, result.duplicate) == (
        "7005", "CSQL Created", "Proposal Sent", False)
    assert received(wiremock, "PATCH", "/crm/v3/objects/deals/7005") == [
        {"properties": {"dealstage": "decisionmakerboughtin"}}]
    [search] = received(wiremock, "POST", "/crm/v3/objects/deals/search")
    filters = search["filterGroups"][0]["filters"]
    assert {"propertyName": "associations.company", "operator": "EQ", "value": "9001"} in filters
    assert {"propertyName": "dealstage", "operator": "NOT_IN", "values": ["closedwon", "closedlost"]} in filters


async def test_a_stage_move_with_no_open_deal_opens_one_at_that_stage(hubspot, wiremock):
    stub(wiremock, "POST", "/crm/v3/objects/deals/search", found())
    stub(wiremock, "GET", DEAL_BY_KEY, no_deal(), path_regex=True)
    stub(wiremock, "POST", "/crm/v3/objects/deals", created("7010"))
    result = await hubspot.act(stage("Qualified"))
    assert (result.external_id, result.previous, result.duplicate) == ("7010", None, False)
    [body] = received(wiremock, "POST", "/crm/v3/objects/deals")
    assert body["properties"]["dealstage"] == "presentationscheduled" and body["properties"]["dealname"] == "usage_limit"


async def test_the_plays_deal_is_found_on_a_later_page_of_the_companys_deals(hubspot, wiremock):
    others = [obj(str(8000 + i), **{PROP: f"play:renewal:9001:def456:1:day{i}", "dealstage": "qualifiedtobuy"})
              for i in range(3)]
    ours = obj("7005", **{PROP: "play:usage_limit:9001:abc123:1:day3.0", "dealstage": "qualifiedtobuy"})
    first = found(*others)
    first["jsonBody"]["paging"] = {"next": {"after": "3"}}
    for after, answer in [("0", first), ("3", found(ours))]:
        wiremock.stub({"request": {"method": "POST", "urlPath": "/crm/v3/objects/deals/search",
                                   "bodyPatterns": [{"matchesJsonPath": f"$[?(@.after == '{after}')]"}]},
                       "response": answer})
    stub(wiremock, "PATCH", "/crm/v3/objects/deals/7005", {"status": 200, "headers": JSON,
                                                          "jsonBody": obj("7005", dealstage="closedwon")})
    result = await hubspot.act(stage("Closed Won"))
    assert (result.external_id, result.previous) == ("7005", "CSQL Created")
    assert [b["after"] for b in received(wiremock, "POST", "/crm/v3/objects/deals/search")] == ["0", "3"]


@pytest.mark.parametrize(("dealstage", "asked", "stays_at"), [("presentationscheduled", "Qualified", "Qualified"),
                                                             ("contractsent", "Qualified", "Negotiation")])
async def test_a_deal_at_the_stage_or_past_it_is_not_moved(hubspot, wiremock, dealstage, asked, stays_at):
    deal = obj("7005", **{PROP: "play:usage_limit:9001:abc123:1:day3.0", "dealstage": dealstage})
    stub(wiremock, "POST", "/crm/v3/objects/deals/search", found(deal))
    result = await hubspot.act(stage(asked))
    assert (result.external_id, result.previous, result.stage) == ("7005", stays_at, stays_at)
    assert received(wiremock, "PATCH", "/crm/v3/objects/deals/7005") == []


async def test_a_closing_step_with_no_open_deal_opens_none(hubspot, wiremock):
    stub(wiremock, "POST", "/crm/v3/objects/deals/search", found())
    result = await hubspot.act(stage("Closed Lost"))
    assert (result.external_id, result.stage) == (None, "Closed Lost")
    assert received(wiremock, "POST", "/crm/v3/objects/deals") == []


async def test_a_stage_move_on_a_deal_that_is_gone_is_a_permanent_error(hubspot, wiremock):
    deal = obj("7005", **{PROP: "play:usage_limit:9001:abc123:1:day3.0", "dealstage": "qualifiedtobuy"})
    stub(wiremock, "POST", "/crm/v3/objects/deals/search", found(deal))
    stub(wiremock, "PATCH", "/crm/v3/objects/deals/7005", error(404, "resource not found", "OBJECT_NOT_FOUND"))
    with pytest.raises(cb.PermanentError, match=r"refused \(404\): resource not found \(deal 7005, to stage 'Closed Won'"):
        await hubspot.act(stage("Closed Won"))


async def test_an_unknown_stage_is_a_clear_error_before_any_call(hubspot, wiremock):
    with pytest.raises(cb.PermanentError, match="unknown stage 'Qualifed'; did you mean 'Qualified'?"):
        await hubspot.act(stage("Qualifed"))
    assert wiremock.requests() == []


async def test_a_stage_with_no_hubspot_stage_mapped_names_the_setting(hubspot_proxy, wiremock, spec):
    unmapped = {name: sid for name, sid in DEFAULT_STAGES.items() if name != "Negotiation"}
    connector = make(hubspot_proxy, spec, stages=unmapped)
    try:
        with pytest.raises(cb.PermanentError) as err:
            await connector.act(stage("Negotiation"))
    finally:
        await connector.aclose()
    assert "stage 'Negotiation' has no HubSpot dealstage; map it in PLAYBOOK_HUBSPOT_STAGES" in str(err.value)
    assert wiremock.requests() == []


# ---------------------------------------------------------------------------
# Notes and what HubSpot does not do


async def test_a_trial_grant_becomes_a_note_on_the_company(hubspot, wiremock):
    stub(wiremock, "POST", "/crm/v3/objects/notes/search", found())
    stub(wiremock, "POST", "/crm/v3/objects/notes", created("8801"))
    grant = cb.TrialGrant(key=KEY, account_id="9001", actor="play:usage_limit", play="usage_limit", step="day5.0",
                          requested_at=AT, feature="sso <beta>", ends_at=AT + dt.timedelta(days=14))
    result = await hubspot.act(grant)
    assert isinstance(result, cb.TrialResult) and result.external_id == "8801"
    [body] = received(wiremock, "POST", "/crm/v3/objects/notes")
    assert "trial sso &lt;beta&gt;" in body["properties"]["hs_note_body"]
    assert body["properties"][PROP] == KEY
    assert body["associations"][0]["types"][0]["associationTypeId"] == 190


async def test_an_email_is_refused_naming_the_setting_to_change(hubspot, wiremock):
    email = cb.EmailMessage(key=KEY, account_id="9001", actor="a", play="p", step="s", requested_at=AT,
                            to="a@example.com", subject="s", body="b", template="t")
    with pytest.raises(cb.PermanentError, match="PLAYBOOK_CONNECTOR_EMAIL"):
        await hubspot.act(email)


async def test_an_assignee_with_no_hubspot_owner_is_a_clear_error(hubspot, wiremock):
    stub(wiremock, "POST", "/crm/v3/objects/tasks/search", found())
    with pytest.raises(cb.PermanentError, match="task assignee 'nobody@example.com' has no HubSpot owner id"):
        await hubspot.act(task(assignee="nobody@example.com"))
    assert received(wiremock, "POST", "/crm/v3/objects/tasks") == []


# ---------------------------------------------------------------------------
# Failures: what can be retried, and when


async def test_429_is_transient_and_carries_hubspots_retry_after(hubspot, wiremock):
    stub(wiremock, "POST", "/crm/v3/objects/tasks/search", found())
    stub(wiremock, "POST", "/crm/v3/objects/tasks",
         error(429, "You have reached your ten_secondly_rolling limit.", "RATE_LIMITS",
               headers={"Retry-After": "7"}, policyName="TEN_SECONDLY_ROLLING"), scenario="limit", then="open")
    stub(wiremock, "POST", "/crm/v3/objects/tasks", created("4101"), scenario="limit", state="open")
    with pytest.raises(cb.TransientError) as err:
        await hubspot.act(task())
    assert err.value.retry_after == 7.0 and "rate limited (429)" in str(err.value)
    result = await hubspot.act(task())
    assert (result.external_id, result.duplicate) == ("4101", False)
    assert len(received(wiremock, "POST", "/crm/v3/objects/tasks")) == 2


@pytest.mark.parametrize(("policy", "wait"), [("TEN_SECONDLY_ROLLING", 10.0), ("DAILY", 3600.0)])
async def test_429_without_retry_after_waits_as_hubspots_policy_says(hubspot, wiremock, policy, wait):
    stub(wiremock, "POST", "/crm/v3/objects/tasks/search",
         error(429, "You have reached your limit.", "RATE_LIMITS", policyName=policy))
    with pytest.raises(cb.TransientError) as err:
        await hubspot.act(task())
    assert err.value.retry_after == wait


async def test_a_5xx_is_transient(hubspot, wiremock):
    stub(wiremock, "POST", "/crm/v3/objects/tasks/search", error(503, "Service unavailable", "INTERNAL_ERROR"))
    with pytest.raises(cb.TransientError, match=r"server error 503: Service unavailable") as err:
        await hubspot.act(task())
    assert err.value.retry_after is None


async def test_a_503_with_retry_after_carries_it(hubspot, wiremock):
    stub(wiremock, "POST", "/crm/v3/objects/tasks/search",
         error(503, "Service unavailable", "INTERNAL_ERROR", headers={"Retry-After": "30"}))
    with pytest.raises(cb.TransientError) as err:
        await hubspot.act(task())
    assert err.value.retry_after == 30.0


async def test_an_answer_past_the_timeout_is_transient(hubspot_proxy, wiremock, spec):
    stub(wiremock, "POST", "/crm/v3/objects/tasks/search", {**found(), "fixedDelayMilliseconds": 2000})
    connector = make(hubspot_proxy, spec, timeout=0.5)
    try:
        with pytest.raises(cb.TransientError, match=r"no answer within 0.5 s"):
            await connector.act(task())
    finally:
        await connector.aclose()


async def test_a_connection_reset_is_transient(wiremock):
    # Straight to WireMock: the fault is on the socket, which a proxy in between would hide.
    stub(wiremock, "POST", "/crm/v3/objects/tasks/search", {"fault": "CONNECTION_RESET_BY_PEER"})
    connector = make(wiremock.url, None)
    try:
        with pytest.raises(cb.TransientError, match="connection failed"):
            await connector.act(task())
    finally:
        await connector.aclose()


async def test_a_closed_port_is_transient():
    connector = make(f"http://127.0.0.1:{peers.free_port()}", None)
    try:
        with pytest.raises(cb.TransientError, match="connection failed"):
            await connector.act(task())
    finally:
        await connector.aclose()


async def test_a_refused_token_names_the_setting_never_the_token(hubspot, wiremock):
    stub(wiremock, "POST", "/crm/v3/objects/tasks/search",
         error(401, "Authentication credentials not found.", "INVALID_AUTHENTICATION"))
    with pytest.raises(cb.PermanentError) as err:
        await hubspot.act(task())
    message = str(err.value)
    assert "token was refused (401)" in message and "PLAYBOOK_HUBSPOT_TOKEN" in message
    assert TOKEN not in message and TOKEN[4:] not in message


async def test_a_missing_scope_is_permanent_with_hubspots_message(hubspot, wiremock):
    stub(wiremock, "POST", "/crm/v3/objects/tasks/search",
         error(403, "This app hasn't been granted all required scopes.", "MISSING_SCOPES"))
    with pytest.raises(cb.PermanentError, match=r"lacks a scope \(403\): This app hasn't been granted"):
        await hubspot.act(task())


async def test_a_validation_error_is_permanent_with_hubspots_message(hubspot, wiremock):
    stub(wiremock, "POST", "/crm/v3/objects/tasks/search", found())
    stub(wiremock, "POST", "/crm/v3/objects/tasks", error(
        400, "Property values were not valid", "VALIDATION_ERROR",
        errors=[{"message": 'Property "playbook_idempotency_key" does not exist', "code": "PROPERTY_DOESNT_EXIST"}]))
    with pytest.raises(cb.PermanentError) as err:
        await hubspot.act(task())
    assert str(err.value) == ("HubSpot create tasks: refused (400): Property values were not valid; "
                              'Property "playbook_idempotency_key" does not exist')


async def test_a_missing_token_is_a_permanent_error_naming_the_setting():
    connector = HubSpotConnector(load_hubspot_settings(base_url="http://127.0.0.1:1", company_field="id"))
    with pytest.raises(cb.PermanentError, match="needs a private-app token: set PLAYBOOK_HUBSPOT_TOKEN or `token`"):
        await connector.act(task())


async def test_the_spec_check_catches_a_request_hubspot_would_refuse(hubspot_proxy, wiremock):
    # The guard every other test relies on: a property value that is no string is not HubSpot's shape.
    checked = SpecChecked()
    async with httpx.AsyncClient(transport=checked, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        await client.post(hubspot_proxy + "/crm/v3/objects/tasks", json={"properties": {"hs_task_subject": 1},
                                                                 "associations": []})
    assert len(checked.violations) == 1 and "422" in checked.violations[0]


# ---------------------------------------------------------------------------
# Every request shape against Prism's mock of HubSpot (its examples answer)


async def test_every_request_shape_passes_hubspots_spec_on_prisms_mock(hubspot_prism):
    checked = SpecChecked()
    connector = make(hubspot_prism, checked)
    try:
        made = await connector.act(task())
        deal = await connector.act(opportunity())
        note = await connector.act(cb.FieldChange(key=KEY, account_id="9001", actor="a", play="usage_limit",
                                                  step="s", requested_at=AT, field="account.flag", value=True))
        # The example deal is no deal of ours: a stage step opens one at its stage.
        moved = await connector.act(stage("Negotiation"))
    finally:
        await connector.aclose()
    assert checked.violations == []
    assert [r.duplicate for r in (made, deal, note, moved)] == [False] * 4
    assert [(m, p) for m, p, _ in checked.sent] == [
        ("POST", "/crm/v3/objects/tasks/search"), ("POST", "/crm/v3/objects/tasks"),
        ("GET", f"/crm/v3/objects/deals/{KEY}"), ("POST", "/crm/v3/objects/deals"),
        ("POST", "/crm/v3/objects/notes/search"), ("POST", "/crm/v3/objects/notes"),
        # The example search answer always names the same next page: read once more (a cursor that
        # does not move ends the paging); then the step's own key is read.
        *[("POST", "/crm/v3/objects/deals/search")] * 2,
        ("GET", f"/crm/v3/objects/deals/{stage('Negotiation').key}"), ("POST", "/crm/v3/objects/deals")]


async def test_a_stage_patch_passes_hubspots_spec_on_prisms_mock(hubspot_prism):
    checked = SpecChecked()
    connector = make(hubspot_prism, checked)
    try:
        await connector._call("PATCH", "/crm/v3/objects/deals/512", "move deal stage",
                              {"properties": {"dealstage": "closedwon"}})
    finally:
        await connector.aclose()
    assert checked.violations == []


# ---------------------------------------------------------------------------
# The pipeline the stages map onto (HubSpot's pipelines spec)


@pytest.fixture(scope="module")
def pipelines_proxy(_wiremock_process: peers.WireMock) -> Iterator[str]:
    with peers.prism_proxy(peers.HUBSPOT / "pipelines.json", _wiremock_process.url) as url:
        yield url


def pipeline(*stage_ids: str) -> dict[str, Any]:
    """A Pipeline of HubSpot's pipelines API, its stages labelled by id."""
    stages = [{"id": sid, "label": sid.title(), "archived": False, "displayOrder": i, "metadata": {"probability": "0.5"},
               "createdAt": "2026-01-01T00:00:00.000Z", "updatedAt": "2026-01-01T00:00:00.000Z"}
              for i, sid in enumerate(stage_ids)]
    return {"status": 200, "headers": JSON, "jsonBody": {
        "id": "default", "label": "Sales pipeline", "archived": False, "displayOrder": 0, "stages": stages,
        "createdAt": "2026-01-01T00:00:00.000Z", "updatedAt": "2026-01-01T00:00:00.000Z"}}


async def test_the_first_deal_step_refuses_a_mapping_onto_stages_the_pipeline_lacks(pipelines_proxy, wiremock, spec):
    stub(wiremock, "GET", "/crm/v3/pipelines/deals/default",
         pipeline("appointmentscheduled", "qualifiedtobuy", "presentationscheduled", "closedwon", "closedlost"))
    connector = make(pipelines_proxy, spec, verify_pipeline=True)
    try:
        with pytest.raises(cb.PermanentError) as err:
            await connector.act(opportunity())
    finally:
        await connector.aclose()
    message = str(err.value)
    assert ("pipeline 'default' has no stage for 'Proposal Sent' -> 'decisionmakerboughtin', "
            "'Negotiation' -> 'contractsent'") in message
    assert "PLAYBOOK_HUBSPOT_STAGES" in message and "qualifiedtobuy (Qualifiedtobuy)" in message
    assert [r["url"] for r in wiremock.requests()] == ["/crm/v3/pipelines/deals/default"]  # no deal was made


async def test_a_pipeline_that_is_not_there_names_the_setting(pipelines_proxy, wiremock, spec):
    stub(wiremock, "GET", "/crm/v3/pipelines/deals/expansion", error(404, "Unable to find pipeline expansion",
                                                                     "OBJECT_NOT_FOUND"))
    connector = make(pipelines_proxy, spec, verify_pipeline=True, pipeline="expansion")
    try:
        with pytest.raises(cb.PermanentError, match="HubSpot has no deal pipeline 'expansion': set "
                                                    "PLAYBOOK_HUBSPOT_PIPELINE"):
            await connector.act(stage("Qualified"))
    finally:
        await connector.aclose()


async def test_a_pipeline_with_every_mapped_stage_is_read_once(pipelines_proxy, wiremock, spec):
    stub(wiremock, "GET", "/crm/v3/pipelines/deals/default", pipeline(*dict.fromkeys(DEFAULT_STAGES.values())))
    connector = make(pipelines_proxy, spec, verify_pipeline=True)
    try:
        await connector._check_pipeline()
        await connector._check_pipeline()
    finally:
        await connector.aclose()
    assert len(wiremock.requests()) == 1


async def test_the_pipeline_read_passes_hubspots_spec_on_prisms_mock():
    checked = SpecChecked()
    with peers.prism_mock(peers.HUBSPOT / "pipelines.json") as url:
        connector = make(url, checked, verify_pipeline=True)
        try:
            with pytest.raises(cb.PermanentError, match="has no stage for"):  # the spec's example is a ticket pipeline
                await connector._check_pipeline()
        finally:
            await connector.aclose()
    assert checked.violations == [] and [p for _, p, _ in checked.sent] == ["/crm/v3/pipelines/deals/default"]


# ---------------------------------------------------------------------------
# Inside a worker


async def test_each_call_heartbeats_inside_an_activity(hubspot, wiremock):
    from temporalio.testing import ActivityEnvironment

    stub(wiremock, "POST", "/crm/v3/objects/tasks/search", found())
    stub(wiremock, "POST", "/crm/v3/objects/tasks", created("4101"))
    beats: list[tuple[Any, ...]] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details)
    await env.run(hubspot.act, task())
    assert beats == [("search tasks",), ("create tasks",)]


# ---------------------------------------------------------------------------
# Settings


def settings_file(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    path = tmp_path / "outside-git" / "settings.toml"
    path.parent.mkdir()
    path.write_text(text)
    monkeypatch.setenv("PLAYBOOK_SETTINGS_FILE", str(path))


def test_the_hubspot_table_sets_stages_and_owners_and_the_environment_wins(tmp_path, monkeypatch):
    settings_file(tmp_path, monkeypatch, '[hubspot]\ntoken = "from-file"\npipeline = "csql"\n'
                                         '[hubspot.stages]\n"CSQL Created" = "100"\n"Qualified" = "101"\n'
                                         '[hubspot.owners]\nu1 = "77"\n')
    monkeypatch.setenv("PLAYBOOK_HUBSPOT_PIPELINE", "expansion")
    settings = load_hubspot_settings()
    assert (settings.pipeline, settings.stages, settings.owners) == (
        "expansion", {"CSQL Created": "100", "Qualified": "101"}, {"u1": "77"})
    assert settings.stage_of("101") == "Qualified" and settings.stage_of("999") is None
    assert settings.token is not None and settings.token.get_secret_value() == "from-file"
    assert "from-file" not in repr(settings)


def test_a_misspelt_hubspot_setting_gets_a_suggestion(tmp_path, monkeypatch):
    settings_file(tmp_path, monkeypatch, '[hubspot]\npipline = "default"\n')
    with pytest.raises(SettingsError, match=r"\[hubspot\] has no setting 'pipline'; did you mean 'pipeline'"):
        load_hubspot_settings()


def test_a_mapping_for_a_stage_the_pipeline_lacks_gets_a_suggestion(monkeypatch):
    monkeypatch.setenv("PLAYBOOK_HUBSPOT_STAGES", '{"CSQL Created": "1", "Qualifed": "2"}')
    with pytest.raises(HubSpotSettingsError, match="PLAYBOOK_HUBSPOT_STAGES .*'Qualifed' is no pipeline stage; "
                                                   "did you mean 'Qualified'"):
        load_hubspot_settings()


def test_two_stages_onto_one_hubspot_stage_are_refused(monkeypatch):
    # A HubSpot stage id must mean one stage of ours (HubSpot's own stage changes are read back through it).
    monkeypatch.setenv("PLAYBOOK_HUBSPOT_STAGES", '{"CSQL Created": "1", "Qualified": "1"}')
    with pytest.raises(HubSpotSettingsError, match="'CSQL Created' and 'Qualified' both map onto '1'"):
        load_hubspot_settings()


def test_deals_must_start_at_a_mapped_open_stage(monkeypatch):
    monkeypatch.setenv("PLAYBOOK_HUBSPOT_NEW_DEAL_STAGE", "Closed Won")
    with pytest.raises(HubSpotSettingsError, match="new_deal_stage 'Closed Won' must be an open stage of `stages`"):
        load_hubspot_settings()


def test_a_malformed_setting_is_named_without_its_value(monkeypatch):
    monkeypatch.setenv("PLAYBOOK_HUBSPOT_STAGES", "not json " + TOKEN)
    with pytest.raises(HubSpotSettingsError) as err:
        load_hubspot_settings()
    assert TOKEN not in str(err.value)


def test_the_registry_refuses_hubspot_without_a_token_before_the_worker_starts(monkeypatch):
    monkeypatch.setenv("PLAYBOOK_CONNECTOR_TASK", "hubspot")
    with pytest.raises(cs.ConnectorSettingsError, match="needs a private-app token: set PLAYBOOK_HUBSPOT_TOKEN"):
        cs.load_connectors(None)


def test_playbook_worker_refuses_hubspot_without_a_token_before_it_connects(monkeypatch, capsys):
    from cli.main import run

    monkeypatch.setenv("PLAYBOOK_CONNECTOR_OPPORTUNITY", "hubspot")
    assert run(["worker", "--address", "127.0.0.1:1"]) == 2  # not 4: Temporal was never tried
    err = capsys.readouterr().err
    assert "connector settings: the hubspot connector needs a private-app token: set PLAYBOOK_HUBSPOT_TOKEN" in err


def test_a_broken_hubspot_setting_stops_the_choice_of_connectors(monkeypatch):
    monkeypatch.setenv("PLAYBOOK_CONNECTOR_TASK", "hubspot")
    monkeypatch.setenv("PLAYBOOK_HUBSPOT_TOKEN", TOKEN)
    monkeypatch.setenv("PLAYBOOK_HUBSPOT_TIMEOUT", "-1")
    with pytest.raises(cs.ConnectorSettingsError, match="hubspot: PLAYBOOK_HUBSPOT_TIMEOUT"):
        cs.choose()


def test_hubspot_chosen_for_messages_is_refused_naming_the_setting(monkeypatch):
    monkeypatch.setenv("PLAYBOOK_HUBSPOT_TOKEN", TOKEN)
    monkeypatch.setenv("PLAYBOOK_CONNECTOR_DEFAULT", "hubspot")
    with pytest.raises(cs.ConnectorSettingsError, match=r"PLAYBOOK_CONNECTOR_DEFAULT .*: the hubspot connector does "
                                                        r"not act on email steps \(it acts on task, "):
        cs.choose()
    monkeypatch.setenv("PLAYBOOK_CONNECTOR_DEFAULT", "store")
    monkeypatch.setenv("PLAYBOOK_CONNECTOR_NOTIFY", "hubspot")
    with pytest.raises(cs.ConnectorSettingsError, match="PLAYBOOK_CONNECTOR_NOTIFY .*not act on notify steps"):
        cs.choose()


def test_the_registry_builds_hubspot_for_the_kinds_that_choose_it(monkeypatch):
    monkeypatch.setenv("PLAYBOOK_CONNECTOR_TASK", "hubspot")
    monkeypatch.setenv("PLAYBOOK_CONNECTOR_OPPORTUNITY", "hubspot")
    monkeypatch.setenv("PLAYBOOK_CONNECTOR_DEFAULT", "memory")
    monkeypatch.setenv("PLAYBOOK_HUBSPOT_TOKEN", TOKEN)
    connectors = cs.load_connectors(None)
    assert isinstance(connectors.by_kind["task"], HubSpotConnector)
    assert connectors.by_kind["task"] is connectors.by_kind["opportunity"]
    assert not isinstance(connectors.by_kind["email"], HubSpotConnector)


async def test_the_company_id_is_read_from_the_account_field_in_the_store(tmp_path, hubspot_proxy, wiremock, spec):
    import sqlalchemy as sa

    from connectors.store import account_field
    from engine.store import Store

    store = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        with store.begin() as conn:
            conn.execute(sa.text("ALTER TABLE accounts ADD COLUMN hubspot_company_id TEXT"))
            conn.execute(sa.text("INSERT INTO accounts (id, name, hubspot_company_id) VALUES "
                                 "('acct-1', 'Acme', '31337'), ('acct-2', 'Beta', NULL)"))
        stub(wiremock, "POST", "/crm/v3/objects/tasks/search", found())
        stub(wiremock, "POST", "/crm/v3/objects/tasks", created("4101"))
        connector = HubSpotConnector(load_hubspot_settings(
            base_url=hubspot_proxy, token=TOKEN, owners={"csm@example.com": "77"}),
                                     company_of=account_field(store, "hubspot_company_id"), transport=spec)
        try:
            await connector.act(task(account_id="acct-1"))
            with pytest.raises(cb.MissingDataError, match="account acct-2 has no HubSpot company id"):
                await connector.act(task(account_id="acct-2", key=KEY + "-2"))
        finally:
            await connector.aclose()
        [body] = received(wiremock, "POST", "/crm/v3/objects/tasks")
        assert body["associations"][0]["to"] == {"id": "31337"}
        with pytest.raises(cb.PermanentError, match="no field 'hubspot_id'"):
            await account_field(store, "hubspot_id")("acct-1")
    finally:
        store.close()
