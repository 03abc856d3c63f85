"""`playbook why ACCOUNT [PLAY]`: every rule's verdict on one account, condition by condition.

The explanations come from the reference evaluator (dsl/explain.py) over a
snapshot of the account; the enrollment decision comes from the same SQL
sweep `record` runs (engine/enroll.py), restricted to the account. The
report says so when the two disagree on a trigger, which would be a bug.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from dsl.catalog import Catalog
from dsl.evaluator import EvalError, Evaluator
from dsl.explain import Explanation, Explainer, render, show
from dsl.plan import Plan
from engine.enroll import Decision, Settings, decide, plan_map
from engine.evaluate import snapshot
from engine.sqlcompile import compiler


class WhyError(Exception):
    """No such account or play."""


@dataclass
class PlayVerdict:
    play: str
    title: str
    decision: str  # enroll | skip | not_triggered | no_plan
    triggers: list[str]  # of the play's triggers, those that fire
    reasons: list[dict[str, str]] = field(default_factory=list)
    route: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"play": self.play, "title": self.title, "decision": self.decision, "triggers": self.triggers,
                "reasons": self.reasons, "route": self.route}


@dataclass
class WhyReport:
    account_id: str
    today: dt.date
    play: str | None
    facts: dict[str, str]  # a few fields that say who the account is
    triggers: list[Explanation]
    gates: list[Explanation]
    scores: list[Explanation]  # band explanations (with the score inside) or bare scores
    routes: list[Explanation]
    plays: list[PlayVerdict]
    disagreements: list[str]  # triggers on which SQL and the reference evaluator differ (a bug if any)

    def to_json(self) -> dict[str, Any]:
        dump = lambda es: [e.model_dump(mode="json") for e in es]  # noqa: E731
        return {"account_id": self.account_id, "today": self.today.isoformat(), "play": self.play,
                "account": self.facts, "triggers": dump(self.triggers), "gates": dump(self.gates),
                "scores": dump(self.scores), "routes": dump(self.routes),
                "plays": [p.to_json() for p in self.plays], "disagreements": self.disagreements}


FACT_FIELDS = ("company", "segment", "arr", "plan", "health_score")


def why(conn: Connection, catalog: Catalog, plans: Sequence[Plan] | Mapping[str, Plan], today: dt.date,
        account_id: str, play: str | None = None, settings: Settings | None = None) -> WhyReport:
    settings = settings or Settings()
    pm = plan_map(plans)
    if play is not None and play not in catalog.plays:
        raise WhyError(f"no play named '{play}'" + (f" (plays: {', '.join(sorted(catalog.plays))})"
                                                    if catalog.plays else " (the rules declare no play)"))
    accounts = compiler(catalog, today, conn.dialect.name).accounts
    account = snapshot(conn, catalog, accounts, account_id)
    if account is None:
        raise WhyError(f"no account with id '{account_id}'")
    ex = Explainer(Evaluator(catalog, account, today))

    play_names = [play] if play is not None else list(catalog.plays)
    if play is not None:
        trigger_names = [t.name for t in catalog.triggers_starting(play)]
    else:
        trigger_names = list(catalog.triggers)
    gate_names: list[str] = []
    for p in play_names:
        decl = catalog.plays[p]
        if not decl.ungated and decl.gate is not None and decl.gate in catalog.gates and decl.gate not in gate_names:
            gate_names.append(decl.gate)
    if play is None:  # gates no play uses still say something about the account
        gate_names += [g for g in catalog.gates if g not in gate_names]

    triggers = [_safe(lambda t=t: ex.trigger(t), f"trigger {t}") for t in trigger_names]
    gates = [_safe(lambda g=g: ex.gate(g), f"gate {g}") for g in gate_names]
    scores = [_safe(lambda s=s: ex.band(s) if catalog.scores[s].bands else ex.score(s), f"score {s}")
              for s in catalog.scores]
    routes = [_safe(lambda r=r: ex.route(r), f"route {r}") for r in catalog.routes]

    decisions = {d.play: d for d in decide(conn, catalog, pm, today, settings, account_ids=[account_id])}
    verdicts = [_verdict(catalog, pm, p, decisions.get(p), ex) for p in play_names]

    disagreements = []
    for d in decisions.values():
        for t in catalog.triggers_starting(d.play):
            if (t.name in d.triggers) != _fires(ex, t.name):
                disagreements.append(t.name)
    facts = {}
    for f in FACT_FIELDS:
        if catalog.entity_field("account", f) is not None:
            facts[f] = show(account.fields.get(f))
    return WhyReport(account_id, today, play, facts, triggers, gates, scores, routes, verdicts,
                     sorted(set(disagreements)))


def _fires(ex: Explainer, trigger: str) -> bool:
    try:
        return ex.ev.trigger_fires(trigger)
    except EvalError:
        return False


def _safe(build: Any, what: str) -> Explanation:
    """An explanation, or a note saying why there is none (a rule the checker would reject)."""
    try:
        return build()
    except EvalError as e:
        return Explanation(kind="note", text=f"{what}: cannot be evaluated: {e}")


def _verdict(catalog: Catalog, plans: dict[str, Plan], play: str, d: Decision | None,
             ex: Explainer) -> PlayVerdict:
    decl = catalog.plays[play]
    title = decl.title or play
    if play not in plans:
        return PlayVerdict(play, title, "no_plan", [], [{"code": "no_plan", "detail": "the play has no compiled plan"}])
    if d is None:
        starting = [t.name for t in catalog.triggers_starting(play)]
        detail = ("no trigger starting it fires (" + ", ".join(starting) + ")") if starting \
            else "no trigger starts this play"
        return PlayVerdict(play, title, "not_triggered", [], [{"code": "not_triggered", "detail": detail}])
    return PlayVerdict(play, title, d.decision, list(d.triggers), [r.to_json() for r in d.reasons], d.route)


# --------------------------------------------------------------------------
# Text


def _title(kind: str, name: str, catalog: Catalog) -> str:
    decl = getattr(catalog, kind + "s").get(name)
    title = getattr(decl, "title", None)
    return f'{name} "{title}"' if title else name


def render_text(report: WhyReport, catalog: Catalog) -> str:
    out: list[str] = []
    facts = ", ".join(f"{k} {v}" for k, v in report.facts.items())
    scope = f", play {report.play}" if report.play else ""
    out.append(f"why {report.account_id} on {report.today.isoformat()}{scope}")
    if facts:
        out.append(f"  {facts}")

    firing = sum(1 for t in report.triggers if t.truth is not None and t.truth.value == "true")
    out += ["", f"triggers: {firing} of {len(report.triggers)} fire"]
    for t in report.triggers:
        if t.kind == "note":
            out.append(f"  {t.text}")
            continue
        name = t.text.removeprefix("trigger ")
        verdict = "fires" if t.value else "does not fire"
        starts = ", ".join(a.play for a in catalog.triggers[name].then)
        out.append(f"  {verdict:<13}  {_title('trigger', name, catalog)}  -> starts {starts}")
        for c in t.children:
            out += render(c, 3)

    if report.gates:
        out += ["", "gates"]
    for g in report.gates:
        if g.kind == "note":
            out.append(f"  {g.text}")
            continue
        name = g.text.removeprefix("gate ")
        out.append(f"  {'passes' if g.value else 'fails':<13}  {_title('gate', name, catalog)}"
                   + (f"   ({g.note.split(': ', 1)[1]})" if g.note and ": " in g.note else ""))
        for c in g.children:
            if c.kind == "gate_case":
                applies = c.note == "applies"
                out.append(f"      {'applies' if applies else 'does not apply':<14} {_inline(c)}")
                if applies:
                    out += [_requirement(r, 5) for r in c.children if r.kind == "requirement"]
            else:
                out.append(_requirement(c, 3))

    if report.scores:
        out += ["", "scores"]
    for s in report.scores:
        out += _score_lines(s, catalog)

    if report.routes:
        out += ["", "routes"]
    for r in report.routes:
        if r.kind == "note":
            out.append(f"  {r.text}")
            continue
        chosen = next((c for c in r.children if c.note == "chosen"), None)
        how = f"   (first that holds: {chosen.text})" if chosen and not chosen.text.startswith("otherwise") else \
            ("   (otherwise)" if chosen else "   (no case holds)")
        out.append(f"  {r.text.removeprefix('route ')} = {r.shown}{how}")
        for c in r.children:  # the cases tried, up to the chosen one, with their values
            if c.truth is not None:
                out += render(c, 2)
            if c is chosen:
                break

    out += ["", "enrollment"]
    for p in report.plays:
        head = f"  {VERDICT_WORDS.get(p.decision, p.decision):<13}  {_title('play', p.play, catalog)}"
        if p.decision == "enroll":
            head += f"  (triggered by {', '.join(p.triggers)}" + (f"; route {p.route})" if p.route else ")")
            out.append(head)
            continue
        if p.triggers:
            head += f"  (triggered by {', '.join(p.triggers)})"
        out.append(head)
        out += [f"      {r['code']}: {r['detail']}" for r in p.reasons if r["code"] not in VERDICT_WORDS]
        out += [f"      {r['detail']}" for r in p.reasons if r["code"] in VERDICT_WORDS]
    if report.disagreements:
        out += ["", "warning: the SQL sweep and the reference evaluator disagree on "
                + ", ".join(report.disagreements) + " (a bug in playbook: please report it)"]
    return "\n".join(out) + "\n"


VERDICT_WORDS = {"enroll": "starts now", "skip": "skipped", "held_out": "held out", "not_triggered": "not triggered", "no_plan": "no plan"}


def _requirement(r: Explanation, indent: int) -> str:
    """`met  health score 75+   account.health_score >= 75 [account.health_score = 95]`."""
    label = r.note.split('"')[1] if r.note and r.note.startswith('"') else None
    verdict = {"true": "met", "false": "not met", "empty": "not met"}[r.truth.value if r.truth else "empty"]
    if r.truth is not None and r.truth.value == "empty":
        verdict = "not met"  # an empty value never satisfies a requirement
    body = _inline(r)
    extra = [c for c in r.children if c.children or c.truth is not None or c.kind != "value"]
    line = "  " * indent + f"{verdict:<8} {label + '   ' if label else ''}{body}"
    if r.truth is not None and r.truth.value == "empty":
        line += "   (empty)"
    for c in extra:  # derived values: show what they are made of, on one line each
        line += "\n" + "\n".join(render(c, indent + 2))
    return line


def _score_lines(s: Explanation, catalog: Catalog) -> list[str]:
    if s.kind == "note":
        return [f"  {s.text}"]
    if s.kind == "band":
        name = s.text.removeprefix("band ")
        score = s.children[0]
        band = next((b for b in catalog.scores[name].bands if b.name == s.value), None)
        label = f' "{band.label}"' if band is not None and getattr(band, "label", None) else ""
        lines = [f"  {_title('score', name, catalog)} = {score.shown}, band {s.shown}{label}"]
    else:
        score = s
        lines = [f"  {_title('score', s.text.removeprefix('score '), catalog)} = {s.shown}"]
    for part in score.children:
        if part.kind == "points_line":
            matched = next((c for c in part.children if c.note == "matched"), None)
            if matched is None:
                lines.append(f"      {part.shown:>4} points  (otherwise: no case holds)")
                continue
            case = _inline(matched)
            lines.append(f"      {part.shown:>4} points  {case.split(' if ', 1)[1] if ' if ' in case else case}")
        else:  # a formula: the formula once, then every input it read
            lines.append(f"      {part.text}")
            inputs = _inputs(part)
            if inputs:
                lines.append("        with " + ", ".join(inputs))
    return lines


def _inline(e: Explanation) -> str:
    """A condition's text with the values it read directly, e.g. `a > 5   [a = 7]`."""
    leaves = [c for c in e.children if c.truth is None and not c.children and c.kind == "value"]
    if not leaves:
        return e.text
    return e.text + "   [" + ", ".join(f"{c.text} = {c.shown}" + (f" ({c.note})" if c.note else "")
                                      for c in leaves) + "]"


def _inputs(e: Explanation) -> list[str]:
    """The field and window values under a formula, once each, in reading order."""
    seen: dict[str, str] = {}

    def walk(x: Explanation) -> None:
        for c in x.children:
            if not c.children and c.kind == "value":
                seen.setdefault(c.text, f"{c.text} = {c.shown}")
            walk(c)

    walk(e)
    return list(seen.values())


__all__ = ["PlayVerdict", "WhyError", "WhyReport", "render_text", "why"]
