"""`playbook summary`: what a folder of playbooks defines, checked and tested.

`build_summary` turns the library's objects into plain data (the JSON
output); `render_summary` draws that same data with rich. Keeping the two
apart means the text and the JSON can never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cli import render
from dsl import nodes as n
from dsl.diagnostics import Diagnostic, Severity
from dsl.printer import format_expr, format_number
from dsl.steps import describe
from dsl.project import Project

MAX_CELL = 200  # characters of an expression kept for a table cell (rich cuts to the width)


def _short(text: str, limit: int = MAX_CELL) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _calendar(c: dict[str, Any]) -> str:
    """`holidays US-CA + 2 days off`: where a calendar's days off come from."""
    parts = [f"holidays {' '.join(c['holidays'])}"] if c["holidays"] else []
    if c["days_off"] or not parts:
        parts.append(render.plural(c["days_off"], "day") + " off")
    return " + ".join(parts)


def _where(node: n.Node) -> str:
    return f"{node.span.file}:{node.span.start.line}"


def band_range(b: n.Band) -> str:
    low = "" if b.low is None else ("" if b.low_inclusive else ">") + format_number(b.low)
    high = "" if b.high is None else ("" if b.high_inclusive else "<") + format_number(b.high)
    return f"{low}..{high}"


def _timing(step: Any) -> str:
    day = f"business day {step.day}" if step.business else f"day {step.day}"
    return day + (f" at {step.at}" if step.at else "")


def build_summary(
    project: Project,
    diagnostics: Sequence[Diagnostic],
    report: Any | None,
    plans: Sequence[Any],
    paths: Sequence[str],
) -> dict[str, Any]:
    cat = project.catalog
    counts = render.Counts.of(diagnostics, len(project.modules))
    hashes = {p.play: p for p in plans}
    data: dict[str, Any] = {
        "paths": list(paths),
        "diagnostics": [render.diagnostic_json(d) for d in diagnostics],
        "summary": counts.as_json(),
        "entities": [
            {"name": e.name, "fields": len(e.fields), "derived": len(e.lets), "where": _where(e)}
            for e in cat.entities.values()
        ],
        "metrics": sorted(cat.metrics),
        "events": sorted(cat.events),
        "calendars": {name: {"holidays": [r.code for r in c.regions], "days_off": len(c.holidays)}
                      for name, c in sorted(cat.calendars.items())},
        "sources": [
            {"name": s.name, "reads": " ".join(x for x in (s.system, s.object) if x), "fills": s.fills,
             "fields": [f"{m.target.split('.', 1)[1] if m.entity == s.fills else m.target}={m.column}"
                        for m in s.mappings],
             **({"dated_by": s.dated} if s.dated else {}), **({"named_by": s.named} if s.named else {}),
             "incremental_by": s.incremental,
             "where": _where(s)}
            for s in cat.sources.values()
        ],
        "triggers": [
            {"name": t.name, "title": t.title, "starts": [a.play for a in t.then], "when": format_expr(t.when),
             "where": _where(t)}
            for t in cat.triggers.values()
        ],
        "scores": [
            {
                "name": s.name,
                "title": s.title,
                "style": "weighted" if s.formula is not None else "points",
                "formula": format_expr(s.formula) if s.formula is not None else None,
                "point_rules": len(s.points),
                "max_points": sum(max([c.points for c in r.cases] + [r.otherwise]) for r in s.points),
                "bands": [{"name": b.name, "range": band_range(b), "label": b.label} for b in s.bands],
                "where": _where(s),
            }
            for s in cat.scores.values()
        ],
        "gates": [
            {
                "name": g.name,
                "title": g.title,
                "cases": [
                    {"when": format_expr(c.when) if c.when is not None else None,
                     "requires": [r.label or format_expr(r.when) for r in c.requires]}
                    for c in g.cases
                ],
                "where": _where(g),
            }
            for g in cat.gates.values()
        ],
        "routes": [
            {"name": r.name,
             "title": r.title,
             "cases": [{"when": format_expr(c.when) if c.when is not None else None, "target": c.target} for c in r.cases],
             "where": _where(r)}
            for r in cat.routes.values()
        ],
        "plays": [
            {
                "name": p.name,
                "title": p.title,
                "kind": p.kind,
                "gate": p.gate if not p.ungated else "(ungated)",
                "started_by": [t.name for t in cat.triggers_starting(p.name)],
                "anchor": p.anchor.dotted if p.anchor else None,
                "holdout": p.holdout.percent if p.holdout else None,
                "steps": [
                    {"when": _timing(s.timing), "day": s.timing.day, "what": describe(s.action),
                     "unless": format_expr(s.unless) if s.unless is not None else None}
                    for s in p.steps
                ],
                "plan_hash": hashes[p.name].hash if p.name in hashes else None,
                "where": _where(p),
            }
            for p in sorted(cat.plays.values(), key=lambda p: (-p.priority, p.name))
        ],
        "templates": sorted(cat.templates),
        "tests": None,
    }
    if report is not None:
        data["tests"] = {
            "tests": len(report.results),
            "passed": report.passed,
            "failed": report.failed,
            "errored": report.errors,
            "failures": [r.model_dump(mode="json") for r in report.results if r.status != "passed"],
            "never_exercised": [{"kind": c.kind, "name": c.name, "where": f"{c.file}:{c.line}"}
                                for c in report.never_exercised],
        }
    return data


