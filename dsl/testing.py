"""`playbook test`: runs the `test` blocks of a catalog with the reference evaluator.

Each test builds one Account from its `given` lines, evaluates every
expectation, and on a failure explains it: the inputs, the expectation, and
every sub-condition with its value and true / false / empty. Coverage says
which triggers, plays and gates no test exercised (and which outcomes of
each were seen), as data for the CLI.
"""

from __future__ import annotations

import datetime as dt
import difflib
from typing import Literal

from pydantic import BaseModel

from dsl import nodes as n
from dsl.catalog import Catalog
from dsl.evaluator import Account, EvalError, Evaluator, Value, compare, is_number, kind_of
from dsl.explain import Explainer, Explanation, format_expr, render, show

Status = Literal["passed", "failed", "error"]


class ExpectationResult(BaseModel):
    text: str  # `expect start usage_limit`
    line: int
    passed: bool
    actual: str  # what happened, in words: `usage_limit does not start`
    error: str | None = None  # the expectation could not be evaluated
    explanation: list[Explanation] = []  # filled for failures only


class TestResult(BaseModel):
    __test__ = False  # not a pytest test class, despite the name
    name: str
    file: str
    line: int
    status: Status
    today: dt.date
    inputs: list[str]  # the given lines, with relative dates resolved
    expectations: list[ExpectationResult] = []
    error: str | None = None  # the givens could not be turned into an account

    @property
    def passed(self) -> bool:
        return self.status == "passed"


class CoverageItem(BaseModel):
    kind: Literal["trigger", "play", "gate"]
    name: str
    file: str
    line: int
    outcomes: list[str]  # outcomes seen across all tests, e.g. ["fires", "does not fire"]

    @property
    def exercised(self) -> bool:
        return bool(self.outcomes)


class TestReport(BaseModel):
    __test__ = False
    results: list[TestResult]
    coverage: list[CoverageItem]

    @property
    def passed(self) -> int:
        return sum(r.status == "passed" for r in self.results)

    @property
    def failed(self) -> int:
        return sum(r.status == "failed" for r in self.results)

    @property
    def errors(self) -> int:
        return sum(r.status == "error" for r in self.results)

    @property
    def ok(self) -> bool:
        return self.passed == len(self.results)

    @property
    def never_exercised(self) -> list[CoverageItem]:
        return [c for c in self.coverage if not c.exercised]


# --------------------------------------------------------------------------
# Building the account


class GivenError(Exception):
    """A `given` line that cannot describe an account (unknown field, wrong type)."""


_TYPE_CHECKS: dict[n.TypeName, tuple[str, type | tuple[type, ...]]] = {
    n.TypeName.INT: ("a number", (int, float)),
    n.TypeName.NUMBER: ("a number", (int, float)),
    n.TypeName.MONEY: ("a number", (int, float)),
    n.TypeName.PERCENT: ("a percent such as 85%", (int, float)),
    n.TypeName.DURATION: ("a duration such as 30 days", (int, float)),
    n.TypeName.BOOL: ("true or false", bool),
    n.TypeName.TEXT: ("text", str),
    n.TypeName.ENUM: ("one of its values", str),
    n.TypeName.USER: ("text", str),
    n.TypeName.CONTACT: ("text", str),
    n.TypeName.DATE: ("a date such as 2026-01-31 or 30 days ago", dt.date),
    n.TypeName.DATETIME: ("a date such as 2026-01-31 or 30 days ago", dt.date),
}


def _literal(ev: Evaluator, expr: n.Expr, what: str) -> Value:
    """A given value: a literal, evaluated against the test's day (refs are not allowed)."""
    if any(isinstance(node, (n.Ref, n.Call)) for node in n.walk(expr)):
        raise GivenError(f"{what}: give a value such as 75, 85%, smb or 200 days ago, not {format_expr(expr)}")
    return ev.eval_expr(expr)


def _check_field(catalog: Catalog, name: str, value: Value) -> None:
    entity = catalog.account
    if entity is None:
        return  # nothing declared: take the givens as they are
    if catalog.entity_let("account", name) is not None:
        raise GivenError(f"account.{name} is derived (let); give the fields it is computed from")
    decl = catalog.entity_field("account", name)
    if decl is None:
        known = [f.name for f in entity.fields]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise GivenError(f"account has no field '{name}'.{hint}")
    want, types = _TYPE_CHECKS[decl.type.name]
    # true/false is not a number here, though Python's bool is an int
    ok = decl.type.name is n.TypeName.BOOL if isinstance(value, bool) else isinstance(value, types)
    if not ok:
        raise GivenError(f"account.{name} is {decl.type.name.value}: give {want}, not {kind_of(value)} ({show(value)})")
    if decl.type.name is n.TypeName.ENUM and value not in decl.type.values:
        raise GivenError(f"account.{name} must be one of {', '.join(decl.type.values)}, not '{value}'")


