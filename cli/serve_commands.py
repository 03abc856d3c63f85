"""`playbook serve` (inbound provider events over HTTP) and `playbook imap-poll`.

Thin functions over workflows/serve.py, workflows/inbound.py and
workflows/imap_poll.py; settings from connectors/inbound.py (`[serve]`,
`PLAYBOOK_SERVE_*`) and workflows/settings.py (Temporal). Both run until
SIGTERM or Ctrl-C (`imap-poll --once`: one pass). Temporal may be down: events
are stored and their signals delivered once it answers. Exit codes as
everywhere: 2 a bad setting or a port in use, 4 the store unreachable.
"""

from __future__ import annotations

import asyncio
import errno
import imaplib
import socket
import sys
from typing import Annotated, Any

import typer

from cli.common import EXIT_UNREACHABLE, DbOpt, Fail
from cli.rules import RulesOpt, checked
from cli.rules import paths as rule_paths
from cli.workflow_commands import AddressOpt, NamespaceOpt, _log_to_stderr, _settings, temporal_command

HostOpt = Annotated[str | None, typer.Option("--host", help="Interface to listen on [setting host; default 127.0.0.1].", show_default=False)]
PortOpt = Annotated[int | None, typer.Option("--port", help="Port [setting port; default 8787; 0: any free port].", show_default=False)]


def _serve_settings(**overrides: Any) -> Any:
    from connectors.inbound import load_serve_settings
    from engine.settings import SettingsError

    try:
        return load_serve_settings(**overrides)
    except SettingsError as exc:
        raise Fail(f"serve settings: {exc}") from exc


def _inbound(database: str | None, settings: Any, temporal: Any) -> tuple[Any, Any]:
    from engine.store import Store
    from workflows.inbound import Inbound
    from workflows.settings import connect

    store = Store.open(database)  # written to: migrated (missing 2, unreachable 4: cli.common.failure)
    return store, Inbound(store, lambda: connect(temporal), retry_seconds=settings.retry_seconds,
                          give_up_after=settings.give_up_after)


def _check_port(host: str, port: int) -> None:
    """A port in use is bad usage (2), said before anything starts."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            why = "in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            raise Fail(f"cannot listen on {host}:{port}: {why} (--port)") from None


@temporal_command("serve")
def serve(
    host: HostOpt = None,
    port: PortOpt = None,
    imap: Annotated[bool, typer.Option("--imap", help="Also read replies and bounces from the IMAP mailbox (settings imap_*).")] = False,
    address: AddressOpt = None,
    namespace: NamespaceOpt = None,
    database: DbOpt = None,
    rules: RulesOpt = None,
) -> None:
    """Receive provider events (signed webhooks, HubSpot, Postmark, one-click unsubscribe), store them
    and signal the running plays; until SIGTERM or Ctrl-C. Endpoints and settings: docs/serve.md."""
    from workflows.imap_poll import ImapSettingsError, mailbox_settings, poll_forever
    from workflows.serve import build_app, run_serve

    settings = _serve_settings(host=host, port=port)
    temporal = _settings(address=address, namespace=namespace)
    if imap:
        try:
            mailbox_settings(settings)
        except ImapSettingsError as exc:
            raise Fail(str(exc)) from exc
    _check_port(settings.host, settings.port)
    store, inbound = _inbound(database, settings, temporal)
    background = (lambda stop: poll_forever(inbound, settings, stop)) if imap else None
    extra: list[Any] = []
    if settings.segment_write_keys:  # the tracking API maps onto the declared events and fields
        from workflows.segment import routes

        extra = routes(store, checked(rule_paths(rules), False).catalog, settings.segment_write_keys)
    app = build_app(inbound, settings, background, extra)
    _log_to_stderr()
    on = [name for name, value in (("/events", settings.webhook_secret), ("/hubspot", settings.hubspot_client_secret),
                                   ("/postmark", settings.postmark_password),
                                   ("/unsubscribe", settings.unsubscribe_secret)) if value is not None]
    on += ["/v1 (Segment)"] if extra else []

    def ready(url: str) -> None:
        print(f"serve: listening on {url} ({', '.join(on) or 'no endpoint configured'}"
              f"{'; reading IMAP' if imap else ''}); store {store.url}; Temporal {temporal.address}", flush=True)

    try:
        asyncio.run(run_serve(app, settings.host, settings.port, ready=ready))
    except SystemExit as exc:  # uvicorn exits when it cannot start (the port taken meanwhile)
        raise Fail(f"cannot listen on {settings.host}:{settings.port}") from exc
    finally:
        store.close()


@temporal_command("imap-poll")
def imap_poll(
    once: Annotated[bool, typer.Option("--once", help="Read the mailbox once, deliver the signals, and stop.")] = False,
    address: AddressOpt = None,
    namespace: NamespaceOpt = None,
    database: DbOpt = None,
) -> None:
    """Read replies and bounces from the IMAP mailbox (settings imap_*), store them and signal the plays."""
    from workflows.imap_poll import ImapSettingsError, mailbox_settings, poll_forever, poll_once
    from workflows.worker import install_stop_signals

    settings = _serve_settings()
    temporal = _settings(address=address, namespace=namespace)
    try:
        mailbox = mailbox_settings(settings)
    except ImapSettingsError as exc:
        raise Fail(str(exc)) from exc
    store, inbound = _inbound(database, settings, temporal)
    _log_to_stderr()

    async def go() -> None:
        if once:
            report = await poll_once(inbound, mailbox)
            delivery = await inbound.deliver()
            print(f"imap: {report.read} read, {report.accepted} new, {report.duplicates} already recorded, "
                  f"{report.ignored} ignored; {delivery.signals} signal(s) sent, {delivery.left} waiting for Temporal")
            return
        stop = asyncio.Event()
        remove = install_stop_signals(stop)
        try:
            await asyncio.gather(poll_forever(inbound, settings, stop), inbound.run(stop))
        finally:
            remove()

    try:
        asyncio.run(go())
    except OSError as exc:
        raise Fail(f"IMAP {mailbox.host}:{mailbox.port}: {exc.strerror or exc}", EXIT_UNREACHABLE) from exc
    except imaplib.IMAP4.error as exc:  # refused login, no such mailbox: the settings
        raise Fail(f"IMAP {mailbox.host}:{mailbox.port}: {exc}") from exc
    finally:
        store.close()
        sys.stdout.flush()


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("imap-poll")(imap_poll)
