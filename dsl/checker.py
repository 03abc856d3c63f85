"""The checker: names, types, templates and timing, every error of every file.

One pass per concern, each a method group of `Checker`; expression types
come from a dispatch on node kind (`_type_<kind>`), with UNKNOWN stopping
cascades. Codes are stable and listed in docs/diagnostics.md.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from dsl import nodes as n
from dsl import pipeline, steps
from dsl import types as T
from dsl.calendars import region_problem
from dsl.catalog import INBOUND_EVENTS, Catalog
from dsl.diagnostics import Diagnostic, Severity, make
from dsl.functions import FUNCTIONS
from dsl.printer import format_literal, format_number, format_percent, spine
from dsl.project import Project
from dsl.suggest import closest, did_you_mean

# Namespaces a dotted reference may start with, and what they hold.
NAMESPACES = ("account", "score", "band", "route", "gate", "trigger")

# Names a template may use besides account and recipient fields.
TEMPLATE_BUILTINS = {"sender_name", "sender_email", "unsubscribe_url", "play_title"}

_PLACEHOLDER = re.compile(r"\{\{\s*([^}]*?)\s*\}\}")
# `{{ name }}` / `{{ a.b }}` only: text made of these and plain words cannot be
# a Jinja syntax error, so the (costly) Jinja parse is skipped for it.
_SIMPLE_PLACEHOLDER = re.compile(r"\{\{\s*[A-Za-z_][A-Za-z0-9_.]*\s*\}\}")
_PLACEHOLDER_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)")
# Words other languages use for a missing value; here that is `is empty`.
# A holdout above half would leave the treated group the smaller one.
MAX_HOLDOUT_PERCENT = 50.0
_NO_VALUE_WORDS = frozenset({"null", "none", "nil"})


@dataclass
class Scope:
    """What bare names and refs mean where an expression sits."""

    play: bool = False  # play conditions may read inbound events and `stage`
    owned: bool = False  # the play has an `owner` (a notify step may say "@owner")


@dataclass
class Checker:
    project: Project
    out: list[Diagnostic] = field(default_factory=list)
    let_types: dict[str, T.Type] = field(default_factory=dict)
    _let_stack: list[str] = field(default_factory=list)
    _bare_percents: set[int] = field(default_factory=set)  # ids of numbers reported as PB207

    @property
    def catalog(self) -> Catalog:
        return self.project.catalog

    # ------------------------------------------------------------ reporting
    def error(self, code: str, summary: str, span: n.Span, detail: str | None = None, fix: str | None = None,
              name: str | None = None) -> None:
        """Report an error; one about `name` is dropped when that declaration failed to parse
        (its syntax error is the one finding worth reading)."""
        if name is not None and name in self.catalog.broken:
            return
        self.out.append(make(code, summary, span, detail=detail or None, fix=fix))

    def warn(self, code: str, summary: str, span: n.Span, detail: str | None = None, fix: str | None = None) -> None:
        self.out.append(make(code, summary, span, severity=Severity.WARNING, detail=detail or None, fix=fix))

    def sub_span(self, span: n.Span, needle: str, last: bool = False) -> n.Span:
        """The span of `needle` inside `span`'s source text (the whole span if absent)."""
        text = self.project.sources.get(span.file, "")
        lo, hi = span.start.offset, span.end.offset
        segment = text[lo:hi]
        pattern = re.compile(r"(?<![A-Za-z0-9_])" + re.escape(needle) + r"(?![A-Za-z0-9_])")
        found = list(pattern.finditer(segment))
        if not found:
            return span
        m = found[-1] if last else found[0]
        start = lo + m.start()
        line = text.count("\n", 0, start) + 1
        col = start - (text.rfind("\n", 0, start) + 1) + 1
        return n.Span(
            file=span.file,
            start=n.Position(line=line, column=col, offset=start),
            end=n.Position(line=line, column=col + len(needle), offset=start + len(needle)),
        )

    def source_of(self, node: n.Node) -> str:
        text = self.project.sources.get(node.span.file, "")
        return " ".join(text[node.span.start.offset:node.span.end.offset].split())

    # ------------------------------------------------------------ driver
    def run(self) -> list[Diagnostic]:
        c = self.catalog
        if c.account is None and "account" not in c.broken and any(m.declarations for m in self.project.modules):
            first = next(d for m in self.project.modules for d in m.declarations)
            self.error("PB120", "no `entity account` is declared", first.span,
                       "rules read account fields; declare them with `entity account` and `field NAME TYPE` lines")
        for ent in c.entities.values():
            self.check_entity(ent)
        for metric in c.metrics.values():
            if metric.per not in n.METRIC_PERIODS:
                self.error("PB125", f"metric '{metric.name}' is measured per '{metric.per}', which is no period",
                           self.sub_span(metric.span, metric.per, last=True),
                           did_you_mean(metric.per, n.METRIC_PERIODS)
                           or f"write per {', per '.join(n.METRIC_PERIODS[:-1])} or per {n.METRIC_PERIODS[-1]}",
                           closest(metric.per, n.METRIC_PERIODS))
        for cal in c.calendars.values():
            self.check_calendar(cal)
        for source in c.sources.values():
            self.check_source(source)
        for trig in c.triggers.values():
            self.check_trigger(trig)
        for score in c.scores.values():
            self.check_score(score)
        for gate in c.gates.values():
            self.check_gate(gate)
        for route in c.routes.values():
            self.check_route(route)
        used_templates: set[str] = set()
        for play in c.plays.values():
            self.check_play(play, used_templates)
        for tpl in c.templates.values():
            self.check_template(tpl, used_templates)
        for test in c.tests.values():
            self.check_test(test)
        return self.out

    # ------------------------------------------------------------ data
    def check_entity(self, ent: n.EntityDecl) -> None:
        seen: dict[str, n.FieldDecl | n.LetDecl] = {}
        items: list[n.FieldDecl | n.LetDecl] = [*ent.fields, *ent.lets]
        for item in items:
            if item.name in seen:
                self.error("PB101", f"duplicate field '{item.name}' in entity {ent.name}", item.span,
                           f"already declared at line {seen[item.name].span.start.line}")
            seen[item.name] = item
        for f in ent.fields:
            t = f.type
            if t.name == n.TypeName.ENUM and len(set(t.values)) != len(t.values):
                self.error("PB121", f"enum of field '{f.name}' lists a value twice", t.span)
            if t.low is not None and t.high is not None and t.low > t.high:
                self.error("PB122", f"range {t.low:g}..{t.high:g} of field '{f.name}' is empty", t.span,
                           "write the smaller bound first")
        if ent.name == "account":
            for let in ent.lets:
                self.let_type(let.name)

    def let_type(self, name: str) -> T.Type:
        """The type of a derived account field, checking it once; cycles are errors."""
        if name in self.let_types:
            return self.let_types[name]
        let = self.catalog.entity_let("account", name)
        if let is None:
            return T.UNKNOWN
        if name in self._let_stack:
            cycle = " -> ".join([*self._let_stack[self._let_stack.index(name):], name])
            self.error("PB701", f"derived field '{name}' depends on itself: {cycle}", let.span)
            return T.UNKNOWN
        self._let_stack.append(name)
        t = self.type_of(let.value, Scope())
        self._let_stack.pop()
        self.let_types[name] = t
        return t

    def check_source(self, src: n.SourceDecl) -> None:
        """What a sync needs to run: a known system and object, a query for SQL, a key, known target fields."""
        where = f"source '{src.name}'"
        if src.system not in n.SOURCE_SYSTEMS:
            self.error("PB170", f"{where} reads from '{src.system}', which is no system Playbook syncs from",
                       self.sub_span(src.span, src.system), did_you_mean(src.system, n.SOURCE_SYSTEMS)
                       or f"write from {' or from '.join(n.SOURCE_SYSTEMS)}", closest(src.system, n.SOURCE_SYSTEMS))
            return
        if src.system == "hubspot":
            if src.object not in n.HUBSPOT_OBJECTS:
                said = f"'{src.object}'" if src.object else "no object"
                self.error("PB170", f"{where} reads {said} from HubSpot, which has objects "
                           f"{', '.join(n.HUBSPOT_OBJECTS)}",
                           self.sub_span(src.span, src.object) if src.object else self.sub_span(src.span, "hubspot"),
                           did_you_mean(src.object or "", n.HUBSPOT_OBJECTS)
                           or f"write `from hubspot {n.HUBSPOT_OBJECTS[0]}`", closest(src.object or "", n.HUBSPOT_OBJECTS))
            if src.query is not None:
                self.error("PB171", f"{where} reads HubSpot, which takes no SQL query", src.query_span,
                           "remove the `query` block: HubSpot objects are read over its REST API")
        else:
            if src.object is not None:
                self.error("PB170", f"{where}: a warehouse has no object '{src.object}'",
                           self.sub_span(src.span, src.object, last=True),
                           'write `from warehouse` and the SQL in a `query """ ... """` block')
            if src.query is None or not src.query.strip():
                self.error("PB171", f"{where} reads a warehouse but has no `query`", src.span,
                           'add `query """ select ... """`: the SQL whose columns the mapping names')
        if not src.mappings:
            self.error("PB171", f"{where} maps nothing", src.span,
                       "add one `ENTITY.FIELD = column` line per value, e.g. `account.id = hs_object_id`")
            return
        fills = src.fills
        if src.named is not None and fills != "event":
            self.error("PB173", f"{where} lands no events but says `named by`", src.named_span,
                       "`named by COLUMN` picks each row's event among the `event.NAME = column` lines: remove it")
        if fills in n.SOURCE_SERIES:
            self.check_series_source(src, where, fills)
            return
        if src.dated is not None:
            self.error("PB173", f"{where} lands no metric points but says `dated by`", src.dated_span,
                       "`dated by COLUMN` dates the points of `metric.NAME = column` lines; fields have no date: "
                       "remove it")
        entity = src.mappings[0].entity
        seen: dict[str, n.SourceMapping] = {}
        for m in src.mappings:
            if m.entity not in n.SOURCE_ENTITIES:
                self.error("PB172", f"{where} maps onto '{m.entity}', which a source cannot fill", m.span,
                           f"sources fill {' or '.join(n.SOURCE_ENTITIES)} fields", closest(m.entity, n.SOURCE_ENTITIES))
                continue
            if m.entity != entity:
                self.error("PB172", f"{where} fills both {entity} and {m.entity} fields", m.span,
                           "one source fills one entity: declare a second source for the other")
                continue
            if m.field in seen:
                self.error("PB172", f"{where} maps {m.entity}.{m.field} twice", m.span,
                           f"already mapped at line {seen[m.field].span.start.line}")
                continue
            seen[m.field] = m
            ent = self.catalog.entities.get(m.entity)
            fixed = n.SOURCE_FIXED_FIELDS[m.entity]
            if m.field in fixed or self.catalog.entity_field(m.entity, m.field) is not None:
                continue
            if self.catalog.entity_let(m.entity, m.field) is not None:
                self.error("PB172", f"{where} maps onto '{m.entity}.{m.field}', a derived field", m.span,
                           "a `let` is computed from other fields; map the fields it reads instead")
                continue
            candidates = [*fixed, *(f.name for f in ent.fields)] if ent is not None else list(fixed)
            self.error("PB102", f"unknown field '{m.field}'", self.sub_span(m.span, m.field),
                       f"{m.entity} has no field '{m.field}'. {did_you_mean(m.field, candidates)}".strip(),
                       closest(m.field, candidates))
        if entity in n.SOURCE_ENTITIES:
            required = ["id"] + (["account_id"] if entity == "contact" else [])
            for name in required:
                if name not in seen:
                    self.error("PB171", f"{where} does not say which column is the {entity}'s {name}", src.span,
                               f"add `{entity}.{name} = COLUMN`: it is how a read record finds its {entity}")

    def check_series_source(self, src: n.SourceDecl, where: str, fills: str) -> None:
        """A source of metric points or events: `account.id`, declared metrics or one declared event (and its
        properties), `dated by` for points; nothing else, so one read row means one kind of thing."""
        what = "metric points" if fills == "metric" else "events"
        if src.system == "hubspot":
            self.error("PB174", f"{where} reads HubSpot {src.object or 'objects'} but lands {what}",
                       next(m.span for m in src.mappings if m.entity == fills),
                       "HubSpot sources fill account and contact fields; metric points and events come from a "
                       "warehouse `query`")
            return
        declared = self.catalog.metrics if fills == "metric" else self.catalog.events
        landed = [m.field for m in src.mappings if m.entity == fills and m.prop is None]
        event = landed[0] if fills == "event" and landed else None
        # `named by COLUMN`: each row's event is the one its column names, so several may land.
        several = fills == "event" and src.named is not None
        times = {m.field: m for m in src.mappings if m.entity == "event" and m.prop is None}
        seen: dict[str, n.SourceMapping] = {}
        for m in src.mappings:
            if m.target in seen:
                self.error("PB172", f"{where} maps {m.target} twice", m.span,
                           f"already mapped at line {seen[m.target].span.start.line}")
                continue
            seen[m.target] = m
            if m.entity == "account" and m.field == "id":
                continue
            if m.entity in n.SOURCE_ENTITIES:
                self.error("PB174", f"{where} lands {what} and also maps {m.target}", m.span,
                           f"a source of {what} maps only `account.id` beside them (which account a row is for): "
                           "fill fields from a source of their own")
                continue
            if m.entity not in n.SOURCE_SERIES:
                self.error("PB172", f"{where} maps onto '{m.entity}', which a source cannot fill", m.span,
                           f"sources fill {' or '.join(n.SOURCE_ENTITIES)} fields, or land metric points or events",
                           closest(m.entity, [*n.SOURCE_ENTITIES, *n.SOURCE_SERIES]))
                continue
            if m.entity != fills:
                self.error("PB174", f"{where} lands both metric points and events", m.span,
                           f"one source lands one kind: declare a second source for {m.target}")
                continue
            if m.field not in declared:
                self.error("PB109", f"unknown {m.entity} '{m.field}'", self.sub_span(m.span, m.field),
                           f"declare `{m.entity} {m.field}` or map a declared one. "
                           f"{did_you_mean(m.field, declared)}".strip(), closest(m.field, declared))
                continue
            if several and m.prop is not None and m.field not in times:
                self.error("PB174", f"{where} maps a property of event '{m.field}', which it does not land", m.span,
                           f"add `event.{m.field} = COLUMN` (its time), or map a property of a landed event")
                continue
            if several and m.prop is None and event is not None and m.column != times[event].column:
                self.error("PB174", f"{where} reads event '{m.field}' at `{m.column}` but '{event}' at "
                           f"`{times[event].column}`", m.span,
                           f"with `named by`, one column holds every row's time: write "
                           f"`event.{m.field} = {times[event].column}`")
                continue
            if several:
                continue
            if event is not None and m.field != event and m.prop is not None:
                self.error("PB174", f"{where} maps a property of event '{m.field}', which it does not land", m.span,
                           f"this source lands '{event}': write `event.{event}.{m.prop} = {m.column}`")
                continue
            if event is not None and m.field != event:
                self.error("PB174", f"{where} lands two events, '{event}' and '{m.field}'", m.span,
                           f"one source lands one event (its time in one column): add `named by COLUMN` when a "
                           f"column names each row's event, or declare a second source for '{m.field}'")
                continue
        if fills == "event" and event is None:
            first = next(m for m in src.mappings if m.entity == "event")
            self.error("PB171", f"{where} does not say which column is the time of event '{first.field}'", src.span,
                       f"add `event.{first.field} = COLUMN`: the time it happened; its properties come beside it")
        if "account.id" not in seen:
            self.error("PB171", f"{where} does not say which column is the account's id", src.span,
                       "add `account.id = COLUMN`: it is how a read record finds its account")
        if fills == "metric" and src.dated is None:
            self.error("PB173", f"{where} lands metric points but does not say which column is their date",
                       src.span, "add `dated by COLUMN`: the day (or the start of the week or month) each point "
                       "is for")
        elif fills == "event" and src.dated is not None:
            self.error("PB173", f"{where} lands events but says `dated by`", src.dated_span,
                       f"an event's time is the column of its `event.{event or 'NAME'} = COLUMN` line: remove "
                       "`dated by`")

    def check_calendar(self, cal: n.CalendarDecl) -> None:
        if len(set(cal.holidays)) != len(cal.holidays):
            self.warn("PB123", f"calendar '{cal.name}' lists a date twice", cal.span)
        seen: set[str] = set()
        for region in cal.regions:
            if region.code in seen:
                self.warn("PB123", f"calendar '{cal.name}' lists `holidays {region.code}` twice", region.span)
            seen.add(region.code)
            if (problem := region_problem(region.country, region.subdivision)) is None:
                continue
            self.error("PB124", problem.message, self.sub_span(region.span, problem.wrong, last=True),
                       f"Did you mean '{problem.suggestion}'?" if problem.suggestion else
                       "codes are ISO 3166: a country (`holidays US`) or a subdivision (`holidays US-CA`)",
                       problem.suggestion)

    # ------------------------------------------------------------ rules
    def check_trigger(self, trig: n.TriggerDecl) -> None:
        self.condition(trig.when, Scope(), f"trigger '{trig.name}'")
        for action in trig.then:
            if action.play not in self.catalog.plays:
                self.error("PB105", f"unknown play '{action.play}'", self.sub_span(action.span, action.play, last=True),
                           did_you_mean(action.play, self.catalog.plays), closest(action.play, self.catalog.plays),
                           name=action.play)

    def check_score(self, score: n.ScoreDecl) -> None:
        if score.formula is None and not score.points:
            self.error("PB130", f"score '{score.name}' has no formula and no points", score.span,
                       "add `= expression` or `points N if condition, ...` lines")
        if score.formula is not None and score.points:
            self.error("PB131", f"score '{score.name}' has both a formula and points lines", score.span,
                       "a score is either weighted (`= ...`) or a sum of points")
        if score.formula is not None:
            t = self.type_of(score.formula, Scope())
            if not t.numeric:
                self.error("PB205", f"score '{score.name}' must be a number, not {T.words(t)}", score.formula.span)
            self.check_weights(score.name, score.formula)
        for rule in score.points:
            for case in rule.cases:
                self.condition(case.when, Scope(), f"score '{score.name}'")
        self.check_bands(score)

    def check_weights(self, name: str, formula: n.Expr) -> None:
        """A weighted sum (`a * 0.4 + b * 0.6`) whose weights do not add up to 1 (or 100%)
        leaves the score off its inputs' scale, so the bands no longer mean what they say."""
        weights = _weights(formula)
        if weights is None:
            return
        total = math.fsum(w.value for w in weights)
        if math.isclose(total, 1.0, rel_tol=0, abs_tol=1e-9):
            return
        percent = all(isinstance(w, n.Percent) for w in weights)
        shown = format_percent(total) if percent else format_number(total)
        self.warn("PB134", f"the weights of score '{name}' add up to {shown}, not {'100%' if percent else '1'}",
                  formula.span,
                  f"{' + '.join(format_literal(w) for w in weights)} = {shown}; weights that add up to "
                  "1 keep the score on its inputs' scale (inputs of 0..100 give a score of 0..100)")

    def check_bands(self, score: n.ScoreDecl) -> None:
        seen: set[str] = set()
        for band in score.bands:
            if band.name in seen:
                self.error("PB101", f"duplicate band '{band.name}' in score '{score.name}'", band.span)
            seen.add(band.name)
            if band.low is not None and band.high is not None and (
                band.low > band.high or (band.low == band.high and not (band.low_inclusive and band.high_inclusive))
            ):
                self.error("PB132", f"band '{band.name}' holds no value", band.span, "write the smaller bound first")
        for i, a in enumerate(score.bands):
            for b in score.bands[i + 1:]:
                if _ranges_overlap(a, b):
                    self.warn("PB133", f"bands '{a.name}' and '{b.name}' overlap; the first one declared wins", b.span)

    def check_gate(self, gate: n.GateDecl) -> None:
        if not gate.cases:
            self.error("PB140", f"gate '{gate.name}' has no requirements", gate.span)
        for case in gate.cases:
            if case.when is not None:
                self.condition(case.when, Scope(), f"gate '{gate.name}'")
            for req in case.requires:
                self.condition(req.when, Scope(), f"gate '{gate.name}'")

    def check_route(self, route: n.RouteDecl) -> None:
        seen_otherwise = False
        for case in route.cases:
            if seen_otherwise:
                self.warn("PB150", "this case comes after `otherwise` and is never used", case.span)
            if case.when is None:
                seen_otherwise = True
            else:
                self.condition(case.when, Scope(), f"route '{route.name}'")

    # ------------------------------------------------------------ plays
    def check_play(self, play: n.PlayDecl, used_templates: set[str]) -> None:
        scope = Scope(play=True, owned=play.owner is not None)
        if play.owner is not None:
            self.expect_kind(play.owner, scope, "user", "the owner")
        if play.gate is not None and play.gate not in self.catalog.gates:
            self.error("PB107", f"unknown gate '{play.gate}'", self.sub_span(play.span, play.gate),
                       did_you_mean(play.gate, self.catalog.gates), closest(play.gate, self.catalog.gates),
                       name=play.gate)
        if play.gate is None and not play.ungated:
            self.error("PB307", f"play '{play.name}' has no gate", self.sub_span(play.span, play.name),
                       "a play must say which readiness gate an account passes first: add `gate NAME`, "
                       "or `ungated` to start it on any account")
        if play.gate is not None and play.ungated:
            self.error("PB308", f"play '{play.name}' is both gated and `ungated`", play.span)
        if play.calendar is not None and play.calendar not in self.catalog.calendars:
            self.error("PB108", f"unknown calendar '{play.calendar}'", self.sub_span(play.span, play.calendar),
                       did_you_mean(play.calendar, self.catalog.calendars), closest(play.calendar, self.catalog.calendars),
                       name=play.calendar)
        if play.holdout is not None:
            self.check_holdout(play.holdout)
        if play.exit is not None:
            self.condition(play.exit, scope, f"play '{play.name}'")
            for node in n.walk(play.exit):
                if isinstance(node, n.Ref):
                    self.error("PB162", f"an exit can only test events and the stage, not '{node.dotted}'", node.span,
                               "exits are checked on every event a running play receives; put account conditions "
                               "on a step (`unless ...`) or in the gate")
                    break
        if play.anchor is not None:
            self.expect_kind(play.anchor, scope, "date", "the anchor")
        if play.window is not None:
            w = play.window
            if w.start >= w.end:
                self.error("PB309", f"send window {w.start} to {w.end} is empty", w.span, "the start must be before the end")
            if w.timezone is not None:
                self.expect_kind(w.timezone, scope, "text", "the time zone")
        if not play.steps:
            self.error("PB305", f"play '{play.name}' has no steps", self.sub_span(play.span, play.name))
        self.check_timeline(play)
        for step in play.steps:
            self.check_action(step.action, scope, used_templates)
            if step.unless is not None:
                self.condition(step.unless, scope, "this step")
        self.check_reachable(play)

    def check_holdout(self, h: n.Holdout) -> None:
        shown = format_number(h.percent)
        if not h.unit:
            # A bare number is ambiguous (10 of what? 0.1 as a fraction?): the share is written in percent.
            self.error("PB313", f"`holdout {shown}` needs a unit", h.span,
                       f"a holdout is a share of the accounts the play would start, in percent: `holdout {shown}%`")
        elif not 0 < h.percent <= MAX_HOLDOUT_PERCENT:
            self.error("PB314", f"holdout {shown}% is outside 0% to {MAX_HOLDOUT_PERCENT:g}%", h.span,
                       f"the share held out must be above 0% and at most {MAX_HOLDOUT_PERCENT:g}% "
                       "(more than half held out leaves fewer treated accounts than untreated ones)")

    def check_timeline(self, play: n.PlayDecl) -> None:
        previous: n.Step | None = None
        labels: dict[str, n.Step] = {}
        wait_until: tuple[float, n.Step] | None = None
        for step in play.steps:
            t = step.timing
            if wait_until is not None and _day_order(t) < wait_until[0]:
                w = wait_until[1]
                self.warn("PB312", f"this step (day {t.day}) falls inside the wait on day {w.timing.day}", t.span,
                          "steps after a wait run when it ends, so this one may run late; move it after the wait's timeout")
            if isinstance(step.action, n.WaitStep):
                wait_until = (_day_order(t) + step.action.timeout.days, step)
            if t.day < 0 and play.anchor is None:
                self.error("PB301", f"day {t.day} needs an anchor date", t.span,
                           "negative days count back from a date: add `anchor account.renewal_date` (or another date field) to the play")
            if t.at is not None and play.window is not None and not (play.window.start <= t.at <= play.window.end):
                self.warn("PB311", f"{t.at} is outside the send window {play.window.start} to {play.window.end}", t.span,
                          "the step will wait for the window to open")
            if previous is not None and _day_order(t) < _day_order(previous.timing):
                self.error("PB302", f"this step (day {t.day}) comes after a step on day {previous.timing.day}", t.span,
                           "steps run in the order written: move this step up, or fix its day")
            if step.label is not None:
                if step.label in labels:
                    self.error("PB101", f"duplicate step label '{step.label}'", step.span)
                labels[step.label] = step
            previous = step

    def check_action(self, action: n.Node, scope: Scope, used_templates: set[str]) -> None:
        """A step's action and the actions nested in it, each by its row in dsl/steps.py."""
        for visit in steps.walk(action):
            kind = steps.kind_of(visit.action)
            kind.check(self, visit.action, scope)
            used_templates.update(kind.templates(visit.action))

    def check_reachable(self, play: n.PlayDecl) -> None:
        starters = self.catalog.triggers_starting(play.name)
        if not starters and "trigger" not in self.catalog.broken_kinds:  # a broken trigger may start it
            self.warn("PB306", f"play '{play.name}' can never start: no trigger starts it",
                      self.sub_span(play.span, play.name),
                      f"add `then start {play.name}` to a trigger")

    # ------------------------------------------------------------ templates
    def check_template(self, tpl: n.TemplateDecl, used: set[str]) -> None:
        if not tpl.subject.strip():
            self.error("PB404", f"template '{tpl.name}' has no subject", tpl.span, 'add `subject "..."`')
        if not tpl.body.strip():
            self.error("PB404", f"template '{tpl.name}' has no body", tpl.span, 'add `body """..."""`')
        if tpl.name not in used and "play" not in self.catalog.broken_kinds:  # the broken play may use it
            self.warn("PB403", f"template '{tpl.name}' is not used by any play", self.sub_span(tpl.span, tpl.name))
        for text, span in ((tpl.subject, tpl.subject_span), (tpl.body, tpl.body_span)):
            self.check_placeholders(text, span)

    def template_names(self) -> set[str]:
        names = set(TEMPLATE_BUILTINS)
        for entity in ("account", "contact"):
            ent = self.catalog.entities.get(entity)
            if ent is not None:
                names |= {f.name for f in ent.fields} | {f.name for f in ent.lets}
        return names

    def check_placeholders(self, text: str, span: n.Span) -> None:
        source = self.project.sources.get(span.file, "")
        raw = source[span.start.offset:span.end.offset] if span.end.offset > span.start.offset else ""
        problem = _template_syntax_error(text)
        if problem is not None:
            self.error("PB402", f"template syntax error: {problem}", span)
            return
        names = self.template_names()
        for m in _PLACEHOLDER.finditer(raw):
            expr = m.group(1)
            nm = _PLACEHOLDER_NAME.match(expr)
            if not nm:
                continue
            dotted = nm.group(1)
            parts = dotted.split(".")
            unknown = self.placeholder_problem(parts, names)
            if unknown is None:
                continue
            bad, candidates = unknown
            if self.catalog.broken & _placeholder_owners(parts):
                continue  # what would define it did not parse: its syntax error says it all
            start = span.start.offset + m.start() + m.group(0).index(expr)
            line = source.count("\n", 0, start) + 1
            col = start - (source.rfind("\n", 0, start) + 1) + 1
            where = n.Span(file=span.file, start=n.Position(line=line, column=col, offset=start),
                           end=n.Position(line=line, column=col + len(dotted), offset=start + len(dotted)))
            self.error("PB401", f"placeholder '{{{{ {dotted} }}}}' names no known field", where,
                       f"templates can use account and recipient fields. {did_you_mean(bad, candidates)}".strip(),
                       closest(bad, candidates))

    def placeholder_problem(self, parts: list[str], names: set[str]) -> tuple[str, set[str]] | None:
        if len(parts) == 1:
            return None if parts[0] in names else (parts[0], names)
        head, name = parts[0], parts[1]
        if head in ("account", "contact"):
            ent = self.catalog.entities.get(head)
            fields = {f.name for f in ent.fields} | {f.name for f in ent.lets} if ent else set()
            return None if name in fields else (name, fields)
        if head in ("score", "band"):
            return None if name in self.catalog.scores else (name, set(self.catalog.scores))
        if head == "route":
            return None if name in self.catalog.routes else (name, set(self.catalog.routes))
        return (head, names | {"account", "contact", "score", "band", "route"})

    # ------------------------------------------------------------ tests
    def check_test(self, test: n.TestDecl) -> None:
        c = self.catalog
        for given in test.given:
            if isinstance(given, n.GivenAccount) and c.account is not None:  # else PB120 says it once
                for gf in given.fields:
                    f = c.entity_field("account", gf.name)
                    if f is None:
                        candidates = [x.name for x in c.account.fields] if c.account else []
                        self.error("PB602", f"account has no field '{gf.name}'", self.sub_span(gf.span, gf.name),
                                   did_you_mean(gf.name, candidates), closest(gf.name, candidates))
                        continue
                    self.compare_types(T.from_decl(f.type), self.type_of(gf.value, Scope()), gf.span, gf.value)
                    self.given_fits(f, gf.value)
            elif isinstance(given, n.GivenMetric) and given.metric not in c.metrics:
                self.error("PB109", f"unknown metric '{given.metric}'", self.sub_span(given.span, given.metric),
                           did_you_mean(given.metric, c.metrics), closest(given.metric, c.metrics), name=given.metric)
            elif isinstance(given, n.GivenEvent) and given.event not in c.events:
                self.error("PB109", f"unknown event '{given.event}'", self.sub_span(given.span, given.event),
                           did_you_mean(given.event, c.events), closest(given.event, c.events), name=given.event)
        for exp in test.expect:
            expected: dict[type[n.Node], tuple[Mapping[str, n.Node], str]] = {
                n.ExpectStart: (c.plays, getattr(exp, "play", "")),
                n.ExpectTrigger: (c.triggers, getattr(exp, "trigger", "")),
                n.ExpectGate: (c.gates, getattr(exp, "gate", "")),
            }
            table, name = expected.get(type(exp), (None, ""))
            if isinstance(exp, n.ExpectValue):
                self.check_expect_value(exp)
                continue
            if table is not None and name not in table:
                kind = type(exp).__name__.removeprefix("Expect").lower()
                self.error("PB601", f"unknown {kind} '{name}'", self.sub_span(exp.span, name, last=True),
                           did_you_mean(name, table), closest(name, table), name=name)

    def given_fits(self, f: n.FieldDecl, value: n.Expr) -> None:
        """A given number or percentage the field could never hold from an import:
        outside its declared range, or a negative percentage (a share is 0% or more)."""
        if not isinstance(value, (n.Number, n.Percent)) or id(value) in self._bare_percents:
            return
        t, v = f.type, value.value
        shown = format_literal(value)
        if t.name is n.TypeName.PERCENT and v < 0 and (t.low is None or t.low >= 0):
            self.error("PB603", f"{shown} is negative; account.{f.name} is a percentage of 0% or more", value.span)
        elif (t.low is not None and v < t.low) or (t.high is not None and v > t.high):
            lo = "" if t.low is None else format_number(t.low)
            hi = "" if t.high is None else format_number(t.high)
            self.error("PB603", f"{shown} is outside the declared range of account.{f.name} ({lo}..{hi})", value.span,
                       "an import would refuse this value; give one the field can hold")

    def check_expect_value(self, exp: n.ExpectValue) -> None:
        c = self.catalog
        if exp.what in ("score", "band"):
            score = c.scores.get(exp.name)
            if score is None:
                self.error("PB601", f"unknown score '{exp.name}'", self.sub_span(exp.span, exp.name),
                           did_you_mean(exp.name, c.scores), closest(exp.name, c.scores), name=exp.name)
                return
            if exp.what == "band":
                self.expect_member(exp.value, [b.name for b in score.bands], f"band of score '{exp.name}'")
            return
        if exp.what == "route":
            route = c.routes.get(exp.name)
            if route is None:
                self.error("PB601", f"unknown route '{exp.name}'", self.sub_span(exp.span, exp.name),
                           did_you_mean(exp.name, c.routes), closest(exp.name, c.routes), name=exp.name)
                return
            self.expect_member(exp.value, [r.target for r in route.cases], f"target of route '{exp.name}'")
            return
        ref = n.Ref(path=["account", exp.name], span=self.sub_span(exp.span, exp.name))
        self.compare_types(self.type_of(ref, Scope()), self.type_of(exp.value, Scope()), exp.span, exp.value)

    def expect_member(self, value: n.Node, members: list[str], what: str) -> None:
        name = value.name if isinstance(value, n.Symbol) else value.value if isinstance(value, n.String) else None
        if name is None or name not in members:
            shown = name if name is not None else "this value"
            self.error("PB112", f"'{shown}' is not a {what}", value.span,
                       f"expected one of: {', '.join(members)}. {did_you_mean(str(name), members)}".strip(),
                       closest(str(name), members))

    # ------------------------------------------------------------ expressions
    def condition(self, expr: n.Expr, scope: Scope, where: str) -> None:
        t = self.type_of(expr, scope)
        if t.kind == "symbol":
            options = list(INBOUND_EVENTS) if scope.play else []
            self.error("PB111", f"unknown name '{t.values[0]}'", expr.span,
                       (f"a play condition can test: {', '.join(options)}. " if options else
                        "a condition reads fields such as account.health_score. ") + did_you_mean(t.values[0], options),
                       closest(t.values[0], options))
            return
        if t.kind not in ("bool", "unknown"):
            self.error("PB203", f"a condition must be true or false, but this is {T.words(t)}", expr.span,
                       "compare it with something, e.g. `> 0`, or test `is empty`")
            return
        self.never_true(expr, where)

    def expect_kind(self, ref: n.Ref, scope: Scope, kind: str, role: str) -> None:
        t = self.type_of(ref, scope)
        if t.kind not in (kind, "unknown"):
            self.error("PB204", f"{role} must be {T.WORDS[kind]} field, but '{ref.dotted}' is {T.words(t)}", ref.span)

    def type_of(self, expr: n.Expr, scope: Scope) -> T.Type:
        method = getattr(self, f"_type_{expr.kind}", None)
        if method is None:  # pragma: no cover - every node kind has a rule
            raise NotImplementedError(f"checker has no type rule for {expr.kind}")
        return method(expr, scope)

    def _type_number(self, e, s):
        return T.NUMBER

    def _type_percent(self, e, s):
        return T.PERCENT

    def _type_string(self, e, s):
        return T.TEXT

    def _type_bool(self, e, s):
        return T.BOOL

    def _type_duration(self, e, s):
        return T.DURATION

    def _type_date(self, e, s):
        return T.DATE

    def _type_ago(self, e, s):
        return T.DATE

    def _type_today(self, e, s):
        return T.DATE

    def _type_symbol(self, e: n.Symbol, s: Scope) -> T.Type:
        if s.play and e.name in INBOUND_EVENTS:
            return T.BOOL
        if s.play and e.name == "stage":
            # One of the pipeline's stages: a misspelt name in an exit is PB112, not a play that never exits.
            return T.Type("enum", pipeline.NAMES)
        if e.name in self.catalog.metrics:
            return T.METRIC
        if e.name in self.catalog.events:
            return T.EVENT
        return T.symbol(e.name)

    def _type_ref(self, e: n.Ref, s: Scope) -> T.Type:
        head, rest = e.path[0], e.path[1:]
        c = self.catalog
        if head == "account":
            return self._field_type("account", rest, e)
        if head == "contact" and "contact" in c.entities:
            return self._field_type("contact", rest, e)
        tables: dict[str, Mapping[str, n.Node]] = {
            "score": c.scores, "band": c.scores, "route": c.routes, "gate": c.gates, "trigger": c.triggers}
        if head in tables:
            name = rest[0]
            table = tables[head]
            if name not in table or len(rest) > 1:
                self.error("PB104", f"unknown {head} '{name}'", self.sub_span(e.span, name, last=True),
                           did_you_mean(name, table), closest(name, table), name=name)
                return T.UNKNOWN
            if head == "score":
                return T.NUMBER
            if head == "band":
                return T.Type("enum", tuple(b.name for b in c.scores[name].bands))
            if head == "route":
                return T.Type("enum", tuple(dict.fromkeys(r.target for r in c.routes[name].cases)))
            return T.BOOL
        options = [*NAMESPACES, *(["contact"] if "contact" in c.entities else [])]
        self.error("PB103", f"unknown name '{head}'", self.sub_span(e.span, head),
                   f"a dotted name starts with one of: {', '.join(options)}. {did_you_mean(head, options)}".strip(),
                   closest(head, options))
        return T.UNKNOWN

    def _field_type(self, entity: str, rest: list[str], e: n.Ref) -> T.Type:
        c = self.catalog
        ent = c.entities.get(entity)
        if ent is None:
            return T.UNKNOWN
        name = rest[0]
        f = c.entity_field(entity, name)
        if f is not None:
            t = T.from_decl(f.type)
            if len(rest) == 1:
                return t
            if t.kind in ("contact", "user") and t.kind in c.entities:
                return self._field_type(t.kind, rest[1:], e)
            if t.kind in ("contact", "user"):
                return T.TEXT  # contact/user attributes (email, name) live in the store
            self.error("PB102", f"'{entity}.{name}' is {T.words(t)} and has no fields", e.span)
            return T.UNKNOWN
        if entity == "account" and c.entity_let("account", name) is not None and len(rest) == 1:
            return self.let_type(name)
        candidates = [x.name for x in ent.fields] + [x.name for x in ent.lets]
        hint = did_you_mean(name, candidates)
        self.error("PB102", f"unknown field '{name}'", self.sub_span(e.span, name, last=True),
                   f"{entity} has no field '{name}'. {hint}".strip(), closest(name, candidates))
        return T.UNKNOWN

    def _type_unary(self, e: n.Unary, s: Scope) -> T.Type:
        t = self.type_of(e.operand, s)
        if e.op == n.UnOp.NOT:
            if t.kind not in ("bool", "unknown"):
                self.error("PB206", f"`not` needs a condition, but this is {T.words(t)}", e.operand.span)
                return T.UNKNOWN
            return T.BOOL
        if not t.numeric:
            self.error("PB202", f"cannot negate {T.words(t)}", e.operand.span)
            return T.UNKNOWN
        return t

    def _type_binary(self, e: n.Binary, s: Scope) -> T.Type:
        left, right = self.type_of(e.left, s), self.type_of(e.right, s)
        if e.op in (n.BinOp.AND, n.BinOp.OR):
            for side, t in ((e.left, left), (e.right, right)):
                if t.kind not in ("bool", "unknown"):
                    self.error("PB206", f"`{e.op.value}` joins conditions, but this is {T.words(t)}", side.span,
                               "compare it with something, e.g. `> 0`")
            return T.BOOL
        if e.op in n.ARITHMETIC:
            for side, t in ((e.left, left), (e.right, right)):
                if not t.numeric:
                    self.error("PB202", f"cannot use {T.words(t)} in arithmetic (`{e.op.value}`)", side.span,
                               "for dates use days_since(...) or days_until(...)" if t.kind == "date" else None)
                    return T.UNKNOWN
            if "unknown" in (left.kind, right.kind):
                return T.UNKNOWN
            if e.op in (n.BinOp.ADD, n.BinOp.SUB) and left.kind == right.kind == "percent":
                return T.PERCENT
            return T.NUMBER
        self.compare_types(left, right, e.span, e.right, ordering=e.op not in (n.BinOp.EQ, n.BinOp.NE), left_node=e.left)
        return T.BOOL

    def compare_types(self, left: T.Type, right: T.Type, span: n.Span, right_node: n.Node,
                      ordering: bool = False, left_node: n.Node | None = None) -> None:
        for t, node in ((left, left_node), (right, right_node)):
            if t.kind == "symbol" and node is not None and not (
                left.kind == "enum" or right.kind == "enum" or "unknown" in (left.kind, right.kind)
            ):
                name = t.values[0]
                if name.lower() in _NO_VALUE_WORDS:  # what other languages call a missing value
                    self.error("PB111", f"unknown name '{name}'", node.span,
                               "to test for a missing value, write `is empty` (or `is not empty`)")
                else:
                    self.error("PB111", f"unknown name '{name}'", node.span,
                               f'to compare with text, quote it: "{name}"', f'"{name}"')
                return
        if left.kind == "enum" or right.kind == "enum":
            enum_t, other, node = (left, right, right_node) if left.kind == "enum" else (right, left, left_node)
            member = other.values[0] if other.kind == "symbol" else (
                node.value if isinstance(node, n.String) else None)
            if other.kind in ("symbol", "text") and member is not None and member not in enum_t.values:
                self.error("PB112", f"'{member}' is not one of ({', '.join(enum_t.values)})", node.span if node else span,
                           did_you_mean(member, enum_t.values), closest(member, enum_t.values))
                return
        if not T.comparable(left, right):
            self.error("PB201", f"cannot compare {T.words(left)} with {T.words(right)}", span,
                       _compare_hint(left, right))
            return
        for t, node in ((left, right_node), (right, left_node)):
            if t.kind == "percent" and isinstance(node, n.Number) and abs(node.value) > 1:
                self.bare_percent(node)
                return
        if ordering and not (T.orderable(left) and T.orderable(right)):
            bad = left if not T.orderable(left) else right
            self.error("PB201", f"{T.words(bad)} has no order; use == or != (or `in [...]`)", span)

    def bare_percent(self, node: n.Number) -> None:
        """`usage_percent > 80`: percentages are fractions, so 80 means 8,000% and the
        comparison is never true. A bare number in -1..1 is an unambiguous fraction."""
        self._bare_percents.add(id(node))
        written = format_number(node.value)
        meant = format_percent(node.value / 100)
        self.error("PB207", f"{written} is not a percentage here; write {meant}", node.span,
                   f"percentages are fractions: {written} means {format_percent(node.value)}. "
                   f"Write {meant} (or the fraction {format_number(node.value / 100)})", meant)

    def _type_in(self, e: n.InList, s: Scope) -> T.Type:
        value = self.type_of(e.value, s)
        for item in e.items:
            self.compare_types(value, self.type_of(item, s), item.span, item, left_node=e.value)
        return T.BOOL

    def _type_between(self, e: n.Between, s: Scope) -> T.Type:
        value = self.type_of(e.value, s)
        for bound in (e.low, e.high):
            self.compare_types(value, self.type_of(bound, s), bound.span, bound, ordering=True, left_node=e.value)
        return T.BOOL

    def _type_is_empty(self, e: n.IsEmpty, s: Scope) -> T.Type:
        self.type_of(e.value, s)
        return T.BOOL

    def _type_call(self, e: n.Call, s: Scope) -> T.Type:
        sigs = FUNCTIONS.get(e.func)
        args = [self.type_of(a, s) for a in e.args]
        if sigs is None:
            self.error("PB110", f"unknown function '{e.func}'", self.sub_span(e.span, e.func),
                       f"functions: {', '.join(sorted(FUNCTIONS))}. {did_you_mean(e.func, FUNCTIONS)}".strip(),
                       closest(e.func, FUNCTIONS))
            return T.UNKNOWN
        for sig in sigs:
            if len(sig.params) == len(args) and all(T.accepts(k, t) for k, t in zip(sig.params, args)):
                return sig.result
        for a, t in zip(e.args, args):  # a bare name that is neither metric nor event
            if t.kind == "symbol":
                known = [*self.catalog.metrics, *self.catalog.events]
                self.error("PB109", f"unknown metric or event '{t.values[0]}'", a.span,
                           did_you_mean(t.values[0], known), closest(t.values[0], known), name=t.values[0])
                return sigs[0].result
        shown = ", ".join(T.words(t) for t in args)
        self.error("PB204", f"{e.func}(...) does not take ({shown})", e.span,
                   "use " + " or ".join(sig.doc for sig in sigs))
        return sigs[0].result

    # ------------------------------------------------------------ logic
    def never_true(self, expr: n.Node, where: str) -> None:
        """Cheap contradictions in `and` chains: `x > 5 and x < 3`, `x == a and x == b`,
        and bounds outside a field's declared range."""
        for chain in _and_chains(expr):
            bounds: dict[str, _Interval] = {}
            for term in chain:
                fact = _fact(term)
                if fact is None or (self._bare_percents and any(id(x) in self._bare_percents for x in n.walk(term))):
                    continue  # a bare number for a percentage is already its own error
                path, interval = fact
                declared = self._declared_interval(path)
                if declared is not None and interval.intersect(declared).empty:
                    self.warn("PB503", f"`{self.source_of(term)}` is never true: {path} is declared {declared}", term.span)
                current = bounds.get(path, _Interval())
                merged = current.intersect(interval)
                if merged.empty and not current.empty:
                    # Point at the comparison that contradicts what the chain already said.
                    self.error("PB501", f"this condition of {where} can never be true", term.span,
                               f"{path} cannot be {interval} and {current} at once")
                    break
                bounds[path] = merged

    def _declared_interval(self, path: str) -> _Interval | None:
        parts = path.split(".")
        if len(parts) != 2 or parts[0] != "account":
            return None
        f = self.catalog.entity_field("account", parts[1])
        if f is None or (f.type.low is None and f.type.high is None):
            return None
        return _Interval(f.type.low, True, f.type.high, True)


