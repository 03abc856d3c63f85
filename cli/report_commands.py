"""`playbook report funnel|plays|triggers|revenue|sla|holdouts|all`: how the plays pay, over the store.

Thin: argument parsing and presentation over engine/reports/. Every report prints a
terminal table (default), one JSON document (`--format json`), or one self-contained
HTML page with charts (`--format html`, to stdout or `--out FILE`; cli/report_html.py).
`report all` puts every report in one document. Exit codes as everywhere: 0 shown,
2 bad usage (a missing or empty store, a bad option), 4 the store unreachable.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli import render
from cli.common import DbOpt, Fail, TodayOpt, parse_day, read, reading_store
from cli.common import today as today_in_team_zone
from cli.rules import RulesOpt, checked
from cli.rules import paths as rule_paths

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


class ReportFormat(str, enum.Enum):
    table = "table"
    json = "json"
    html = "html"


FormatOpt = Annotated[ReportFormat, typer.Option("--format", help="Output format.")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Write the report to this file instead of stdout.",
                                             show_default=False)]
SinceOpt = Annotated[str | None, typer.Option("--since", help="From this day (YYYY-MM-DD), included.",
                                              show_default=False)]
UntilOpt = Annotated[str | None, typer.Option("--until", help="To this day (YYYY-MM-DD), excluded.",
                                              show_default=False)]
StagesOpt = Annotated[str | None, typer.Option(
    "--stages", help="The funnel's stages in order, comma-separated [default: the built-in pipeline's].",
    show_default=False)]
PlayOpt = Annotated[str | None, typer.Option("--play", help="Only this play's opportunities.", show_default=False)]
EligibleOpt = Annotated[int | None, typer.Option(
    "--eligible", help="Accounts eligible for the triggers [default: the accounts in the store].",
    show_default=False)]
HistoryOpt = Annotated[bool, typer.Option(
    "--history", help="Also evaluate the quarters before the first sweep from the field history: a backtest over "
    "every day of it, so it takes time on a large store (about half a minute at 20,000 accounts).")]
CostOpt = Annotated[float | None, typer.Option(
    "--cost", help="What the expansion motion cost over the period, for expansion CAC.", show_default=False)]

app = typer.Typer(help="Reports over the store: funnel, plays, triggers, revenue, SLA, holdouts (table, JSON or HTML).",
                  no_args_is_help=True, rich_markup_mode=None)


# ---------------------------------------------------------------- shared steps


def _period(since: str | None, until: str | None) -> tuple[dt.date | None, dt.date | None]:
    a, b = parse_day(since, "--since"), parse_day(until, "--until")
    if a is not None and b is not None and b <= a:
        raise Fail(f"--until ({b}) must come after --since ({a})")
    return a, b


def _stages(value: str | None) -> tuple[str, ...]:
    from engine.reports.funnel import PIPELINE_STAGES

    if value is None:
        return PIPELINE_STAGES
    stages = tuple(s.strip() for s in value.split(","))
    if not all(stages):
        raise Fail(f"--stages wants stage names separated by commas, not {value!r}")
    return stages


def _emit(fmt: ReportFormat, out: Path | None, docs: dict[str, dict[str, Any]],
          table: Callable[[dict[str, dict[str, Any]]], None], title: str) -> None:
    if fmt == ReportFormat.table:
        table(docs)
        return
    if fmt == ReportFormat.json:
        text = json.dumps(docs[next(iter(docs))] if len(docs) == 1 else {"reports": docs}, indent=2) + "\n"
    else:
        from cli.report_html import document

        text = document(docs, title)
    if out is None:
        sys.stdout.write(text)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as e:
        raise Fail(f"cannot write {out}: {e.strerror or e}") from e
    print(f"wrote {out}", file=sys.stderr)


def _catalog(rules: list[Path] | None, fmt: ReportFormat) -> Any:
    return checked(rule_paths(rules), fmt == ReportFormat.json).catalog


def _funnel(conn: Any, stages: tuple[str, ...], play: str | None, since: dt.date | None,
            until: dt.date | None) -> dict[str, Any]:
    from engine.reports.funnel import FunnelError, funnel

    try:
        return funnel(conn, stages, play=play, since=since, until=until).to_json()
    except FunnelError as e:
        raise Fail(str(e)) from e


def _revenue(conn: Any, table: Any, since: dt.date | None, until: dt.date | None, cost: float | None,
             as_of: dt.date) -> dict[str, Any]:
    from engine.reports.revenue import RevenueError, revenue_report

    if cost is not None and not cost >= 0:
        raise Fail(f"--cost wants an amount of at least 0, not {cost:g}")
    try:
        return revenue_report(conn, table, since=since, until=until, cost=cost, as_of=as_of).to_json()
    except RevenueError as e:
        raise Fail(str(e)) from e


# ---------------------------------------------------------------- tables


def _pct_cols(*specs: tuple[str, str, bool]) -> list[render.Column]:
    return [render.Column(k, h, numeric=n) for k, h, n in specs]


def _money(v: float | None) -> str:
    return "" if v is None else f"${v:,.0f}"


def _n(v: Any) -> str:
    return "" if v is None else f"{v:g}" if isinstance(v, float) else f"{v:,}"


def funnel_table(doc: dict[str, Any]) -> None:
    out = render.console()
    rows = [{"stage": s["stage"], "count": _n(s["count"]), "step": s["step_conversion_percent"],
             "days": _n(s["avg_days_in_stage"])} for s in doc["stages"]]
    cols = _pct_cols(("stage", "stage", False), ("count", "count", True), ("step", "step conversion", True),
                     ("days", "avg days in stage", True))
    out.print(render.table_of("Pipeline funnel", cols, rows))
    out.print(f"Overall: {doc['overall_conversion_percent'] or 'n/a'} from {doc['stages'][0]['stage']} "
              f"to {doc['stages'][-1]['stage']}")


def plays_table(doc: dict[str, Any]) -> None:
    out = render.console()

    def cells(p: dict[str, Any]) -> dict[str, str]:
        return {"play": p["play"], "step": p["step"] or "", "attempts": _n(p["attempts"]), "replies": _n(p["replies"]),
                "closes": _n(p["closes"]), "rate": p["rate_percent"], "value": _money(p["avg_value"])}

    tail = [("attempts", "attempts", True), ("replies", "replies", True), ("closes", "closes", True),
            ("rate", "rate", True), ("value", "avg value", True)]
    out.print(render.table_of("Play performance", _pct_cols(("play", "play", False), *tail),
                              [cells(p) for p in doc["plays"]]))
    if doc["steps"]:
        out.print(render.table_of("By email step", _pct_cols(("play", "play", False), ("step", "step", False),
                                                             *tail), [cells(p) for p in doc["steps"]]))


def triggers_table(doc: dict[str, Any]) -> None:
    out = render.console()
    rows = [{"trigger": r["trigger"], "quarter": r["quarter"], "source": r["source"], "fired": _n(r["fired"]),
             "rate": r["fire_rate_percent"], "band": r["band"], "judged": _n(r["accuracy_counted"]),
             "accuracy": r["accuracy_percent"]} for r in doc["rows"]]
    cols = _pct_cols(("trigger", "trigger", False), ("quarter", "quarter", False), ("source", "from", False),
                     ("fired", "fired", True), ("rate", "fire rate", True), ("band", "band", False),
                     ("judged", "judged", True), ("accuracy", "accuracy", True))
    out.print(render.table_of(f"Trigger fire rate per quarter, of {doc['eligible']:,} eligible accounts", cols, rows))
    if not rows:
        out.print("No sweep has recorded a decision yet: run `playbook sweep` (or the demo) first.")
    if doc["accuracy_window_days"] is not None:
        out.print(f"Accuracy (fired, then won) judges the fires at least {doc['accuracy_window_days']} days old "
                  f"({doc['accuracy_window_from']}); younger ones had no time to close.")
    advice = sorted({(r["band"], r["advice"]) for r in doc["rows"] if r["band"] in (
        "too permissive", "too restrictive or missing data")})
    for band, text in advice:
        out.print(f"{band}: {text}")
    for note in doc["notes"]:
        out.print(f"note: {note}")


def revenue_table(doc: dict[str, Any]) -> None:
    out = render.console()

    def cells(s: dict[str, Any], overall: bool = False) -> dict[str, str]:
        return {"segment": s["segment"] or ("all accounts" if overall else "(no segment)"), "accounts": _n(s["accounts"]),
                "start": _money(s["starting_arr"]), "end": _money(s["ending_arr"]), "exp": _money(s["expansion_arr"]),
                "mrr": _money(s["expansion_mrr"]), "rate": s["expansion_rate_percent"], "grr": s["grr_percent"],
                "nrr": s["nrr_percent"]}

    cols = _pct_cols(("segment", "segment", False), ("accounts", "accounts", True), ("start", "starting ARR", True),
                     ("end", "ending ARR", True), ("exp", "expansion ARR", True), ("mrr", "expansion MRR", True),
                     ("rate", "expansion rate", True), ("grr", "GRR", True), ("nrr", "NRR", True))
    ended = doc["ending_arr_from"]
    out.print(f"From {doc['since']} to {doc['until']} (excluded): ARR at the start and the end as known then; "
              f"ending ARR from the field history for {ended['history']:,} accounts, from the outcomes for "
              f"{ended['outcomes']:,} (ARR unchanged)")
    out.print(render.table_of("Revenue retention", cols, [cells(doc["overall"], True)]
                              + [cells(s) for s in doc["by_segment"]]))
    if doc["cohorts"]:
        out.print(render.table_of("Cohort expansion (by contract start)", _pct_cols(
            ("cohort", "cohort", False), ("accounts", "accounts", True), ("e6", "in 6 months", True),
            ("e12", "in 12 months", True), ("avg", "avg expansion", True)), [
            {"cohort": c["cohort"], "accounts": _n(c["accounts"]), "e6": c["expanded_6m_percent"] or "—",
             "e12": c["expanded_12m_percent"] or "—", "avg": _money(c["avg_expansion"])} for c in doc["cohorts"]]))
    if doc["time_to_expand"]:
        out.print(render.table_of("Time to expand (days from signal to close)", _pct_cols(
            ("q", "quarter closed", False), ("n", "expansions", True), ("d", "avg days", True)), [
            {"q": t["quarter"], "n": _n(t["expansions"]), "d": _n(t["avg_days"])} for t in doc["time_to_expand"]]))
    if doc["cost"] is not None:
        out.print(f"Expansion CAC: {_money(doc['expansion_cac']) or 'n/a'} per expansion, "
                  f"{_n(doc['expansion_cac_per_arr']) or 'n/a'} per $1 of expansion ARR won "
                  f"({doc['wins']:,} wins, {_money(doc['won_arr'])})")
    for note in doc["notes"]:
        out.print(f"note: {note}")


def sla_table(doc: dict[str, Any]) -> None:
    out = render.console()
    rows = [{"stage": r["stage"], "owner": r["owner"] or "(nobody)", "sla": r["sla"], "entered": _n(r["entered"]),
             "breaches": _n(r["breaches"]), "rate": r["breach_rate_percent"], "esc": _n(r["escalations"])}
            for r in doc["rows"]]
    cols = _pct_cols(("stage", "stage", False), ("owner", "owner", False), ("sla", "SLA", False),
                     ("entered", "deals", True), ("breaches", "breaches", True), ("rate", "breach rate", True),
                     ("esc", "escalated", True))
    out.print(render.table_of("SLA breaches by stage and owner", cols, rows))
    out.print(f"{doc['breaches']:,} breaches, {doc['escalations']:,} escalated to a manager")


def _points(v: float, places: int = 1) -> str:
    """A rate difference in percentage points, signed: +3.1 pts."""
    return f"{v * 100:+.{places}f} pts"


def _signed_money(v: float) -> str:
    return f"{'-' if v < 0 else '+'}${abs(v):,.0f}"


def holdouts_table(doc: dict[str, Any]) -> None:
    out = render.console()
    rows = []
    for p in doc["plays"]:
        for name, g in (("treated", p["treated"]), ("held out", p["held_out"])):
            ci = g["conversion_ci"]
            rows.append({"play": p["play"] if name == "treated" else "", "group": name, "accounts": _n(g["accounts"]),
                         "converted": _n(g["converted"]), "rate": g["conversion_percent"],
                         "ci": "" if ci is None else f"{ci['low'] * 100:.1f}% to {ci['high'] * 100:.1f}%",
                         "rev": _money(g["revenue_per_account"])})
    cols = _pct_cols(("play", "play", False), ("group", "group", False), ("accounts", "accounts", True),
                     ("converted", "converted", True), ("rate", "conversion", True), ("ci", "95% CI", True),
                     ("rev", "revenue / account", True))
    out.print(render.table_of("Holdouts: treated against held-out accounts", cols, rows))
    if not doc["plays"]:
        out.print("No play has held an account out yet: declare `holdout N%` in a play and run a sweep.")
    for p in doc["plays"]:
        conv, rev = p["difference"]["conversion"], p["difference"]["revenue_per_account"]
        if conv is None or rev is None:
            out.print(f"{p['play']}: {p['note']}")
            continue
        out.print(f"{p['play']}: conversion {_points(conv['estimate'])} (95% CI {_points(conv['low'])} to "
                  f"{_points(conv['high'])}); revenue per account {_signed_money(rev['estimate'])} (95% CI "
                  f"{_signed_money(rev['low'])} to {_signed_money(rev['high'])})")
    if doc["plays"]:
        out.print("Treated minus held out. Conversion: Newcombe's hybrid score interval (Wilson); "
                  "revenue: Welch's standard error, normal approximation.")


TABLES: dict[str, Callable[[dict[str, Any]], None]] = {
    "funnel": funnel_table, "plays": plays_table, "triggers": triggers_table, "revenue": revenue_table,
    "sla": sla_table, "holdouts": holdouts_table}


def _tables(docs: dict[str, dict[str, Any]]) -> None:
    for i, (name, doc) in enumerate(docs.items()):
        if i:
            print()
        TABLES[name](doc)


# ---------------------------------------------------------------- commands


def _over_period(db: str | None, format: ReportFormat, out: Path | None, since: str | None, until: str | None,
                 key: str, title: str, build: Callable[[Connection, dt.date | None, dt.date | None], Any]) -> None:
    """A report over `--since`/`--until` that needs no rules: read in one snapshot, emitted as `{key: ...}`."""
    a, b = _period(since, until)
    with reading_store(db) as store:
        doc = read(store, lambda conn: build(conn, a, b))
    _emit(format, out, {key: doc}, _tables, title)



@app.command("funnel")
def funnel_cmd(db: DbOpt = None, format: FormatOpt = ReportFormat.table, out: OutOpt = None,
               stages: StagesOpt = None, play: PlayOpt = None, since: SinceOpt = None,
               until: UntilOpt = None) -> None:
    """Pipeline funnel by stage: step and overall conversion, time in stage."""
    a, b = _period(since, until)
    wanted = _stages(stages)
    with reading_store(db) as store:
        doc = read(store, lambda conn: _funnel(conn, wanted, play, a, b))
    _emit(format, out, {"funnel": doc}, _tables, "Pipeline funnel")


@app.command("plays")
def plays_cmd(db: DbOpt = None, format: FormatOpt = ReportFormat.table, out: OutOpt = None,
              since: SinceOpt = None, until: UntilOpt = None) -> None:
    """Per play and per email step: attempts, replies, closes, rate, average value."""
    from engine.reports.plays import plays_report

    _over_period(db, format, out, since, until, "plays", "Play performance",
                 lambda conn, a, b: plays_report(conn, since=a, until=b).to_json())


def _triggers(conn: Any, eligible: int | None, catalog: Any, today: dt.date, history: bool) -> dict[str, Any]:
    from engine.reports.triggers import triggers_report

    doc = triggers_report(conn, eligible=eligible, history_rules=catalog if history else None,
                          today=today).to_json()
    if not history:
        # The history's quarters cost a backtest over every day of it: asked for, not paid on every report.
        doc["notes"].append("quarters before the first sweep are not shown: --history evaluates them from the "
                            "field history")
    return doc


@app.command("triggers")
def triggers_cmd(rules: RulesOpt = None, db: DbOpt = None, format: FormatOpt = ReportFormat.table,
                 out: OutOpt = None, eligible: EligibleOpt = None, today: TodayOpt = None,
                 history: HistoryOpt = False) -> None:
    """Fire rate per trigger and quarter against the seeds' bands, and accuracy (fired, then won); with
    --history, quarters before the first sweep from the field history."""
    if eligible is not None and eligible <= 0:
        raise Fail(f"--eligible wants a number of accounts above 0, not {eligible}")
    as_of = today_in_team_zone(today)
    catalog = _catalog(rules, format)
    with reading_store(db, catalog) as store:
        doc = read(store, lambda conn: _triggers(conn, eligible, catalog, as_of, history))
    _emit(format, out, {"triggers": doc}, _tables, "Trigger effectiveness")


@app.command("revenue")
def revenue_cmd(rules: RulesOpt = None, db: DbOpt = None, format: FormatOpt = ReportFormat.table,
                out: OutOpt = None, since: SinceOpt = None, until: UntilOpt = None, cost: CostOpt = None,
                today: TodayOpt = None) -> None:
    """Expansion MRR/ARR, expansion rate, GRR and NRR (overall, by segment), cohorts, time to expand, CAC."""
    a, b = _period(since, until)
    as_of = today_in_team_zone(today)
    catalog = _catalog(rules, format)
    with reading_store(db, catalog) as store:
        table = store.table("account", catalog)
        doc = read(store, lambda conn: _revenue(conn, table, a, b, cost, as_of))
    _emit(format, out, {"revenue": doc}, _tables, "Revenue")


@app.command("sla")
def sla_cmd(db: DbOpt = None, format: FormatOpt = ReportFormat.table, out: OutOpt = None,
            since: SinceOpt = None, until: UntilOpt = None) -> None:
    """SLA breaches by stage and owner: deals, breaches, breach rate, escalations."""
    from engine.reports.sla import sla_report

    _over_period(db, format, out, since, until, "sla", "SLA breaches",
                 lambda conn, a, b: sla_report(conn, since=a, until=b).to_json())


@app.command("holdouts")
def holdouts_cmd(db: DbOpt = None, format: FormatOpt = ReportFormat.table, out: OutOpt = None,
                 since: SinceOpt = None, until: UntilOpt = None) -> None:
    """Per play with a holdout: treated against held-out accounts (conversion, revenue) with 95% intervals."""
    from engine.reports.holdouts import holdouts_report

    _over_period(db, format, out, since, until, "holdouts", "Holdouts",
                 lambda conn, a, b: holdouts_report(conn, since=a, until=b).to_json())


@app.command("all")
def all_cmd(rules: RulesOpt = None, db: DbOpt = None, format: FormatOpt = ReportFormat.table, out: OutOpt = None,
            stages: StagesOpt = None, since: SinceOpt = None, until: UntilOpt = None, cost: CostOpt = None,
            eligible: EligibleOpt = None, today: TodayOpt = None, history: HistoryOpt = False) -> None:
    """Every report in one document: funnel, plays, triggers, revenue, SLA breaches."""
    from engine.reports.plays import plays_report
    from engine.reports.sla import sla_report

    a, b = _period(since, until)
    wanted = _stages(stages)
    as_of = today_in_team_zone(today)
    catalog = _catalog(rules, format)
    with reading_store(db, catalog) as store:
        table = store.table("account", catalog)

        def work(conn: Any) -> dict[str, dict[str, Any]]:
            return {"funnel": _funnel(conn, wanted, None, a, b),
                    "plays": plays_report(conn, since=a, until=b).to_json(),
                    "triggers": _triggers(conn, eligible, catalog, as_of, history),
                    "revenue": _revenue(conn, table, a, b, cost, as_of),
                    "sla": sla_report(conn, since=a, until=b).to_json()}

        docs = read(store, work)
    _emit(format, out, docs, _tables, "Playbook report")


def register(main: typer.Typer) -> None:
    main.add_typer(app, name="report")


__all__ = ["register"]
