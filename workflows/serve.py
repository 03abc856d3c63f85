"""`playbook serve`: one ASGI app (Starlette, served by uvicorn) for inbound provider events.

    POST /events        Standard Webhooks-signed generic events    connectors/inbound_standard.py
    POST /hubspot       HubSpot webhooks, v3 signature             connectors/inbound_hubspot.py
    POST /postmark      Postmark inbound / bounce / subscription   connectors/inbound_postmark.py
    POST /v1/track|identify|group|batch   Segment-compatible tracking   workflows/segment.py
    GET|POST /unsubscribe   one-click unsubscribe (RFC 8058)       connectors/unsubscribe.py
    GET /healthz        liveness, and how many signals wait

Every request is verified first; an accepted event is recorded in the store
before anything else (workflows/inbound.py) and answered 202 (200 for a
delivery already recorded), its plays signalled in the background. A refusal
is a status and one log line, never a traceback: 401 unsigned, bad signature
or stale timestamp; 400 a body that is no JSON; 413 too large; 422 an event
that is malformed or names no known account; 404 an endpoint whose secret is
not configured; 503 the store unreachable (the provider retries). See docs/serve.md.
"""

from __future__ import annotations

import asyncio
import html
import logging
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from connectors import inbound_hubspot, inbound_postmark, inbound_standard, unsubscribe
from connectors.inbound import Ignored, Incoming, Refused, ServeSettings
from engine import inbound as store_events
from engine.store import StoreUnreachable
from workflows.inbound import Inbound

log = logging.getLogger("playbook.serve")

MAX_BODY = 1_000_000  # bytes; provider events are a few kB