# ---------------------------------------------------------------- helpers


def _template_syntax_error(text: str) -> str | None:
    rest = _SIMPLE_PLACEHOLDER.sub("", text)
    if "{{" not in rest and "{%" not in rest and "{#" not in rest:
        return None
    from jinja2 import TemplateSyntaxError

    try:
        _jinja().parse(text)
    except TemplateSyntaxError as e:
        return e.message or "invalid template"
    return None


@functools.lru_cache(maxsize=1)
def _jinja():  # noqa: ANN202 - jinja2 is imported lazily
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment()


def check(project: Project) -> list[Diagnostic]:
    """The check findings of `project` (syntax errors are already in project.diagnostics)."""
    return sorted(Checker(project).run(), key=Diagnostic.sort_key)


def _compare_hint(left: T.Type, right: T.Type) -> str | None:
    kinds = {left.kind, right.kind}
    if "date" in kinds and kinds & {"number", "duration", "percent"}:
        return "to compare a date with a number of days, use days_since(date) > 90 or date < 90 days ago"
    if "text" in kinds and kinds & {"number", "percent"}:
        return "quote text and write numbers bare: 80% or 80, not \"80%\""
    if "bool" in kinds:
        return "a true/false field is a condition by itself: write `account.flag` or `not account.flag`"
    return None


