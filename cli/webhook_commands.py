"""`playbook webhooks [--enable URL]`: the webhook endpoints a 410 Gone disabled, and sending to one again.

Thin: presentation over engine/endpoints.py. URLs are shown without user
info or query (connectors/webhooks.py `shown`: a receiver's token may sit
there); `--enable` takes the URL as stored or as shown, when that names one
endpoint. Exit codes: 0 listed or enabled, 2 a URL that is not disabled.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cli.common import DbOpt, Fail, TextOrJson, read, reading_store


def webhooks(
    enable: Annotated[str | None, typer.Option(
        "--enable", help="Send to this disabled endpoint again (its URL as listed).", show_default=False)] = None,
    db: DbOpt = None,
    format: Annotated[TextOrJson, typer.Option("--format", help="Output format.")] = TextOrJson.text,
) -> None:
    """The webhook endpoints disabled by a 410 Gone (steps to them fail at once), or --enable one."""
    from connectors.webhooks import shown
    from engine import endpoints

    with reading_store(db) as store:
        gone = read(store, endpoints.all_disabled)
    if enable is None:
        rows = [{"url": shown(d.url), "disabled_at": d.at.isoformat(), "reason": d.reason} for d in gone]
        if format == TextOrJson.json:
            print(json.dumps(rows))
        elif not rows:
            print("no webhook endpoint is disabled")
        else:
            for r in rows:
                print(f"{r['url']}  disabled {r['disabled_at'][:19].replace('T', ' ')} UTC  ({r['reason']})")
        return
    matches = [d for d in gone if enable in (d.url, shown(d.url))]
    if len(matches) != 1:
        known = ", ".join(shown(d.url) for d in gone) or "none is disabled"
        what = "names more than one disabled endpoint; give the whole URL" if matches else "is not disabled"
        raise Fail(f"{shown(enable)} {what} (disabled: {known})")
    from engine.store import Store

    store = Store.open(db)
    try:
        with store.begin() as conn:
            endpoints.enable(conn, matches[0].url)
            store.audit(conn, "cli", "webhook.enable", shown(matches[0].url), {"was_disabled_at": matches[0].at.isoformat()})
    finally:
        store.close()
    if format == TextOrJson.json:
        print(json.dumps({"enabled": shown(matches[0].url)}))
    else:
        print(f"enabled {shown(matches[0].url)}: webhook steps send to it again")


def register(app: typer.Typer) -> None:
    app.command("webhooks")(webhooks)


__all__ = ["register"]
