"""Helpers of the inbound suites: a store with two accounts, `playbook serve`'s app on a real
uvicorn server in a thread on a free loopback port, and request signers (the providers' own code)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import uvicorn
from hubspot.utils.signature import Signature
from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook

from connectors.inbound import ServeSettings
from engine import schema
from engine.store import Store
from workflows.inbound import Inbound
from workflows.serve import build_app, server_config

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"a test secret of 24 bytes").decode()
HUBSPOT_SECRET = "hubspot-client-secret"
POSTMARK = ("postmark", "pm-password")
UNSUB_SECRET = "unsubscribe-secret"
SENT_ID = "<play.usage_limit.acme.1@playbook.test>"  # the Message-ID the email connector stored
AT = dt.datetime(2026, 3, 9, 14, 0, tzinfo=dt.timezone.utc)


def settings(**overrides: Any) -> ServeSettings:
    values: dict[str, Any] = {
        "webhook_secret": SecretStr(WEBHOOK_SECRET), "hubspot_client_secret": SecretStr(HUBSPOT_SECRET),
        "postmark_user": POSTMARK[0], "postmark_password": SecretStr(POSTMARK[1]),
        "unsubscribe_secret": SecretStr(UNSUB_SECRET), "retry_seconds": 0.2} | overrides
    return ServeSettings(**values)


def seeded_store(path: Path) -> Store:
    """acme (contact ada, deal 9001, a sent email, running usage_limit) and beta (contact bob)."""
    store = Store.open(f"sqlite:///{path}")
    with store.begin() as conn:
        conn.execute(schema.Account.__table__.insert(), [{"id": "acme", "name": "Acme"}, {"id": "beta", "name": "Beta"}])
        conn.execute(schema.Contact.__table__.insert(), [
            {"id": "c1", "account_id": "acme", "email": "Ada@acme.test"},
            {"id": "c2", "account_id": "beta", "email": "bob@beta.test"}])
        conn.execute(schema.Opportunity.__table__.insert(), [
            {"id": "o1", "account_id": "acme", "play": "usage_limit", "stage": "Qualified", "external_id": "9001"}])
        conn.execute(schema.OutboxMessage.__table__.insert(), [
            {"idempotency_key": "play:usage_limit:acme:h:e:day1", "channel": "email", "recipient": "Ada@acme.test",
             "subject": "Hi", "body": "Hi", "status": "sent", "account_id": "acme", "play": "usage_limit",
             "provider_message_id": SENT_ID}])
        conn.execute(schema.Enrollment.__table__.insert(), [
            {"workflow_id": "play:usage_limit:acme", "play": "usage_limit", "account_id": "acme", "plan_hash": "h",
             "status": "running"}])
    return store


def events(store: Store) -> list[dict[str, Any]]:
    with store.connect() as conn:
        t = schema.InboundEvent.__table__
        return [dict(r) for r in conn.execute(sa.select(t).order_by(t.c.id)).mappings()]


def unsubscribed(store: Store, contact: str, column: str = "unsubscribed_at") -> dt.datetime | None:
    with store.connect() as conn:
        t = schema.Contact.__table__
        return conn.execute(sa.select(t.c[column]).where(t.c.id == contact)).scalar_one()


@contextmanager
def serving(inbound: Inbound, serve_settings: ServeSettings, background: Any = None,
            extra_routes: Any = (), wrap: Any = None) -> Iterator[str]:
    """The app on uvicorn in its own thread and event loop; yields its base URL. `wrap(app)`: an ASGI
    app around it (a test's fault injection)."""
    app = build_app(inbound, serve_settings, background, extra_routes)
    app = wrap(app) if wrap is not None else app
    server = uvicorn.Server(server_config(app, "127.0.0.1", 0))
    thread = threading.Thread(target=server.run, name="serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def standard(kind: str, data: dict[str, Any], *, msg_id: str | None = None, at: dt.datetime | None = None,
             secret: str = WEBHOOK_SECRET) -> tuple[bytes, dict[str, str]]:
    """A body and the Standard Webhooks headers that sign it (the spec authors' package)."""
    body = json.dumps({"type": kind, "timestamp": AT.isoformat(), "data": data}).encode()
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    at = at or dt.datetime.now(dt.timezone.utc)
    sig = Webhook(secret).sign(msg_id, at, body)
    return body, {"webhook-id": msg_id, "webhook-timestamp": str(int(at.timestamp())), "webhook-signature": sig,
                  "content-type": "application/json"}


def hubspot(url: str, events_: list[dict[str, Any]], *, age_ms: int = 0,
            secret: str = HUBSPOT_SECRET) -> tuple[bytes, dict[str, str]]:
    """A batch signed with HubSpot's v3 signature by HubSpot's own client code."""
    body = json.dumps(events_)
    stamp = str(int(time.time() * 1000) - age_ms)
    sig = Signature.get_signature(secret, body, "v3", http_uri=url, http_method="POST", timestamp=stamp)
    return body.encode(), {"X-HubSpot-Signature-v3": sig, "X-HubSpot-Request-Timestamp": stamp,
                           "content-type": "application/json"}


def deal_stage(event_id: int, deal: int, stage: str) -> dict[str, Any]:
    return {"eventId": event_id, "subscriptionId": 1, "portalId": 62515, "appId": 1, "occurredAt": 1773064800000,
            "subscriptionType": "deal.propertyChange", "attemptNumber": 0, "objectId": deal,
            "propertyName": "dealstage", "propertyValue": stage, "changeSource": "CRM"}
