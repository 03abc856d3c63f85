"""AST -> `.play` text for expressions and literals, in the user's own syntax.

Used by the formatter and by anything that shows a condition back to a user
(`why` explanations, test failure messages). The output re-parses to an equal
AST: parentheses appear exactly where precedence needs them, numbers are
printed minimally but exactly.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

from dsl import nodes as n
from dsl.functions import form_of

# Binding strength, loosest first; the grammar's ladder (dsl/grammar.lark).
OR, AND, NOT, COMPARISON, SUM, PRODUCT, UNARY, ATOM = range(1, 9)

_BINARY_PREC: dict[n.BinOp, int] = {
    n.BinOp.OR: OR,
    n.BinOp.AND: AND,
    **{op: COMPARISON for op in n.COMPARISONS},
    n.BinOp.ADD: SUM,
    n.BinOp.SUB: SUM,
    n.BinOp.MUL: PRODUCT,
    n.BinOp.DIV: PRODUCT,
}

_SINGULAR = {
    n.DurationUnit.HOURS: "hour",
    n.DurationUnit.DAYS: "day",
    n.DurationUnit.BUSINESS_DAYS: "business day",
    n.DurationUnit.WEEKS: "week",
    n.DurationUnit.MONTHS: "month",
}

# A float too large for any digits to stay finite; float() of it is inf.
_INFINITE_DIGITS = "1" + "0" * 309


def format_expr(expr: n.Expr) -> str:
    """The expression as the user would write it, with minimal parentheses."""
    return print_expr(expr, 0)


def precedence(expr: n.Expr) -> int:
    """How tightly `expr` binds (higher binds tighter)."""
    if isinstance(expr, n.Binary):
        return _BINARY_PREC[expr.op]
    if isinstance(expr, n.Unary):
        return NOT if expr.op is n.UnOp.NOT else UNARY
    if isinstance(expr, (n.InList, n.Between, n.IsEmpty)):
        return COMPARISON
    if isinstance(expr, (n.Number, n.Percent)) and _negative(expr.value):
        return UNARY  # `-5` is a folded unary minus
    return ATOM


def print_expr(expr: n.Expr, min_prec: int) -> str:
    """`expr` printed where the grammar needs binding strength `min_prec`."""
    text = _print(expr)
    return f"({text})" if precedence(expr) < min_prec else text


def _print(expr: n.Expr) -> str:
    if isinstance(expr, n.Binary):
        return _binary(expr)
    if isinstance(expr, n.Unary):
        if expr.op is n.UnOp.NOT:
            return "not " + print_expr(expr.operand, NOT)
        return "-" + print_expr(expr.operand, UNARY)
    if isinstance(expr, n.InList):
        items = ", ".join(print_expr(i, 0) for i in expr.items)
        return f"{print_expr(expr.value, SUM)} {'not in' if expr.negated else 'in'} [{items}]"
    if isinstance(expr, n.Between):
        return f"{print_expr(expr.value, SUM)} between {print_expr(expr.low, SUM)} and {print_expr(expr.high, SUM)}"
    if isinstance(expr, n.IsEmpty):
        return f"{print_expr(expr.value, SUM)} is {'not empty' if expr.negated else 'empty'}"
    if isinstance(expr, n.Call):
        # The AST drops the word `within`; put it back where the registry's form reads it.
        form = form_of(expr)
        within = 1 if form is not None and form.within else None
        args = [
            ("within " if i == within and isinstance(a, n.Duration) else "") + print_expr(a, 0)
            for i, a in enumerate(expr.args)
        ]
        return f"{expr.func}({', '.join(args)})"
    return format_literal(expr)


def _binary(expr: n.Binary) -> str:
    # Walk the left spine without recursion: `a and b and c ...` may be long.
    prec = _BINARY_PREC[expr.op]
    rights: list[n.Binary] = []
    node: n.Expr = expr
    while isinstance(node, n.Binary) and _BINARY_PREC[node.op] == prec and prec != COMPARISON:
        rights.append(node)
        node = node.left
    if not rights:  # a comparison: both sides are sums, never chained
        rights, node = [expr], expr.left
    text = print_expr(node, prec if prec != COMPARISON else SUM)
    for b in reversed(rights):
        right_prec = prec + 1 if prec != COMPARISON else SUM
        text = f"{text} {b.op.value} {print_expr(b.right, right_prec)}"
    return text


def spine(expr: n.Expr) -> tuple[n.Expr, list[tuple[n.BinOp, n.Expr]]]:
    """A left-nested chain at one precedence level, as its first operand and
    (operator, operand) pairs: `a + b - c` -> (a, [(+, b), (-, c)]).
    Comparisons do not chain: for them the list is empty."""
    rest: list[tuple[n.BinOp, n.Expr]] = []
    node: n.Expr = expr
    if isinstance(expr, n.Binary) and _BINARY_PREC[expr.op] != COMPARISON:
        prec = _BINARY_PREC[expr.op]
        while isinstance(node, n.Binary) and _BINARY_PREC[node.op] == prec:
            rest.append((node.op, node.right))
            node = node.left
    return node, rest[::-1]


# ---------------------------------------------------------------- literals


def format_literal(expr: n.Expr) -> str:
    """A leaf expression (number, percent, text, date, name...)."""
    if isinstance(expr, n.Number):
        return format_number(expr.value)
    if isinstance(expr, n.Percent):
        return format_percent(expr.value)
    if isinstance(expr, n.String):
        return format_string(expr.value)
    if isinstance(expr, n.Bool):
        return "true" if expr.value else "false"
    if isinstance(expr, n.Symbol):
        return expr.name
    if isinstance(expr, n.Duration):
        return format_duration(expr)
    if isinstance(expr, n.DateLit):
        return format_date(expr.value)
    if isinstance(expr, n.Ago):
        return format_duration(expr.duration) + " ago"
    if isinstance(expr, n.Today):
        return "today"
    if isinstance(expr, n.Ref):
        return expr.dotted
    raise TypeError(f"printer has no rule for {type(expr).__name__}")


def _negative(v: float) -> bool:
    return v < 0


def format_number(v: float) -> str:
    """Shortest digits that read back as `v`: 80 not 80.0, never 1e-05."""
    if math.isinf(v):
        return ("-" if v < 0 else "") + _INFINITE_DIGITS
    if v == 0:
        return "0"  # also -0.0, which compares equal
    text = format(Decimal(repr(v)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def format_percent(fraction: float) -> str:
    """`0.8` -> `80%`: the fewest decimals whose value / 100 is `fraction` again."""
    if math.isinf(fraction):
        return format_number(fraction) + "%"
    scaled = fraction * 100
    candidates = [round(scaled, k) for k in range(0, 18)]
    candidates += [scaled, math.nextafter(scaled, math.inf), math.nextafter(scaled, -math.inf)]
    for c in candidates:
        if c / 100 == fraction:
            return format_number(c) + "%"
    raise ValueError(f"no percent literal reads back as {fraction!r}")


def format_duration(d: n.Duration) -> str:
    unit = _SINGULAR[d.unit] if d.amount == 1 else d.unit.value
    return f"{format_number(d.amount)} {unit}"


def format_date(d: dt.date) -> str:
    return d.isoformat()


def format_string(s: str) -> str:
    """A double-quoted literal; escapes only what the lexer requires."""
    out = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{out}"'
