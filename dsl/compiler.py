"""AST -> Plan: one content-hashed, JSON-serialisable Plan per play."""

from __future__ import annotations

from dsl import nodes as n
from dsl import steps as kinds
from dsl.catalog import Catalog
from dsl.plan import Plan, PlanSource, PlanStep, PlanTemplate
from dsl.project import Project


def compile_plans(project: Project) -> list[Plan]:
    """Plans of every play in `project`, by name (check it first: this assumes a clean project)."""
    return [compile_play(project.catalog, play) for play in sorted(project.catalog.plays.values(), key=lambda p: p.name)]


def compile_play(catalog: Catalog, play: n.PlayDecl) -> Plan:
    steps = _steps(play.steps)
    template_names = sorted({name for step in play.steps for name in kinds.templates(step.action)})
    templates = {
        name: PlanTemplate(name=name, subject=catalog.templates[name].subject, body=catalog.templates[name].body)
        for name in template_names if name in catalog.templates
    }
    calendar = catalog.calendars.get(play.calendar) if play.calendar else None
    plan = Plan(
        play=play.name,
        title=play.title or play.name,
        kind=play.kind,
        priority=play.priority,
        owner=play.owner,
        gate=play.gate,
        ungated=play.ungated,
        concurrent=play.concurrent,
        reenter_days=play.reenter_days,
        exit=play.exit,
        anchor=play.anchor,
        window=play.window,
        holidays=sorted(set(calendar.holidays)) if calendar else [],
        holiday_regions=sorted({r.code for r in calendar.regions}) if calendar else [],
        holdout=play.holdout.percent if play.holdout is not None else None,
        steps=steps,
        templates=templates,
        source=PlanSource(file=play.span.file, line=play.span.start.line),
    )
    return plan.with_hash()


def step_label(step: n.Step) -> str:
    """A label that survives edits to other steps: where and what, not an index."""
    if step.label:
        return step.label
    when = f"bday{step.timing.day}" if step.timing.business else f"day{step.timing.day}"
    return f"{when}-{step.action.step}"


def _steps(steps: list[n.Step]) -> list[PlanStep]:
    out: list[PlanStep] = []
    seen: dict[str, int] = {}
    for step in steps:
        label = step_label(step)
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label}-{seen[label]}"
        out.append(PlanStep(
            label=label, day=step.timing.day, business=step.timing.business, at=step.timing.at,
            action=step.action, unless=step.unless,
        ))
    return out

