"""Postmark's webhooks (`POST /postmark`), protected by HTTP basic auth.

Postmark has no signature: the webhook URL carries basic-auth credentials
(`https://USER:PASSWORD@host/postmark`), checked against the
`postmark_user` / `postmark_password` settings. One endpoint takes the
shapes Postmark posts:

| Postmark body | becomes |
|---|---|
| inbound message (no `RecordType`; `Headers`, `FromFull`) | `replied`, matched by In-Reply-To / References to the sent message, else by the sender's address |
| `RecordType: Bounce`, a hard type (HardBounce, BadEmailAddress, ...) | `bounced`, the address suppressed |
| `RecordType: Bounce`, a soft type (SoftBounce, Transient, ...) | ignored (202): Postmark retries those itself |
| `RecordType: SpamComplaint` | `unsubscribed`, the address suppressed |
| `RecordType: SubscriptionChange` with `SuppressSending: true` | `unsubscribed`, the address suppressed |
| anything else (Delivery, Open, Click, a reactivation) | ignored (202) |

Bounces and complaints find their message by Postmark's `MessageID` (what
its send API returns, stored in outbox.provider_message_id by an HTTP
connector), else by `Email`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr

from connectors.inbound import Ignored, Incoming, Refused, parse_time

SOURCE = "postmark"
HARD_BOUNCES = frozenset({"HardBounce", "BadEmailAddress", "ManuallyDeactivated", "AddressChange", "Unsubscribe",
                          "Blocked", "DMARCPolicy"})


def verify(user: str, password: SecretStr, headers: Mapping[str, str]) -> None:
    """Refused(401) unless the request carries the configured basic-auth credentials."""
    auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "basic" or not token:
        raise Refused(401, "basic auth required")
    try:
        given_user, _, given_password = base64.b64decode(token, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise Refused(401, "basic auth: malformed credentials") from None
    ok_user = hmac.compare_digest(given_user.encode(), user.encode())
    ok_password = hmac.compare_digest(given_password.encode(), password.get_secret_value().encode())
    if not (ok_user and ok_password):
        raise Refused(401, "basic auth: wrong user or password")


def parse(body: bytes) -> Incoming | Ignored:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Refused(400, f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise Refused(400, "body is not a JSON object")
    record = doc.get("RecordType")
    if record is None and ("FromFull" in doc or "Headers" in doc):
        return _inbound(doc)
    if record == "Bounce":
        return _bounce(doc)
    if record == "SpamComplaint":
        return _suppressing(doc, f"{SOURCE}:spam:{_need(doc, 'ID')}", doc.get("Email"), doc.get("BouncedAt"))
    if record == "SubscriptionChange":
        key = f"{SOURCE}:subscription:{_need(doc, 'MessageID')}:{doc.get('ChangedAt')}"
        if doc.get("SuppressSending") is not True:
            return Ignored(key, "a subscription change that does not suppress sending")
        return _suppressing(doc, key, doc.get("Recipient"), doc.get("ChangedAt"))
    return Ignored(f"{SOURCE}:{record}:{doc.get('MessageID') or doc.get('ID')}", f"RecordType {record!r} is not handled")


def _need(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if value is None or value == "":
        raise Refused(422, f"{doc.get('RecordType') or 'inbound message'} without {key}")
    return str(value)


def _inbound(doc: dict[str, Any]) -> Incoming:
    headers = {h.get("Name", "").lower(): h.get("Value", "") for h in doc.get("Headers") or []
               if isinstance(h, dict)}
    refs = [headers.get("in-reply-to", "")] + list(reversed(headers.get("references", "").split()))
    sender = (doc.get("FromFull") or {}).get("Email") if isinstance(doc.get("FromFull"), dict) else None
    message_id = headers.get("message-id") or _need(doc, "MessageID")
    return Incoming(key=f"{SOURCE}:inbound:{message_id}", source=SOURCE, kind="replied",
                    email=sender or doc.get("From"), message_ids=tuple(r for r in refs if r),
                    occurred_at=_date(doc.get("Date")),
                    payload={"from": sender, "subject": doc.get("Subject"), "message_id": message_id})


def _bounce(doc: dict[str, Any]) -> Incoming | Ignored:
    key = f"{SOURCE}:bounce:{_need(doc, 'ID')}"
    if doc.get("Type") not in HARD_BOUNCES:
        return Ignored(key, f"a {doc.get('Type')} bounce is not final")
    email = _need(doc, "Email")
    return Incoming(key=key, source=SOURCE, kind="bounced", email=email, suppress=True,
                    message_ids=(str(doc["MessageID"]),) if doc.get("MessageID") else (),
                    occurred_at=parse_time(doc.get("BouncedAt"), "BouncedAt"),
                    payload={k: doc.get(k) for k in ("ID", "Type", "MessageID", "Email", "Description")})


def _suppressing(doc: dict[str, Any], key: str, email: Any, at: Any) -> Incoming:
    if not isinstance(email, str) or not email:
        raise Refused(422, f"{doc.get('RecordType')} without the recipient's address")
    return Incoming(key=key, source=SOURCE, kind="unsubscribed", email=email, suppress=True,
                    message_ids=(str(doc["MessageID"]),) if doc.get("MessageID") else (),
                    occurred_at=parse_time(at, "time"),
                    payload={k: doc.get(k) for k in ("RecordType", "MessageID", "SuppressionReason")})


def _date(value: Any) -> Any:
    """An inbound message's Date header (RFC 5322); None when it cannot be read."""
    from email.utils import parsedate_to_datetime

    try:
        return parsedate_to_datetime(value) if isinstance(value, str) and value else None
    except (TypeError, ValueError):
        return None
