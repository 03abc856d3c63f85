"""The peers themselves start, answer, and are gone once stopped."""

from __future__ import annotations

import httpx
import pytest

import peers


def test_wiremock_serves_a_stub_and_records_the_request(wiremock: peers.WireMock) -> None:
    wiremock.stub({"request": {"method": "GET", "url": "/ping"}, "response": {"status": 418, "body": "tea"}})
    r = httpx.get(wiremock.url + "/ping")
    assert (r.status_code, r.text) == (418, "tea")
    assert [q["url"] for q in wiremock.requests()] == ["/ping"]


def test_prism_validates_requests_against_hubspots_spec(hubspot_prism: str) -> None:
    no_token = httpx.post(hubspot_prism + "/crm/v3/objects/tasks", json={"properties": {}})
    assert no_token.status_code == 401


def test_a_stopped_peer_no_longer_answers() -> None:
    with peers.prism_mock(peers.HUBSPOT / "objects.json") as url:
        assert httpx.get(url + "/nowhere").status_code == 404
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/nowhere", timeout=2)
