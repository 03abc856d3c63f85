"""AST of the .play language: one pydantic model per construct.

Every node carries a `span` (where it came from). Spans are excluded from
dumps and equality, so golden ASTs, Plan hashes and formatter round-trips
ignore layout; they are still available as attributes for diagnostics.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NamedTuple, Union

from pydantic import BaseModel, ConfigDict, Field, SkipValidation


class Position(NamedTuple):
    line: int  # 1-based
    column: int  # 1-based, characters
    offset: int  # 0-based, characters


@dataclass(frozen=True, slots=True)
class Span:
    """Where a node came from. A plain dataclass, not a model: the parser makes
    one per node, and three pydantic objects per node were a third of the
    time spent building the AST."""

    file: str = "<input>"
    start: Position = Position(1, 1, 0)
    end: Position = Position(1, 1, 0)


NO_SPAN = Span()


class Node(BaseModel):
    model_config = ConfigDict(extra="forbid")
    span: SkipValidation[Span] = Field(default=NO_SPAN, exclude=True, repr=False)

    def __eq__(self, other: object) -> bool:
        if type(self) is not type(other):
            return NotImplemented
        return self.model_dump() == other.model_dump()

    __hash__ = None  # type: ignore[assignment]


# --------------------------------------------------------------------------
# Expressions


class BinOp(str, enum.Enum):
    ADD = "+"
    SUB = "-"
    MUL = "*"
    DIV = "/"
    EQ = "=="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    AND = "and"
    OR = "or"


COMPARISONS = {BinOp.EQ, BinOp.NE, BinOp.LT, BinOp.LE, BinOp.GT, BinOp.GE}
ARITHMETIC = {BinOp.ADD, BinOp.SUB, BinOp.MUL, BinOp.DIV}


class UnOp(str, enum.Enum):
    NEG = "-"
    NOT = "not"


class DurationUnit(str, enum.Enum):
    HOURS = "hours"
    DAYS = "days"
    BUSINESS_DAYS = "business days"
    WEEKS = "weeks"
    MONTHS = "months"


DAYS_PER_UNIT = {
    DurationUnit.HOURS: 1 / 24,
    DurationUnit.DAYS: 1,
    DurationUnit.BUSINESS_DAYS: 1,  # counted on a calendar by the scheduler
    DurationUnit.WEEKS: 7,
    DurationUnit.MONTHS: 30,
}


class Number(Node):
    kind: Literal["number"] = "number"
    value: float


class Percent(Node):
    """`80%`; its value is the fraction (0.8), so `a / b > 90%` reads right."""

    kind: Literal["percent"] = "percent"
    value: float


class String(Node):
    kind: Literal["string"] = "string"
    value: str


class Bool(Node):
    kind: Literal["bool"] = "bool"
    value: bool


class Symbol(Node):
    """A bare name: an enum value (`smb`) or an inbound event (`replied`)."""

    kind: Literal["symbol"] = "symbol"
    name: str


class Duration(Node):
    kind: Literal["duration"] = "duration"
    amount: float
    unit: DurationUnit

    @property
    def days(self) -> float:
        return self.amount * DAYS_PER_UNIT[self.unit]


class DateLit(Node):
    kind: Literal["date"] = "date"
    value: dt.date


class Ago(Node):
    """`200 days ago`: a date relative to the evaluation day."""

    kind: Literal["ago"] = "ago"
    duration: Duration


class Today(Node):
    kind: Literal["today"] = "today"


class Ref(Node):
    """A dotted name: `account.health_score`, `score.expansion`, `route.touch`."""

    kind: Literal["ref"] = "ref"
    path: list[str]

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


class Unary(Node):
    kind: Literal["unary"] = "unary"
    op: UnOp
    operand: Expr


class Binary(Node):
    kind: Literal["binary"] = "binary"
    op: BinOp
    left: Expr
    right: Expr


class InList(Node):
    kind: Literal["in"] = "in"
    value: Expr
    items: list[Expr]
    negated: bool = False


class Between(Node):
    """`x between a and b`, inclusive at both ends."""

    kind: Literal["between"] = "between"
    value: Expr
    low: Expr
    high: Expr


class IsEmpty(Node):
    kind: Literal["is_empty"] = "is_empty"
    value: Expr
    negated: bool = False


class Call(Node):
    """A window or helper function: growth(api_calls, 60 days), days_since(x)."""

    kind: Literal["call"] = "call"
    func: str
    args: list[Expr]


Expr = Annotated[
    Union[
        Number, Percent, String, Bool, Symbol, Duration, DateLit, Ago, Today,
        Ref, Unary, Binary, InList, Between, IsEmpty, Call,
    ],
    Field(discriminator="kind"),
]

for _m in (Unary, Binary, InList, Between, IsEmpty, Call):
    _m.model_rebuild()


# --------------------------------------------------------------------------
# Declarations: data


class TypeName(str, enum.Enum):
    INT = "int"
    NUMBER = "number"
    PERCENT = "percent"
    MONEY = "money"
    BOOL = "bool"
    TEXT = "text"
    ENUM = "enum"
    DATE = "date"
    DATETIME = "datetime"
    DURATION = "duration"
    USER = "user"
    CONTACT = "contact"


class TypeRef(Node):
    name: TypeName
    nullable: bool = False
    values: list[str] = []  # enum members
    low: float | None = None  # number ranges: `number 0..100`
    high: float | None = None


class FieldDecl(Node):
    name: str
    type: TypeRef


class LetDecl(Node):
    """A derived field: `let seat_utilization = account.seats_active / account.seats_purchased`."""

    name: str
    value: Expr


class EntityDecl(Node):
    decl: Literal["entity"] = "entity"
    name: str
    fields: list[FieldDecl] = []
    lets: list[LetDecl] = []


# How often a metric is measured (`metric headcount per week`); points are stored one per day at most.
METRIC_PERIODS = ("day", "week", "month")


class MetricDecl(Node):
    decl: Literal["metric"] = "metric"
    name: str
    per: str = "day"


class EventDecl(Node):
    decl: Literal["event"] = "event"
    name: str


class HolidayRegion(Node):
    """`holidays US-CA`: a country's (or subdivision's) public holidays, ISO 3166 codes (dsl/calendars.py)."""

    country: str
    subdivision: str | None = None

    @property
    def code(self) -> str:
        return f"{self.country}-{self.subdivision}" if self.subdivision else self.country


class CalendarDecl(Node):
    """Days off for business-day counting: public holidays of regions, and the company's own dates."""

    decl: Literal["calendar"] = "calendar"
    name: str
    title: str | None = None
    regions: list[HolidayRegion] = []
    holidays: list[dt.date] = []  # the calendar's own dates


