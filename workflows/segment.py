"""A Segment-compatible tracking API in `playbook serve`: /v1/track, /v1/identify, /v1/group, /v1/batch.

A team points its Segment (or RudderStack) destination, or its own
analytics-python client, at serve. Basic auth with a write key from the
`segment_write_keys` setting as user name. Per request:

* refused whole (status, `{"error"}`, one log line): 401 no or an unknown
  write key, 400 a body that is not JSON or not a message / batch, over
  500 KB, or a message over 32 KB (Segment's limits), 503 the store down;
* otherwise 200, each message `accepted`, a `duplicate` (its messageId
  already stored), or listed in `ignored` with a reason: an undeclared
  event, a call naming no known account or contact, a type we do not keep
  (page, screen, alias), or a value the importer refuses (nothing of that
  message written). Ignored messages are not worth the client's retry.

Mapping (docs/serve.md): `track` -> an `events` row (declared `event`s
only; properties as payload); `identify` traits -> contact fields of
`userId` (and declared account fields, also from `traits.company`); `group`
traits -> the fields of account `groupId`. The account: `context.groupId`,
else `traits.company.id`, else the contact `userId`, else the contact with
`traits.email`. Writes go through engine/tracking.py (the bulk importer,
field history).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import gzip
import hmac
import json
import logging
import zlib
from typing import Any

from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.inbound import Refused, parse_time
from dsl.catalog import Catalog
from engine import tracking
from engine.importers import entity_columns
from engine.store import Store
from workflows.serve import guarded, read_body

log = logging.getLogger("playbook.serve.segment")

MAX_MESSAGE = 32 * 1024  # Segment's documented limits, in bytes
MAX_BATCH = 500 * 1024
KEPT = ("track", "identify", "group")
_NOT_FIELDS = {"id", "account_id", "unsubscribed_at"}  # set by the mapping, never by a trait


def routes(store: Store, catalog: Catalog, write_keys: list[SecretStr]) -> list[Route]:
    """The /v1 routes, to add to serve's app (workflows/serve.py build_app)."""
    lock = asyncio.Lock()  # one request's import at a time: the store serialises writers anyway

    async def endpoint(request: Request) -> Response:
        kind = request.url.path.rsplit("/", 1)[-1]
        _authorised(request, write_keys)
        body = await _body(request)
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise Refused(400, f"the body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise Refused(400, "the body must be a JSON object")
        if kind == "batch":
            messages = data.get("batch")
            if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
                raise Refused(400, "a batch needs `batch`: a list of message objects")
            context = data.get("context") if isinstance(data.get("context"), dict) else {}
            messages = [{**m, "context": {**context, **(m.get("context") or {})}} if context else m for m in messages]
        else:
            messages = [{**data, "type": kind}]
        for m in messages:
            size = len(json.dumps(m, separators=(",", ":"), ensure_ascii=False).encode())
            if size > MAX_MESSAGE:
                raise Refused(400, f"message {str(m.get('messageId'))[:64]!r} is {size} bytes; "
                                   f"the limit is {MAX_MESSAGE} (32 KB)")
        async with lock:
            result = await asyncio.to_thread(record, store, catalog, messages)
        for mid, reason in result["ignored"]:
            log.info("%s %s: ignored %s: %s", request.method, request.url.path, mid, reason)
        log.info("%s %s: %d accepted (%d already stored), %d ignored, %d unknown field(s)", request.method,
                 request.url.path, result["accepted"], result["duplicates"], len(result["ignored"]),
                 result["unknown_fields"])
        return JSONResponse({"success": True, **result,
                             "ignored": [{"messageId": m, "reason": r} for m, r in result["ignored"]]})

    return [Route(f"/v1/{name}", guarded(endpoint), methods=["POST"]) for name in (*KEPT, "batch")]


def _authorised(request: Request, write_keys: list[SecretStr]) -> None:
    if not write_keys:
        raise Refused(404, "the tracking API is off (no segment_write_keys setting)")
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise Refused(401, "no write key (basic auth, the write key as user name)")
    try:
        key = base64.b64decode(encoded, validate=True).decode().partition(":")[0]
    except (binascii.Error, UnicodeDecodeError):
        raise Refused(401, "basic auth that is not base64") from None
    # Every key compared, so the time taken says nothing about which one nearly matched.
    if not any([hmac.compare_digest(key.encode(), k.get_secret_value().encode()) for k in write_keys]):
        raise Refused(401, "unknown write key")


async def _body(request: Request) -> bytes:
    body = await read_body(request, MAX_BATCH,
                           Refused(400, f"the body is over {MAX_BATCH} bytes (500 KB, Segment's batch limit)"))
    if request.headers.get("content-encoding", "").lower() == "gzip":
        try:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            body = d.decompress(body, MAX_BATCH + 1)
        except (zlib.error, gzip.BadGzipFile) as exc:
            raise Refused(400, f"the body is not gzip: {exc}") from None
        if len(body) > MAX_BATCH:
            raise Refused(400, f"the body is over {MAX_BATCH} bytes once unzipped")
    return body


# --------------------------------------------------------------------------
# Messages -> rows


def record(store: Store, catalog: Catalog, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Map and write `messages`; what became of them (the response body)."""
    contact_cols = {c for c in entity_columns("contacts", catalog) if c not in _NOT_FIELDS}
    account_cols = {c for c in entity_columns("accounts", catalog) if c not in _NOT_FIELDS}
    found = tracking.lookup(store, *_refs(messages))
    ignored: list[tuple[str, str]] = []
    rows: list[tracking.Rows] = []
    unknown = 0
    now = dt.datetime.now(dt.timezone.utc)
    for m in messages:
        mid = m.get("messageId")
        if not isinstance(mid, str) or not mid:
            ignored.append((str(mid) if mid else "(none)", "no messageId: it could not be stored once"))
            continue
        kind = m.get("type")
        if kind not in KEPT:
            ignored.append((mid, f"a {kind or 'typeless'} call is not recorded (track, identify and group are)"))
            continue
        try:
            got, skipped = _map(m, mid, kind, found, catalog, contact_cols, account_cols, now)
        except Refused as exc:
            ignored.append((mid, exc.reason))
            continue
        unknown += skipped
        rows.append(got)
    written = tracking.write(store, catalog, rows)
    ignored.extend(written.refused)
    return {"accepted": written.accepted - min(written.duplicates, written.accepted),
            "duplicates": written.duplicates, "changed_values": written.changed_values,
            "ignored": ignored, "unknown_fields": unknown}


def _refs(messages: list[dict[str, Any]]) -> tuple[set[str], set[str], set[str]]:
    users, emails, accounts = set(), set(), set()
    for m in messages:
        if isinstance(m.get("userId"), (str, int)):
            users.add(str(m["userId"]))
        traits = _traits(m)
        if isinstance(traits.get("email"), str):
            emails.add(traits["email"])
        group = _group(m)
        if group:
            accounts.add(group)
    return users, emails, accounts


def _traits(m: dict[str, Any]) -> dict[str, Any]:
    for t in (m.get("traits"), (m.get("context") or {}).get("traits")):
        if isinstance(t, dict) and t:
            return t
    return {}


def _group(m: dict[str, Any]) -> str | None:
    """The account a message names itself: group's groupId, context.groupId, traits.company.id."""
    company = _traits(m).get("company")
    for g in (m.get("groupId") if m.get("type") == "group" else None, (m.get("context") or {}).get("groupId"),
              company.get("id") if isinstance(company, dict) else None):
        if isinstance(g, (str, int)) and not isinstance(g, bool) and str(g):
            return str(g)
    return None


def _map(m: dict[str, Any], mid: str, kind: str, found: tracking.Found, catalog: Catalog, contact_cols: set[str],
         account_cols: set[str], now: dt.datetime) -> tuple[tracking.Rows, int]:
    user = str(m["userId"]) if isinstance(m.get("userId"), (str, int)) and str(m["userId"]) else None
    traits = _traits(m) if kind != "track" else {}
    email = traits.get("email") if isinstance(traits.get("email"), str) else None
    contact = user if user in found.contact_account else None
    account = _group(m)
    if account is not None and account not in found.accounts:
        raise Refused(422, f"account {account!r} does not exist")
    if contact is None and email is not None and user is None:
        holders = found.email_contacts.get(email.lower(), [])
        if len(holders) == 1:
            contact = holders[0][0]
    if account is None and contact is not None:
        account = found.contact_account.get(contact)
    if account is None and email is not None:
        holders = found.email_contacts.get(email.lower(), [])
        if len({a for _, a in holders}) == 1:
            account = holders[0][1]
    if kind == "track":
        if (m.get("context") or {}).get("traits", {}).get("email") and account is None:
            holders = found.email_contacts.get(str(m["context"]["traits"]["email"]).lower(), [])
            account = holders[0][1] if len({a for _, a in holders}) == 1 else None
        event = m.get("event")
        if not isinstance(event, str) or not event:
            raise Refused(422, "a track call without an event name")
        if event not in catalog.events:
            raise Refused(422, f"{event!r} is not a declared event; declared: {', '.join(sorted(catalog.events)) or 'none'}")
        if account is None:
            raise Refused(422, "names no known account (context.groupId, or a known userId or email)")
        at = parse_time(m.get("timestamp") or m.get("originalTimestamp"), "timestamp") or now
        props: dict[str, Any] = m["properties"] if isinstance(m.get("properties"), dict) else {}
        payload = {**({"user_id": user} if user else {}), **props}
        return tracking.Rows(mid, event={"id": mid, "account_id": account, "event": event, "occurred_at": at,
                                         "payload": payload}), 0
    company: dict[str, Any] = traits["company"] if isinstance(traits.get("company"), dict) else {}
    rows = tracking.Rows(mid)
    if kind == "group":
        if account is None:
            raise Refused(422, "a group call without a groupId")
        values = {k: v for k, v in (m.get("traits") or {}).items() if k in account_cols}
        if values:
            rows.account = {"id": account, **values}
        unknown = len(m.get("traits") or {}) - len(values)
        return rows, unknown
    # An object or list is no field value (`company` is Segment's object of account traits).
    scalars = {k: v for k, v in traits.items() if not isinstance(v, (dict, list))}
    contact_values = {k: v for k, v in scalars.items() if k in contact_cols}
    account_values = {k: v for k, v in scalars.items() if k in account_cols and k not in contact_cols}
    account_values.update({k: v for k, v in company.items() if k in account_cols})
    used = set(contact_values) | set(account_values) | ({"company"} if company else set())
    contact_id = contact or user
    contact_account = found.contact_account.get(contact_id) if contact_id else None
    if contact_id is not None and (contact_account or account) and contact_values:
        rows.contact = {"id": contact_id, "account_id": contact_account or account, **contact_values}
    if account is not None and account_values:
        rows.account = {"id": account, **account_values}
    if rows.contact is None and rows.account is None and (contact_values or account_values):
        raise Refused(422, "names no known contact or account (userId, context.groupId, traits.company.id or email)")
    return rows, len(traits) - len(used)


__all__ = ["MAX_BATCH", "MAX_MESSAGE", "record", "routes"]
