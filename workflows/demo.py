"""`playbook demo`: the whole thing on a fresh machine, no server to install.

    summary = asyncio.run(run_demo(accounts=500, days=3))
    print_summary(summary)

1. a local SQLite store (`.playbook/playbook.db`, or `db`), cleared: it
   refuses to clear a store holding data the demo did not make, unless
   `force`;
2. the playbooks (`playbooks/`) loaded, checked and compiled;
3. demo accounts generated (engine/demo_data.py) for the simulation's
   first day;
4. the sweep and the first `days` simulated days of the plays, on the
   in-process time-skipping Temporal server (workflows/simulate.py):
   real PlayWorkflows writing rendered emails to the store's outbox,
   tasks, pipeline changes; a simulated customer replying;
5. a year of closed deals before the start (engine/demo_history.py), so
   `playbook report` has a funnel, outcomes and NRR to show;
6. a summary: accounts, triggers fired, enrollments by play and route,
   outbox messages with one email rendered, tasks, and where to look next.

The store keeps the results. Plays still in flight when the demo stops are
marked `cancelled` (their Temporal server was in-process and is gone), so a
later sweep on a real server sees them as past runs.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from engine import actions, demo_data, demo_history, enrollment
from engine.store import Store, default_url
from workflows.sim_model import SimConfig, SimReport
from workflows.simulate import simulate
from workflows.sweep import Playbooks

class DemoError(Exception):
    """The demo cannot run as asked (a store with real data in it, playbooks with errors)."""


class SampleEmail(BaseModel):
    account_id: str
    play: str
    to: str
    subject: str
    body: str
    created_at: dt.datetime


class DemoSummary(BaseModel):
    store: str
    playbooks: list[str]
    accounts: int
    days: int
    start: dt.datetime
    end: dt.datetime
    triggers_fired: dict[str, int]  # trigger -> accounts it fired for (first sweep)
    candidates: int  # (account, play) pairs a trigger started (first sweep)
    skipped: int  # candidates not enrolled (first sweep)
    # reason code -> skipped candidates that carry it (first sweep); one can
    # carry several, so these add up to `skipped` or more.
    reasons: dict[str, int]
    enrolled_by_play: dict[str, int]
    enrolled_by_route: dict[str, int]  # "play/route"
    outbox: dict[str, int]  # channel -> messages written
    emails_cancelled: int  # to unsubscribed contacts: recorded, never sent
    sample_email: SampleEmail | None
    tasks: int
    tasks_by_assignee_top: dict[str, int]
    stage_changes: int
    replies: int
    wall_seconds: float
    report: SimReport


async def run_demo(*, accounts: int = 500, days: int = 3, seed: int = 7, db: str | None = None,
                   paths: Sequence[str | Path] = ("playbooks",), project_dir: str | Path | None = None,
                   force: bool = False, start: dt.datetime | None = None,
                   progress: Callable[[str], None] | None = None, playbooks: Playbooks | None = None) -> DemoSummary:
    """Build the demo (see the module doc) and return its summary (`playbooks`: already loaded from `paths`)."""

    say = progress or (lambda _m: None)
    url = db or default_url(project_dir)
    if not url.startswith("sqlite"):
        raise DemoError(f"the demo writes to a local SQLite store, not {url.split(':', 1)[0]}: pass --db sqlite:///FILE")
    if playbooks is None:
        try:
            playbooks = Playbooks.load(list(paths))
        except ValueError as exc:
            raise DemoError(str(exc)) from exc
    store = Store.open(url, catalog=playbooks.catalog)
    try:
        if not force and not demo_data.is_generated(store):
            raise DemoError(f"{store.url} holds accounts the demo did not make; the demo clears its store: "
                            "pass --db sqlite:///.playbook/demo.db for another file, or --force")
        say(f"clearing {store.url}")
        demo_data.clear(store)
    finally:
        store.close()

    config = SimConfig(days=days, seed=seed, start=start, sample=1)
    report = await simulate(config, playbooks, accounts=accounts, db=url, write_to_store=True, demo_seed=seed,
                            progress=say, generate=accounts)
    store = Store.open(url, catalog=playbooks.catalog)
    try:
        finish_in_flight(store, report.end)
        say("writing a year of closed deals before the start, for `playbook report`")
        demo_history.write(store, playbooks.catalog, seed=seed, before=report.start)
        return _summary(store, playbooks, report, [str(p) for p in paths])
    finally:
        store.close()


def finish_in_flight(store: Store, end: dt.datetime) -> int:
    """Mark the plays still open at the end `cancelled` (their in-process server is gone)."""
    return enrollment.cancel_open(store, end, "the demo's simulation stopped here (in-process Temporal server)")


def _summary(store: Store, playbooks: Playbooks, report: SimReport, paths: list[str]) -> DemoSummary:
    decisions = enrollment.first_sweep(store)
    acted = actions.outbox_totals(store)
    fired: dict[str, set[str]] = {}
    reasons: dict[str, int] = {}
    for d in decisions:
        for t in d.reasons.get("triggers", []):
            fired.setdefault(t, set()).add(d.account_id)
        if d.decision != "enrolled":
            for r in d.reasons.get("reasons", []):
                reasons[r["code"]] = reasons.get(r["code"], 0) + 1
    totals = report.totals
    return DemoSummary(
        store=store.url, playbooks=paths, accounts=report.accounts, days=report.days, start=report.start,
        end=report.end, triggers_fired={k: len(v) for k, v in sorted(fired.items())}, candidates=len(decisions),
        skipped=sum(d.decision != "enrolled" for d in decisions), reasons=dict(sorted(reasons.items())),
        enrolled_by_play=report.by_play, enrolled_by_route=report.by_route,
        outbox=acted.by_channel, emails_cancelled=acted.emails_cancelled,
        sample_email=SampleEmail(account_id=sample.account_id or "", play=sample.play or "", to=sample.recipient,
                                 subject=sample.subject or "", body=sample.body,
                                 created_at=sample.created_at.replace(second=0, microsecond=0))
        if (sample := acted.first_pending_email) is not None else None,
        tasks=totals.get("tasks", 0), tasks_by_assignee_top={k or "(nobody)": v for k, v in acted.top_assignees.items()},
        stage_changes=totals.get("stage_changes", 0), replies=totals.get("replies", 0),
        wall_seconds=report.wall_seconds, report=report,
    )


def print_summary(s: DemoSummary, console: Any = None) -> None:
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table

    con = console or Console(width=None if sys.stdout.isatty() else 120)
    con.print(f"[bold]Playbook demo[/bold]: {s.accounts} accounts, {s.days} simulated days "
              f"({s.start:%a %Y-%m-%d %H:%M} to {s.end:%a %Y-%m-%d %H:%M} UTC) in {s.wall_seconds:.0f} s")
    con.print(f"  store: {s.store}")
    fired = ", ".join(f"{k} {v}" for k, v in sorted(s.triggers_fired.items(), key=lambda kv: (-kv[1], kv[0])))
    con.print(f"\n[bold]First sweep[/bold]: triggers fired on {sum(s.triggers_fired.values())} "
              f"(trigger, account) pairs: {fired or 'none'}")
    enrolled = sum(s.enrolled_by_play.values())
    con.print(f"  {s.candidates} candidate enrollments, {enrolled} enrolled, {s.skipped} skipped"
              + (" (one can have several reasons): " + ", ".join(f"{k} {v}" for k, v in s.reasons.items())
                 if s.reasons else ""))
    t = Table(title="Enrollments by play and route", title_justify="left")
    t.add_column("play")
    t.add_column("route")
    t.add_column("accounts", justify="right")
    for key, n in s.enrolled_by_route.items():
        play, _, route = key.partition("/")
        t.add_row(play, route, str(n))
    con.print(t)
    con.print(f"[bold]Executed[/bold]: outbox {sum(s.outbox.values())} messages ("
              + ", ".join(f"{k} {v}" for k, v in s.outbox.items()) + f"; {s.emails_cancelled} to unsubscribed "
              f"contacts recorded as cancelled), {s.tasks} tasks, {s.stage_changes} pipeline stage moves, "
              f"{s.replies} simulated replies")
    if s.tasks_by_assignee_top:
        con.print("  busiest assignees: " + ", ".join(f"{k} {v}" for k, v in s.tasks_by_assignee_top.items()))
    if s.sample_email is not None:
        e = s.sample_email
        con.print(Panel(_plain(f"To: {e.to}\nSubject: {e.subject}\n\n{e.body.rstrip()}"),
                        title=_plain(f"a rendered email: {e.play} for {e.account_id} "
                                     f"({e.created_at:%a %Y-%m-%d %H:%M} UTC)"),
                        title_align="left", expand=False))
    for account, entries in s.report.timelines.items():
        con.print(f"[bold]Timeline of {account}[/bold]")
        for en in entries:
            play = f"[{en.play}] " if en.play else ""
            con.print(f"  day {en.day} {en.at:%a %H:%M}  {play}{en.text}", markup=False, highlight=False,
                      soft_wrap=True)
    db = "" if s.store == default_url() else f" --db {s.store}"
    con.print("\n[bold]Where to look next[/bold]")
    for line in (
        f"the outbox:    playbook outbox{db}   (--account, --play, --status; --format json)",
        f"tasks:         playbook tasks{db}",
        f"reports:       playbook report all{db} --format html --out report.html   (funnel, plays, triggers, "
        "revenue, SLA; the year before the start is demo history)",
        "30 days, daily load per CSM: playbook simulate --days 30 --accounts 1000",
        "real plays on a real server: playbook dev (Temporal + Web UI + a worker), then `playbook sweep`; "
        "`playbook status` lists the running plays",
    ):
        con.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)


def _plain(text: str) -> Any:
    from rich.text import Text

    return Text(text)


__all__ = ["DemoError", "DemoSummary", "finish_in_flight", "print_summary", "run_demo"]