# What a source reads from (`source crm from hubspot companies`), and the objects each system has.
SOURCE_SYSTEMS = ("hubspot", "warehouse")
HUBSPOT_OBJECTS = ("companies", "contacts", "deals")
# The entity a source's mapping fills, and the kind of import that writes it.
SOURCE_ENTITIES = ("account", "contact")
# Time series a source may land instead: `metric.NAME = column` (points, dated by a column) and
# `event.NAME = column` (occurrences at the column's time), each for the account `account.id` names.
SOURCE_SERIES = ("metric", "event")
# Columns every account / contact row has besides its declared fields (the store's fixed columns).
SOURCE_FIXED_FIELDS = {
    "account": ("id", "name"),
    "contact": ("id", "account_id", "email", "name", "first_name", "timezone", "unsubscribed_at"),
}


class SourceMapping(Node):
    """`account.arr = annualrevenue`: the source's `column` lands in `entity`.`field`.

    For series, `entity` is `metric` or `event` and `field` the declared metric or event;
    `event.NAME.PROPERTY = column` sets `prop` (a property of that event).
    """

    entity: str
    field: str
    column: str
    prop: str | None = None

    @property
    def target(self) -> str:
        """As written on the left: `account.arr`, `metric.seats_active`, `event.trial_started.plan`."""
        return f"{self.entity}.{self.field}" + (f".{self.prop}" if self.prop else "")


