"""The step kinds of a play: one table, one walker.

Each kind is a row of `KINDS`: its AST node (dsl/nodes.py), how the parse
becomes that node, how the checker checks it, how the formatter writes it
and how a timeline describes it. Everything that treats step kinds alike
reads this table; everything that looks inside branches uses `walk`, so a
new kind or a new nesting rule is written once. docs/extending.md has the
recipe for a new kind.

The run-time half lives with the connectors: connectors/base.py maps each
acting kind to its connector action (`ACTIONS`). `wait` and `branch` do not
act: the workflow runs them itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from dsl import nodes as n
from dsl import pipeline
from dsl import types as T
from dsl.catalog import INBOUND_EVENTS
from dsl.printer import format_duration, format_expr, format_string
from dsl.suggest import closest, did_you_mean

if TYPE_CHECKING:
    from dsl.checker import Checker, Scope


def _nothing(checker: Checker, action: Any, scope: Scope) -> None:
    """A kind with nothing to check beyond its syntax."""


def _no_templates(action: Any) -> Iterable[str]:
    return ()


@dataclass(frozen=True)
class StepKind:
    """One step kind: the row a new kind adds (see docs/extending.md)."""

    name: str  # the keyword and the node's `step` value: "email"
    node: type[n.Node]
    # Parse children (strings already decoded, names as str) -> the node's fields.
    build: Callable[[list[Any]], dict[str, Any]]
    source: Callable[[Any], str]  # the formatter's text: `email account.admin template hello`
    describe: Callable[[Any], str]  # a few words for timelines and summaries
    check: Callable[[Checker, Any, Scope], None] = _nothing
    templates: Callable[[Any], Iterable[str]] = _no_templates  # template declarations it uses
    acts: bool = True  # a side effect through a connector; False: the workflow runs it itself


class Visit(NamedTuple):
    path: str  # action path: the step label, then /then/i or /else/i inside branches
    action: Any  # a StepAction node


def arm_path(path: str, arm: str, index: int) -> str:
    """The action path of a branch's `index`-th action in `arm` ("then" or "else"): `day3/then/0`."""
    return f"{path}/{arm}/{index}"


def walk(action: Any, path: str = "") -> Iterator[Visit]:
    """`action` and every action nested in it, depth first, with their action paths.

    The paths are the workflow's (idempotency keys, wait lengths, decisions).
    """
    yield Visit(path, action)
    if isinstance(action, n.BranchStep):
        for arm, actions in (("then", action.then), ("else", action.otherwise)):
            for i, sub in enumerate(actions):
                yield from walk(sub, arm_path(path, arm, i))


def walk_steps(steps: Iterable[Any]) -> Iterator[Visit]:
    """Every action of a play's steps (Plan steps, or AST steps with their labels), nested ones too."""
    for step in steps:
        yield from walk(step.action, getattr(step, "label", None) or "")


def kind_of(action: Any) -> StepKind:
    try:
        return KINDS[action.step]
    except KeyError:
        raise KeyError(f"unknown step kind {action.step!r}; known: {', '.join(KINDS)}") from None


# ---------------------------------------------------------------- checks


def _check_email(c: Checker, a: n.EmailStep, scope: Scope) -> None:
    c.expect_kind(a.to, scope, "contact", "an email recipient")
    if a.template not in c.catalog.templates:
        c.error("PB106", f"unknown template '{a.template}'", c.sub_span(a.span, a.template, last=True),
                did_you_mean(a.template, c.catalog.templates), closest(a.template, c.catalog.templates),
                name=a.template)


def _check_task(c: Checker, a: n.TaskStep, scope: Scope) -> None:
    c.expect_kind(a.assignee, scope, "user", "a task assignee")


def _check_opportunity(c: Checker, a: n.OpportunityStep, scope: Scope) -> None:
    if a.amount is not None:
        t = c.type_of(a.amount, scope)
        if not t.numeric:
            c.error("PB201", f"an opportunity amount must be a number, not {T.words(t)}", a.amount.span)
    if a.owner is not None:
        c.expect_kind(a.owner, scope, "user", "an opportunity owner")


