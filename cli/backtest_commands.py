"""`playbook backtest`: the rules over past days with each day's values (engine/backtest.py).

Exit codes as elsewhere: 0 ok, 1 the rules have errors, 2 bad usage (dates
reversed or not past, an unknown trigger or parameter, a value in the wrong
unit, a store without field history), 4 the store is unreachable.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.common import EXIT_OK, DbOpt, Fail, TodayOpt, parse_day
from cli.common import TextOrJson as Format
from cli.common import read as _read
from cli.common import reading_store as _store
from cli.common import today as _today
from cli.progress import Progress
from cli.rules import RulesOpt, checked, refuse_errors
from cli.rules import paths as rule_paths

if TYPE_CHECKING:
    from engine.backtest import Backtest


def backtest(
    start: Annotated[str, typer.Option("--from", help="First day replayed, YYYY-MM-DD.", show_default=False)],
    end: Annotated[str, typer.Option("--to", help="Last day replayed, YYYY-MM-DD (before today).",
                                     show_default=False)],
    rules: RulesOpt = None,
    db: DbOpt = None,
    against: Annotated[str | None, typer.Option(
        "--against", help="Replay the rules at this git revision (e.g. origin/main) instead of the working tree.",
        show_default=False)] = None,
    trigger: Annotated[list[str] | None, typer.Option(
        "--trigger", help="Only this trigger (repeatable; default: every trigger).", show_default=False)] = None,
    vary_opt: Annotated[list[str] | None, typer.Option(
        "--vary", help="TRIGGER.PARAM=V1,V2,...: the trigger once per value of the number PARAM is compared "
                       "with (PARAM: the field or series compared), side by side. Repeatable, one per trigger.",
        show_default=False)] = None,
    window: Annotated[int, typer.Option(
        "--window", help="Days after an account's first fire in which a won outcome counts as converted.",
        min=0)] = 180,
    format: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.text,
    today: TodayOpt = None,
) -> None:
    """Which accounts the triggers would have fired on, day by day, with the values known each day."""
    from engine import backtest as bt
    from engine import plan as pl

    json_mode = format == Format.json
    first, last = parse_day(start, "--from"), parse_day(end, "--to")
    assert first is not None and last is not None
    day = _today(today)
    progress = Progress("playbook backtest")
    with pl.temp_dir() as tmp:
        if against is None:
            project = checked(rule_paths(rules), json_mode)
        else:
            with progress:
                progress.update(f"reading the rules at {against}")
                try:
                    project = pl.rules_at([Path(p) for p in rule_paths(rules)], against, Path(tmp))
                except pl.PlanError as e:
                    raise Fail(str(e)) from e
            refuse_errors(project, json_mode, against)
        catalog = project.catalog
        try:
            runs = bt.variants(catalog, trigger or [], vary_opt or [])
        except bt.BacktestError as e:
            raise Fail(str(e)) from e
        with progress, _store(db, catalog) as store:
            progress.update(f"replaying {len(runs)} condition(s) over {(last - first).days + 1} days")
            try:
                result = _read(store, lambda conn: bt.backtest(conn, catalog, runs, first, last, window, day))
            except bt.BacktestError as e:
                raise Fail(str(e)) from e
    if json_mode:
        print(json.dumps({**result.to_json(), "rules": against or "working tree"}, indent=2))
    else:
        sys.stdout.write(render_text(result, against or "working tree"))
    raise typer.Exit(EXIT_OK)


def render_text(r: Backtest, rules: str) -> str:
    """One row per measure, one column per trigger (and per --vary value)."""
    lines = [f"Backtest {r.start.isoformat()} .. {r.end.isoformat()} ({(r.end - r.start).days + 1} days), "
             f"rules: {rules}"]
    if r.known_since and r.known_since > r.start:
        lines.append(f"note: the field history starts {r.known_since.isoformat()}: before it no account is known, "
                     "so nothing fires")
    lines.append(f"converted: first fire, then a won outcome within {r.window} days "
                 f"({r.outcomes:,} won outcome(s) in the store)")
    lines.append("")
    by_trigger: dict[str, list[Any]] = {}
    for res in r.results:
        by_trigger.setdefault(res.trigger, []).append(res)
    quarters = sorted({q for res in r.results for q in res.per_quarter})
    for name, group in by_trigger.items():
        varied = group[0].param is not None
        heads = [(g.value or "") + ("*" if varied and g.current else "") for g in group] if varied else ["accounts"]
        title = f"{name}  (vary {group[0].param}; * the rules' value)" if varied else name
        rows: list[tuple[str, list[str]]] = [
            ("fired (accounts)", [f"{g.accounts:,}" for g in group]),
            *((f"fired in {q}", [f"{g.per_quarter.get(q, 0):,}" for g in group]) for q in quarters),
            ("first fire", [min(g.first.values()).isoformat() if g.first else "-" for g in group]),
            ("peak per day", [f"{max(g.per_day.values()):,}" if g.per_day else "0" for g in group]),
            ("converted", [f"{g.converted:,}" for g in group]),
            ("conversion", [f"{g.converted / g.accounts:.1%}" if g.accounts else "-" for g in group]),
        ]
        width = max(len(label) for label, _ in rows)
        cols = [max(len(h), *(len(v[i]) for _, v in rows)) for i, h in enumerate(heads)]
        lines.append(title)
        lines.append("  " + " " * width + "".join(f"  {h:>{w}}" for h, w in zip(heads, cols, strict=True)))
        for label, values in rows:
            lines.append(f"  {label:<{width}}" + "".join(f"  {v:>{w}}" for v, w in zip(values, cols, strict=True)))
        lines.append("")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    app.command("backtest")(backtest)