class SourceDecl(Node):
    """A sync's declaration: the system and object (or SQL query) it reads, its cursor, its mapping."""

    decl: Literal["source"] = "source"
    name: str
    system: str  # hubspot, warehouse
    object: str | None = None  # companies, contacts, deals (HubSpot)
    query: str | None = None  # the SQL query (warehouse)
    incremental: str | None = None  # the last-modified property / cursor column; None = full load each time
    dated: str | None = None  # metric points: the column holding each point's date (`dated by day`)
    named: str | None = None  # events: the column naming each row's event (`named by event_name`)
    mappings: list[SourceMapping] = []
    query_span: SkipValidation[Span] = Field(default=NO_SPAN, exclude=True, repr=False)
    incremental_span: SkipValidation[Span] = Field(default=NO_SPAN, exclude=True, repr=False)
    dated_span: SkipValidation[Span] = Field(default=NO_SPAN, exclude=True, repr=False)
    named_span: SkipValidation[Span] = Field(default=NO_SPAN, exclude=True, repr=False)

    @property
    def entity(self) -> str | None:
        """The entity the mapping fills (the first mapping's; the checker refuses a mix)."""
        return self.mappings[0].entity if self.mappings else None

    @property
    def fills(self) -> str | None:
        """What a sync writes: `account` or `contact` fields, or `metric` points or `event`s."""
        series = next((m.entity for m in self.mappings if m.entity in SOURCE_SERIES), None)
        return series or self.entity

    @property
    def key(self) -> SourceMapping | None:
        """The mapping that identifies the record: `account.id = ...`."""
        return next((m for m in self.mappings if m.field == "id"), None)


# --------------------------------------------------------------------------
# Declarations: rules


class Action(Node):
    """What a trigger does when it fires: `start usage_limit`."""

    play: str


class TriggerDecl(Node):
    decl: Literal["trigger"] = "trigger"
    name: str
    title: str | None = None
    when: Expr
    then: list[Action]


class Band(Node):
    name: str
    low: float | None = None
    low_inclusive: bool = True
    high: float | None = None
    high_inclusive: bool = True
    label: str | None = None


class PointsCase(Node):
    points: float
    when: Expr


class PointsRule(Node):
    """One line of a points score: the first case that holds gives its points."""

    cases: list[PointsCase]
    otherwise: float = 0


class ScoreDecl(Node):
    decl: Literal["score"] = "score"
    name: str
    title: str | None = None
    formula: Expr | None = None  # weighted style: `= a * 0.4 + ...`
    points: list[PointsRule] = []  # points style
    bands: list[Band] = []


class Requirement(Node):
    when: Expr
    label: str | None = None


class GateCase(Node):
    """Requirements that apply where `when` holds (e.g. one segment)."""

    when: Expr | None = None  # None: applies to every account
    requires: list[Requirement] = []


class GateDecl(Node):
    decl: Literal["gate"] = "gate"
    name: str
    title: str | None = None
    cases: list[GateCase] = []


class RouteCase(Node):
    when: Expr | None = None  # None: `otherwise`
    target: str


class RouteDecl(Node):
    decl: Literal["route"] = "route"
    name: str
    title: str | None = None
    cases: list[RouteCase] = []


class TemplateDecl(Node):
    decl: Literal["template"] = "template"
    name: str
    subject: str
    body: str
    subject_span: SkipValidation[Span] = Field(default=NO_SPAN, exclude=True, repr=False)
    body_span: SkipValidation[Span] = Field(default=NO_SPAN, exclude=True, repr=False)


# --------------------------------------------------------------------------
# Plays


class Timing(Node):
    """`day 3`, `day -90` (relative to the play's anchor), `business day 5`."""

    day: int
    business: bool = False
    at: str | None = None  # "HH:MM" in the send window's time zone


class EmailStep(Node):
    step: Literal["email"] = "email"
    to: Ref
    template: str


class TaskStep(Node):
    step: Literal["task"] = "task"
    assignee: Ref
    title: str
    due: Duration | None = None


class StageStep(Node):
    step: Literal["stage"] = "stage"
    stage: str


class OpportunityStep(Node):
    step: Literal["opportunity"] = "opportunity"
    title: str
    amount: Expr | None = None
    owner: Ref | None = None


# A notify step's channel may name one resolved per account instead of a literal channel:
NOTIFY_OWNER = "@owner"  # the play owner's channel
NOTIFY_ROUTE = "@route."  # `@route.NAME`: the channel of the account's target of route NAME


class NotifyStep(Node):
    step: Literal["notify"] = "notify"
    channel: str  # "#cs-expansion", a Slack id, NOTIFY_OWNER or NOTIFY_ROUTE + a route name
    message: str


class WebhookStep(Node):
    step: Literal["webhook"] = "webhook"
    url: str
    event: str | None = None


class SetStep(Node):
    step: Literal["set"] = "set"
    field: Ref
    value: Expr


class TrialStep(Node):
    step: Literal["trial"] = "trial"
    feature: str
    duration: Duration


class WaitStep(Node):
    """`wait up to 5 days for replied`: pauses the play until an event or the timeout."""

    step: Literal["wait"] = "wait"
    timeout: Duration
    events: list[str]


