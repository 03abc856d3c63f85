"""`playbook outcome ACCOUNT won|lost|churned|contracted`: record what a deal or an account came to.

Thin: argument parsing and presentation over engine/outcomes.py. A won/lost
closes the account's open opportunity (of --play, if given) at Closed Won /
Closed Lost. Files of outcomes go through `playbook import outcomes=FILE`
(cli/data_commands.py). Exit codes as everywhere: 0 recorded, 2 bad usage
(unknown account, opportunity of another account, a bad amount or date).
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from typing import Annotated

import typer

from cli.common import DbOpt, Fail, TextOrJson


class OutcomeKind(str, enum.Enum):
    won = "won"
    lost = "lost"
    churned = "churned"
    contracted = "contracted"


def _when(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        at = dt.datetime.fromisoformat(value)
    except ValueError:
        raise Fail(f"--at wants a day or a time such as 2026-06-01 or 2026-06-01T14:00:00Z, not {value!r}") from None
    return at.replace(tzinfo=dt.timezone.utc) if at.tzinfo is None else at


def outcome(
    account: Annotated[str, typer.Argument(help="The account id.", show_default=False)],
    kind: Annotated[OutcomeKind, typer.Argument(help="won, lost (a deal); churned, contracted (the base).",
                                                show_default=False)],
    amount: Annotated[float | None, typer.Option(
        "--amount", help="ARR won, lost or churned [default: the opportunity's amount].", show_default=False)] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Reason code, e.g. price, timing, no_budget.",
                                               show_default=False)] = None,
    objection: Annotated[str | None, typer.Option("--objection", help="The objection heard.",
                                                  show_default=False)] = None,
    champion: Annotated[str | None, typer.Option("--champion", help="Who championed it on their side.",
                                                 show_default=False)] = None,
    approver: Annotated[str | None, typer.Option("--approver", help="Who approved it on their side.",
                                                 show_default=False)] = None,
    play: Annotated[str | None, typer.Option("--play", help="The play it belongs to [default: the deal's].",
                                             show_default=False)] = None,
    opportunity: Annotated[str | None, typer.Option(
        "--opportunity", help="The opportunity id [default: the account's open one, for won/lost].",
        show_default=False)] = None,
    enrollment: Annotated[int | None, typer.Option("--enrollment", help="The enrollment id.",
                                                   show_default=False)] = None,
    at: Annotated[str | None, typer.Option("--at", help="When it closed [default: now].", show_default=False)] = None,
    key: Annotated[str | None, typer.Option(
        "--key", help="Idempotency key: recording the same key again updates that outcome.",
        show_default=False)] = None,
    db: DbOpt = None,
    format: Annotated[TextOrJson, typer.Option("--format", help="Output format.")] = TextOrJson.text,
) -> None:
    """Record an outcome (idempotent: the same deal or key again updates it)."""
    from engine.outcomes import OutcomeError, OutcomeInput, record_outcome
    from engine.store import Store, removed_if_failed

    if amount is not None and not amount >= 0:
        raise Fail(f"--amount wants an ARR of at least 0, not {amount:g}")
    given = OutcomeInput(account_id=account, outcome=kind.value, amount=amount, at=_when(at), play=play,
                         enrollment_id=enrollment, opportunity_id=opportunity, reason=reason, objection=objection,
                         champion=champion, approver=approver, source="cli", key=key)
    with removed_if_failed(db):
        store = Store.open(db)
        try:
            with store.begin() as conn:
                rec = record_outcome(conn, given, close_opportunity=True, actor="cli")
                store.audit(conn, "cli", "outcome.record", account, {"key": rec.key, "outcome": rec.outcome})
        except OutcomeError as e:
            raise Fail(str(e)) from e
        finally:
            store.close()
    if format == TextOrJson.json:
        print(json.dumps(rec.to_json()))
        return
    money = "" if rec.amount is None else f" ${rec.amount:,.0f} ARR"
    where = ", ".join(x for x in (f"play {rec.play}" if rec.play else "",
                                  f"opportunity {rec.opportunity_id}" if rec.opportunity_id else "",
                                  f"enrollment {rec.enrollment_id}" if rec.enrollment_id else "") if x)
    verb = "Recorded" if rec.created else "Updated"
    days = "" if rec.days_to_close is None else f"; {rec.days_to_close:g} days from signal to close"
    print(f"{verb} {rec.outcome}{money} for {rec.account_id}" + (f" ({where})" if where else "") + days)
    if rec.closed_stage:
        print(f"Moved opportunity {rec.opportunity_id} to {rec.closed_stage}.")


def register(app: typer.Typer) -> None:
    app.command("outcome")(outcome)


__all__ = ["register"]