def _weights(formula: n.Expr) -> list[n.Number | n.Percent] | None:
    """The literal weights of `a * 0.4 + 0.6 * b`, or None if the formula is not such a sum."""
    first, rest = spine(formula)
    if not rest or any(op is not n.BinOp.ADD for op, _ in rest):
        return None
    weights: list[n.Number | n.Percent] = []
    for term in [first, *(t for _, t in rest)]:
        if not (isinstance(term, n.Binary) and term.op is n.BinOp.MUL):
            return None
        literals = [side for side in (term.left, term.right) if isinstance(side, (n.Number, n.Percent))]
        if len(literals) != 1:
            return None
        weights.append(literals[0])
    return weights


def _placeholder_owners(parts: list[str]) -> set[str]:
    """The declarations that would define placeholder `parts` (`account.arr` -> account)."""
    if len(parts) == 1:
        return {"account", "contact"}
    if parts[0] in ("account", "contact"):
        return {parts[0]}
    if parts[0] in ("score", "band", "route"):
        return {parts[1]}
    return set()


def _day_order(t: n.Timing) -> float:
    # A business day is ~7/5 calendar days; enough to tell order for checking.
    return t.day * 7 / 5 if t.business else t.day


def _ranges_overlap(a: n.Band, b: n.Band) -> bool:
    lo = max(_lo(a), _lo(b), key=lambda x: (x[0], not x[1]))
    hi = min(_hi(a), _hi(b), key=lambda x: (x[0], x[1]))
    if lo[0] < hi[0]:
        return True
    return lo[0] == hi[0] and lo[1] and hi[1]


