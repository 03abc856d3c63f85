"""`playbook scorecard`, `playbook why`, `playbook plan`: the rules over the account store.

Thin: argument parsing and presentation over engine/scorecard.py, engine/why.py
and engine/plan.py. Registered on the main app by `register(app)`.

Every command reads the rules from `--rules PATH` (default playbooks/; they
must check clean, as for `compile`) and the store from `--db URL` (default:
$PLAYBOOK_DATABASE_URL, else the embedded SQLite file .playbook/playbook.db).
`--today` fixes the evaluation day (default: today in the team's time zone),
for reproducible output in CI. The caps, the route and the time zone are
settings (engine/settings.py), the same ones `sweep` and the worker read, so
`plan` and `why` preview exactly what a sweep decides. Exit codes as elsewhere: 0 ok, 1 the rules have errors, 2 bad
usage (unknown account, rule or revision); `plan --detailed-exitcode`
follows Terraform: 0 no change, 1 error, 2 changes.
"""

from __future__ import annotations

import csv
import enum
import itertools
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from cli import render
from cli.progress import Progress
from cli.common import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, DbOpt, Fail, TodayOpt, settings
from cli.common import read as _read
from cli.common import note_missing_columns
from cli.common import reading_store as _store
from cli.common import today as _today
from cli.common import TextOrJson as Format
from cli.rules import RulesOpt, checked, compiled, refuse_errors
from cli.rules import paths as rule_paths
from dsl.catalog import Catalog
from dsl.plan import Plan
from dsl.project import Project

if TYPE_CHECKING:  # sqlalchemy is imported only by the commands that use the store
    import datetime as dt

    from sqlalchemy.engine import Connection


class TableFormat(str, enum.Enum):
    table = "table"
    csv = "csv"
    json = "json"


T = TypeVar("T")

TABLE_DEFAULT_LIMIT = 50  # a terminal table of a million rows helps no one; csv/json have no default limit


# ---------------------------------------------------------------- shared steps

def _rules(given: list[Path] | None, json_mode: bool) -> tuple[Project, list[Plan]]:
    """Load, check and compile the rules; errors end the command like `compile` does."""
    project = checked(rule_paths(given), json_mode)
    return project, compiled(project)


def _money(v: float | None) -> str:
    return "" if v is None else f"${v:,.0f}"


def _num(v: float | None) -> str:
    if v is None:
        return ""
    return f"{v:g}" if isinstance(v, float) else str(v)


# ---------------------------------------------------------------- scorecard


def scorecard(
    rules: RulesOpt = None,
    db: DbOpt = None,
    format: Annotated[TableFormat, typer.Option("--format", help="Output format.")] = TableFormat.table,
    limit: Annotated[int | None, typer.Option(
        "--limit", help=f"Rows to show, best first (default: {TABLE_DEFAULT_LIMIT} for a table, all for csv/json; "
                        "0: all).", show_default=False)] = None,
    score: Annotated[str, typer.Option("--score", help="The readiness score.")] = "readiness",
    gate: Annotated[str, typer.Option("--gate", help="The gate behind activation_status ('' for none).")] = "expansion_ready",
    today: TodayOpt = None,
) -> None:
    """The expansion-readiness scorecard: one row per account, readiness descending."""

    json_mode = format == TableFormat.json
    day = _today(today)
    with Progress("playbook scorecard") as progress:
        progress.update("reading the rules")
        project, _plans = _rules(rules, json_mode)
        _scorecard(progress, project, db, format, limit, score, gate, day)
    raise typer.Exit(EXIT_OK)


def _scorecard(progress: Progress, project: Project, db: str | None, format: TableFormat, limit: int | None,
               score: str, gate: str, day: dt.date) -> None:
    from engine import scorecard as sc

    options = sc.Options(score=score, gate=gate or None, route=settings().route)
    try:
        sc.validate(project.catalog, options)
    except sc.ScorecardError as e:
        raise Fail(str(e)) from e
    n = limit if limit is not None else (TABLE_DEFAULT_LIMIT if format == TableFormat.table else 0)
    n_or_none = n if n > 0 else None
    with _store(db, project.catalog) as store:
        progress.update("evaluating the rules over the accounts")
        # Retried up to the first row; after that rows are on their way out and a fault ends the command.
        conn, rows = store.retry(lambda: _first_rows(store, sc.rows, project.catalog, day, options, n_or_none))
        with conn:
            _print_scorecard(conn, rows, format, day, score, options, project.catalog, progress)


