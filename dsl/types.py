"""Checker types: what an expression can be, and which ones compare.

Like sqlglot's annotator: a small closed set of types, an explicit
compatibility table, and UNKNOWN, which is compatible with everything so one
mistake reports once instead of cascading.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsl.nodes import TypeName, TypeRef


@dataclass(frozen=True)
class Type:
    kind: str  # number percent text bool date duration enum user contact symbol metric event unknown
    values: tuple[str, ...] = ()  # enum members, or the name of a symbol
    low: float | None = None
    high: float | None = None

    def __str__(self) -> str:
        if self.kind == "enum":
            return f"enum({', '.join(self.values)})"
        if self.kind == "symbol":
            return f"name '{self.values[0]}'"
        return self.kind

    @property
    def numeric(self) -> bool:
        return self.kind in ("number", "percent", "duration", "unknown")


NUMBER = Type("number")
PERCENT = Type("percent")
TEXT = Type("text")
BOOL = Type("bool")
DATE = Type("date")
DURATION = Type("duration")
USER = Type("user")
CONTACT = Type("contact")
METRIC = Type("metric")
EVENT = Type("event")
UNKNOWN = Type("unknown")


def symbol(name: str) -> Type:
    return Type("symbol", (name,))


def from_decl(t: TypeRef) -> Type:
    if t.name in (TypeName.INT, TypeName.NUMBER, TypeName.MONEY):
        return Type("number", low=t.low, high=t.high)
    if t.name == TypeName.PERCENT:
        return PERCENT
    if t.name == TypeName.ENUM:
        return Type("enum", tuple(t.values))
    if t.name in (TypeName.DATE, TypeName.DATETIME):
        return DATE
    return {
        TypeName.BOOL: BOOL, TypeName.TEXT: TEXT, TypeName.DURATION: DURATION,
        TypeName.USER: USER, TypeName.CONTACT: CONTACT,
    }[t.name]


# In words a RevOps analyst reads, for messages.
WORDS = {
    "number": "a number", "percent": "a percentage", "text": "text", "bool": "true/false",
    "date": "a date", "duration": "a duration", "enum": "one of a fixed list", "user": "a user",
    "contact": "a contact", "symbol": "a bare name", "metric": "a metric", "event": "an event",
    "unknown": "unknown",
}


def words(t: Type) -> str:
    if t.kind == "enum":
        return f"one of ({', '.join(t.values)})"
    return WORDS[t.kind]


def comparable(a: Type, b: Type) -> bool:
    """Whether `a == b` / `a < b` can mean something (enum members are checked apart)."""
    if "unknown" in (a.kind, b.kind):
        return True
    if a.numeric and b.numeric:
        return True
    kinds = {a.kind, b.kind}
    if kinds <= {"enum", "symbol", "text"}:
        return kinds != {"symbol", "text"} and kinds != {"symbol"}
    return a.kind == b.kind and a.kind in ("date", "text", "bool")


def orderable(t: Type) -> bool:
    return t.numeric or t.kind in ("date", "unknown")


def accepts(kinds: tuple[str, ...], t: Type) -> bool:
    if t.kind == "unknown":
        return True
    if t.kind in kinds:
        return True
    return "number" in kinds and t.numeric
