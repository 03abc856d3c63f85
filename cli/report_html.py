"""One self-contained HTML report from the reports' JSON documents: styles, data and the one
script inline, charts as SVG drawn here. Nothing is fetched: it opens offline.

Every number shown sits in an element with `data-field="<report>.<path>"` naming where it
is in the JSON (`funnel.stages.2.count`), so a test can hold the page against
`--format json`. The inline script measures each chart once the browser laid it out and
writes what it found on the SVG (`data-rendered-marks`, `data-rendered-width`), and
`data-rendered="yes"` on <body> when it ran.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

WIDTH = 640
PALETTE = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#4d7c0f", "#be185d", "#475569",
           "#ca8a04", "#7c3aed", "#0f766e", "#b91c1c", "#1d4ed8"]

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#111827;max-width:60rem}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2.5rem;border-bottom:1px solid #e5e7eb}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}
th,td{border-bottom:1px solid #e5e7eb;padding:.3rem .7rem;text-align:left;white-space:nowrap}
td.n{text-align:right;font-variant-numeric:tabular-nums}
svg.chart{display:block;margin:1rem 0;background:#fafafa;border:1px solid #e5e7eb}
svg text{font-size:12px;fill:#374151}.note{color:#6b7280;font-size:.85rem}
.band-healthy{color:#15803d}.band-too-permissive,.band-too-restrictive-or-missing-data{color:#b91c1c}
"""

SCRIPT = """
(function(){
  var charts=document.querySelectorAll('svg.chart');
  for(var i=0;i<charts.length;i++){
    var svg=charts[i],marks=svg.querySelectorAll('[data-mark]'),drawn=0;
    for(var j=0;j<marks.length;j++){var b=marks[j].getBBox();if(b.width>0||b.height>0){drawn++;}}
    svg.setAttribute('data-rendered-marks',String(drawn));
    svg.setAttribute('data-rendered-width',String(Math.round(svg.getBoundingClientRect().width)));
  }
  var data=JSON.parse(document.getElementById('report-data').textContent);
  document.body.setAttribute('data-reports',Object.keys(data).sort().join(','));
  document.body.setAttribute('data-rendered','yes');
})();
"""


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _money(v: float | None) -> str:
    return "" if v is None else f"${v:,.0f}"


def _cell(field: str, text: str, numeric: bool = True) -> str:
    return f'<td class="{"n" if numeric else "t"}" data-field="{_e(field)}">{_e(text)}</td>'


def _table(headers: Sequence[str], rows: Sequence[str], cls: str) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _num(v: Any) -> str:
    return "" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


# ---------------------------------------------------------------- funnel


def funnel_section(doc: dict[str, Any]) -> str:
    stages = doc["stages"]
    top = max([s["count"] for s in stages] + [1])
    bar_h, gap, label_w = 26, 8, 150
    height = len(stages) * (bar_h + gap) + gap
    room = WIDTH - label_w - 120
    parts = []
    for i, s in enumerate(stages):
        y = gap + i * (bar_h + gap)
        w = room * s["count"] / top
        x = label_w + (room - w) / 2
        step = s["step_conversion_percent"]
        parts.append(
            f'<text x="{label_w - 8}" y="{y + bar_h * 0.68:.1f}" text-anchor="end">{_e(s["stage"])}</text>'
            f'<rect data-mark="stage" data-stage="{_e(s["stage"])}" data-count="{s["count"]}" x="{x:.1f}" y="{y}" '
            f'width="{max(w, 0.5):.1f}" height="{bar_h}" fill="{PALETTE[0]}" opacity="{1 - i * 0.08:.2f}"/>'
            f'<text x="{label_w + room + 8}" y="{y + bar_h * 0.68:.1f}">{s["count"]:,}'
            f'{f" ({step})" if step else ""}</text>')
    svg = (f'<svg class="chart" id="chart-funnel" role="img" aria-label="Pipeline funnel" width="{WIDTH}" '
           f'height="{height}" viewBox="0 0 {WIDTH} {height}">{"".join(parts)}</svg>')
    rows = [
        "<tr>" + f"<td>{_e(s['stage'])}</td>" + _cell(f"funnel.stages.{i}.count", f"{s['count']:,}")
        + _cell(f"funnel.stages.{i}.step_conversion_percent", s["step_conversion_percent"])
        + _cell(f"funnel.stages.{i}.avg_days_in_stage", _num(s["avg_days_in_stage"])) + "</tr>"
        for i, s in enumerate(stages)]
    overall = (f'<p>Overall: <strong data-field="funnel.overall_conversion_percent">'
               f'{_e(doc["overall_conversion_percent"])}</strong> from the first stage to the last.</p>')
    return ("<section id=\"funnel\"><h2>Pipeline funnel</h2>" + svg
            + _table(["stage", "count", "step conversion", "avg days in stage"], rows, "funnel") + overall
            + "</section>")


