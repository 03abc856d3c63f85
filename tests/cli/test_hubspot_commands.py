"""`playbook hubspot-pipeline` (cli/hubspot_commands.py) against Prism with HubSpot's pipelines spec, WireMock behind it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

import peers
from cli.main import run
from dsl import pipeline as csql
from hubspot_shapes import JSON

TOKEN = "pat-na1-99999999-8888-7777-6666-555555555555"
AT = "2026-01-01T00:00:00.000Z"


@pytest.fixture(scope="module")
def pipelines_proxy(_wiremock_process: peers.WireMock) -> Iterator[str]:
    with peers.prism_proxy(peers.HUBSPOT / "pipelines.json", _wiremock_process.url) as url:
        yield url


@pytest.fixture
def hubspot(pipelines_proxy: str, wiremock: peers.WireMock, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
            ) -> peers.WireMock:
    for name in list(os.environ):
        if name.startswith("PLAYBOOK_HUBSPOT_") or name == "PLAYBOOK_SETTINGS_FILE":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PLAYBOOK_HUBSPOT_BASE_URL", pipelines_proxy)
    monkeypatch.setenv("PLAYBOOK_HUBSPOT_TOKEN", TOKEN)
    return wiremock


def pipeline(pipeline_id: str, stages: list[tuple[str, str]]) -> dict[str, Any]:
    """HubSpot's Pipeline answer."""
    return {"headers": JSON, "jsonBody": {
        "id": pipeline_id, "label": "Expansion (CSQL)", "displayOrder": 0, "archived": False, "createdAt": AT,
        "updatedAt": AT, "stages": [
            {"id": sid, "label": label, "displayOrder": i, "archived": False, "metadata": {"probability": "0.5"},
             "createdAt": AT, "updatedAt": AT} for i, (sid, label) in enumerate(stages)]}}


def test_create_makes_the_seven_stages_and_prints_the_settings_that_map_onto_them(hubspot, capsys):
    made = [(str(1001 + i), name) for i, name in enumerate(csql.NAMES)]
    hubspot.stub({"request": {"method": "POST", "urlPath": "/crm/v3/pipelines/deals"},
                  "response": {"status": 201, **pipeline("900", made)}})
    assert run(["hubspot-pipeline", "--create"]) == 0
    out = capsys.readouterr().out
    assert '[hubspot]\npipeline = "900"\n\n[hubspot.stages]\n"Trigger Fired" = "1001"' in out
    assert '"Closed Lost" = "1007"' in out
    [sent] = [json.loads(r["body"]) for r in hubspot.requests()]  # Prism let it through: HubSpot's shape
    assert [(s["label"], s["metadata"]["probability"]) for s in sent["stages"]] == [
        ("Trigger Fired", "0.1"), ("CSQL Created", "0.2"), ("Qualified", "0.4"), ("Proposal Sent", "0.6"),
        ("Negotiation", "0.8"), ("Closed Won", "1.0"), ("Closed Lost", "0.0")]


def test_the_mapping_is_checked_against_the_pipeline(hubspot, capsys):
    present = [("appointmentscheduled", "Appointment scheduled"), ("qualifiedtobuy", "Qualified to buy"),
               ("presentationscheduled", "Presentation scheduled"), ("decisionmakerboughtin", "Decision maker"),
               ("closedwon", "Closed won"), ("closedlost", "Closed lost")]
    hubspot.stub({"request": {"method": "GET", "urlPath": "/crm/v3/pipelines/deals/default"},
                  "response": {"status": 200, **pipeline("default", present)}})
    assert run(["hubspot-pipeline"]) == 1
    out = capsys.readouterr().out
    assert "Qualified      -> presentationscheduled  Presentation scheduled" in out
    assert "Negotiation    -> contractsent  NOT IN THE PIPELINE" in out
    assert "1 stage(s) map onto ids the pipeline does not have" in out


def test_a_complete_mapping_is_exit_0_and_json_on_request(hubspot, capsys):
    from connectors.hubspot import DEFAULT_STAGES

    hubspot.stub({"request": {"method": "GET", "urlPath": "/crm/v3/pipelines/deals/default"},
                  "response": {"status": 200, **pipeline("default", [(s, s) for s in DEFAULT_STAGES.values()])}})
    assert run(["hubspot-pipeline", "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["ok"] is True and [r["stage"] for r in shown["stages"]] == list(csql.NAMES)


def test_hubspot_not_answering_is_exit_4(hubspot, monkeypatch, capsys):
    monkeypatch.setenv("PLAYBOOK_HUBSPOT_BASE_URL", f"http://127.0.0.1:{peers.free_port()}")
    assert run(["hubspot-pipeline"]) == 4
    assert "connection failed" in capsys.readouterr().err


def test_a_refused_token_is_exit_2_without_the_token(hubspot, capsys):
    hubspot.stub({"request": {"method": "GET", "urlPath": "/crm/v3/pipelines/deals/default"},
                  "response": {"status": 401, "headers": JSON, "jsonBody": {
                      "message": "Authentication credentials not found.", "category": "INVALID_AUTHENTICATION",
                      "correlationId": "aeb5f871-7f07-4993-9211-075dc63e7cbf"}}})
    assert run(["hubspot-pipeline"]) == 2
    err = capsys.readouterr().err
    assert "token was refused (401)" in err and "PLAYBOOK_HUBSPOT_TOKEN" in err and TOKEN not in err
