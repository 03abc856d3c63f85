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


# A terminal's table: the columns a person reads (json has them all). Ids,
# recipients, names and times are never cut; the free text is cut to one line
# with an ellipsis; the columns that do not fit are left out, last first in the
# priority, and named under the table.
_TEXT_MIN = 12  # a subject or title keeps at least this many cells
TABLE_COLUMNS = {
    "outbox": tuple(render.Column(k, k, cut=k == "subject", min_width=_TEXT_MIN if k == "subject" else 0)
                    for k in ("created_at", "play", "account_id", "recipient", "subject", "status")),
    "tasks": tuple(render.Column(k, k, cut=k == "title", min_width=_TEXT_MIN if k == "title" else 0)
                   for k in ("due", "play", "account_id", "assignee", "title", "status")),
}
PRIORITY = {"outbox": ("account_id", "recipient", "subject", "status", "play", "created_at"),
            "tasks": ("account_id", "assignee", "title", "due", "status", "play")}
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
    columns = TABLE_COLUMNS[table]
    years = {v.year for r in shown for v in r.values() if isinstance(v, dt.datetime)}
    one_year = f", {years.pop()}" if len(years) == 1 else ""
    cells = [{c.key: _cell(r[c.key], not one_year) for c in columns} for r in shown]
    out = render.console()
    fitting = render.fit_columns(columns, PRIORITY[table], cells, out.width)
    out.print(render.table_of(f"{table.capitalize()}{one_year} (newest first; times UTC)", fitting,
                              render.cut_to_fit(fitting, cells, out.width)))
    if len(shown) < total:
        out.print(f"{len(shown)} of {total} rows shown; --limit 0 for all, --format json for tools")
    left_out = [c.header for c in columns if c not in fitting]
    if left_out:
        out.print(f"not shown at {out.width} columns: {', '.join(left_out)} (a wider terminal or --format json)")
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