# ---------------------------------------------------------------- triggers


def triggers_section(doc: dict[str, Any]) -> str:
    rows_in = doc["rows"]
    quarters = sorted({r["quarter"] for r in rows_in})
    triggers = sorted({r["trigger"] for r in rows_in})
    h, pad_l, pad_b, pad_t = 260, 48, 28, 12
    plot_w, plot_h = WIDTH - pad_l - 200, h - pad_b - pad_t
    top = max([r["fire_rate"] or 0 for r in rows_in] + [doc["bands"]["healthy"][1] * 1.4])

    def xy(qi: int, rate: float) -> tuple[float, float]:
        x = pad_l + (plot_w * (qi + 0.5) / max(len(quarters), 1))
        return x, pad_t + plot_h * (1 - rate / top)

    lo, hi = doc["bands"]["healthy"]
    parts = [f'<rect x="{pad_l}" y="{xy(0, hi)[1]:.1f}" width="{plot_w}" height="{xy(0, lo)[1] - xy(0, hi)[1]:.1f}" '
             f'fill="#dcfce7"/><text x="{pad_l + 4}" y="{xy(0, hi)[1] + 12:.1f}">healthy 5-15%</text>',
             f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{pad_l + plot_w}" y2="{pad_t + plot_h}" stroke="#9ca3af"/>']
    for qi, q in enumerate(quarters):
        parts.append(f'<text x="{xy(qi, 0)[0]:.1f}" y="{h - 8}" text-anchor="middle">{_e(q)}</text>')
    for tick in (0.0, lo, hi, top):
        parts.append(f'<text x="{pad_l - 6}" y="{xy(0, tick)[1] + 4:.1f}" text-anchor="end">{tick * 100:.0f}%</text>')
    for ti, t in enumerate(triggers):
        colour = PALETTE[ti % len(PALETTE)]
        points = [(quarters.index(r["quarter"]), r) for r in rows_in if r["trigger"] == t]
        if len(points) > 1:
            line = " ".join(f"{xy(qi, r['fire_rate'] or 0)[0]:.1f},{xy(qi, r['fire_rate'] or 0)[1]:.1f}"
                            for qi, r in points)
            parts.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for qi, r in points:
            x, y = xy(qi, r["fire_rate"] or 0)
            # From history: hollow, so a reader tells evaluated quarters from recorded ones.
            fill = "#ffffff" if r["from_history"] else colour
            parts.append(f'<circle data-mark="rate" data-trigger="{_e(t)}" data-quarter="{_e(r["quarter"])}" '
                         f'data-source="{_e(r["source"])}" data-rate="{r["fire_rate"]}" cx="{x:.1f}" cy="{y:.1f}" '
                         f'r="4" fill="{fill}" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{WIDTH - 190}" y="{pad_t + 12 + ti * 15}" style="fill:{colour}">● {_e(t)}</text>')
    height = max(h, pad_t + 12 + len(triggers) * 15)
    svg = (f'<svg class="chart" id="chart-fire-rate" role="img" aria-label="Fire rate over time" width="{WIDTH}" '
           f'height="{height}" viewBox="0 0 {WIDTH} {height}">{"".join(parts)}</svg>')
    rows = [
        "<tr>" + f"<td>{_e(r['trigger'])}</td><td>{_e(r['quarter'])}</td>"
        + f'<td data-field="triggers.rows.{i}.source">{_e(r["source"])}</td>'
        + _cell(f"triggers.rows.{i}.fired", f"{r['fired']:,}") + _cell(f"triggers.rows.{i}.eligible", f"{r['eligible']:,}")
        + _cell(f"triggers.rows.{i}.fire_rate_percent", r["fire_rate_percent"])
        + f'<td class="band-{_e(r["band"].replace(" ", "-"))}" data-field="triggers.rows.{i}.band">{_e(r["band"])}</td>'
        + _cell(f"triggers.rows.{i}.accuracy_counted", f"{r['accuracy_counted']:,}")
        + _cell(f"triggers.rows.{i}.accuracy_percent", r["accuracy_percent"]) + "</tr>"
        for i, r in enumerate(rows_in)]
    return ("<section id=\"triggers\"><h2>Trigger effectiveness</h2>"
            f"<p class=\"note\">Fire rate: accounts a trigger fired on in a quarter, of {doc['eligible']:,} eligible. "
            "Healthy 5-15%; over 40% too permissive; under 3% too restrictive or missing data. "
            f"Accuracy: fired, then won, over the fires at least {_e(str(doc['accuracy_window_days']))} days old "
            f"({_e(doc['accuracy_window_from'])}). From <em>history</em>: a quarter no sweep recorded, evaluated "
            "from the field history.</p>" + svg
            + _table(["trigger", "quarter", "from", "fired", "eligible", "fire rate", "band", "judged", "accuracy"],
                     rows, "triggers")
            + "".join(f'<p class="note">{_e(n)}</p>' for n in doc["notes"]) + "</section>")


# ---------------------------------------------------------------- revenue


def revenue_section(doc: dict[str, Any]) -> str:
    # A segment with no ARR has no NRR: nothing to plot.
    segs = [s for s in doc["by_segment"] if s["nrr"] is not None] or [doc["overall"]]
    h, pad_l, pad_b, pad_t = 240, 48, 28, 16
    plot_w, plot_h = WIDTH - pad_l - 20, h - pad_b - pad_t
    top = max([s["nrr"] or 0 for s in segs] + [1.2])
    bw = plot_w / max(len(segs), 1)
    parts = []
    base_y = pad_t + plot_h * (1 - 1.0 / top)
    for i, s in enumerate(segs):
        nrr = s["nrr"] or 0
        y = pad_t + plot_h * (1 - nrr / top)
        x = pad_l + i * bw + bw * 0.2
        name = s["segment"] or ("(no segment)" if doc["by_segment"] else "all")
        parts.append(f'<rect data-mark="nrr" data-segment="{_e(name)}" data-nrr="{s["nrr"]}" '
                     f'x="{x:.1f}" y="{y:.1f}" width="{bw * 0.6:.1f}" height="{pad_t + plot_h - y:.1f}" '
                     f'fill="{PALETTE[1] if nrr >= 1 else PALETTE[2]}"/>'
                     f'<text x="{x + bw * 0.3:.1f}" y="{y - 4:.1f}" text-anchor="middle">{_e(s["nrr_percent"])}</text>'
                     f'<text x="{x + bw * 0.3:.1f}" y="{h - 8}" text-anchor="middle">{_e(name)}</text>')
    parts.append(f'<line x1="{pad_l}" y1="{base_y:.1f}" x2="{pad_l + plot_w}" y2="{base_y:.1f}" stroke="#6b7280" '
                 f'stroke-dasharray="4 3"/><text x="{pad_l - 6}" y="{base_y + 4:.1f}" text-anchor="end">100%</text>')
    svg = (f'<svg class="chart" id="chart-nrr" role="img" aria-label="NRR by segment" width="{WIDTH}" height="{h}" '
           f'viewBox="0 0 {WIDTH} {h}">{"".join(parts)}</svg>')

    def line(prefix: str, s: dict[str, Any]) -> str:
        label = s["segment"] or ("all accounts" if prefix == "revenue.overall" else "(no segment)")
        return ("<tr>" + f"<td>{_e(label)}</td>"
                + _cell(f"{prefix}.accounts", f"{s['accounts']:,}")
                + _cell(f"{prefix}.starting_arr", _money(s["starting_arr"]))
                + _cell(f"{prefix}.ending_arr", _money(s["ending_arr"]))
                + _cell(f"{prefix}.expansion_arr", _money(s["expansion_arr"]))
                + _cell(f"{prefix}.expansion_mrr", _money(s["expansion_mrr"]))
                + _cell(f"{prefix}.expansion_rate_percent", s["expansion_rate_percent"])
                + _cell(f"{prefix}.grr_percent", s["grr_percent"]) + _cell(f"{prefix}.nrr_percent", s["nrr_percent"])
                + "</tr>")

    retention = [line("revenue.overall", doc["overall"])] + [
        line(f"revenue.by_segment.{i}", s) for i, s in enumerate(doc["by_segment"])]
    cohorts = ["<tr>" + f"<td>{_e(c['cohort'])}</td>" + _cell(f"revenue.cohorts.{i}.accounts", f"{c['accounts']:,}")
               + _cell(f"revenue.cohorts.{i}.expanded_6m_percent", c["expanded_6m_percent"] or "—")
               + _cell(f"revenue.cohorts.{i}.expanded_12m_percent", c["expanded_12m_percent"] or "—")
               + _cell(f"revenue.cohorts.{i}.avg_expansion", _money(c["avg_expansion"])) + "</tr>"
               for i, c in enumerate(doc["cohorts"])]
    times = ["<tr>" + f"<td>{_e(t['quarter'])}</td>" + _cell(f"revenue.time_to_expand.{i}.expansions",
                                                             str(t["expansions"]))
             + _cell(f"revenue.time_to_expand.{i}.avg_days", _num(t["avg_days"])) + "</tr>"
             for i, t in enumerate(doc["time_to_expand"])]
    cac = ""
    if doc["cost"] is not None:
        cac = (f'<p>Expansion CAC: <span data-field="revenue.expansion_cac">{_e(_money(doc["expansion_cac"]))}</span>'
               f' per expansion; <span data-field="revenue.expansion_cac_per_arr">'
               f'{_e(_num(doc["expansion_cac_per_arr"]))}</span> per $1 of expansion ARR.</p>')
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in doc["notes"])
    ended = doc["ending_arr_from"]
    period = (f'<p class="note">From <span data-field="revenue.since">{_e(doc["since"])}</span> to '
              f'<span data-field="revenue.until">{_e(doc["until"])}</span> (excluded): ARR at the start and the end '
              f'as known then; ending ARR from the field history for <span data-field="revenue.ending_arr_from.history">'
              f'{ended["history"]:,}</span> accounts, from the outcomes for <span '
              f'data-field="revenue.ending_arr_from.outcomes">{ended["outcomes"]:,}</span> (ARR unchanged).</p>')
    return ("<section id=\"revenue\"><h2>Revenue</h2>" + period + "<h3>NRR by segment</h3>" + svg
            + _table(["segment", "accounts", "starting ARR", "ending ARR", "expansion ARR", "expansion MRR", "expansion rate",
                      "GRR", "NRR"], retention, "retention") + cac
            + "<h3>Cohort expansion</h3>"
            + _table(["cohort", "accounts", "expanded in 6 months", "in 12 months", "avg expansion"], cohorts,
                     "cohorts")
            + "<h3>Time to expand (days from signal to close)</h3>"
            + _table(["quarter closed", "expansions", "avg days"], times, "time-to-expand") + notes + "</section>")


