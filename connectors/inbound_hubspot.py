"""HubSpot webhooks (`POST /hubspot`), signed with HubSpot's v3 signature.

`X-HubSpot-Signature-v3` is base64(HMAC-SHA256(client secret, method + URI +
body + timestamp)), `X-HubSpot-Request-Timestamp` epoch milliseconds; a
timestamp more than 5 minutes old is refused (HubSpot's own rule). The URI is
the one HubSpot called: `public_url` + path and query when that setting is
given (behind a proxy), else the request's own URL.

The body is a batch (a JSON array) of subscription events. Each
`deal.propertyChange` of `dealstage` becomes a `stage_changed` event for the
account whose opportunity mirrors the deal (opportunities.external_id =
objectId), the stage id mapped through the `hubspot_stages` setting (HubSpot's
`closedwon` / `closedlost` -> Closed Won / Closed Lost; other ids pass through).
Every other subscription type is `Ignored` (answered 202, logged). `eventId` is
the idempotency key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from pydantic import SecretStr

from connectors.inbound import Ignored, Incoming, Refused, parse_time

SOURCE = "hubspot"
MAX_AGE_MS = 5 * 60 * 1000


def signature(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    source = method.encode() + uri.encode() + body + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), source, hashlib.sha256).digest()).decode()


def verify(secret: SecretStr, method: str, uri: str, headers: Mapping[str, str], body: bytes,
           now_ms: int | None = None) -> None:
    """Refused(401) unless the v3 signature matches and the timestamp is fresh."""
    lower = {k.lower(): v for k, v in headers.items()}
    given, stamp = lower.get("x-hubspot-signature-v3"), lower.get("x-hubspot-request-timestamp")
    if not given or not stamp:
        raise Refused(401, "signature: missing X-HubSpot-Signature-v3 or X-HubSpot-Request-Timestamp")
    try:
        at = int(stamp)
    except ValueError:
        raise Refused(401, "signature: X-HubSpot-Request-Timestamp is not epoch milliseconds") from None
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    if now - at > MAX_AGE_MS:
        raise Refused(401, f"signature: timestamp {(now - at) // 1000} s old (over 5 minutes: a replay?)")
    # HubSpot signs the URI with URL-encoded characters decoded (its docs), except the '?' of the query.
    wanted = signature(secret.get_secret_value(), method.upper(), unquote(uri), body, stamp)
    if not hmac.compare_digest(wanted, given):
        # HubSpot's own code (hubspot.utils.signature) signs the URI as given: accept that too.
        if not hmac.compare_digest(signature(secret.get_secret_value(), method.upper(), uri, body, stamp), given):
            raise Refused(401, "signature: X-HubSpot-Signature-v3 does not match")


def parse(body: bytes, stages: Mapping[str, str]) -> list[Incoming | Ignored]:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Refused(400, f"body is not JSON: {exc}") from None
    if isinstance(doc, dict):
        doc = [doc]
    if not isinstance(doc, list) or not all(isinstance(e, dict) for e in doc):
        raise Refused(400, "body is not a JSON array of events")
    return [_event(e, stages) for e in doc]


def _event(e: dict[str, Any], stages: Mapping[str, str]) -> Incoming | Ignored:
    event_id, kind = e.get("eventId"), e.get("subscriptionType")
    if event_id is None or not isinstance(kind, str):
        raise Refused(422, "an event lacks eventId or subscriptionType")
    key = f"{SOURCE}:{event_id}"
    if kind != "deal.propertyChange" or e.get("propertyName") != "dealstage":
        what = kind + (f" of {e.get('propertyName')}" if e.get("propertyName") else "")
        return Ignored(key, f"{what} is not handled (only deal.propertyChange of dealstage)")
    deal, value = e.get("objectId"), e.get("propertyValue")
    if deal is None or not isinstance(value, str) or not value:
        raise Refused(422, f"event {event_id}: a dealstage change needs objectId and propertyValue")
    stage = stages.get(value, value)
    return Incoming(key=key, source=SOURCE, kind="stage_changed", deal_id=str(deal), stage=stage,
                    occurred_at=parse_time(e.get("occurredAt"), f"event {event_id} occurredAt"),
                    payload={k: e.get(k) for k in ("eventId", "portalId", "objectId", "propertyValue",
                                                   "changeSource", "occurredAt")})
