"""`playbook simulate`'s report as text: totals, daily load, tasks per assignee, timelines; or JSON."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from workflows.sim_model import SimReport


def render(report: SimReport, console: Any = None, *, timelines: bool = True) -> None:
    """Rich tables: totals, daily load, tasks per assignee, then the timelines."""
    con = console or Console(width=None if _terminal() else 120)
    t = report.totals
    con.print(f"[bold]Simulated {report.days} days[/bold] from {report.start:%Y-%m-%d %H:%M} UTC to "
              f"{report.end:%Y-%m-%d %H:%M} UTC over {report.accounts} accounts (seed {report.seed}) "
              f"in {report.wall_seconds:.1f} s of real time")
    con.print(f"  enrollments {t.get('enrollments', 0)} ({t.get('accounts_enrolled', 0)} accounts) · "
              f"emails {t.get('emails', 0)} · tasks {t.get('tasks', 0)} · stage changes {t.get('stage_changes', 0)} · "
              f"replies {t.get('replies', 0)} · unsubscribes {t.get('unsubscribes', 0)} · "
              f"won {t.get('won', 0)} · lost {t.get('lost', 0)}")
    if report.by_play:
        con.print("  enrollments by play: " + ", ".join(f"{k} {v}" for k, v in report.by_play.items()))
    if report.outcomes:
        con.print("  plays at the end: " + ", ".join(f"{k} {v}" for k, v in report.outcomes.items()))

    table = Table(title="Daily load (UTC days)", title_justify="left")
    # CSMs: assignees with a task that day; max/CSM: the most tasks one of them got.
    for col in ("day", "date", "enrolled", "emails", "tasks", "CSMs", "max/CSM", "stage moves", "replies", "won",
                "lost", "unsub"):
        table.add_column(col, justify="left" if col == "date" else "right", no_wrap=True)
    for d in report.daily:
        busiest = d.busiest
        table.add_row(str(d.day), f"{d.date:%a %m-%d}", _n(d.enrolled), _n(d.emails), _n(d.tasks),
                      _n(len(d.tasks_by_assignee)), _n(busiest[1] if busiest else 0), _n(d.stage_changes),
                      _n(d.replies), _n(d.won), _n(d.lost), _n(d.unsubscribes))
    con.print(table)

    if report.csm_tasks:
        busiest_ = sorted(report.csm_tasks.items(), key=lambda kv: (-kv[1]["tasks"], kv[0]))[:10]
        ct = Table(title="Tasks per assignee (busiest 10)", title_justify="left")
        for col in ("assignee", "tasks", "days with tasks", "max in a day"):
            ct.add_column(col, justify="left" if col == "assignee" else "right", no_wrap=True)
        for who, st in busiest_:
            ct.add_row(who, str(int(st["tasks"])), str(int(st["days"])), str(int(st["max_per_day"])))
        con.print(ct)

    if timelines:
        for account, entries in report.timelines.items():
            con.print(f"\n[bold]{account}[/bold]")
            if not entries:
                con.print("  (nothing happened to this account in the simulation)")
            for e in entries:
                play = f"[{e.play}] " if e.play else ""
                con.print(f"  day {e.day:>2} {e.at:%a %m-%d %H:%M}  {e.kind:<8} {play}{e.text}", markup=False,
                          highlight=False, soft_wrap=True)


def _terminal() -> bool:
    return sys.stdout.isatty()


def _n(v: int) -> str:
    return str(v) if v else "·"


def report_json(report: SimReport) -> str:
    return json.dumps(report.model_dump(mode="json"), indent=2, sort_keys=False)