# ---------------------------------------------------------------- plays


def plays_section(doc: dict[str, Any]) -> str:
    def line(prefix: str, p: dict[str, Any], step: bool) -> str:
        name = f"<td>{_e(p['play'])}</td>" + (f"<td>{_e(p['step'])}</td>" if step else "")
        return ("<tr>" + name + _cell(f"{prefix}.attempts", f"{p['attempts']:,}")
                + _cell(f"{prefix}.replies", f"{p['replies']:,}") + _cell(f"{prefix}.closes", f"{p['closes']:,}")
                + _cell(f"{prefix}.rate_percent", p["rate_percent"]) + _cell(f"{prefix}.avg_value",
                                                                            _money(p["avg_value"])) + "</tr>")

    plays = [line(f"plays.plays.{i}", p, False) for i, p in enumerate(doc["plays"])]
    steps = [line(f"plays.steps.{i}", p, True) for i, p in enumerate(doc["steps"])]
    return ("<section id=\"plays\"><h2>Play performance</h2>"
            + _table(["play", "attempts", "replies", "closes", "rate", "avg value"], plays, "plays")
            + "<h3>By email step</h3>"
            + _table(["play", "step", "emails", "replies", "closes", "rate", "avg value"], steps, "steps")
            + "</section>")


def sla_section(doc: dict[str, Any]) -> str:
    rows = ["<tr>" + f"<td>{_e(r['stage'])}</td><td>{_e(r['owner'] or '(nobody)')}</td><td>{_e(r['sla'])}</td>"
            + _cell(f"sla.rows.{i}.entered", f"{r['entered']:,}") + _cell(f"sla.rows.{i}.breaches", f"{r['breaches']:,}")
            + _cell(f"sla.rows.{i}.breach_rate_percent", r["breach_rate_percent"])
            + _cell(f"sla.rows.{i}.escalations", f"{r['escalations']:,}") + "</tr>" for i, r in enumerate(doc["rows"])]
    return ("<section id=\"sla\"><h2>SLA breaches by stage and owner</h2>"
            + _table(["stage", "owner", "SLA", "deals", "breaches", "breach rate", "escalated"], rows, "sla")
            + f'<p><span data-field="sla.breaches">{doc["breaches"]:,}</span> breaches, '
            f'<span data-field="sla.escalations">{doc["escalations"]:,}</span> escalated to a manager.</p></section>')