def build_app(inbound: Inbound, settings: ServeSettings,
              background: Callable[[asyncio.Event], Coroutine[Any, Any, None]] | None = None,
              extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
    """The app; its lifespan runs `inbound.run` (signals) and `background` (the IMAP reader) until shutdown.
    `extra_routes`: more endpoints (the tracking API, workflows/segment.py)."""

    async def events(request: Request) -> Response:
        secret = settings.webhook_secret
        if secret is None:
            return _refuse(request, Refused(404, "generic events are off (no webhook_secret setting)"))
        body = await _body(request)
        inbound_standard.verify(secret, request.headers, body)
        return await _accept(request, [inbound_standard.parse(request.headers, body)])

    async def hubspot(request: Request) -> Response:
        secret = settings.hubspot_client_secret
        if secret is None:
            return _refuse(request, Refused(404, "HubSpot webhooks are off (no hubspot_client_secret setting)"))
        body = await _body(request)
        inbound_hubspot.verify(secret, request.method, _public_uri(request), request.headers, body)
        return await _accept(request, inbound_hubspot.parse(body, settings.hubspot_stages), batch=True)

    async def postmark(request: Request) -> Response:
        if settings.postmark_user is None or settings.postmark_password is None:
            return _refuse(request, Refused(404, "Postmark webhooks are off (no postmark_user / postmark_password)"))
        inbound_postmark.verify(settings.postmark_user, settings.postmark_password, request.headers)
        return await _accept(request, [inbound_postmark.parse(await _body(request))])

    async def unsubscribe_page(request: Request) -> Response:
        secret = settings.unsubscribe_secret
        if secret is None:
            return _refuse(request, Refused(404, "unsubscribe links are off (no unsubscribe_secret setting)"))
        q = request.query_params
        contact, account, play, token = (q.get(k, "") for k in ("c", "a", "p", "t"))
        if not (contact and account and play and token):
            raise Refused(400, "an unsubscribe link needs c, a, p and t")
        if not unsubscribe.valid(secret, contact, account, play, token):
            raise Refused(403, "unsubscribe token does not match the link")
        if request.method == "GET":  # RFC 8058: a GET (a mail scanner's prefetch) never unsubscribes
            return HTMLResponse(_CONFIRM.format(action=html.escape(_public_uri(request), quote=True)))
        if not _one_click(await _body(request), request.headers.get("content-type", "")):
            raise Refused(400, "body must be List-Unsubscribe=One-Click")
        address = await asyncio.to_thread(store_events.contact_of_account, inbound.store, account, contact)
        if address is None:
            raise Refused(404, "no such contact")
        got = await inbound.accept(Incoming(
            key=f"unsubscribe:{account}:{address.lower()}", source="unsubscribe", kind="unsubscribed",
            account_id=account, email=address, suppress=True, payload={"play": play}))
        _log_accepted(request, got.duplicate, f"unsubscribed {account}")
        return HTMLResponse(_DONE, status_code=200)

    async def healthz(request: Request) -> Response:
        counted = await asyncio.to_thread(store_events.counts, inbound.store)
        return JSONResponse({"ok": True, "pending_signals": counted.get("pending", 0)})

    async def _accept(request: Request, items: list[Incoming | Ignored], batch: bool = False) -> Response:
        accepted, duplicates, ignored = [], 0, []
        for item in items:
            if isinstance(item, Ignored):
                ignored.append({"key": item.key, "reason": item.reason})
                continue
            try:
                got = await inbound.accept(item)
            except Refused as exc:
                if not batch:
                    raise
                # One unmappable event of a batch must not make the provider resend the others forever.
                ignored.append({"key": item.key, "reason": exc.reason})
                continue
            accepted.append(got.id)
            duplicates += got.duplicate
        new = len(accepted) - duplicates
        for i in ignored:
            log.info("%s %s: ignored %s: %s", request.method, request.url.path, i["key"], i["reason"])
        _log_accepted(request, new == 0 and duplicates > 0, f"{new} new, {duplicates} already recorded")
        status = 200 if new == 0 and duplicates > 0 and not ignored else 202
        return JSONResponse({"accepted": new, "duplicates": duplicates, "ignored": ignored, "ids": accepted},
                            status_code=status)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(inbound.run(stop), name="signals")]
        if background is not None:
            tasks.append(asyncio.create_task(background(stop), name="background"))
        try:
            yield
        finally:
            stop.set()
            await asyncio.wait(tasks, timeout=10)
            for t in tasks:
                t.cancel()

    def _public_uri(request: Request) -> str:
        if settings.public_url is None:
            return str(request.url)
        query = f"?{request.url.query}" if request.url.query else ""
        return settings.public_url.rstrip("/") + request.url.path + query

    routes = [
        Route("/events", guarded(events), methods=["POST"]),
        Route("/hubspot", guarded(hubspot), methods=["POST"]),
        Route("/postmark", guarded(postmark), methods=["POST"]),
        Route(unsubscribe.PATH, guarded(unsubscribe_page), methods=["GET", "POST"]),
        Route("/healthz", guarded(healthz), methods=["GET"]),
        *extra_routes,
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Every way a request can fail, as a status and one log line."""

    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except Refused as exc:
            return _refuse(request, exc)
        except StoreUnreachable as exc:
            return _refuse(request, Refused(503, str(exc)))
        except ClientDisconnect:  # nobody to answer; the provider sends it again
            log.info("%s %s: the client went away before its body arrived", request.method, request.url.path)
            return Response(status_code=400)
        except Exception as exc:  # noqa: BLE001 - a bug: one line in the log, a 500 without a traceback
            log.error("%s %s: internal error: %s: %s", request.method, request.url.path, type(exc).__name__,
                      str(exc)[:300])
            return JSONResponse({"error": "internal error"}, status_code=500)

    return run


def _refuse(request: Request, exc: Refused) -> Response:
    peer = request.client.host if request.client else "?"
    log.warning("%s %s from %s: %d %s", request.method, request.url.path, peer, exc.status, exc.reason)
    return JSONResponse({"error": exc.reason}, status_code=exc.status)


def _log_accepted(request: Request, duplicate: bool, what: str) -> None:
    log.info("%s %s: %s%s", request.method, request.url.path, what, " (redelivery)" if duplicate else "")


async def read_body(request: Request, limit: int, too_big: Refused) -> bytes:
    """The request's body, refused with `too_big` as soon as it is declared or read over `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_big
    return body


async def _body(request: Request) -> bytes:
    return await read_body(request, MAX_BODY, Refused(413, f"body over {MAX_BODY} bytes"))


def _one_click(body: bytes, content_type: str) -> bool:
    """RFC 8058's POST body, form-urlencoded or multipart."""
    if "multipart/form-data" in content_type:
        return b'name="List-Unsubscribe"' in body and b"One-Click" in body
    fields = parse_qs(body.decode("utf-8", "replace"))
    return fields.get("List-Unsubscribe") == ["One-Click"]


_CONFIRM = """<!doctype html><html><head><meta charset="utf-8"><title>Unsubscribe</title></head>
<body><p>Stop these emails?</p>
<form method="post" action="{action}"><input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Unsubscribe</button></form></body></html>
"""
_DONE = """<!doctype html><html><head><meta charset="utf-8"><title>Unsubscribed</title></head>
<body><p>You are unsubscribed: no more of these emails will reach you.</p></body></html>
"""


def server_config(app: Starlette, host: str, port: int) -> Any:
    """uvicorn's configuration: our log lines instead of its access log, and idle connections
    kept 75 s (uvicorn's 5 s closes a provider's pooled connection just as it reuses it under load)."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, access_log=False, log_config=None, lifespan="on",
                          timeout_keep_alive=75)


async def run_serve(app: Starlette, host: str, port: int, *, ready: Callable[[str], Any] | None = None) -> None:
    """Serve `app` until SIGTERM / Ctrl-C: in-flight requests finish, the background tasks stop, and
    the command ends with 0 (uvicorn's own handlers would re-raise the signal and kill the process)."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return

            def stop(signum: int, frame: Any) -> None:
                if self.should_exit and signum == signal.SIGINT:
                    self.force_exit = True  # a second Ctrl-C: do not wait for open connections
                self.should_exit = True

            previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    server = Server(server_config(app, host, port))
    if ready is not None:
        async def announce() -> None:
            while not server.started:
                await asyncio.sleep(0.05)
            bound = [s.getsockname() for srv in server.servers for s in (srv.sockets or [])]
            ready(f"http://{bound[0][0]}:{bound[0][1]}" if bound else f"http://{host}:{port}")

        waiter = asyncio.create_task(announce())
        try:
            await server.serve()
        finally:
            waiter.cancel()
    else:
        await server.serve()


__all__ = ["build_app", "guarded", "read_body", "run_serve", "server_config"]
