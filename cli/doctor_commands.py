"""`playbook doctor`: the seeds' setup checks over the stored data (engine/doctor.py).

Thin: argument parsing and presentation. Each finding is pass / warn / fail with
its numbers and advice, or `no data` naming what is missing. Exit 1 when any
check fails (so CI can gate a rule change on it), 2 bad usage (a missing or
empty store, an unknown check), 4 the store unreachable.
"""

from __future__ import annotations

import enum
import json
import sys
from typing import Annotated, Any

import typer

from cli import render
from cli.common import EXIT_FINDINGS, DbOpt, Fail, TodayOpt, read, reading_store
from cli.common import today as today_in_team_zone
from cli.rules import RulesOpt, checked
from cli.rules import paths as rule_paths


class DoctorFormat(str, enum.Enum):
    table = "table"
    json = "json"


MARK = {"pass": "pass", "warn": "WARN", "fail": "FAIL", "no data": "no data"}


def _table(doc: dict[str, Any]) -> None:
    out = render.console()
    rows = [{"status": MARK[f["status"]], "check": f["check"], "subject": f["subject"], "shown": f["shown"],
             "advice": f["advice"]} for f in doc["findings"]]
    cols = [render.Column("status", "status"), render.Column("check", "check"),
            render.Column("subject", "subject", wrap=True, min_width=12),
            render.Column("shown", "measured", wrap=True, min_width=20),
            render.Column("advice", "advice", wrap=True, min_width=20)]
    out.print(render.table_of(f"playbook doctor, {doc['today']}", cols, rows))
    s = doc["summary"]
    out.print(f"{s['pass']} pass, {s['warn']} warn, {s['fail']} fail, {s['no data']} without data")


def doctor(rules: RulesOpt = None, db: DbOpt = None,
           format: Annotated[DoctorFormat, typer.Option("--format", help="Output format.")] = DoctorFormat.table,
           check: Annotated[list[str] | None, typer.Option(
               "--check", help="Only this check or group (gates, triggers, whitespace, pipeline, retention). "
                               "Repeatable.", show_default=False)] = None,
           cost: Annotated[float | None, typer.Option(
               "--cost", help="What the expansion motion cost, for expansion CAC per $1 of ARR.",
               show_default=False)] = None,
           today: TodayOpt = None) -> None:
    """Setup checks over the stored data: gates, triggers, whitespace, pipeline, retention (exit 1 on a fail)."""
    from engine.doctor import CHECKS, load_doctor_settings
    from engine.doctor import doctor as run

    known = {c.name for c in CHECKS} | {c.group for c in CHECKS}
    for name in check or []:
        if name not in known:
            raise Fail(f"--check: no check or group {name!r} (known: {', '.join(sorted(known))})")
    if cost is not None and not cost >= 0:
        raise Fail(f"--cost wants an amount of at least 0, not {cost:g}")
    as_of = today_in_team_zone(today)
    catalog = checked(rule_paths(rules), format == DoctorFormat.json).catalog
    settings = load_doctor_settings()
    with reading_store(db, catalog) as store:
        report = read(store, lambda conn: run(conn, catalog, today=as_of, cost=cost, only=check, settings=settings))
    doc = report.to_json()
    if format == DoctorFormat.json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        _table(doc)
    if report.failed:
        raise typer.Exit(EXIT_FINDINGS)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)


__all__ = ["register"]
