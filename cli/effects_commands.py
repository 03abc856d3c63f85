"""`playbook outbox` and `playbook tasks`: what the plays did, from the store.

Thin: filters and presentation over engine/effects.py. Reading commands:
the store is opened read-only (a missing or empty one is exit 2, one that
cannot be reached exit 4), nothing is created.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from typing import Annotated, Any

import typer

from cli import render
from cli.common import EXIT_OK, DbOpt, Fail, read, reading_store
from cli.rules import refuse_unknown_play


class Format(str, enum.Enum):
    table = "table"
    json = "json"


# A terminal's table: the columns a person reads (json has them all); ids,
# names and times never cut, the free text wraps.
TABLE_COLUMNS = {"outbox": ("created_at", "play", "account_id", "recipient", "subject", "status"),
                 "tasks": ("due", "play", "account_id", "assignee", "title", "status")}
WRAPPED = frozenset({"recipient", "subject", "title"})
TABLE_DEFAULT_LIMIT = 50  # the newest rows; --limit 0 or --format json for all

AccountOpt = Annotated[str | None, typer.Option("--account", help="Only this account's rows.", show_default=False)]
PlayOpt = Annotated[str | None, typer.Option("--play", help="Only rows this play wrote.", show_default=False)]
LimitOpt = Annotated[int | None, typer.Option(
    "--limit", min=0, help=f"Rows to show, newest first (default: {TABLE_DEFAULT_LIMIT} in a table, all in json; "
                           "0: all).", show_default=False)]
FormatOpt = Annotated[Format, typer.Option("--format", help="Output format.")]
StatusOpt = Annotated[str | None, typer.Option(
    "--status", help="Only rows with this status (outbox: pending, sending, sent, failed, cancelled; "
                     "tasks: open, done, cancelled).", show_default=False)]


def _cell(value: Any, with_year: bool) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):  # the year said once in the title when all rows share it: 80 columns
        return f"{value:%Y-%m-%d %H:%M}" if with_year else f"{value:%b %d %H:%M}"
    return str(value)


def _show(table: str, db: str | None, account: str | None, play: str | None, status: str | None,
          limit: int | None, format: Format) -> None:
    from engine import effects  # sqlalchemy: imported only by commands that read the store

    kind = {"outbox": effects.OUTBOX, "tasks": effects.TASKS}[table]
    filters = effects.Filters(account, play, status)
    n = limit if limit is not None else (TABLE_DEFAULT_LIMIT if format == Format.table else 0)
    with reading_store(db) as store:
        try:
            shown, total = read(store, lambda conn: (
                list(effects.rows(conn, kind, filters, n or None)), effects.count(conn, kind, filters)))
            if total == 0 and play is not None:
                refuse_unknown_play(play, read(store, effects.plays))
        except effects.EffectsError as e:
            raise Fail(str(e)) from e
    if format == Format.json:
        print(json.dumps({"total": total, "rows": [effects.to_json(r) for r in shown]}, indent=2))
        raise typer.Exit(EXIT_OK)
    if total == 0:
        print(f"no {table} rows match" if any((account, play, status)) else f"no {table} rows yet")
        raise typer.Exit(EXIT_OK)
    from rich import box
    from rich.table import Table

    columns = TABLE_COLUMNS[table]
    years = {v.year for r in shown for v in r.values() if isinstance(v, dt.datetime)}
    one_year = f", {years.pop()}" if len(years) == 1 else ""
    grid = Table(title=f"{table.capitalize()}{one_year} (newest first; times UTC)", title_justify="left",
                 box=box.SIMPLE_HEAD)
    for c in columns:
        grid.add_column(c, no_wrap=c not in WRAPPED)
    for r in shown:
        grid.add_row(*(_cell(r[c], not one_year) for c in columns))
    out = render.console()
    out.print(grid)
    if len(shown) < total:
        out.print(f"{len(shown)} of {total} rows shown; --limit 0 for all, --format json for tools")
    raise typer.Exit(EXIT_OK)


def outbox(
    db: DbOpt = None,
    account: AccountOpt = None,
    play: PlayOpt = None,
    status: StatusOpt = None,
    limit: LimitOpt = None,
    format: FormatOpt = Format.table,
) -> None:
    """The messages plays wrote to the outbox (emails, Slack, webhooks), newest first."""
    _show("outbox", db, account, play, status, limit, format)


def tasks(
    db: DbOpt = None,
    account: AccountOpt = None,
    play: PlayOpt = None,
    status: StatusOpt = None,
    limit: LimitOpt = None,
    format: FormatOpt = Format.table,
) -> None:
    """The tasks plays created for people (CSMs, AEs), newest first."""
    _show("tasks", db, account, play, status, limit, format)


def register(app: typer.Typer) -> None:
    app.command("outbox")(outbox)
    app.command("tasks")(tasks)


__all__ = ["register"]
