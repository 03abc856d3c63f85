"""The reference evaluator: (source expression, account, expected value) cases.

The tables here are the corpus the SQL compiler's differential test can
reuse: CASES (value), ERRORS (must raise EvalError), both over BASE's
declarations, the SERIES below and TODAY.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from dsl import nodes as n
from dsl.catalog import Catalog
from dsl.evaluator import Account, EvalError, Evaluator, eval_expr
from dsl.explain import Explainer, Truth, explain, render
from dsl.functions import FUNCTIONS
from dsl.project import load_text

TODAY = dt.date(2026, 6, 1)
D = dt.date

BASE = """\
entity account
  field segment            enum(smb, mid_market, enterprise)
  field arr                money
  field health_score       number 0..100
  field usage_percent      percent
  field seats_active       int
  field seats_purchased    int
  field renewal_date       date
  field last_expansion_at  date?
  field name               text
  field churned            bool
  field signed_at          datetime
  let seat_utilization = account.seats_active / account.seats_purchased
  let loop_a = account.loop_b + 1
  let loop_b = account.loop_a + 1

metric api_calls per day
metric logins per day
event  funding_announced
event  webinar

score expansion
  = account.health_score * 0.5 + account.arr / 1000
  band high   80..100
  band medium 60..<80
  band low    ..<60

score readiness
  points 25 if account.health_score > 85, 15 if account.health_score >= 70
  points 20 if account.usage_percent > 75%, 12 if account.usage_percent >= 60%, otherwise 3

score selfish
  = score.selfish + 1

gate ready "Expansion readiness"
  require account.health_score >= 60 "healthy"
  when account.segment == smb
    require account.health_score >= 75
  when account.segment == enterprise
    require account.health_score >= 85

gate open
  require account.arr > 0

route touch
  when account.arr < 10000 -> low_touch
  when account.arr < 50000 -> mid_touch
  otherwise -> high_touch

route partial
  when account.arr < 10000 -> low_touch

trigger usage_ceiling
  when account.usage_percent >= 80% and account.health_score > 60
  then start usage_limit

trigger funded
  when happened(funding_announced, within 30 days)
  then start usage_limit

trigger churn_watch
  when account.churned
  then start save

play usage_limit
  gate ready
  day 1 notify "#cs" "hi"

play save
  ungated
  day 1 notify "#cs" "save"