def _check_stage(c: Checker, a: n.StageStep, scope: Scope) -> None:
    if a.stage not in pipeline.BY_NAME:
        c.error("PB163", f"unknown pipeline stage '{a.stage}'", c.sub_span(a.span, a.stage),
                f"stages: {', '.join(pipeline.NAMES)}. {did_you_mean(a.stage, pipeline.NAMES)}".strip(),
                closest(a.stage, pipeline.NAMES))
    elif a.stage == pipeline.FIRST:
        c.error("PB163", f"a deal cannot move to '{a.stage}': it is where deals start", a.span,
                "an `opportunity` step opens the deal there")


def _check_set(c: Checker, a: n.SetStep, scope: Scope) -> None:
    target = c.type_of(a.field, type(scope)())  # a plain field: nothing of the play's scope
    if a.field.path[0] != "account" or len(a.field.path) != 2 or \
            c.catalog.entity_field("account", a.field.path[-1]) is None:
        if target.kind != "unknown":
            c.error("PB160", "only a declared account field can be set", a.field.span)
    else:
        c.compare_types(target, c.type_of(a.value, scope), a.span, a.value)


def _check_wait(c: Checker, a: n.WaitStep, scope: Scope) -> None:
    for event in a.events:
        if event not in INBOUND_EVENTS:
            c.error("PB113", f"unknown event '{event}'", c.sub_span(a.span, event),
                    f"a play can wait for: {', '.join(INBOUND_EVENTS)}. {did_you_mean(event, INBOUND_EVENTS)}",
                    closest(event, INBOUND_EVENTS))


def _check_branch(c: Checker, a: n.BranchStep, scope: Scope) -> None:
    c.condition(a.condition, scope, "this branch")  # the arms are visited by `walk`


def _check_notify(c: Checker, a: n.NotifyStep, scope: Scope) -> None:
    """`@owner` needs a play owner, `@route.NAME` a declared route; a literal channel is Slack's to judge."""
    if not a.channel.startswith("@"):
        return
    where = c.sub_span(a.span, a.channel)
    if a.channel == n.NOTIFY_OWNER:
        if not scope.owned:
            c.error("PB164", "notify \"@owner\" in a play with no owner", where,
                    "add `owner account.csm` (a user field) to the play, or name a channel (\"#cs-team\")")
    elif a.channel.startswith(n.NOTIFY_ROUTE):
        route = a.channel.removeprefix(n.NOTIFY_ROUTE)
        if route not in c.catalog.routes:
            known = ", ".join(sorted(c.catalog.routes)) or "none declared"
            c.error("PB164", f"notify \"{a.channel}\": unknown route '{route}'", where,
                    f"routes: {known}. {did_you_mean(route, c.catalog.routes)}".strip(),
                    n.NOTIFY_ROUTE + best if (best := closest(route, c.catalog.routes)) else None)
    else:
        forms = [n.NOTIFY_OWNER, *(n.NOTIFY_ROUTE + r for r in sorted(c.catalog.routes))]
        c.error("PB164", f"notify channel \"{a.channel}\" names no owner or route", where,
                f"a channel starting with @ is {n.NOTIFY_OWNER} or {n.NOTIFY_ROUTE}NAME. "
                f"{did_you_mean(a.channel, forms)}".strip(), closest(a.channel, forms))


def _check_webhook(c: Checker, a: n.WebhookStep, scope: Scope) -> None:
    if not re.match(r"^https?://", a.url):
        c.error("PB161", f"webhook address '{a.url}' is not an http(s) URL", a.span)


# ---------------------------------------------------------------- text


def _task_source(a: n.TaskStep) -> str:
    due = f" due {format_duration(a.due)}" if a.due is not None else ""
    return f"task {a.assignee.dotted} {format_string(a.title)}{due}"


def _opportunity_source(a: n.OpportunityStep) -> str:
    text = f"opportunity {format_string(a.title)}"
    if a.amount is not None:
        text += f" amount {format_expr(a.amount)}"
    if a.owner is not None:
        text += f" owner {a.owner.dotted}"
    return text


def _webhook_source(a: n.WebhookStep) -> str:
    event = f" event {format_string(a.event)}" if a.event is not None else ""
    return f"webhook {format_string(a.url)}{event}"


