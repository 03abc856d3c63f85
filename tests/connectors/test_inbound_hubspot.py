"""HubSpot webhooks: v3 signatures as HubSpot's own code makes them, and what a batch becomes."""

from __future__ import annotations

import json
import time

import pytest
from hubspot.utils.signature import Signature
from pydantic import SecretStr

from connectors.inbound import DEFAULT_STAGES, Ignored, Incoming, Refused
from connectors.inbound_hubspot import parse, verify

SECRET = "app-secret"


def signed(uri: str, body: str, stamp: int) -> dict[str, str]:
    sig = Signature.get_signature(SECRET, body, "v3", http_uri=uri, http_method="POST", timestamp=str(stamp))
    return {"X-HubSpot-Signature-v3": sig, "X-HubSpot-Request-Timestamp": str(stamp)}


def test_a_signature_over_a_uri_with_a_query_verifies():
    uri, body, now = "https://events.acme.test/hubspot?portal=62515", "[]", int(time.time() * 1000)
    verify(SecretStr(SECRET), "POST", uri, signed(uri, body, now), body.encode(), now_ms=now)


@pytest.mark.parametrize("change", ["method", "uri", "body", "stale", "missing"])
def test_any_change_to_what_was_signed_is_refused(change):
    uri, body, now = "https://events.acme.test/hubspot", "[]", int(time.time() * 1000)
    headers = signed(uri, body, now)
    method, at = "POST", now
    if change == "method":
        method = "PUT"
    elif change == "uri":
        uri += "x"
    elif change == "body":
        body = "[ ]"
    elif change == "stale":
        at = now + 5 * 60 * 1000 + 1
    else:
        headers.pop("X-HubSpot-Signature-v3")
    with pytest.raises(Refused) as got:
        verify(SecretStr(SECRET), method, uri, headers, body.encode(), now_ms=at)
    assert got.value.status == 401


def test_a_batch_maps_deal_stages_and_ignores_the_rest():
    batch = [{"eventId": 1, "subscriptionType": "deal.propertyChange", "propertyName": "dealstage", "objectId": 7,
              "propertyValue": "closedlost", "occurredAt": 1773064800000},
             {"eventId": 2, "subscriptionType": "deal.propertyChange", "propertyName": "dealstage", "objectId": 7,
              "propertyValue": "123456"},
             {"eventId": 3, "subscriptionType": "deal.propertyChange", "propertyName": "amount", "objectId": 7}]
    first, second, third = parse(json.dumps(batch).encode(), {**DEFAULT_STAGES, "123456": "Negotiation"})
    assert isinstance(first, Incoming) and (first.deal_id, first.stage, first.key) == ("7", "Closed Lost", "hubspot:1")
    assert isinstance(second, Incoming) and second.stage == "Negotiation"
    assert isinstance(third, Ignored) and "amount" in third.reason


@pytest.mark.parametrize("body, status", [(b"not json", 400), (b'"x"', 400), (b'[{"subscriptionType": "x"}]', 422)])
def test_a_body_that_is_no_batch_is_refused(body, status):
    with pytest.raises(Refused) as got:
        parse(body, DEFAULT_STAGES)
    assert got.value.status == status