def _first_rows(store: Any, rows: Callable[..., Iterator[Any]], *args: Any) -> tuple[Connection, Iterator[Any]]:
    """A connection and its rows, the first one already fetched (so the query has run)."""
    conn = store.connect()
    try:
        it = rows(conn, *args)
        head = next(it, None)
    except BaseException:
        conn.close()
        raise
    return conn, (iter(()) if head is None else itertools.chain([head], it))


def _print_scorecard(conn: Connection, rows: Iterator[Any], format: TableFormat, day: dt.date, score: str,
                     options: Any, catalog: Catalog, progress: Progress) -> None:
    from engine import scorecard as sc

    json_mode = format == TableFormat.json
    if format != TableFormat.table:
        if sys.stdout.isatty():  # a bar on the same terminal would garble the rows
            progress.close()
        rows = _counted(rows, progress)
    if format == TableFormat.csv:
        # Quoted only where needed, so `cut -d, -f1` reads an id as it is. The csv module
        # leaves a bare carriage return unquoted under "\n" line ends (which splits the
        # row in readers), so a row holding one is written with every text cell quoted.
        plain = csv.writer(sys.stdout, lineterminator="\n")
        quoted = csv.writer(sys.stdout, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC)
        plain.writerow(sc.COLUMNS)
        for r in rows:
            j = r.to_json()
            cells = [render.csv_cell("" if j[c] is None else (";".join(j[c]) if isinstance(j[c], list) else j[c]))
                     for c in sc.COLUMNS]
            (quoted if any(isinstance(c, str) and "\r" in c for c in cells) else plain).writerow(cells)
    elif json_mode:
        # Streamed by hand: one JSON document, never the whole list in memory.
        sys.stdout.write(json.dumps({"today": day.isoformat(), "score": score, "gate": options.gate,
                                     "route": options.route, "columns": sc.COLUMNS})[:-1] + ', "rows": [')
        for i, r in enumerate(rows):
            sys.stdout.write(("," if i else "") + "\n  " + json.dumps(r.to_json()))
        sys.stdout.write("\n]}\n")
    else:
        cells = [{"account_id": r.account_id, "segment": r.segment or "", "health_score": _num(r.health_score),
                  "activation_status": r.activation_status, "expansion_readiness": _num(r.expansion_readiness),
                  "active_triggers": ", ".join(r.active_triggers), "recommended_motion": r.recommended_motion or "",
                  "estimated_expansion_acv": _money(r.estimated_expansion_acv)} for r in rows]
        progress.close()
        out = render.console()
        shown_columns = render.fit_columns(SCORECARD_COLUMNS, SCORECARD_PRIORITY, cells, out.width)
        out.print(render.table_of(f"Expansion readiness on {day.isoformat()}", shown_columns, cells))
        total = sc.count(conn, catalog)
        if len(cells) < total:
            out.print(f"{len(cells)} of {total} accounts shown; --limit 0 for all, --format csv for a file")
        left_out = [c.header for c in SCORECARD_COLUMNS if c not in shown_columns]
        if left_out:
            out.print(f"not shown at {out.width} columns: {', '.join(left_out)} (a wider terminal or --format csv)")


def _counted(rows: Iterator[Any], progress: Progress) -> Iterator[Any]:
    for i, r in enumerate(rows, start=1):
        if i % 1000 == 0:
            progress.update("writing the rows", done=i)
        yield r


# The table's columns (short headers: the csv/json names are in engine/scorecard.py's COLUMNS),
# and which ones a narrow terminal keeps first.
SCORECARD_COLUMNS = [
    render.Column("account_id", "account"), render.Column("segment", "segment"),
    render.Column("health_score", "health", numeric=True),
    render.Column("activation_status", "activation", wrap=True, min_width=13),
    render.Column("expansion_readiness", "readiness", numeric=True),
    render.Column("active_triggers", "triggers", wrap=True, min_width=14),
    render.Column("recommended_motion", "motion"),
    render.Column("estimated_expansion_acv", "est. ACV", numeric=True),
]
SCORECARD_PRIORITY = ["account_id", "expansion_readiness", "recommended_motion", "activation_status",
                      "estimated_expansion_acv", "health_score", "active_triggers", "segment"]