def holdouts_section(doc: dict[str, Any]) -> str:
    rows = []
    for i, p in enumerate(doc["plays"]):
        for key, name in (("treated", "treated"), ("held_out", "held out")):
            g, f = p[key], f"holdouts.plays.{i}.{key}"
            rows.append(f"<tr><td>{_e(p['play'])}</td><td>{name}</td>" + _cell(f"{f}.accounts", f"{g['accounts']:,}")
                        + _cell(f"{f}.converted", f"{g['converted']:,}")
                        + _cell(f"{f}.conversion_percent", g["conversion_percent"])
                        + _cell(f"{f}.revenue_per_account", _money(g["revenue_per_account"])) + "</tr>")
    notes = []
    for i, p in enumerate(doc["plays"]):
        conv, rev = p["difference"]["conversion"], p["difference"]["revenue_per_account"]
        if conv is None or rev is None:
            notes.append(f'<p class="note">{_e(p["play"])}: {_e(p["note"])}</p>')
            continue
        f = f"holdouts.plays.{i}.difference"
        notes.append(
            f"<p>{_e(p['play'])}: conversion difference "
            f'<span data-field="{f}.conversion.estimate">{_num(conv["estimate"])}</span> (95% CI '
            f'<span data-field="{f}.conversion.low">{_num(conv["low"])}</span> to '
            f'<span data-field="{f}.conversion.high">{_num(conv["high"])}</span>, {_e(conv["method"])}); '
            f'revenue per account <span data-field="{f}.revenue_per_account.estimate">{_num(rev["estimate"])}</span> '
            f'(95% CI <span data-field="{f}.revenue_per_account.low">{_num(rev["low"])}</span> to '
            f'<span data-field="{f}.revenue_per_account.high">{_num(rev["high"])}</span>, {_e(rev["method"])})</p>')
    return ("<section id=\"holdouts\"><h2>Holdouts: treated against held out</h2>"
            + _table(["play", "group", "accounts", "converted", "conversion", "revenue / account"], rows, "holdouts")
            + "".join(notes) + "</section>")


SECTIONS = {"funnel": funnel_section, "plays": plays_section, "triggers": triggers_section,
            "revenue": revenue_section, "sla": sla_section, "holdouts": holdouts_section}


def document(reports: dict[str, dict[str, Any]], title: str) -> str:
    """The HTML page of `reports` (name -> the report's JSON document), in SECTIONS order."""
    body = "".join(SECTIONS[name](reports[name]) for name in SECTIONS if name in reports)
    # "</" inside the data would end the <script> element early.
    data = json.dumps(reports, ensure_ascii=False).replace("</", "<\\/")
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{_e(title)}</h1>{body}"
            f'<script type="application/json" id="report-data">{data}</script>'
            f"<script>{SCRIPT}</script></body></html>\n")


__all__ = ["SECTIONS", "document"]
