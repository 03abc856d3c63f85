"""dsl.printer: expressions print in the user's syntax and read back equal."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsl import nodes as n
from dsl.parser import parse
from dsl.printer import format_expr, format_number, format_percent, format_string


def parse_expr(text: str) -> n.Expr:
    result = parse(f"entity e\n  let v = {text}\n")
    assert not result.diagnostics, (text, result.diagnostics)
    return result.module.declarations[0].lets[0].value  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "source, printed",
    [
        # redundant parentheses go, needed ones stay
        ("((a.b))", "a.b"),
        ("(a.b > 1) and (a.c < 2)", "a.b > 1 and a.c < 2"),
        ("(a or b) and c", "(a or b) and c"),
        ("a or (b and c)", "a or b and c"),
        ("a and (b and c)", "a and (b and c)"),
        ("(a and b) and c", "a and b and c"),
        ("not (a and b)", "not (a and b)"),
        ("not (a.x == 1)", "not a.x == 1"),
        ("(not a) == b", "(not a) == b"),
        ("not not a", "not not a"),
        ("(a.b < 1) == true", "(a.b < 1) == true"),
        ("a - (b - c)", "a - (b - c)"),
        ("(a - b) - c", "a - b - c"),
        ("a - (b + c)", "a - (b + c)"),
        ("a / (b * c)", "a / (b * c)"),
        ("(a + b) * c", "(a + b) * c"),
        ("a + (b * c)", "a + b * c"),
        ("-(a + b)", "-(a + b)"),
        ("-(a.b)", "-a.b"),
        ("- - a", "--a"),
        ("a * -5", "a * -5"),
        ("a - -5", "a - -5"),
        ("-(5)", "-5"),
        ("(a + b) in [1, (2 + 3)]", "a + b in [1, 2 + 3]"),
        ("(a in [1]) == false", "(a in [1]) == false"),
        ("a not in [ ]", "a not in []"),
        ("x between (1 + 2) and 3 and y", "x between 1 + 2 and 3 and y"),
        ("x between 1 and (y and z)", "x between 1 and (y and z)"),
        ("(x is empty) or (y is not empty)", "x is empty or y is not empty"),
        ("f( a , (b) )", "f(a, b)"),
        ("f()", "f()"),
        # literals
        ("80.0", "80"),
        ("0.40", "0.4"),
        ("1_000", "1000"),
        ("80%", "80%"),
        ("7%", "7%"),
        ("12.5%", "12.5%"),
        ("-5%", "-5%"),
        ("0.07%", "0.07%"),
        ("1 days", "1 day"),
        ("2 business  days", "2 business days"),
        ("1 business day", "1 business day"),
        ("1.5 weeks", "1.5 weeks"),
        ("3 months ago", "3 months ago"),
        ("2026-01-31", "2026-01-31"),
        ("today", "today"),
        ('"a \\"b\\" \\\\ c"', '"a \\"b\\" \\\\ c"'),
        ('"tab\\there\\nnew"', '"tab\\there\\nnew"'),
        # `within` is put back where the docs write it
        ("happened(funding_announced, 30 days)", "happened(funding_announced, within 30 days)"),
        ("count(e, within 30 days)", "count(e, 30 days)"),
    ],
)
def test_prints_canonical_text(source: str, printed: str) -> None:
    expr = parse_expr(source)
    assert format_expr(expr) == printed
    assert parse_expr(printed) == expr


@pytest.mark.parametrize(
    "value, text",
    [(80.0, "80"), (0.4, "0.4"), (1e-05, "0.00001"), (1e20, "100000000000000000000"), (-0.0, "0"),
     (float("inf"), "1" + "0" * 309), (2.5, "2.5")],
)
def test_numbers_are_minimal_and_never_exponents(value: float, text: str) -> None:
    assert format_number(value) == text


def test_percents_survive_float_round_off() -> None:
    # 0.07 * 100 == 7.000000000000001 and 0.29 * 100 == 28.999999999999996
    assert format_percent(0.07) == "7%"
    assert format_percent(0.29) == "29%"
    assert format_percent(0.575) == "57.5%"


def test_string_escapes_read_back() -> None:
    value = 'say "hi"\\n\tthen\nleave \\x'
    assert parse_expr(format_string(value)) == n.String(value=value)


# ---------------------------------------------------------------- properties

_NAMES = st.sampled_from(["a", "smb", "replied", "health_score", "x1", "arr"])
_DIGITS = st.from_regex(r"[0-9]{1,6}(\.[0-9]{1,6})?", fullmatch=True)


def _number(s: str) -> float:
    return float(s)


_leaves = st.one_of(
    _DIGITS.map(lambda s: n.Number(value=_number(s))),
    _DIGITS.map(lambda s: n.Number(value=-_number(s))),
    _DIGITS.map(lambda s: n.Percent(value=_number(s) / 100)),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda v: n.Number(value=v)),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=8).map(lambda s: n.String(value=s)),
    st.booleans().map(lambda b: n.Bool(value=b)),
    _NAMES.map(lambda s: n.Symbol(name=s)),
    st.builds(lambda a, u: n.Duration(amount=_number(a), unit=u), _DIGITS, st.sampled_from(list(n.DurationUnit))),
    st.dates(min_value=dt.date(1000, 1, 1)).map(lambda d: n.DateLit(value=d)),
    st.builds(lambda a, u: n.Ago(duration=n.Duration(amount=_number(a), unit=u)),
              _DIGITS, st.sampled_from(list(n.DurationUnit))),
    st.just(n.Today()),
    st.lists(_NAMES, min_size=2, max_size=3).map(lambda p: n.Ref(path=p)),
)


def _extend(inner: st.SearchStrategy) -> st.SearchStrategy:
    # `-5` folds into a literal in the parser, so NEG never wraps a number.
    negatable = inner.filter(lambda e: not isinstance(e, (n.Number, n.Percent)))
    return st.one_of(
        st.builds(lambda e: n.Unary(op=n.UnOp.NOT, operand=e), inner),
        st.builds(lambda e: n.Unary(op=n.UnOp.NEG, operand=e), negatable),
        st.builds(lambda op, a, b: n.Binary(op=op, left=a, right=b), st.sampled_from(list(n.BinOp)), inner, inner),
        st.builds(lambda v, items, neg: n.InList(value=v, items=items, negated=neg),
                  inner, st.lists(inner, max_size=3), st.booleans()),
        st.builds(lambda v, lo, hi: n.Between(value=v, low=lo, high=hi), inner, inner, inner),
        st.builds(lambda v, neg: n.IsEmpty(value=v, negated=neg), inner, st.booleans()),
        st.builds(lambda f, args: n.Call(func=f, args=args),
                  st.sampled_from(["days_since", "happened", "growth", "f"]), st.lists(inner, max_size=3)),
    )


expressions = st.recursive(_leaves, _extend, max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(expressions)
def test_any_expression_prints_and_reads_back_equal(expr: n.Expr) -> None:
    text = format_expr(expr)
    assert parse_expr(text) == expr, text
    assert format_expr(parse_expr(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=0, allow_nan=False, allow_infinity=False), st.booleans())
def test_every_percent_the_parser_can_build_prints_back(x: float, negative: bool) -> None:
    fraction = (-x if negative else x) / 100  # what `NUMBER%` (maybe negated) becomes
    text = format_percent(fraction)
    assert parse_expr(text) == n.Percent(value=fraction)
