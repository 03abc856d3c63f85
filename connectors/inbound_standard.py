"""Generic events signed per the Standard Webhooks spec (`POST /events`).

Headers `webhook-id`, `webhook-timestamp`, `webhook-signature` (verified with
the spec authors' `standardwebhooks` package: HMAC-SHA256 of
`id.timestamp.body`, timestamps more than 5 minutes away refused). The body:

    {"type": "replied", "timestamp": "2026-03-09T10:00:00Z",
     "data": {"account_id": "acme", "email": "ada@acme.test", "stage": "Negotiation"}}

`type` is an inbound event name (replied, bounced, unsubscribed, meeting_booked,
stage_changed, closed_won, closed_lost); `data` names the account by
`account_id`, or by a contact's `email`; `stage_changed` needs `stage`.
`unsubscribed` (and `bounced` with `"hard": true`) stops every later email
to `email`. The `webhook-id` is the idempotency key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from connectors.inbound import KINDS, Incoming, Refused, parse_time
from dsl.suggest import closest

SOURCE = "standard"


def verify(secret: SecretStr, headers: Mapping[str, str], body: bytes) -> None:
    """Refused(401) unless `body` carries a valid, fresh signature."""
    try:
        hook = Webhook(secret.get_secret_value())
    except Exception as exc:  # noqa: BLE001 - a malformed secret: the setting, not the request
        raise Refused(500, f"the webhook_secret setting is not a Standard Webhooks secret ({type(exc).__name__})")
    try:
        hook.verify(body, dict(headers), json_parse=False)
    except WebhookVerificationError as exc:
        reason = str(exc) or "verification failed"
        if "timestamp" in reason.lower():
            reason += " (outside the 5 minute tolerance: a replay or a skewed clock)"
        raise Refused(401, f"signature: {reason}") from None


def parse(headers: Mapping[str, str], body: bytes) -> Incoming:
    """The event of a verified request (Refused 400 for a body that is no JSON object, 422 for a bad event)."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Refused(400, f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise Refused(400, "body is not a JSON object")
    kind = doc.get("type")
    if kind not in KINDS:
        near = closest(str(kind), KINDS) if isinstance(kind, str) else None
        raise Refused(422, f"type {str(kind)[:40]!r} is no inbound event"
                           + (f"; did you mean '{near}'?" if near else f" ({', '.join(KINDS)})"))
    data = doc.get("data", {})
    if not isinstance(data, dict):
        raise Refused(422, "data must be an object")
    account, email, stage = (_text(data, k) for k in ("account_id", "email", "stage"))
    if account is None and email is None:
        raise Refused(422, "data names no account: give account_id or email")
    if kind == "stage_changed" and stage is None:
        raise Refused(422, "stage_changed needs data.stage")
    msg_id = next((v for k, v in headers.items() if k.lower() == "webhook-id"), "")
    suppress = kind == "unsubscribed" or (kind == "bounced" and data.get("hard") is True)
    return Incoming(key=f"{SOURCE}:{msg_id}", source=SOURCE, kind=kind, account_id=account, email=email,
                    stage=stage, occurred_at=parse_time(doc.get("timestamp"), "timestamp"), suppress=suppress,
                    payload={"type": kind, "data": data})


def _text(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Refused(422, f"data.{key} must be a string")
    return value.strip()