def _lo(b: n.Band) -> tuple[float, bool]:
    return (b.low, b.low_inclusive) if b.low is not None else (float("-inf"), True)


def _hi(b: n.Band) -> tuple[float, bool]:
    return (b.high, b.high_inclusive) if b.high is not None else (float("inf"), True)


@dataclass(frozen=True)
class _Interval:
    low: float | None = None
    low_closed: bool = True
    high: float | None = None
    high_closed: bool = True

    @property
    def empty(self) -> bool:
        if self.low is None or self.high is None:
            return False
        return self.low > self.high or (self.low == self.high and not (self.low_closed and self.high_closed))

    def intersect(self, o: _Interval) -> _Interval:
        low, low_closed = self.low, self.low_closed
        if o.low is not None and (low is None or o.low > low or (o.low == low and not o.low_closed)):
            low, low_closed = o.low, o.low_closed
        high, high_closed = self.high, self.high_closed
        if o.high is not None and (high is None or o.high < high or (o.high == high and not o.high_closed)):
            high, high_closed = o.high, o.high_closed
        return _Interval(low, low_closed, high, high_closed)

    def __str__(self) -> str:
        if self.low is not None and self.low == self.high:
            return f"{self.low:g}"
        parts = []
        if self.low is not None:
            parts.append(f"{'>=' if self.low_closed else '>'} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<=' if self.high_closed else '<'} {self.high:g}")
        return " and ".join(parts) or "anything"


