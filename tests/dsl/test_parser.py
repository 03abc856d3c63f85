"""The parser: what it accepts, and the exact words of what it rejects."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsl import nodes as n
from dsl.parser import parse

FIXTURES = Path(__file__).parent / "fixtures"


def decls(text: str) -> list:
    result = parse(text, "t.play")
    assert result.diagnostics == [], result.diagnostics
    return result.module.declarations


def errors(text: str) -> list[tuple[str, int, int, str, str | None]]:
    return [(d.code, d.range.start.line, d.range.start.column, d.summary, d.detail)
            for d in parse(text, "t.play").diagnostics]


def test_every_construct_of_the_fixture_parses():
    kinds = [d.decl for d in decls((FIXTURES / "everything.play").read_text())]
    assert set(kinds) == {"entity", "metric", "event", "trigger", "score", "gate", "route", "template", "play", "test"}


def test_lines_starting_with_and_or_or_continue_the_condition():
    [t] = decls("trigger t\n  when account.a > 1\n   and account.b > 2\n   or account.c\n  then start p\n")
    assert t.when.op == n.BinOp.OR and t.when.left.op == n.BinOp.AND


def test_lines_starting_with_an_operator_continue_a_formula():
    [s] = decls("score s\n  = account.a * 0.4\n    + account.b * 0.3\n    - account.c\n  band x 1..2\n")
    assert s.formula.op == n.BinOp.SUB and s.formula.left.op == n.BinOp.ADD


def test_a_comment_containing_or_is_not_a_continuation():
    [t] = decls("trigger t\n  when account.a > 1   # or account.b > 2\n  then start p\n")
    assert isinstance(t.when, n.Binary) and t.when.op == n.BinOp.GT


def test_crlf_bom_and_tabs_mean_the_same_as_lf_and_spaces():
    lf = "entity account\n  field a int\n\ntrigger t\n  when account.a > 1\n  then start p\n"
    crlf = "\ufeff" + lf.replace("\n", "\r\n").replace("  ", "\t")
    assert decls(lf) == decls(crlf)


def test_spans_are_one_based_and_point_at_the_node():
    [t] = decls("trigger t\n  when account.health_score > 60\n  then start p\n")
    assert (t.when.span.start.line, t.when.span.start.column) == (2, 8)
    assert (t.when.left.span.end.line, t.when.left.span.end.column) == (2, 28)


def test_a_route_takes_a_title_like_every_declaration():
    [r] = decls('route touch "Touch level"\n  when account.arr < 10000 -> low_touch\n  otherwise -> high_touch\n')
    assert (r.name, r.title, [c.target for c in r.cases]) == ("touch", "Touch level", ["low_touch", "high_touch"])


def test_percent_is_a_fraction_and_durations_keep_their_unit():
    [t] = decls("trigger t\n  when account.a > 80% and account.d < 2 business days ago\n  then start p\n")
    assert t.when.left.right == n.Percent(value=0.8)
    assert t.when.right.right.duration.unit == n.DurationUnit.BUSINESS_DAYS


@pytest.mark.parametrize("source,expected", [
    ("trigger t\n  when account.x = 5\n  then start p\n",
     ("PB002", 2, 18, "unexpected `=`", "compare with `==`; a single `=` only sets a value")),
    ("trigger t\n  when account.x > \n  then start p\n",
     ("PB002", 2, 20, 'unexpected end of line; expected a value (a number, "text", a field such as account.arr, '
                      "or a function such as days_since(...))", None)),
    ("(((\n", ("PB002", 1, 1, "unexpected `(`; expected a declaration (entity, metric, event, calendar, source, trigger, "
                                "score, gate, route, template, play or test)", None)),
    ("entity a\n  field x int\n field y int\n",
     ("PB004", 3, 2, "this line's indentation matches no enclosing block",
      "indent it like the lines of the block it belongs to")),
    ('score s\n  band x 80..100 "a\n', ("PB003", 2, 18, "this text has no closing quote",
                                        'close it with " on the same line, or use """ for several lines')),
    ("play p\n  reenter after 90\n", ("PB002", 2, 19, "unexpected end of line; expected a unit (days, business days, "
                                      "weeks, months, hours)",
                                      "durations need a unit: days, business days, weeks, months or hours")),
    ("calendar c\n  2026-02-31\n", ("PB006", 2, 3, "'2026-02-31' is not a calendar date (YYYY-MM-DD)", None)),
    ("entity a\n  field x integr\n", ("PB006", 2, 11, "unknown type 'integr'", None)),
    ("\x00", ("PB003", 1, 1, "unexpected character '\\x00' (U+0000)", 'remove it, or put it inside "quotes"')),
], ids=["single-equals", "missing-value", "not-a-declaration", "bad-dedent", "unclosed-quote",
        "duration-unit", "impossible-date", "unknown-type", "nul-byte"])