"""

# Shared time series. Ages (days before TODAY) in comments.
SERIES_METRICS = {
    "api_calls": [
        (D(2026, 3, 1), 50.0),    # 92
        (D(2026, 4, 2), 100.0),   # 60
        (D(2026, 5, 2), 130.0),   # 30
        (D(2026, 5, 3), 140.0),   # 29
        (D(2026, 6, 1), 170.0),   # 0
        (D(2026, 6, 10), 999.0),  # in the future: ignored
    ],
    "logins": [(D(2026, 5, 1), 0.0), (D(2026, 5, 31), 5.0)],
}
SERIES_EVENTS = {
    "funding_announced": [D(2026, 5, 22), D(2026, 1, 1)],  # 10 and 151 days ago
    "webinar": [D(2026, 7, 1)],  # in the future: has not happened
}


def catalog() -> Catalog:
    project = load_text(BASE + "\nscore __probe\n  = 1\n")
    assert not project.diagnostics, project.diagnostics
    return project.catalog


CATALOG = catalog()


def parse_expr(src: str) -> n.Expr:
    project = load_text(f"score __probe\n  = {src}\n")
    assert not project.diagnostics, [d.summary for d in project.diagnostics]
    formula = project.catalog.scores["__probe"].formula
    assert formula is not None
    return formula


def account(**fields: Any) -> Account:
    return Account(fields=fields, metrics=SERIES_METRICS, events=SERIES_EVENTS)


def evaluate(src: str, fields: dict[str, Any]) -> Any:
    return eval_expr(parse_expr(src), account(**fields), CATALOG, TODAY)


# (source, account fields, expected value)
CASES: list[tuple[str, dict[str, Any], Any]] = [
    # literals
    ("80%", {}, 0.8),
    ("-5", {}, -5),
    ("smb", {}, "smb"),
    ('"Closed Won"', {}, "Closed Won"),
    ("90 days", {}, 90),
    ("2 weeks", {}, 14),
    ("2 months", {}, 60),
    ("2 business days", {}, 2),
    ("today", {}, TODAY),
    ("200 days ago", {}, D(2025, 11, 13)),
    ("36 hours ago", {}, D(2026, 5, 31)),  # a fraction of a day is dropped
    ("2026-01-31", {}, D(2026, 1, 31)),
    # fields and percent
    ("account.usage_percent >= 80%", {"usage_percent": 0.85}, True),
    ("account.usage_percent >= 80%", {"usage_percent": 0.8}, True),
    ("account.usage_percent > 80%", {"usage_percent": 0.8}, False),
    ("account.usage_percent >= 80%", {}, None),  # not given: empty
    ("account.usage_percent == 85%", {"usage_percent": 0.85}, True),
    ("account.health_score > 60", {"health_score": 61}, True),
    ("account.health_score > 60", {"health_score": None}, None),
    ("account.health_score > 60.5", {"health_score": float("nan")}, None),  # NaN is empty
    ("account.segment == smb", {"segment": "smb"}, True),
    ("account.segment != smb", {"segment": "enterprise"}, True),
    ("account.segment == smb", {}, None),
    ("account.name == \"Acme\"", {"name": "Acme"}, True),
    ("account.churned", {"churned": True}, True),
    ("account.churned == false", {"churned": False}, True),
    # derived fields
    ("account.seat_utilization", {"seats_active": 45, "seats_purchased": 50}, 0.9),
    ("account.seat_utilization > 85%", {"seats_active": 45, "seats_purchased": 50}, True),
    ("account.seat_utilization", {"seats_active": 45, "seats_purchased": 0}, None),  # division by zero
    ("account.seat_utilization", {"seats_active": 3, "seats_purchased": 2}, 1.5),  # never integer division
    ("account.seat_utilization", {"seats_purchased": 2}, None),
    # arithmetic
    ("account.arr * 0.2", {"arr": 50000}, 10000),
    ("account.arr + 1", {}, None),
    ("-account.arr", {"arr": 5}, -5),
    ("-account.arr", {}, None),
    ("1 / 0", {}, None),
    ("(1 + 2) * 3", {}, 9),
    ("10 - 2 - 3", {}, 5),
    # three-valued logic
    ("account.churned and true", {}, None),
    ("account.churned and false", {}, False),
    ("false and account.churned", {}, False),
    ("account.churned or true", {}, True),
    ("account.churned or false", {}, None),
    ("not account.churned", {}, None),
    ("not account.churned", {"churned": False}, True),
    ("true and true and true", {}, True),
    ("account.arr > 5 or account.health_score > 5", {"health_score": 10}, True),
    # is empty: the only tests true on empty values
    ("account.last_expansion_at is empty", {}, True),
    ("account.last_expansion_at is empty", {"last_expansion_at": D(2026, 1, 1)}, False),
    ("account.last_expansion_at is not empty", {}, False),
    ("account.seat_utilization is empty", {"seats_active": 1, "seats_purchased": 0}, True),
    # in
    ("account.segment in [smb, mid_market]", {"segment": "smb"}, True),
    ("account.segment in [smb, mid_market]", {"segment": "enterprise"}, False),
    ("account.segment in [smb, mid_market]", {}, None),
    ("account.segment not in [smb, mid_market]", {"segment": "enterprise"}, True),
    ("account.segment not in [smb]", {}, None),
    ("account.segment in []", {"segment": "smb"}, False),
    ("account.arr in [1, account.health_score]", {"arr": 1}, True),  # a match wins over an empty item
    ("account.arr in [1, account.health_score]", {"arr": 2}, None),  # SQL: no match + empty item = empty
    ("account.arr not in [1, account.health_score]", {"arr": 2}, None),
    # between: inclusive, `v >= low and v <= high`
    ("account.health_score between 60 and 80", {"health_score": 60}, True),
    ("account.health_score between 60 and 80", {"health_score": 80}, True),
    ("account.health_score between 60 and 80", {"health_score": 80.5}, False),
    ("account.health_score between 60 and 80", {}, None),
    ("5 between account.arr and 3", {}, False),  # empty and false = false
    ("2 between account.arr and 3", {}, None),
    # dates
    ("account.renewal_date < 30 days ago", {"renewal_date": D(2026, 4, 1)}, True),
    ("account.renewal_date <= 2026-04-01", {"renewal_date": D(2026, 4, 1)}, True),
    ("account.renewal_date > today", {"renewal_date": D(2026, 6, 2)}, True),
    ("account.renewal_date == today", {"renewal_date": TODAY}, True),
    ("account.signed_at == 2026-05-01", {"signed_at": dt.datetime(2026, 5, 1, 23, 59)}, True),  # compared by day
    ("account.signed_at == 2026-05-02",
     {"signed_at": dt.datetime(2026, 5, 1, 23, 0, tzinfo=dt.timezone(dt.timedelta(hours=-2)))}, True),  # UTC day
    ("days_since(account.last_expansion_at)", {"last_expansion_at": D(2025, 11, 13)}, 200),
    ("days_since(account.last_expansion_at) > 90", {"last_expansion_at": D(2025, 11, 13)}, True),
    ("days_since(account.last_expansion_at) > 90", {}, None),
    ("days_since(account.last_expansion_at) > 90 days", {"last_expansion_at": D(2026, 3, 1)}, True),
    ("days_since(account.last_expansion_at) > 3 months", {"last_expansion_at": D(2026, 3, 3)}, False),  # 90 days
    ("days_until(account.renewal_date)", {"renewal_date": D(2026, 8, 30)}, 90),
    ("days_until(account.renewal_date)", {"renewal_date": D(2026, 5, 30)}, -2),
    ("days_until(account.renewal_date) <= 90", {}, None),
    # events
    ("days_since(funding_announced)", {}, 10),
    ("days_since(webinar)", {}, None),  # only a future occurrence: never happened
    ("happened(funding_announced, within 11 days)", {}, True),
    ("happened(funding_announced, within 10 days)", {}, False),  # (today - 10, today]
    ("happened(webinar, within 365 days)", {}, False),  # never empty
    ("count(funding_announced, 365 days)", {}, 2),
    ("count(funding_announced, 30 days)", {}, 1),
    ("count(webinar, 30 days)", {}, 0),
    ("count(funding_announced, 1 month) >= 1", {}, True),
    # metric windows
    ("avg(api_calls, 30 days)", {}, 155),  # 140 (29 days ago), 170 (today)
    ("sum(api_calls, 31 days)", {}, 440),  # 130 + 140 + 170
    ("min(api_calls, 61 days)", {}, 100),
    ("max(api_calls, 400 days)", {}, 170),  # the future point is ignored
    ("sum(api_calls, 0 days)", {}, None),  # an empty window: empty, sum too
    ("avg(logins, 1 day)", {}, None),
    ("latest(api_calls)", {}, 170),
    ("latest(logins)", {}, 5),
    ("growth(api_calls, 61 days)", {}, 0.7),  # 170 / 100 - 1
    ("growth(api_calls, 61 days) >= 60%", {}, True),
    ("growth(api_calls, 1 day)", {}, None),  # fewer than 2 points
    ("growth(logins, 60 days)", {}, None),  # first value 0
    ("growth(api_calls, 2 weeks)", {}, None),
    # numeric helpers
    ("abs(-3)", {}, 3),
    ("abs(account.arr)", {}, None),
    ("round(2.5)", {}, 3),  # half away from zero, as SQL's ROUND
    ("round(-2.5)", {}, -3),
    ("round(2.49)", {}, 2),
    ("round(account.seat_utilization * 100)", {"seats_active": 2, "seats_purchased": 3}, 67),
    ("min(account.arr, 5)", {"arr": 3}, 3),
    ("max(account.arr, 5)", {"arr": 3}, 5),
    ("max(account.arr, 5)", {}, None),  # unlike PostgreSQL's GREATEST
    # named rules
    ("score.expansion", {"health_score": 80, "arr": 50000}, 90),
    ("score.expansion", {"health_score": 80}, None),
    ("band.expansion", {"health_score": 80, "arr": 50000}, "high"),
    ("band.expansion", {"health_score": 100, "arr": 60000}, None),  # 110: in no band
    ("band.expansion", {"health_score": 100, "arr": 20000}, "medium"),  # 70
    ("band.expansion", {"health_score": 100, "arr": 10000}, "medium"),  # 60: inclusive low
    ("band.expansion", {"health_score": 100, "arr": 9999}, "low"),  # 59.999
    ("band.expansion", {}, None),
    ("score.readiness", {"health_score": 90, "usage_percent": 0.8}, 45),
    ("score.readiness", {"health_score": 70, "usage_percent": 0.6}, 27),
    ("score.readiness", {}, 3),  # empty conditions match no case: otherwise
    ("route.touch", {"arr": 9999}, "low_touch"),
    ("route.touch", {"arr": 10000}, "mid_touch"),
    ("route.touch", {"arr": 50000}, "high_touch"),
    ("route.touch", {}, "high_touch"),  # empty: no `when` is true
    ("route.partial", {"arr": 20000}, None),  # no case and no otherwise
    ("route.touch == low_touch", {"arr": 1}, True),
    ("gate.ready", {"segment": "smb", "health_score": 75}, True),
    ("gate.ready", {"segment": "smb", "health_score": 74}, False),
    ("gate.ready", {"segment": "enterprise", "health_score": 80}, False),
    ("gate.ready", {"segment": "mid_market", "health_score": 99}, False),  # no `when` case applies
    ("gate.ready", {"health_score": 99}, False),  # segment empty: no case applies
    ("gate.ready", {"segment": "enterprise", "health_score": None}, False),
    ("gate.open", {"arr": 1}, True),
    ("gate.open", {}, False),  # an empty requirement does not hold
    ("trigger.usage_ceiling", {"usage_percent": 0.9, "health_score": 70}, True),
    ("trigger.usage_ceiling", {"usage_percent": 0.9}, False),  # empty never fires
    ("trigger.funded", {}, True),
    ("not trigger.churn_watch", {}, True),
]


@pytest.mark.parametrize(("src", "fields", "expected"), CASES, ids=[c[0] for c in CASES])
def test_value(src: str, fields: dict[str, Any], expected: Any) -> None:
    got = evaluate(src, fields)
    if isinstance(expected, float) and not isinstance(expected, bool):
        assert got == pytest.approx(expected)
    else:
        assert got == expected
        assert type(got) is type(expected) or (isinstance(got, (int, float)) and isinstance(expected, (int, float))
                                               and not isinstance(got, bool) and not isinstance(expected, bool))


# (source, account fields, part of the error message)
ERRORS: list[tuple[str, dict[str, Any], str]] = [
    ("account.helth_score > 1", {}, "account has no field 'helth_score'"),
    ("account.segment > smb", {"segment": "smb"}, "only == and != compare text"),
    ("account.segment == 1", {"segment": "smb"}, "cannot compare text"),
    ("account.renewal_date > 5", {"renewal_date": TODAY}, "cannot compare date"),
    ("account.renewal_date + 1", {"renewal_date": TODAY}, "needs numbers"),
    ("account.name + 1", {"name": "Acme"}, "needs numbers"),
    ("account.health_score and true", {"health_score": 5}, "must be true or false"),
    ("not 5", {}, "'not' needs true or false"),
    ("-smb", {}, "cannot negate text"),
    ("days_since(5)", {}, "needs a date or an event"),
    ("days_since(nonsense)", {}, "no event named 'nonsense'"),
    ("days_until(funding_announced)", {}, "needs a date"),
    ("happened(account.arr, within 3 days)", {}, "needs an event name"),
    ("happened(funding_announced)", {}, "takes 2 argument(s)"),
    ("avg(api_calls, smb)", {}, "needs a window"),
    ("avg(nope, 3 days)", {}, "no metric named 'nope'"),
    ("latest(api_calls, 3 days)", {}, "takes 1 argument(s)"),
    ("frobnicate(1)", {}, "unknown function 'frobnicate'"),
    ("min(1, smb)", {}, "needs a number"),
    ("abs(smb)", {}, "needs a number"),
    ("account.loop_a", {}, "depends on itself: let loop_a -> let loop_b -> let loop_a"),
    ("score.selfish", {}, "depends on itself: score selfish -> score selfish"),
    ("score.nope", {}, "no score named 'nope'"),
    ("gate.nope", {}, "no gate named 'nope'"),
    ("account.csm.email", {}, "not a value the rules can read"),
    ("whatever.x", {}, "unknown reference 'whatever.x'"),
    ("account.arr", {"arr": [1, 2]}, "not a value the rules can read"),
]


@pytest.mark.parametrize(("src", "fields", "message"), ERRORS, ids=[c[0] for c in ERRORS])
def test_error(src: str, fields: dict[str, Any], message: str) -> None:
    with pytest.raises(EvalError) as info:
        evaluate(src, fields)
    assert message in str(info.value)


def test_bad_series_data_is_an_eval_error() -> None:
    twice = Account(metrics={"api_calls": [(D(2026, 5, 1), 1.0), (D(2026, 5, 1), 2.0)]})
    with pytest.raises(EvalError, match="two points on 2026-05-01"):
        eval_expr(parse_expr("latest(api_calls)"), twice, CATALOG, TODAY)
    not_a_point = Account(metrics={"api_calls": [(D(2026, 5, 1), "x")]})
    with pytest.raises(EvalError, match="a point is"):
        eval_expr(parse_expr("latest(api_calls)"), not_a_point, CATALOG, TODAY)


def test_deep_nesting_is_an_eval_error_not_a_crash() -> None:
    expr: n.Expr = n.Number(value=1)
    for _ in range(5000):
        expr = n.Unary(op=n.UnOp.NEG, operand=expr)
    with pytest.raises(EvalError):
        eval_expr(expr, Account(), CATALOG, TODAY)


def test_would_start() -> None:
    ev = Evaluator(CATALOG, account(usage_percent=0.9, health_score=80, segment="smb"), TODAY)
    assert ev.would_start("usage_limit")
    # the trigger fires, but the smb gate wants health 75+: no start
    ev = Evaluator(CATALOG, Account(fields={"usage_percent": 0.9, "health_score": 70, "segment": "smb"}), TODAY)
    assert ev.trigger_fires("usage_ceiling")
    assert not ev.gate_passes("ready")
    assert not ev.would_start("usage_limit")
    # ungated play: its trigger is enough
    ev = Evaluator(CATALOG, Account(fields={"churned": True}), TODAY)
    assert ev.would_start("save")
    assert ev.observed[("play", "save")] == {"starts"}


def test_would_start_evaluates_every_trigger_and_the_gate() -> None:
    ev = Evaluator(CATALOG, account(usage_percent=0.9, health_score=80, segment="smb"), TODAY)
    ev.would_start("usage_limit")
    assert ev.observed[("trigger", "usage_ceiling")] == {"fires"}
    assert ev.observed[("trigger", "funded")] == {"fires"}
    assert ev.observed[("gate", "ready")] == {"passes"}


# --------------------------------------------------------------------------
# explanations


def test_explain_flattens_and_and_marks_empty() -> None:
    expr = parse_expr("account.usage_percent >= 80% and account.health_score > 60 "
                      "and days_since(account.last_expansion_at) > 90")
    ev = Evaluator(CATALOG, account(usage_percent=0.85, health_score=55), TODAY)
    e = explain(expr, ev)
    assert e.truth is Truth.FALSE
    assert [c.truth for c in e.children] == [Truth.TRUE, Truth.FALSE, Truth.EMPTY]
    assert [c.text for c in e.children] == [
        "account.usage_percent >= 80%", "account.health_score > 60",
        "days_since(account.last_expansion_at) > 90",
    ]
    assert render(e) == [
        "false  account.usage_percent >= 80% and account.health_score > 60 and "
        "days_since(account.last_expansion_at) > 90",
        "  true   account.usage_percent >= 80%   [account.usage_percent = 85%]",
        "  false  account.health_score > 60   [account.health_score = 55]",
        "  empty  days_since(account.last_expansion_at) > 90",
        "    days_since(account.last_expansion_at) = empty   [account.last_expansion_at = empty]",
    ]


def test_explain_windows_say_what_they_read() -> None:
    ev = Evaluator(CATALOG, account(), TODAY)
    e = explain(parse_expr("growth(api_calls, 61 days) >= 60% or happened(funding_announced, within 30 days)"), ev)
    assert render(e) == [
        "true   growth(api_calls, 61 days) >= 60% or happened(funding_announced, within 30 days)",
        "  true   growth(api_calls, 61 days) >= 60%   [growth(api_calls, 61 days) = 70% "
        "(api_calls: 100 on 2026-04-02, 130 on 2026-05-02, 140 on 2026-05-03, 170 on 2026-06-01; "
        "outside the 61-day window, which holds the dates after 2026-04-01: 50 on 2026-03-01 (92 days ago); "
        "1 dated after today, ignored (the future has not happened))]",
        "  true   happened(funding_announced, within 30 days)   "
        "(funding_announced last on 2026-05-22, 2 time(s) in all; outside the 30-day window, which holds "
        "the dates after 2026-05-02: 2026-01-01 (151 days ago))",
    ]


def test_explain_gate_score_route() -> None:
    ev = Evaluator(CATALOG, account(segment="mid_market", health_score=90, usage_percent=0.5, arr=20000), TODAY)
    why = Explainer(ev)
    assert render(why.gate("ready")) == [
        "false  gate ready   (fails: no `when` case applies to this account)",
        '  true   account.health_score >= 60   [account.health_score = 90]   ("healthy")',
        "  false  when account.segment == smb   [account.segment = mid_market]   (does not apply)",
        "    true   account.health_score >= 75   [account.health_score = 90]",
        "  false  when account.segment == enterprise   [account.segment = mid_market]   (does not apply)",
        "    true   account.health_score >= 85   [account.health_score = 90]",
    ]
    assert render(why.score("readiness")) == [
        "score readiness = 28",
        "  points 25 if account.health_score > 85, 15 if account.health_score >= 70, otherwise 0 = 25"
        "   (first true case: 25 points)",
        "    true   25 if account.health_score > 85   [account.health_score = 90]   (matched)",
        "    true   15 if account.health_score >= 70   [account.health_score = 90]",
        "  points 20 if account.usage_percent > 75%, 12 if account.usage_percent >= 60%, otherwise 3 = 3"
        "   (no case is true: otherwise 3 points)",
        "    false  20 if account.usage_percent > 75%   [account.usage_percent = 50%]",
        "    false  12 if account.usage_percent >= 60%   [account.usage_percent = 50%]",
    ]
    assert render(why.route("touch")) == [
        "route touch = mid_touch",
        "  false  when account.arr < 10000 -> low_touch   [account.arr = 20000]",
        "  true   when account.arr < 50000 -> mid_touch   [account.arr = 20000]   (chosen)",
        "  otherwise -> high_touch",
    ]
    band = why.band("expansion")
    assert band.shown == "medium"
    assert band.note == "score 65 is in band medium (60..<80)"
    assert render(why.field("seat_utilization")) == [
        "account.seat_utilization = empty",
        "  = account.seats_active / account.seats_purchased = empty"
        "   [account.seats_active = empty, account.seats_purchased = empty]",
    ]


def test_explanation_is_json() -> None:
    ev = Evaluator(CATALOG, account(renewal_date=TODAY), TODAY)
    e = explain(parse_expr("account.renewal_date == today"), ev)
    dumped = e.model_dump(mode="json")
    assert dumped["truth"] == "true"
    assert dumped["children"][0]["value"] == "2026-06-01"


# --------------------------------------------------------------------------
# never a raw exception: random (mostly ill-typed) expressions over odd values

import random  # noqa: E402

_LEAVES = [
    lambda r: n.Number(value=r.choice([0, 1, -2.5, 1e308, 3])),
    lambda r: n.Percent(value=r.choice([0.8, 0, -1])),
    lambda r: n.String(value=r.choice(["", "Acme"])),
    lambda r: n.Bool(value=r.random() < 0.5),
    lambda r: n.Symbol(name=r.choice(["smb", "funding_announced", "api_calls", "nope"])),
    lambda r: n.Duration(amount=r.choice([0, 1.5, 30, 1e300]), unit=r.choice(list(n.DurationUnit))),
    lambda r: n.DateLit(value=r.choice([D(1, 1, 1), D(9999, 12, 31), TODAY])),
    lambda r: n.Ago(duration=n.Duration(amount=r.choice([1, 1e9]), unit=n.DurationUnit.DAYS)),
    lambda r: n.Today(),
    lambda r: n.Ref(path=r.choice([["account", "arr"], ["account", "name"], ["account", "renewal_date"],
                                   ["account", "seat_utilization"], ["score", "readiness"], ["gate", "ready"],
                                   ["band", "expansion"], ["route", "touch"], ["trigger", "funded"]])),
]


def _random_expr(r: random.Random, depth: int) -> n.Expr:
    if depth == 0 or r.random() < 0.3:
        return r.choice(_LEAVES)(r)
    k = r.randrange(6)
    sub = lambda: _random_expr(r, depth - 1)  # noqa: E731
    if k == 0:
        return n.Binary(op=r.choice(list(n.BinOp)), left=sub(), right=sub())
    if k == 1:
        return n.Unary(op=r.choice(list(n.UnOp)), operand=sub())
    if k == 2:
        return n.InList(value=sub(), items=[sub() for _ in range(r.randrange(3))], negated=r.random() < 0.5)
    if k == 3:
        return n.Between(value=sub(), low=sub(), high=sub())
    if k == 4:
        return n.IsEmpty(value=sub(), negated=r.random() < 0.5)
    func = r.choice([*sorted(FUNCTIONS), "nope"])
    return n.Call(func=func, args=[sub() for _ in range(r.randrange(3))])


def test_random_expressions_give_a_value_or_an_eval_error() -> None:
    r = random.Random(20260601)
    accounts = [account(), account(arr=1e308, name="x", renewal_date=D(1, 1, 1), seats_active=1,
                                   seats_purchased=0, health_score=float("nan"))]
    for _ in range(3000):
        expr = _random_expr(r, 4)
        for acc in accounts:
            ev = Evaluator(CATALOG, acc, TODAY)
            try:
                ev.eval_expr(expr)
                explain(expr, ev)
            except EvalError:
                pass
