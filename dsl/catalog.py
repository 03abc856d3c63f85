"""The catalog: every declaration of a folder by kind and name.

Names are global across the folder; a second declaration of a name is an
error that points at both places.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dsl import nodes as n
from dsl.diagnostics import Diagnostic, make

# Which catalog table a declaration kind lands in.
_TABLE = {
    "entity": "entities", "metric": "metrics", "event": "events", "calendar": "calendars",
    "source": "sources",
    "trigger": "triggers", "score": "scores", "gate": "gates", "route": "routes",
    "template": "templates", "play": "plays", "test": "tests",
}

# Built-in inbound events a play may wait for or exit on, with what brings them.
INBOUND_EVENTS = {
    "replied": "the recipient replied to a message of this play",
    "unsubscribed": "the recipient unsubscribed",
    "bounced": "a message of this play bounced",
    "meeting_booked": "the customer booked a meeting (a scheduling tool's event)",
    "stage_changed": "the account's pipeline stage changed",
    "closed_won": "the expansion opportunity was won",
    "closed_lost": "the expansion opportunity was lost",
}


@dataclass
class Catalog:
    entities: dict[str, n.EntityDecl] = field(default_factory=dict)
    metrics: dict[str, n.MetricDecl] = field(default_factory=dict)
    events: dict[str, n.EventDecl] = field(default_factory=dict)
    calendars: dict[str, n.CalendarDecl] = field(default_factory=dict)
    sources: dict[str, n.SourceDecl] = field(default_factory=dict)
    triggers: dict[str, n.TriggerDecl] = field(default_factory=dict)
    scores: dict[str, n.ScoreDecl] = field(default_factory=dict)
    gates: dict[str, n.GateDecl] = field(default_factory=dict)
    routes: dict[str, n.RouteDecl] = field(default_factory=dict)
    templates: dict[str, n.TemplateDecl] = field(default_factory=dict)
    plays: dict[str, n.PlayDecl] = field(default_factory=dict)
    tests: dict[str, n.TestDecl] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)  # names of declarations that did not parse
    broken_kinds: set[str] = field(default_factory=set)
    _starter_index: dict[str, list[n.TriggerDecl]] | None = field(default=None, repr=False, compare=False)
    _starter_count: int = field(default=-1, repr=False, compare=False)

    @property
    def account(self) -> n.EntityDecl | None:
        return self.entities.get("account")

    def entity_field(self, entity: str, name: str) -> n.FieldDecl | None:
        ent = self.entities.get(entity)
        if ent is None:
            return None
        return next((f for f in ent.fields if f.name == name), None)

    def entity_let(self, entity: str, name: str) -> n.LetDecl | None:
        ent = self.entities.get(entity)
        if ent is None:
            return None
        return next((f for f in ent.lets if f.name == name), None)

    def triggers_starting(self, play: str) -> list[n.TriggerDecl]:
        """The triggers with `then start PLAY`, in declaration order."""
        return self._starters().get(play, [])

    def _starters(self) -> dict[str, list[n.TriggerDecl]]:
        # Built on first use and kept: the checker asks once per play, and a
        # scan of every trigger per play was quadratic on large folders.
        if self._starter_index is None or self._starter_count != len(self.triggers):
            index: dict[str, list[n.TriggerDecl]] = {}
            for t in self.triggers.values():
                for play in dict.fromkeys(a.play for a in t.then):
                    index.setdefault(play, []).append(t)
            self._starter_index, self._starter_count = index, len(self.triggers)
        return self._starter_index


def build(modules: list[n.Module]) -> tuple[Catalog, list[Diagnostic]]:
    catalog = Catalog()
    diagnostics: list[Diagnostic] = []
    seen: dict[str, n.Node] = {}  # one namespace across kinds, except tests
    for module in modules:
        for kind, name in module.broken:
            catalog.broken.add(name)
            catalog.broken_kinds.add(kind)
        for decl in module.declarations:
            table: dict = getattr(catalog, _TABLE[decl.decl])
            key = decl.name
            first = table.get(key) if decl.decl == "test" else seen.get(key)
            if first is not None:
                where = f"{first.span.file}:{first.span.start.line}"
                what = "test" if decl.decl == "test" else f"name '{key}'"
                diagnostics.append(make(
                    "PB101", f"duplicate {what}: already declared at {where}", decl.span,
                    detail=f"names are global across the folder; rename this {decl.decl} or remove one of them",
                ))
                continue
            table[key] = decl
            if decl.decl != "test":
                seen[key] = decl
    return catalog, diagnostics