def _wait_source(a: n.WaitStep) -> str:
    return f"wait up to {format_duration(a.timeout)} for {' or '.join(a.events)}"


def _branch_describe(a: n.BranchStep) -> str:
    text = f"if {format_expr(a.condition)}: {'; '.join(describe(x) for x in a.then)}"
    if a.otherwise:
        text += f" / else: {'; '.join(describe(x) for x in a.otherwise)}"
    return text


def _tagged(children: list[Any]) -> dict[str, Any]:
    """Optional clauses built as (name, value) pairs: `amount ...`, `owner ...`."""
    return dict(c for c in children if isinstance(c, tuple))


def _branch_source(a: n.BranchStep) -> str:
    raise TypeError("a branch spans lines: the formatter lays it out itself")


# ---------------------------------------------------------------- the table

KINDS: dict[str, StepKind] = {k.name: k for k in [
    StepKind(
        "email", n.EmailStep,
        build=lambda ch: {"to": ch[0], "template": ch[1]},
        source=lambda a: f"email {a.to.dotted} template {a.template}",
        describe=lambda a: f"email {a.to.dotted} · {a.template}",
        check=_check_email,
        templates=lambda a: (a.template,),
    ),
    StepKind(
        "task", n.TaskStep,
        build=lambda ch: {"assignee": ch[0], "title": ch[1], "due": ch[2] if len(ch) > 2 else None},
        source=_task_source,
        describe=lambda a: f"task {a.assignee.dotted}: {a.title}" + (f" (due {format_duration(a.due)})" if a.due else ""),
        check=_check_task,
    ),
    StepKind(
        "stage", n.StageStep,
        build=lambda ch: {"stage": ch[0]},
        source=lambda a: f"stage {format_string(a.stage)}",
        describe=lambda a: f"stage → {a.stage}",
        check=_check_stage,
    ),
    StepKind(
        "opportunity", n.OpportunityStep,
        build=lambda ch: {"title": ch[0], **_tagged(ch[1:])},
        source=_opportunity_source,
        describe=lambda a: f"opportunity: {a.title}",
        check=_check_opportunity,
    ),
    StepKind(
        "notify", n.NotifyStep,
        build=lambda ch: {"channel": ch[0], "message": ch[1]},
        source=lambda a: f"notify {format_string(a.channel)} {format_string(a.message)}",
        describe=lambda a: f"notify {a.channel}",
        check=_check_notify,
    ),
    StepKind(
        "webhook", n.WebhookStep,
        build=lambda ch: {"url": ch[0], "event": ch[1] if len(ch) > 1 else None},
        source=_webhook_source,
        describe=lambda a: f"webhook {a.url}",
        check=_check_webhook,
    ),
    StepKind(
        "set", n.SetStep,
        build=lambda ch: {"field": ch[0], "value": ch[1]},
        source=lambda a: f"set {a.field.dotted} = {format_expr(a.value)}",
        describe=lambda a: f"set {a.field.dotted} = {format_expr(a.value)}",
        check=_check_set,
    ),
    StepKind(
        "trial", n.TrialStep,
        build=lambda ch: {"feature": ch[0], "duration": ch[1]},
        source=lambda a: f"enable trial {format_string(a.feature)} for {format_duration(a.duration)}",
        describe=lambda a: f"trial {a.feature} for {format_duration(a.duration)}",
    ),
    StepKind(
        "wait", n.WaitStep,
        build=lambda ch: {"timeout": ch[0], "events": list(ch[1:])},
        source=_wait_source,
        describe=_wait_source,
        check=_check_wait,
        acts=False,
    ),
    StepKind(
        "branch", n.BranchStep,
        build=lambda ch: {"condition": ch[0], "then": ch[1], "otherwise": ch[2] if len(ch) > 2 else []},
        source=_branch_source,
        describe=_branch_describe,
        check=_check_branch,
        acts=False,
    ),
]}


def source(action: Any) -> str:
    return kind_of(action).source(action)


def describe(action: Any) -> str:
    return kind_of(action).describe(action)


def templates(action: Any) -> Iterator[str]:
    """Template declarations used by `action` and the actions nested in it."""
    for visit in walk(action):
        yield from kind_of(visit.action).templates(visit.action)
