"""Conditions of a running play: exits, `unless`, branches.

A condition over inbound events (`replied`, `unsubscribed`, `stage in [...]`)
is evaluated inside the workflow: its inputs are the workflow's own signals.
A condition that reads account data (`account.arr > 5000`, `route.touch ==
high_touch`) is not: the workflow has no store, so it goes to the
`evaluate_condition` activity, which binds the same event values and runs the
same reference evaluator (dsl/evaluator.py) over a snapshot of the account.
Both paths therefore share one set of semantics (three-valued logic, text
comparison of enum values, ...).

Binding: each event name becomes a Bool literal (its sticky flag) and the
bare name `stage` becomes a field of the evaluator's account snapshot (text,
or empty when the stage is unknown). This module is pure and sandbox-safe.
"""

from __future__ import annotations

import datetime as dt

from dsl import nodes as n
from dsl.catalog import Catalog
from dsl.evaluator import Account, EvalError, Evaluator
from workflows.model import EventKind, EventState

EVENT_NAMES = frozenset(kind.value for kind in EventKind)
STAGE = "stage"
# The snapshot field that carries the pipeline stage; a name no entity may declare.
STAGE_FIELD = "__play_stage__"


def is_local(expr: n.Expr) -> bool:
    """True if the workflow can evaluate `expr` alone: events, `stage` and literals only."""
    for node in n.walk(expr):
        if isinstance(node, (n.Ref, n.Call, n.Today, n.Ago)):
            return False
    return True


def bind_events(expr: n.Expr, events: EventState) -> n.Expr:
    """`expr` with event names replaced by their flags and `stage` by the stage field."""
    match expr:
        case n.Symbol(name=name) if name in EVENT_NAMES:
            return n.Bool(value=events.flag(name))
        case n.Symbol(name=name) if name == STAGE:
            return n.Ref(path=["account", STAGE_FIELD])
        case n.Unary():
            return expr.model_copy(update={"operand": bind_events(expr.operand, events)})
        case n.Binary():
            return expr.model_copy(
                update={"left": bind_events(expr.left, events), "right": bind_events(expr.right, events)}
            )
        case n.InList():
            return expr.model_copy(
                update={"value": bind_events(expr.value, events), "items": [bind_events(i, events) for i in expr.items]}
            )
        case n.Between():
            return expr.model_copy(
                update={
                    "value": bind_events(expr.value, events),
                    "low": bind_events(expr.low, events),
                    "high": bind_events(expr.high, events),
                }
            )
        case n.IsEmpty():
            return expr.model_copy(update={"value": bind_events(expr.value, events)})
        case n.Call():
            # Function arguments name events or metrics as series (days_since(replied)):
            # those are read from the account snapshot, never bound to a flag.
            return expr
    return expr


def evaluate(
    expr: n.Expr,
    events: EventState,
    today: dt.date,
    account: Account | None = None,
    catalog: Catalog | None = None,
) -> bool | None:
    """True, false or empty (None). Raises EvalError on an ill-typed condition."""
    snapshot = Account(
        fields={**(account.fields if account else {}), STAGE_FIELD: events.stage},
        metrics=account.metrics if account else {},
        events=account.events if account else {},
    )
    value = Evaluator(catalog or Catalog(), snapshot, today).condition(bind_events(expr, events))
    return value


__all__ = ["EVENT_NAMES", "EvalError", "bind_events", "evaluate", "is_local"]