def _resolved(expr: n.Expr, value: Value) -> str:
    """`200 days ago (2025-11-13)`: the given as written, and the date it means."""
    text = format_expr(expr)
    if isinstance(expr, (n.Ago, n.Today)):
        text += f" ({show(value)})"
    return text


def build_account(test: n.TestDecl, catalog: Catalog, today: dt.date) -> tuple[Account, list[str]]:
    """The account a test describes, and its inputs as lines for messages."""
    account = Account()
    ev = Evaluator(catalog, account, today)  # for literals only: `200 days ago`, `85%`, `smb`
    inputs: list[str] = []
    for given in test.given:
        match given:
            case n.GivenAccount():
                parts = []
                for f in given.fields:
                    value = _literal(ev, f.value, f"account.{f.name}")
                    _check_field(catalog, f.name, value)
                    account.fields[f.name] = value
                    parts.append(f"{f.name}={_resolved(f.value, value)}")
                inputs.append("given account " + ", ".join(parts))
            case n.GivenMetric():
                if given.metric not in catalog.metrics:
                    raise GivenError(f"there is no metric named '{given.metric}'")
                parts = []
                points = account.metrics.setdefault(given.metric, [])
                for p in given.points:
                    value = _literal(ev, p.value, f"metric {given.metric}")
                    when = _literal(ev, p.at, f"metric {given.metric}")
                    if not is_number(value):
                        raise GivenError(f"metric {given.metric}: a point's value is a number, not {kind_of(value)}")
                    if not isinstance(when, dt.date):
                        raise GivenError(f"metric {given.metric}: 'at' needs a date, not {kind_of(when)}")
                    points.append((when, value))
                    parts.append(f"{format_expr(p.value)} at {_resolved(p.at, when)}")
                inputs.append(f"given metric {given.metric} " + ", ".join(parts))
            case n.GivenEvent():
                if given.event not in catalog.events:
                    raise GivenError(f"there is no event named '{given.event}'")
                parts = []
                for at in given.at:
                    when = _literal(ev, at, f"event {given.event}")
                    if not isinstance(when, dt.date):
                        raise GivenError(f"event {given.event}: give a date, not {kind_of(when)}")
                    account.events.setdefault(given.event, []).append(when)
                    parts.append(_resolved(at, when))
                inputs.append(f"given event {given.event} " + ", ".join(parts))
    return account, inputs


# --------------------------------------------------------------------------
# Expectations


def expectation_text(e: n.Expectation) -> str:
    match e:
        case n.ExpectStart():
            return f"expect {'no ' if e.negated else ''}start {e.play}"
        case n.ExpectTrigger():
            return f"expect {'no ' if e.negated else ''}trigger {e.trigger}"
        case n.ExpectGate():
            return f"expect gate {e.gate} {'fails' if e.negated else 'passes'}"
        case n.ExpectValue():
            return f"expect {e.what} {e.name} {e.op.value} {format_expr(e.value)}"
    raise EvalError(f"unknown expectation {type(e).__name__}")


def check_expectation(ev: Evaluator, e: n.Expectation) -> ExpectationResult:
    text = expectation_text(e)
    why = Explainer(ev)
    try:
        match e:
            case n.ExpectStart():
                got = ev.would_start(e.play)
                passed = got != e.negated
                actual = f"{e.play} {'starts' if got else 'does not start'}"
                explain = lambda: [why.play(e.play)]  # noqa: E731
            case n.ExpectTrigger():
                got = ev.trigger_fires(e.trigger)
                passed = got != e.negated
                actual = f"{e.trigger} {'fires' if got else 'does not fire'}"
                explain = lambda: [why.trigger(e.trigger)]  # noqa: E731
            case n.ExpectGate():
                got = ev.gate_passes(e.gate)
                passed = got != e.negated
                actual = f"{e.gate} {'passes' if got else 'fails'}"
                explain = lambda: [why.gate(e.gate)]  # noqa: E731
            case n.ExpectValue():
                passed, actual, explain = _check_value(ev, why, e)
            case _:
                raise EvalError(f"unknown expectation {type(e).__name__}")
        result = ExpectationResult(text=text, line=e.span.start.line, passed=passed, actual=actual)
        if not passed:
            result.explanation = explain()
        return result
    except EvalError as err:
        return ExpectationResult(text=text, line=e.span.start.line, passed=False, actual="could not be evaluated",
                                 error=str(err))


