"""`playbook sweep`, `playbook simulate`, `playbook demo`: enrolling accounts and watching plays run.

Thin functions over workflows/sweep.py, workflows/simulate.py and
workflows/demo.py. Exit codes as everywhere: 0 done, 2 bad usage, 3
internal error, 4 a store or Temporal could not be reached.

`sweep` talks to a Temporal server as a client; `simulate` and `demo` run an
in-process Temporal test server. All three leave through
`temporal_command` (cli/workflow_commands.py): errors in one line, then
`os._exit` after flushing (sdk-python #300).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import DbOpt, Fail, TextOrJson, TodayOpt, parse_day, settings
from cli.progress import Progress
from cli.rules import PathsArg, RulesOpt, checked, compiled
from cli.rules import paths as rule_paths
from cli.workflow_commands import temporal_command


FormatOpt = Annotated[TextOrJson, typer.Option("--format", help="Output format.")]


def _playbooks(paths: list[Path] | None, given: list[Path] | None, json_mode: bool) -> Any:
    """The checked, compiled rules (cli/rules.py: the loader every command uses)."""
    from workflows.sweep import Playbooks

    project = checked(rule_paths(paths, given), json_mode)
    return Playbooks(project.catalog, {p.play: p for p in compiled(project)})


def _duration(value: str) -> dt.timedelta:
    units = {"m": 60, "h": 3600, "d": 86400}
    try:
        n, unit = float(value[:-1]), value[-1]
        if unit in units and n > 0:
            return dt.timedelta(seconds=n * units[unit])
    except (ValueError, IndexError):
        pass
    raise Fail(f"--schedule wants an interval such as 15m, 1h or 1d, not {value!r}")


# --------------------------------------------------------------------------
# sweep


@temporal_command("sweep")
def sweep(
    paths: PathsArg = None,
    rules: RulesOpt = None,
    db: DbOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the enrollment decisions only: record nothing, start nothing, no server needed.")] = False,
    today: TodayOpt = None,
    full: Annotated[bool, typer.Option("--full", help="Evaluate every account, not only those changed or time-sensitive since the last sweep.")] = False,
    schedule: Annotated[str | None, typer.Option("--schedule", help="Instead of sweeping now, create (or update) the Temporal Schedule that runs SweepWorkflow every INTERVAL (15m, 1h, 1d); workers run it.", show_default=False)] = None,
    address: Annotated[str | None, typer.Option("--address", help="Temporal frontend host:port [env PLAYBOOK_TEMPORAL_ADDRESS; default localhost:7233].", show_default=False)] = None,
    namespace: Annotated[str | None, typer.Option("--namespace", help="Temporal namespace [env PLAYBOOK_TEMPORAL_NAMESPACE].", show_default=False)] = None,
    task_queue: Annotated[str | None, typer.Option("--task-queue", help="Task queue of the workers [env PLAYBOOK_TEMPORAL_TASK_QUEUE; default playbook].", show_default=False)] = None,
    limit: Annotated[int, typer.Option("--limit", help="Decisions printed by --dry-run in text (0: all).")] = 50,
    format: FormatOpt = TextOrJson.text,
) -> None:
    """Evaluate the triggers, decide enrollments (gate, cooldown, priority,
    frequency cap) and start the plays, once. Plays then run on the workers."""
    from engine.store import Store

    day = parse_day(today)
    decide_with = settings()
    playbooks = _playbooks(paths, rules, format == TextOrJson.json)
    if schedule is not None:
        every = _duration(schedule)
        temporal = _temporal(address, namespace, task_queue)
        handle = asyncio.run(_with_client(temporal, lambda c: _schedule(c, every, temporal.task_queue)))
        _print_json_or({"schedule": handle, "every_seconds": every.total_seconds()}, format,
                       f"schedule {handle}: SweepWorkflow every {schedule} on task queue {temporal.task_queue} "
                       "(overlap: skip; catch-up: one interval)")
        raise typer.Exit(0)
    # --dry-run only reads: it must not create, migrate or write a store. A store
    # missing (2) or unreachable (4) leaves through temporal_command like any other.
    store = Store.open(db, catalog=playbooks.catalog, read_only=dry_run)
    try:
        if dry_run:
            _dry_run(store, playbooks, day or decide_with.today(), decide_with, format, limit)
            raise typer.Exit(0)
        temporal = _temporal(address, namespace, task_queue)
        with Progress("playbook sweep") as progress:
            progress.update("sweeping: deciding enrollments, recording them, starting plays")
            summary = asyncio.run(_with_client(temporal, lambda c: _sweep(c, store, playbooks, day, decide_with,
                                                                         temporal.task_queue, full)))
    finally:
        store.close()
    if format == TextOrJson.json:
        print(summary.model_dump_json(indent=2))
    else:
        d = summary.decided
        print(f"sweep {summary.now:%Y-%m-%d %H:%M} UTC (rules as of {summary.today}): {d.decisions} candidates "
              f"on {d.accounts} accounts, {d.enrolled} to enroll, {d.skipped} skipped{_held(d.reasons)}; "
              f"started {summary.started}, "
              f"joined {summary.joined} already running, {summary.failed} not startable, "
              f"{summary.errors} left pending")
        if summary.reconciled.ended:
            print("  finished since the last sweep: " + ", ".join(f"{k} {v}" for k, v in summary.reconciled.ended.items()))
        print("  evaluated: every account" + (f" ({d.why_full})" if d.why_full else "") if d.full
              else f"  evaluated: {d.scope} accounts changed or time-sensitive since the last sweep")
        for play, n in d.by_play.items():
            print(f"  {play}: {n}")
        if d.reasons:
            print(f"  why {d.skipped} skipped (one can have several reasons): "
                  + ", ".join(f"{k} {v}" for k, v in d.reasons.items()))
        print(f"  settings: {decide_with.describe()}")
        if summary.error:
            print(f"  first start error: {summary.error}", file=sys.stderr)
    raise typer.Exit(0 if summary.errors == 0 else 1)


def _temporal(address: str | None, namespace: str | None, task_queue: str | None) -> Any:
    from workflows.settings import SettingsError, TemporalSettings

    try:
        return TemporalSettings.from_env(address=address, namespace=namespace, task_queue=task_queue)
    except SettingsError as exc:
        raise Fail(f"Temporal settings: {exc}") from exc


async def _with_client(settings: Any, work: Any) -> Any:
    from workflows.client import TemporalUnreachable
    from workflows.settings import connect

    try:
        client = await connect(settings)
    except TemporalUnreachable as exc:
        raise TemporalUnreachable(f"{exc}; start one with `playbook dev`, or use --dry-run") from exc
    return await work(client)


async def _schedule(client: Any, every: dt.timedelta, task_queue: str) -> str:
    from workflows.sweep import ensure_schedule

    return (await ensure_schedule(client, every, task_queue=task_queue)).id


async def _sweep(client: Any, store: Any, playbooks: Any, today: dt.date | None, decide_with: Any,
                 task_queue: str, full: bool = False) -> Any:
    from workflows.queues import step_queues
    from workflows.sweep import sweep_once

    now = dt.datetime.now(dt.timezone.utc)
    return await sweep_once(client, store, playbooks, now, today=today, task_queue=task_queue, settings=decide_with,
                            queues=step_queues(task_queue), full=full)


def _dry_run(store: Any, playbooks: Any, today: dt.date, decide_with: Any, format: TextOrJson, limit: int) -> None:
    from engine import enroll

    with Progress("playbook sweep") as progress:
        progress.update("deciding enrollments")
        # decision_set retries a transient store fault itself (engine/enroll.py).
        decisions = enroll.decision_set(store, playbooks.catalog, playbooks.plans, today, decide_with.enrollment())
    if format == TextOrJson.json:
        print(json.dumps({"today": today.isoformat(), "settings": decide_with.decisions_json(),
                          "decisions": [d.to_json() for d in decisions]}, indent=2))
        return
    enrolled = [d for d in decisions if d.enroll]
    skipped = len(decisions) - len(enrolled)
    print(f"dry run (rules as of {today}): {len(decisions)} candidates on {len({d.account_id for d in decisions})} "
          f"accounts, {len(enrolled)} would be enrolled, {skipped} skipped{_held(Counter(c for d in decisions for c in d.codes))}; "
          "nothing recorded, nothing started\n"
          f"  settings: {decide_with.describe()}")
    reasons = Counter(code for d in decisions for code in d.codes)
    if reasons:
        print(f"  why {skipped} skipped (one can have several reasons): "
              + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())))
    shown = decisions if limit == 0 else decisions[:limit]
    for d in shown:
        why = "" if d.enroll else " — " + "; ".join(r.detail for r in d.reasons)
        print(f"  {d.decision:<6} {d.account_id} {d.play} (triggers {', '.join(d.triggers)}; "
              f"route {d.route or '-'}){why}")
    if len(shown) < len(decisions):
        print(f"  ... {len(decisions) - len(shown)} more (--limit 0 shows all, --format json for tools)")


def _print_json_or(doc: dict[str, Any], format: TextOrJson, text: str) -> None:
    print(json.dumps(doc, indent=2) if format == TextOrJson.json else text)


# --------------------------------------------------------------------------
# simulate


@temporal_command("simulate")
def simulate(
    paths: PathsArg = None,
    rules: RulesOpt = None,
    days: Annotated[int, typer.Option("--days", min=1, max=365, help="Simulated days.")] = 30,
    accounts: Annotated[int, typer.Option("--accounts", min=1, help="Demo accounts to generate (ignored with --db).")] = 500,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the demo data and of the simulated customers.")] = 7,
    reply_rate: Annotated[float, typer.Option("--reply-rate", min=0.0, max=1.0, help="Chance that an email gets a reply (at most one reply per enrollment).")] = 0.2,
    unsubscribe_rate: Annotated[float, typer.Option("--unsubscribe-rate", min=0.0, max=1.0, help="Chance that an email is answered by an unsubscribe.")] = 0.01,
    win_rate: Annotated[float, typer.Option("--win-rate", min=0.0, max=1.0, help="After a reply: chance the deal closes won (3-10 days later).")] = 0.25,
    loss_rate: Annotated[float, typer.Option("--loss-rate", min=0.0, max=1.0, help="After a reply: chance the deal closes lost.")] = 0.10,
    script: Annotated[Path | None, typer.Option("--script", help='JSON list of scripted customer events: {"day": 2, "hour": 14, "account": "acc-1", "event": "replied", "play": "usage_limit"}.', show_default=False)] = None,
    start: Annotated[str | None, typer.Option("--start", help="First simulated day (YYYY-MM-DD; the sweep runs at 06:00 UTC) [default: the next 06:00 UTC]. Same seed, start and data: same result.", show_default=False)] = None,
    db: Annotated[str | None, typer.Option("--db", "--database", help="Simulate on a copy of this SQLite store instead of demo data (never written to).", show_default=False)] = None,
    account: Annotated[list[str] | None, typer.Option("--account", help="Show this account's timeline (repeatable).", show_default=False)] = None,
    sample: Annotated[int, typer.Option("--sample", min=0, help="Timelines of this many enrolled accounts (chosen by the seed) when no --account.")] = 5,
    format: FormatOpt = TextOrJson.text,
) -> None:
    """Run the real plays over a dataset on Temporal's time-skipping test
    server, with simulated replies, unsubscribes and won/lost deals; print
    account timelines and the daily load (emails, tasks per CSM, stage changes)."""
    from cli.simulate_render import render, report_json
    from workflows.sim_model import ScriptedEvent, SimConfig
    from workflows.simulate import simulate as run_simulation

    playbooks = _playbooks(paths, rules, format == TextOrJson.json)
    first = parse_day(start, "--start")
    scripted: list[ScriptedEvent] = []
    if script is not None:
        try:
            scripted = [ScriptedEvent.model_validate(e) for e in json.loads(script.read_text())]
        except (OSError, ValueError) as exc:
            raise Fail(f"--script {script}: {str(exc).splitlines()[0]}") from exc
    config = SimConfig(
        days=days, seed=seed, reply_rate=reply_rate, unsubscribe_rate=unsubscribe_rate, win_rate=win_rate,
        loss_rate=loss_rate, script=scripted, timeline_accounts=list(account or []), sample=sample,
        start=dt.datetime.combine(first, dt.time(6), dt.timezone.utc) if first else None,
    )
    progress = None if format == TextOrJson.json else (lambda m: print(f"  {m}", file=sys.stderr, flush=True))
    try:
        report = asyncio.run(run_simulation(config, playbooks, accounts=accounts, db=db, progress=progress))
    except ValueError as exc:
        raise Fail(str(exc)) from exc
    if format == TextOrJson.json:
        print(report_json(report))
    else:
        render(report)


# --------------------------------------------------------------------------
# demo


@temporal_command("demo")
def demo(
    paths: PathsArg = None,
    rules: RulesOpt = None,
    accounts: Annotated[int, typer.Option("--accounts", min=1, help="Demo accounts to generate.")] = 500,
    days: Annotated[int, typer.Option("--days", min=1, max=60, help="Simulated days of the plays after the first sweep.")] = 3,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the demo data and the simulated customers.")] = 7,
    db: Annotated[str | None, typer.Option("--db", "--database", help="SQLite store the demo clears and fills [default .playbook/playbook.db].", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Clear the store even if it holds accounts the demo did not make.")] = False,
    format: FormatOpt = TextOrJson.text,
) -> None:
    """The full demo, no server needed: demo data in a local store, a sweep,
    plays enrolled, their first days run into the outbox, and where to look."""
    from workflows.demo import DemoError, print_summary, run_demo

    if not paths and not rules and not Path("playbooks").is_dir():
        raise Fail("no playbooks/ folder here: run the demo from the project's root, or pass the folder")
    playbooks = _playbooks(paths, rules, format == TextOrJson.json)
    progress = None if format == TextOrJson.json else (lambda m: print(f"  {m}", file=sys.stderr, flush=True))
    try:
        summary = asyncio.run(run_demo(accounts=accounts, days=days, seed=seed, db=db, force=force,
                                       paths=[str(p) for p in rule_paths(paths, rules)], playbooks=playbooks,
                                       progress=progress))
    except DemoError as exc:
        raise Fail(str(exc)) from exc
    if format == TextOrJson.json:
        print(summary.model_dump_json(indent=2))
    else:
        print_summary(summary)


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)
    app.command("simulate")(simulate)
    app.command("demo")(demo)


def _held(reasons: Mapping[str, int]) -> str:
    """`(12 of them held out)`: a play's control group, counted apart from the other skips."""
    n = reasons.get("held_out", 0)
    return f" ({n} of them held out)" if n else ""
