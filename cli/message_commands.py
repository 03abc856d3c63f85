"""`playbook render`: a message exactly as a play would send it, without sending it.

Thin: parsing and presentation over workflows/preview.py, which renders
through the `act` activity's own resolver and builds the headers with
connectors/mail.py (the email connectors' code). Reads the rules (`--rules`,
default playbooks/; they must check clean) and the store (`--db`, read-only).

Exit codes: 0 shown; 1 the message could not be rendered (a value the
account lacks: the placeholder is named) or would not be sent (the
recipient unsubscribed or bounced); 2 an unknown template, play or account.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer

from cli.common import EXIT_FINDINGS, EXIT_OK, DbOpt, Fail, TextOrJson, reading_store
from cli.rules import RulesOpt, checked, compiled
from cli.rules import paths as rule_paths
from dsl.suggest import did_you_mean

SHOWN_HEADERS = ("From", "To", "Subject", "Date", "Message-ID", "List-Unsubscribe", "List-Unsubscribe-Post")


def render_message(
    template: Annotated[str, typer.Argument(help="The template to render.", show_default=False)],
    account: Annotated[str, typer.Option("--account", help="The account whose values fill it.", show_default=False)],
    contact: Annotated[str | None, typer.Option(
        "--contact", help="Send it to this contact (an id or an address) instead of the step's recipient.",
        show_default=False)] = None,
    play: Annotated[str | None, typer.Option(
        "--play", help="The play whose step sends it (sender, title) when several do [default: the first by name].",
        show_default=False)] = None,
    rules: RulesOpt = None,
    db: DbOpt = None,
    format: Annotated[TextOrJson, typer.Option("--format", help="Output format.")] = TextOrJson.text,
) -> None:
    """Preview an email as a play would send it: subject, headers (List-Unsubscribe included) and body."""
    from connectors import base as cb
    from connectors import mail
    from connectors.base import Connectors
    from engine.settings import clock
    from workflows.accounts import StoreAccounts
    from workflows.activities import PlayActivities
    from workflows.worker import unsubscribe_link
    from workflows.preview import PreviewError, preview, uses

    json_mode = format == TextOrJson.json
    project = checked(rule_paths(rules), json_mode)
    catalog = project.catalog
    if template not in catalog.templates:
        hint = did_you_mean(template, catalog.templates) or (
            f"Templates: {', '.join(sorted(catalog.templates))}." if catalog.templates else "The rules declare none.")
        raise Fail(f"no template '{template}' in the rules. {hint}")
    plans = compiled(project)
    found = uses(plans, template)
    if play is not None:
        if play not in {p.play for p in plans}:
            raise Fail(f"no play '{play}' in the rules. {did_you_mean(play, [p.play for p in plans])}".rstrip())
        found = [u for u in found if u.plan.play == play]
        if not found:
            raise Fail(f"play '{play}' sends no email with template '{template}'")
    use = found[0] if found else None
    decl = catalog.templates[template]
    from dsl.plan import PlanTemplate

    tpl = use.plan.templates[template] if use is not None else PlanTemplate(
        name=template, subject=decl.subject, body=decl.body)
    from connectors import sandbox

    settings = mail.load()
    sandboxed = sandbox.load_sandbox_settings()
    rewrite = (lambda action: sandbox.rewrite(action, sandboxed)) if sandboxed.email else None
    with reading_store(db, catalog) as store:
        url, secret = unsubscribe_link(settings.unsubscribe_url)  # the worker's link, {token} signed
        acts = PlayActivities(Connectors({}), StoreAccounts(store, catalog), catalog, unsubscribe_url=url,
                              unsubscribe_secret=secret)
        try:
            shown = asyncio.run(preview(acts, use, tpl, account, contact=contact, at=clock(),
                                        mail_settings=settings, rewrite=rewrite))
        except PreviewError as exc:
            raise Fail(str(exc)) from exc
        except cb.MissingDataError as exc:
            if f"no account {account!r}" in str(exc):
                raise Fail(f"{exc} (--account)") from exc
            if contact is not None and f"contact {contact!r}" in str(exc):
                raise Fail(f"{exc} (--contact)") from exc
            raise Fail(f"cannot render template '{template}' for {account}: {exc}", EXIT_FINDINGS) from exc
        except cb.PermanentError as exc:  # RenderError: the missing placeholder named
            raise Fail(f"cannot render template '{template}' for {account}: {exc}", EXIT_FINDINGS) from exc
    where = (f"play {shown.play}, step {shown.step}" if shown.play else "no play sends it") + f", account {account}"
    if shown.message is None:
        if json_mode:
            print(json.dumps({"template": template, "play": shown.play, "step": shown.step, "account_id": account,
                              "sent": False, "skipped": shown.skipped}, indent=2))
        else:
            print(f"template {template} ({where}) would not be sent: {shown.skipped}")
        raise typer.Exit(EXIT_FINDINGS)
    msg = shown.message
    extra = [name for name in msg.keys() if name.upper().startswith("X-")]  # sandbox mode's original recipient
    headers = {name: str(msg[name]) for name in [*SHOWN_HEADERS, *extra] if msg[name] is not None}
    body = msg.get_content()
    notes = [] if settings.from_address else [f"From is a placeholder: set {mail.ENV_PREFIX}FROM_ADDRESS"]
    if rewrite is not None:
        notes.append(f"sandbox mode: sent to the test inbox ({sandbox.ENV_PREFIX}EMAIL), not to the recipient")
    if settings.unsubscribe_url is None:
        notes.append(f"no List-Unsubscribe link: set {mail.ENV_PREFIX}UNSUBSCRIBE_URL")
    if json_mode:
        doc: dict[str, Any] = {"template": template, "play": shown.play, "step": shown.step, "account_id": account,
                               "sent": True, "headers": headers, "body": body, "notes": notes}
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        raise typer.Exit(EXIT_OK)
    # Plain print, not the rich console: a preview must not be re-wrapped to the terminal.
    print(f"# template {template} ({where}); a preview: nothing is sent")
    for name, value in headers.items():
        print(f"{name}: {value}")
    print()
    print(body, end="" if body.endswith("\n") else "\n")
    for note in notes:
        print(f"# note: {note}")
    raise typer.Exit(EXIT_OK)


def register(app: typer.Typer) -> None:
    app.command("render")(render_message)


__all__ = ["register"]