def _check_value(ev: Evaluator, why: Explainer, e: n.ExpectValue):  # noqa: ANN202
    expected = ev.eval_expr(e.value)  # a Symbol (`high`) is its name
    match e.what:
        case "score":
            got: Value = ev.score_value(e.name)
            explain = lambda: [why.score(e.name)]  # noqa: E731
        case "band":
            score = ev.catalog.scores.get(e.name)
            if score is not None and isinstance(expected, str) and expected not in [b.name for b in score.bands]:
                raise EvalError(f"score {e.name} has no band '{expected}' (bands: {', '.join(b.name for b in score.bands)})")
            got = ev.band_of(e.name)
            explain = lambda: [why.band(e.name)]  # noqa: E731
        case "route":
            route = ev.catalog.routes.get(e.name)
            if route is not None and isinstance(expected, str) and expected not in [c.target for c in route.cases]:
                raise EvalError(f"route {e.name} has no target '{expected}'")
            got = ev.route_of(e.name)
            explain = lambda: [why.route(e.name)]  # noqa: E731
        case _:
            got = ev.field_value(e.name)
            explain = lambda: [why.field(e.name)]  # noqa: E731
    outcome = compare(e.op, got, expected)
    return outcome is True, f"{e.what} {e.name} is {show(got)}", explain


# --------------------------------------------------------------------------
# Running


def run_test(test: n.TestDecl, catalog: Catalog, today: dt.date | None = None,
             observed: dict[tuple[str, str], set[str]] | None = None) -> TestResult:
    """Run one test. Its own `today` wins over `today`, which defaults to the real date."""
    day = test.today or today or dt.date.today()
    base = TestResult(name=test.name, file=test.span.file, line=test.span.start.line,
                      status="passed", today=day, inputs=[])
    try:
        account, base.inputs = build_account(test, catalog, day)
    except (GivenError, EvalError) as err:
        base.status, base.error = "error", str(err)
        return base
    ev = Evaluator(catalog, account, day)
    base.expectations = [check_expectation(ev, e) for e in test.expect]
    if any(r.error for r in base.expectations):
        base.status = "error"
    elif not all(r.passed for r in base.expectations):
        base.status = "failed"
    if observed is not None:
        for key, outcomes in ev.observed.items():
            observed.setdefault(key, set()).update(outcomes)
    return base


def run_tests(catalog: Catalog, today: dt.date | None = None, only: str | None = None) -> TestReport:
    """Run every test of the catalog (or those whose name contains `only`), in declaration order."""
    observed: dict[tuple[str, str], set[str]] = {}
    results = [run_test(t, catalog, today, observed) for t in catalog.tests.values()
               if only is None or only in t.name]
    return TestReport(results=results, coverage=coverage(catalog, observed))


def coverage(catalog: Catalog, observed: dict[tuple[str, str], set[str]]) -> list[CoverageItem]:
    items = []
    for kind, table in (("trigger", catalog.triggers), ("play", catalog.plays), ("gate", catalog.gates)):
        for name, decl in table.items():
            items.append(CoverageItem(kind=kind, name=name, file=decl.span.file, line=decl.span.start.line,
                                      outcomes=sorted(observed.get((kind, name), set()))))
    return items


# --------------------------------------------------------------------------
# Text output


def render_result(r: TestResult) -> list[str]:
    tag = {"passed": "PASS ", "failed": "FAIL ", "error": "ERROR"}[r.status]
    lines = [f"{tag} {r.name}"]
    if r.status == "passed":
        return lines
    lines.append(f"  at {r.file}:{r.line}, today {r.today.isoformat()}")
    lines += [f"  {i}" for i in r.inputs]
    if r.error:
        lines.append(f"  error: {r.error}")
    for x in r.expectations:
        if x.passed:
            continue
        lines.append(f"  {x.text}  (line {x.line})")
        if x.error:
            lines.append(f"    error: {x.error}")
            continue
        lines.append(f"    but {x.actual}:")
        for e in x.explanation:
            lines += render(e, indent=3)
    return lines


def summary(results: list[TestResult]) -> str:
    passed = sum(r.status == "passed" for r in results)
    failed = sum(r.status == "failed" for r in results)
    errors = sum(r.status == "error" for r in results)
    s = f"{len(results)} test{'s' if len(results) != 1 else ''}, {passed} passed, {failed} failed"
    return s + (f", {errors} error{'s' if errors != 1 else ''}" if errors else "")


def render_text(results: TestReport | list[TestResult]) -> str:
    rs = results.results if isinstance(results, TestReport) else results
    lines: list[str] = []
    for r in rs:
        lines += render_result(r)
    lines.append(summary(rs))
    return "\n".join(lines) + "\n"