# ---------------------------------------------------------------- why


def why(
    account: Annotated[str, typer.Argument(help="The account id.", show_default=False)],
    play: Annotated[str | None, typer.Argument(help="Only this play's triggers and gate.", show_default=False)] = None,
    rules: RulesOpt = None,
    db: DbOpt = None,
    format: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.text,
    today: TodayOpt = None,
) -> None:
    """Why an account does (not) start a play: every condition with its value."""
    from engine.why import WhyError, render_text
    from engine.why import why as explain

    json_mode = format == Format.json
    day = _today(today)
    project, plans = _rules(rules, json_mode)
    decide_with = settings()
    knobs = decide_with.enrollment()
    with _store(db, project.catalog) as store:
        try:
            report = _read(store, lambda conn: explain(conn, project.catalog, plans, day, account, play, knobs))
        except WhyError as e:
            raise Fail(str(e)) from e
    if json_mode:
        print(json.dumps({**report.to_json(), "settings": decide_with.decisions_json()}, indent=2))
    else:
        sys.stdout.write(render_text(report, project.catalog))
        print(f"settings: {decide_with.describe()}")
    raise typer.Exit(EXIT_OK)


# ---------------------------------------------------------------- plan


def plan(
    rules: RulesOpt = None,
    db: DbOpt = None,
    against: Annotated[str | None, typer.Option(
        "--against", help="Compare with the rules at this git revision (e.g. origin/main), on the same data.",
        show_default=False)] = None,
    detailed_exitcode: Annotated[bool, typer.Option(
        "--detailed-exitcode", help="Exit 0 when nothing changes, 1 on error, 2 when something changes.")] = False,
    format: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.text,
    today: TodayOpt = None,
) -> None:
    """What a sweep would enroll now, by play and route; with --against, what a rule change changes."""
    from engine import plan as pl

    json_mode = format == Format.json
    err = EXIT_FINDINGS if detailed_exitcode else EXIT_USAGE  # with -detailed-exitcode, 2 means "changes"
    day = _today(today, err)
    project, plans = _rules(rules, json_mode)
    decide_with = settings(err)
    knobs = decide_with.enrollment()
    changes: bool
    progress = Progress("playbook plan")
    if against is None:
        with progress, _store(db, project.catalog, err) as store:
            progress.update("evaluating the rules over the accounts")
            result = _read(store, lambda conn: pl.enrollment_plan(conn, project.catalog, plans, day, knobs))
        changes = result.changes
        if json_mode:
            print(json.dumps({**result.to_json(), "settings": decide_with.decisions_json()}, indent=2))
        else:
            sys.stdout.write(_plan_text(result, decide_with.describe()))
    else:
        paths = [Path(p) for p in rule_paths(rules)]
        with progress, pl.temp_dir() as tmp:
            progress.update(f"reading the rules at {against}")
            try:
                old_project = pl.rules_at(paths, against, Path(tmp))
            except pl.PlanError as e:
                raise Fail(str(e), err) from e
            refuse_errors(old_project, json_mode, against)
            old_plans = compiled(old_project)
        with progress, _store(db, project.catalog, err) as store:
            progress.update(f"evaluating the rules at {against} and in the working tree over the accounts")
            note_missing_columns(store.retry(lambda: store.read_missing_as_empty(old_project.catalog)),
                                 f" at {against}")
            diff = _read(store, lambda conn: pl.rule_diff(
                conn, (old_project.catalog, old_plans), (project.catalog, plans), day, knobs,
                before=against, after="working tree"))
        from dsl.source_diff import changes as source_changes

        diff.sources = source_changes(old_project.catalog, project.catalog)
        changes = diff.changes
        if json_mode:
            print(json.dumps({**diff.to_json(), "settings": decide_with.decisions_json()}, indent=2))
        else:
            sys.stdout.write(_diff_text(diff))
    raise typer.Exit(2 if detailed_exitcode and changes else EXIT_OK)


