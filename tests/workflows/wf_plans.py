"""Plans built directly from the pydantic models (the compiler is not there yet)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from dsl import nodes as n
from dsl.plan import Plan, PlanStep, PlanTemplate


def ref(dotted: str) -> n.Ref:
    return n.Ref(path=dotted.split("."))


def sym(name: str) -> n.Symbol:
    return n.Symbol(name=name)


def days(amount: float, unit: n.DurationUnit = n.DurationUnit.DAYS) -> n.Duration:
    return n.Duration(amount=amount, unit=unit)


def email(template: str = "hello", to: str = "account.admin") -> n.EmailStep:
    return n.EmailStep(to=ref(to), template=template)


def step(label: str, day: int, action: Any, **kw: Any) -> PlanStep:
    return PlanStep(label=label, day=day, action=action, **kw)


def closed_exit() -> n.Expr:
    """`replied or unsubscribed or stage in ["Closed Won", "Closed Lost"]`"""
    stage_closed = n.InList(value=sym("stage"), items=[n.String(value="Closed Won"), n.String(value="Closed Lost")])
    return n.Binary(op=n.BinOp.OR, left=n.Binary(op=n.BinOp.OR, left=sym("replied"), right=sym("unsubscribed")), right=stage_closed)


TEMPLATES = {
    "hello": PlanTemplate(name="hello", subject="Hello {{ name }}", body="Hi {{ name }}, you use {{ usage_percent }}."),
    "followup": PlanTemplate(name="followup", subject="Following up", body="Hi {{ name }}, any thoughts?"),
    "broken": PlanTemplate(name="broken", subject="Hi", body="Hi {{ first_name }},"),
}


def plan(steps: list[PlanStep], **kw: Any) -> Plan:
    kw.setdefault("templates", TEMPLATES)
    return Plan(play=kw.pop("play", "usage_limit"), title=kw.pop("title", "Usage limit"), steps=steps, **kw).with_hash()


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.timezone.utc)