# ---------------------------------------------------------------- drawing


def _table(title: str, *columns: str) -> Table:
    t = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, pad_edge=False,
              show_edge=False, expand=False)
    for c in columns:
        # One line per row, cut with "…" to the width: a summary, not a listing.
        t.add_column(c, no_wrap=True, overflow="ellipsis")
    return t


def _fit(t: Table, width: int) -> Table:
    """Keep every column but the last at its full width, so names are never
    cut; only the last (an expression, a list) gives way, cut with "…" to
    what is left of the screen (rich would otherwise drop whole columns)."""
    used = 0
    for col in t.columns[:-1]:
        cells = [c.plain if isinstance(c, Text) else str(c) for c in col._cells]
        col.min_width = max([len(str(col.header))] + [max(map(len, c.split("\n"))) for c in cells if c])
        used += col.min_width + 2  # rich's default padding: one space each side
    t.columns[-1].max_width = max(20, width - used - 2)
    return t


def render_summary(out: Console, data: dict[str, Any], diagnostics: Sequence[Diagnostic], sources: dict[str, str]) -> None:
    if not out.is_terminal:
        out.width = max(out.width, 120)  # a CI log is not 80 columns; do not fold every table
    s = data["summary"]
    head = Text()
    head.append("Playbook summary", style="bold")
    head.append(f" of {', '.join(data['paths'])}: {render.plural(s['files'], 'file')}")
    out.print(head)
    out.print()

    # 1. check
    for d in diagnostics:
        out.print(render.format_diagnostic(d, sources.get(d.range.file)))
        out.print()
    ok = s["errors"] == 0
    out.print(Text.assemble(("check  ", "bold"), (render.Counts(s["errors"], s["warnings"], s["files"]).line(),
                                                   render.STYLE["pass"] if ok else render.STYLE[Severity.ERROR])))
    # 2. tests
    tests = data["tests"]
    if tests is None:
        out.print(Text.assemble(("tests  ", "bold"), ("not run: fix the errors first", render.STYLE["fail"])))
    else:
        line = f"{tests['tests']} tests, {tests['passed']} passed, {tests['failed']} failed"
        if tests["errored"]:
            line += f", {tests['errored']} errors"
        good = tests["passed"] == tests["tests"]
        out.print(Text.assemble(("tests  ", "bold"), (line, render.STYLE["pass"] if good else render.STYLE["fail"])))
        for f in tests["failures"]:
            out.print(Text.assemble(("  FAIL ", render.STYLE["fail"]), f"{f['name']}  ({f['file']}:{f['line']})"))
        if tests["never_exercised"]:
            out.print(render.coverage_note([(c["kind"], c["name"], *c["where"].rsplit(":", 1)) for c in
                                            tests["never_exercised"]]))
    out.print()

    # 3. data
    data_line = Text()
    data_line.append("data   ", style="bold")
    ents = ", ".join(f"{e['name']} ({e['fields']} fields, {e['derived']} derived)" for e in data["entities"])
    data_line.append(ents or "no entity")
    data_line.append(f"; {render.plural(len(data['metrics']), 'metric')}, {render.plural(len(data['events']), 'event')}")
    data_line.append(f", {render.plural(len(data['templates']), 'template')}")
    if data["calendars"]:
        data_line.append(", calendars " + ", ".join(f"{k} ({_calendar(v)})" for k, v in data["calendars"].items()))
    out.print(data_line)
    for src in data["sources"]:
        how = f", incremental by {src['incremental_by']}" if src["incremental_by"] else ", full each sync"
        out.print(Text(f"source {src['name']}: {src['reads']} -> {src['fills']} "
                       f"({render.plural(len(src['fields']), 'field')}{how})"))
    out.print()

    if data["triggers"]:
        t = _table(f"Triggers ({len(data['triggers'])})", "trigger", "starts", "when")
        for tr in data["triggers"]:
            t.add_row(Text(tr["name"], style="bold"), Text(", ".join(tr["starts"]), style="cyan"), _short(tr["when"]))
        out.print(_fit(t, out.width))

    if data["scores"]:
        t = _table(f"Scores ({len(data['scores'])})", "score", "bands", "how")
        for sc in data["scores"]:
            how = (_short(sc["formula"]) if sc["style"] == "weighted"
                   else f"points: {sc['point_rules']} rules, up to {format_number(sc['max_points'])}")
            bands = "\n".join(f"{b['name']} {b['range']}" + (f"  {b['label']}" if b["label"] else "") for b in sc["bands"])
            t.add_row(Text(sc["name"], style="bold"), bands or "-", how)
        out.print(_fit(t, out.width))

    if data["gates"]:
        t = _table(f"Gates ({len(data['gates'])})", "gate", "applies when", "requirements")
        for g in data["gates"]:
            for i, c in enumerate(g["cases"]):
                t.add_row(Text(g["name"], style="bold") if i == 0 else "", _short(c["when"] or "every account"),
                          _short("; ".join(c["requires"])))
        out.print(_fit(t, out.width))

    if data["routes"]:
        t = _table(f"Routes ({len(data['routes'])})", "route", "→", "when")
        for r in data["routes"]:
            for i, c in enumerate(r["cases"]):
                t.add_row(Text(r["name"], style="bold") if i == 0 else "", Text(c["target"], style="cyan"),
                          _short(c["when"] or "otherwise"))
        out.print(_fit(t, out.width))

    for p in data["plays"]:
        title = Text()
        title.append(f"Play {p['name']}", style="bold")
        if p["title"]:
            title.append(f" “{p['title']}”")
        meta = [x for x in (p["kind"], f"gate {p['gate']}" if p["gate"] else None,
                            f"relative to {p['anchor']}" if p["anchor"] else None,
                            f"holdout {p['holdout']:g}%" if p.get("holdout") else None) if x]
        if meta:
            title.append(f"  ({', '.join(meta)})", style="dim")
        out.print(title)
        started = ", ".join(p["started_by"]) or "no trigger"
        out.print(Text.assemble(("  started by ", "dim"), (started, "cyan"),
                                ("   plan ", "dim"), (p["plan_hash"] or "-", "magenta")))
        t = Table(box=None, show_header=False, pad_edge=False, padding=(0, 2, 0, 4))
        t.add_column("when", no_wrap=True, style="bold")
        t.add_column("what", no_wrap=True, overflow="ellipsis")
        for st in p["steps"]:
            what = st["what"] + (f"  (unless {st['unless']})" if st["unless"] else "")
            t.add_row(st["when"], _short(what))
        out.print(_fit(t, out.width))
        out.print()