def _plan_text(p: Any, settings_in_use: str) -> str:
    lines = [f"Enrollment plan for {p.today.isoformat()} over {p.accounts:,} accounts ({settings_in_use})", ""]
    for pp in p.plays:
        gate = f", gate {pp.gate}" if pp.gate else ", ungated"
        lines.append(f'{pp.play} "{pp.title}"  (priority {pp.priority}{gate})')
        lines.append(f"  + {pp.enroll.accounts:>7,} to enroll                 ARR {_money(pp.enroll.arr)}")
        for route, b in sorted(pp.by_route.items()):
            lines.append(f"      {route:<16} {b.accounts:>7,}       ARR {_money(b.arr)}")
        if pp.holdout:
            lines.append(f"    {pp.held_out.accounts:>7,} held out ({pp.holdout:g}% holdout)  ARR {_money(pp.held_out.arr)}")
        lines.append(f"  = {pp.running.accounts:>7,} running, still qualify     ARR {_money(pp.running.arr)}")
        lines.append(f"  - {pp.no_longer.accounts:>7,} running, no longer qualify ARR {_money(pp.no_longer.arr)}")
        if pp.skipped:
            lines.append("    skipped: " + ", ".join(f"{n:,} {code}" for code, n in sorted(pp.skipped.items(),
                                                                                      key=lambda kv: (-kv[1], kv[0]))))
        lines.append("")
    n = sum(pp.enroll.accounts for pp in p.plays)
    arr = sum(pp.enroll.arr for pp in p.plays)
    eq = sum(pp.running.accounts for pp in p.plays)
    gone = sum(pp.no_longer.accounts for pp in p.plays)
    lines.append(f"Plan: {n:,} to enroll (ARR {_money(arr)}), {eq:,} running and still qualify, "
                 f"{gone:,} running and no longer qualify.")
    return "\n".join(lines) + "\n"


def _diff_text(d: Any) -> str:
    lines = [f"Rules at {d.before} -> {d.after}, evaluated on {d.today.isoformat()} over the same accounts", ""]

    def row(c: Any, arr: bool) -> list[str]:
        mark = {"same": " ", "changed": "~", "added": "+", "removed": "-"}[c.status]
        if c.status == "same":
            return [f"  {mark} {c.name:<28} no change ({c.before:,})"]
        money = f"   ARR +{_money(c.added_arr)} / -{_money(c.removed_arr)}" if arr else ""
        note = {"added": "  (new)", "removed": "  (deleted)"}.get(c.status, "")
        out = [f"  {mark} {c.name:<28} +{c.added:<6,} -{c.removed:<6,} ({c.before:,} -> {c.after:,}){money}{note}"]
        if c.examples_added:
            out.append("      now:      " + ", ".join(c.examples_added) + (" ..." if c.added > len(c.examples_added) else ""))
        if c.examples_removed:
            out.append("      no more:  " + ", ".join(c.examples_removed)
                       + (" ..." if c.removed > len(c.examples_removed) else ""))
        return out

    lines.append("triggers (accounts each fires on)")
    for c in d.triggers:
        lines += row(c, False)
    lines += ["", "plays (accounts that would start now)"]
    for c in d.plays:
        lines += row(c, True)
    changed_t = sum(1 for c in d.triggers if c.changed)
    changed_p = sum(1 for c in d.plays if c.changed)
    if d.sources:
        lines += ["", "sources (what syncs read and where it lands)"]
        for src in d.sources:
            mark = {"added": "+", "removed": "-", "changed": "~"}[src["status"]]
            lines.append(f"  {mark} {src['source']}  ({src['status']})")
            lines += [f"      {detail}" for detail in src["details"]]
    sources = f", {len(d.sources)} source(s)" if d.sources else ""
    lines += ["", f"Diff: {changed_t} of {len(d.triggers)} triggers and {changed_p} of {len(d.plays)} plays change"
              f"{sources}." if d.changes else "No change: both rule sets select the same accounts."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- registration


def register(app: typer.Typer) -> None:
    """Add scorecard, why and plan to the `playbook` app."""
    app.command("scorecard")(scorecard)
    app.command("why")(why)
    app.command("plan")(plan)


__all__ = ["register"]