def test_syntax_errors_say_what_was_expected(source, expected):
    assert errors(source) == [expected]


def test_one_broken_declaration_does_not_hide_the_others():
    src = ("trigger a\n  when account.x = 1\n  then start p\n"
           "trigger b\n  when account.y > 1\n  then start p\n"
           "trigger c\n  when (\n  then start p\n")
    result = parse(src, "t.play")
    assert [d.range.start.line for d in result.diagnostics] == [2, 9]  # inside ( ) lines join
    assert [d.name for d in result.module.declarations] == ["b"]


def test_brackets_nested_too_deep_are_an_error_not_a_crash():
    src = "trigger t\n  when " + "(" * 10_000 + "x" + ")" * 10_000 + "\n  then start p\n"
    assert [e[0] for e in errors(src)] == ["PB005"]


# Mistakes people make, and the hint each one gets (the table in dsl/parser.py).
HINTS = [
    ("entity account\n  field nps number 0..10?\n", "`?` goes right after the type name, before the range: `number? 0..10`"),
    ("trigger t\n  when account.a > 1 then start p\n", "`then start PLAY` goes on its own line, under the `when` condition"),
    ("trigger t\n  when account.a > 1\n  then p\n", "write `then start PLAY`"),
    ("score s\n  points 25 if account.a > 1 otherwise 5\n",
     "`otherwise N` comes last, after a comma: `points 25 if ..., 15 if ..., otherwise 5`"),
    ("score s\n  points 25 when account.a > 1\n", "a points case reads `25 if CONDITION`"),
    ("trigger t\n  when account.a > 1 && account.b > 2\n  then start p\n", "write `and` to join conditions"),
    ("trigger t\n  when account.a == 'x'\n  then start p\n", 'quote text with double quotes: "like this"'),
    ("trigger t\n  when account.a <> 1\n  then start p\n", "write `!=` for not equal"),
    ("route r\n  when account.a > 1 low\n  otherwise -> high\n", "a route case reads `when CONDITION -> TARGET`"),
    ('test "x"\n  given account a == 5\n  expect start p\n',
     "give fields as name=value: `given account arr=5000, usage_percent=85%`"),
    ("entity account\n  field a\n", "give the field a type: `field arr money`, `field nps number? 0..10`"),
    ('test my test\n  expect start p\n', 'quote the test\'s name: `test "busy, healthy account enters usage_limit"`'),
    ('trigger "Usage"\n  when account.a > 1\n  then start p\n', 'name it first, then its title: `trigger usage_ceiling "Usage ceiling"`'),
    ("score s\n  = account.a\n  band high 80-100\n", "a band's range uses `..`: `band high 80..100`"),
    ("entity account\n  field health_score number? 0-100\n", "a field's range uses `..`: `number? 0..100`"),
    ("trigger t\n  when account.seg in (smb, mid)\n  then start p\n", "a list uses square brackets: `in [smb, mid_market]`"),
    ("trigger t\n  when account.a is null\n  then start p\n", "write `is empty` (or `is not empty`)"),
    ("play p\n  ungated\n  day 1 wait 5 days for replied\n", "write `wait up to 5 days for replied`"),
    ("trigger t\n  when account.d < 30 ago\n  then start p\n", "a duration needs a unit: `30 days ago`"),
    ("trigger t\n  when account.a > 1 foo\n  then start p\n", None),  # no route hint outside a route
]


@pytest.mark.parametrize("source,hint", HINTS, ids=[h[0].split("\n")[1].strip()[:40] or h[0][:20] for h in HINTS])
def test_a_common_mistake_gets_its_hint(source, hint):
    [(code, _, _, _, detail)] = errors(source)
    assert code in ("PB002", "PB003") and detail == hint