class BranchStep(Node):
    step: Literal["branch"] = "branch"
    condition: Expr
    then: list[StepAction]
    otherwise: list[StepAction] = []


StepAction = Annotated[
    Union[
        EmailStep, TaskStep, StageStep, OpportunityStep, NotifyStep, WebhookStep,
        SetStep, TrialStep, WaitStep, BranchStep,
    ],
    Field(discriminator="step"),
]
BranchStep.model_rebuild()


class Step(Node):
    timing: Timing
    action: StepAction
    unless: Expr | None = None
    label: str | None = None  # `as NAME`; otherwise derived from position


class SendWindow(Node):
    start: str  # "HH:MM"
    end: str
    weekdays_only: bool = False
    timezone: Ref | None = None  # a text field holding an IANA zone; default: recipient's


class Holdout(Node):
    """`holdout 10%`: the share of the play's would-be enrollments held out, as written."""

    percent: float  # 10 for `holdout 10%`
    unit: bool = True  # False: written without `%` (the checker says so)


class PlayDecl(Node):
    decl: Literal["play"] = "play"
    name: str
    title: str | None = None
    kind: str | None = None
    owner: Ref | None = None
    priority: int = 0
    gate: str | None = None
    ungated: bool = False
    concurrent: bool = False  # may run beside another expansion play
    reenter_days: float | None = None
    exit: Expr | None = None
    anchor: Ref | None = None
    window: SendWindow | None = None
    calendar: str | None = None
    holdout: Holdout | None = None
    steps: list[Step] = []


# --------------------------------------------------------------------------
# Tests


class GivenField(Node):
    name: str
    value: Expr


class GivenPoint(Node):
    value: Expr
    at: Expr  # an Ago, Today or DateLit


class GivenAccount(Node):
    given: Literal["account"] = "account"
    fields: list[GivenField]


class GivenMetric(Node):
    given: Literal["metric"] = "metric"
    metric: str
    points: list[GivenPoint]


class GivenEvent(Node):
    given: Literal["event"] = "event"
    event: str
    at: list[Expr]


Given = Annotated[Union[GivenAccount, GivenMetric, GivenEvent], Field(discriminator="given")]


class ExpectStart(Node):
    expect: Literal["start"] = "start"
    play: str
    negated: bool = False


class ExpectTrigger(Node):
    expect: Literal["trigger"] = "trigger"
    trigger: str
    negated: bool = False


class ExpectGate(Node):
    expect: Literal["gate"] = "gate"
    gate: str
    negated: bool = False  # `expect gate X fails`


class ExpectValue(Node):
    """`expect score readiness >= 70`, `expect band expansion == high`, `expect route touch == low_touch`."""

    expect: Literal["value"] = "value"
    what: Literal["score", "band", "route", "field"]
    name: str
    op: BinOp
    value: Expr


Expectation = Annotated[
    Union[ExpectStart, ExpectTrigger, ExpectGate, ExpectValue], Field(discriminator="expect")
]


class TestDecl(Node):
    decl: Literal["test"] = "test"
    name: str
    today: dt.date | None = None
    given: list[Given] = []
    expect: list[Expectation] = []


Declaration = Annotated[
    Union[
        EntityDecl, MetricDecl, EventDecl, CalendarDecl, SourceDecl, TriggerDecl, ScoreDecl,
        GateDecl, RouteDecl, TemplateDecl, PlayDecl, TestDecl,
    ],
    Field(discriminator="decl"),
]


class Comment(BaseModel):
    """A `#` comment, kept for the formatter (not part of the AST's meaning)."""

    line: int
    column: int
    text: str


class Module(BaseModel):
    """One parsed .play file."""

    file: str
    declarations: list[Declaration] = []
    comments: list[Comment] = Field(default=[], exclude=True)
    # (kind, name) of declarations that did not parse: the checker does not
    # report them again as unknown names wherever they are used.
    broken: list[tuple[str, str]] = Field(default=[], exclude=True)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Module):
            return NotImplemented
        return self.model_dump() == other.model_dump()

    __hash__ = None  # type: ignore[assignment]


def walk(node: Any):
    """Yield every Node under `node` (itself included), depth first."""
    if isinstance(node, Node):
        yield node
        for name in type(node).model_fields:
            if name == "span" or name.endswith("_span"):
                continue
            yield from walk(getattr(node, name))
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)
    elif isinstance(node, Module):
        yield from walk(node.declarations)