_FLIP = {n.BinOp.LT: n.BinOp.GT, n.BinOp.LE: n.BinOp.GE, n.BinOp.GT: n.BinOp.LT, n.BinOp.GE: n.BinOp.LE, n.BinOp.EQ: n.BinOp.EQ}


def _fact(term: n.Node) -> tuple[str, _Interval] | None:
    """`account.x > 5` as ("account.x", (5, inf)); None if not of that shape."""
    if isinstance(term, n.Between) and isinstance(term.value, n.Ref):
        lo, hi = _literal(term.low), _literal(term.high)
        if lo is not None and hi is not None:
            return term.value.dotted, _Interval(lo, True, hi, True)
        return None
    if not isinstance(term, n.Binary) or term.op not in _FLIP:
        return None
    op, left, right = term.op, term.left, term.right
    if not isinstance(left, n.Ref):
        left, right, op = right, left, _FLIP[op]
    value = _literal(right)
    if not isinstance(left, n.Ref) or value is None:
        return None
    return left.dotted, {
        n.BinOp.LT: _Interval(high=value, high_closed=False),
        n.BinOp.LE: _Interval(high=value),
        n.BinOp.GT: _Interval(low=value, low_closed=False),
        n.BinOp.GE: _Interval(low=value),
        n.BinOp.EQ: _Interval(value, True, value, True),
    }[op]


def _literal(e: n.Node) -> float | None:
    if isinstance(e, (n.Number, n.Percent)):
        return e.value
    return None


def _and_chains(expr: n.Node):
    """Every maximal `and` chain in `expr`, as its list of terms."""
    if isinstance(expr, n.Binary) and expr.op == n.BinOp.AND:
        terms: list[n.Node] = []
        stack: list[n.Node] = [expr]
        while stack:
            e = stack.pop()
            if isinstance(e, n.Binary) and e.op == n.BinOp.AND:
                stack += [e.right, e.left]
            else:
                terms.append(e)
        yield terms
        for t in terms:
            yield from _and_chains(t)
    elif isinstance(expr, n.Binary) and expr.op == n.BinOp.OR:
        yield from _and_chains(expr.left)
        yield from _and_chains(expr.right)
    elif isinstance(expr, n.Unary):
        yield from _and_chains(expr.operand)
    elif isinstance(expr, (n.Binary, n.Between)):
        yield [expr]

