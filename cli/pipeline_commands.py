"""`playbook stage OPPORTUNITY STAGE --reason CODE` and `playbook pipeline`: the built-in pipeline by hand.

Thin: parsing and presentation over engine/pipeline.py (the store) and
workflows/pipeline.py (the SLA timers). `stage` connects to Temporal first,
so an unreachable server (exit 4) leaves the store untouched; then it
records the move and signals the deal's timer. `--no-timer` records the
move only. Refused stages and moves are exit 2, naming the stage, the deal
and why. `pipeline` reads the store only: open deals (`--all`: closed ones
too) with their stage, age in stage and SLA status on the pipeline calendar.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import json
from typing import Annotated, Any

import typer

from cli import render
from cli.common import EXIT_OK, DbOpt, Fail, reading_store, settings
from cli.workflow_commands import AddressOpt, NamespaceOpt, TaskQueueOpt, _actor, _settings, temporal_command


class Format(str, enum.Enum):
    table = "table"
    json = "json"


def _calendar() -> Any:
    from workflows.pipeline_activities import SlaCalendar

    return SlaCalendar.from_settings(settings())


def _when(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        at = dt.datetime.fromisoformat(value)
    except ValueError:
        raise Fail(f"--at wants a time such as 2026-06-01T14:00:00Z, not {value!r}") from None
    return at.replace(tzinfo=dt.timezone.utc) if at.tzinfo is None else at


def _local(at: dt.datetime, zone_name: str) -> str:
    from workflows.schedule import zone

    return f"{at.astimezone(zone(zone_name)):%a %d %b %Y %H:%M %Z}"


@temporal_command("stage")
def stage(
    opportunity: Annotated[str, typer.Argument(metavar="OPPORTUNITY", help="The opportunity id.",
                                               show_default=False)],
    to: Annotated[str, typer.Argument(metavar="STAGE", help="Trigger Fired, CSQL Created, Qualified, Proposal Sent, "
                                      "Negotiation, Closed Won or Closed Lost (quote names with spaces).",
                                      show_default=False)],
    reason: Annotated[str, typer.Option("--reason", help="Reason code, e.g. budget_approved, lost:price.",
                                        show_default=False)],
    actor: Annotated[str | None, typer.Option("--actor", help="Who moved it [default: your user name].",
                                              show_default=False)] = None,
    at: Annotated[str | None, typer.Option("--at", help="When it moved [default: now].", show_default=False)] = None,
    no_timer: Annotated[bool, typer.Option("--no-timer", help="Record the move only; do not tell the SLA timer "
                                           "(no Temporal needed).")] = False,
    address: AddressOpt = None,
    namespace: NamespaceOpt = None,
    task_queue: TaskQueueOpt = None,
    database: DbOpt = None,
    format: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
) -> None:
    """Move an opportunity to a stage with a reason code; its SLA timer restarts at the new stage."""
    from dsl import pipeline as stages
    from engine import pipeline
    from engine.store import Store, removed_if_failed
    from workflows.pipeline_activities import deadlines

    try:
        stages.stage(to)
        stages.check_reason(reason)
    except stages.PipelineError as exc:
        raise Fail(str(exc)) from exc
    who, when = _actor(actor), _when(at) or dt.datetime.now(dt.timezone.utc)
    temporal = None if no_timer else _settings(address=address, namespace=namespace, task_queue=task_queue)

    async def go(store: Store) -> pipeline.Move:
        if temporal is None:
            return await asyncio.to_thread(pipeline.change_stage, store, opportunity, to, at=when, actor=who,
                                           reason=reason)
        from workflows.pipeline import record_stage_change
        from workflows.settings import connect

        client = await connect(temporal)  # before writing: unreachable leaves the store as it was
        return await record_stage_change(client, store, opportunity, to, actor=who, reason=reason, at=when,
                                         task_queue=temporal.task_queue)

    cal = _calendar()
    with removed_if_failed(database):
        store = Store.open(database)
        try:
            move = asyncio.run(go(store))
        except pipeline.PipelineError as exc:
            raise Fail(f"opportunity {opportunity}: {exc}") from exc
        finally:
            store.close()
    due = deadlines(move.stage, move.at, cal) if move.changed else None
    sla = stages.BY_NAME[move.stage].sla
    if format is Format.json:
        print(json.dumps({"opportunity_id": move.opportunity_id, "from": move.previous, "to": move.stage,
                          "changed": move.changed, "at": move.at.isoformat(), "actor": move.actor,
                          "reason": move.reason, "timer": not no_timer and move.changed,
                          "sla": sla.describe() if sla else None,
                          "due_at": due[0].isoformat() if due else None,
                          "escalate_at": due[1].isoformat() if due else None}))
        return
    if not move.changed:
        print(f"{opportunity} is already at {move.stage}: nothing recorded")
        return
    print(f"Moved {opportunity} from {move.previous} to {move.stage} (reason {move.reason}, by {move.actor}).")
    if due is not None and sla is not None:
        print(f"SLA: {sla.describe()}, due {_local(due[0], cal.timezone)}; the owner's manager is told "
              f"{_local(due[1], cal.timezone)} if it is missed.")
    elif not stages.BY_NAME[move.stage].closed:
        print(f"No SLA runs at {move.stage}.")
    if no_timer:
        print("The SLA timer was not told (--no-timer).")


COLUMNS = tuple(render.Column(k, k, cut=k == "title", min_width=12 if k == "title" else 0)
                for k in ("opportunity", "account", "owner", "stage", "in_stage", "sla", "told", "title"))
PRIORITY = ("opportunity", "stage", "sla", "in_stage", "owner", "told", "account", "title")


def _span(delta: dt.timedelta) -> str:
    hours = abs(delta.total_seconds()) / 3600
    if hours < 48:
        return f"{hours:.0f}h"
    return f"{hours / 24:.0f}d"


def sla_status(entered_at: dt.datetime, stage_name: str, closed: bool, now: dt.datetime, cal: Any) -> dict[str, Any]:
    """The SLA of a deal at `now`: on track (due in ...), missed (owner told), escalated (manager told)."""
    from workflows.pipeline_activities import deadlines

    if closed:
        return {"status": "closed", "due_at": None, "escalate_at": None}
    due = deadlines(stage_name, entered_at, cal)
    if due is None:
        return {"status": "no SLA", "due_at": None, "escalate_at": None}
    status = (f"due in {_span(due[0] - now)}" if now < due[0]
              else f"missed {_span(now - due[0])} ago" if now < due[1]
              else f"missed {_span(now - due[0])} ago, escalated")
    return {"status": status, "due_at": due[0], "escalate_at": due[1]}


def pipeline(
    all_deals: Annotated[bool, typer.Option("--all", help="Closed deals too.")] = False,
    db: DbOpt = None,
    format: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
) -> None:
    """Opportunities with their stage, time in stage, SLA status and who a missed SLA told, longest in stage first."""
    from engine import pipeline as engine_pipeline
    from engine.settings import clock

    cal = _calendar()
    now = clock()
    with reading_store(db) as store:
        found = engine_pipeline.entries(store, include_closed=all_deals)
        told = engine_pipeline.told(store)
    rows = []
    for e in found:
        sla = sla_status(e.entered_at, e.stage, e.closed, now, cal)
        levels = told.get((e.opportunity_id, e.stage, e.entered_at), {})
        rows.append({"opportunity": e.opportunity_id, "account": e.account_id, "owner": e.owner or "",
                     "stage": e.stage, "entered_at": e.entered_at, "in_stage": _span(now - e.entered_at),
                     "sla": sla["status"], "due_at": sla["due_at"], "escalate_at": sla["escalate_at"],
                     "told": ", ".join(f"{who or 'nobody'} ({level})" for level, who in sorted(
                         levels.items(), key=lambda lw: lw[0] != "owner")),
                     "title": e.title or "", "play": e.play})
    if format is Format.json:
        print(json.dumps([{k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in r.items()}
                          for r in rows], indent=2))
        raise typer.Exit(EXIT_OK)
    if not rows:
        print("no open opportunities" if not all_deals else "no opportunities")
        raise typer.Exit(EXIT_OK)
    out = render.console()
    cells = [{c.key: str(r[c.key]) for c in COLUMNS} for r in rows]
    fitting = render.fit_columns(COLUMNS, PRIORITY, cells, out.width)
    what = ("deal" if all_deals else "open deal") + ("" if len(rows) == 1 else "s")
    out.print(render.table_of(f"Pipeline ({len(rows)} {what}; SLAs on "
                              f"{cal.timezone} business days)", fitting, render.cut_to_fit(fitting, cells, out.width)))


def register(app: typer.Typer) -> None:
    app.command("stage")(stage)
    app.command("pipeline")(pipeline)


__all__ = ["register", "sla_status"]
