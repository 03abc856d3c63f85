"""The table of step kinds (dsl/steps.py) and its walker."""

from __future__ import annotations

import typing

from dsl import nodes as n
from dsl import steps
from dsl.parser import parse


def _union_members() -> set[type]:
    union = typing.get_args(n.StepAction)[0]
    return set(typing.get_args(union))


def test_every_step_node_has_exactly_one_row_named_by_its_keyword():
    assert {k.node for k in steps.KINDS.values()} == _union_members()
    for name, kind in steps.KINDS.items():
        assert kind.node.model_fields["step"].default == name


def test_walk_yields_nested_actions_with_the_workflows_paths():
    text = '''play p
  immediately
    if replied
      email account.admin template a
      if account.arr > 5
        task account.csm "Call"
    else
      wait up to 2 days for replied
'''
    module = parse(text, "p.play").module
    step = module.declarations[0].steps[0]
    got = [(v.path, v.action.step) for v in steps.walk(step.action, "day0")]
    assert got == [
        ("day0", "branch"),
        ("day0/then/0", "email"),
        ("day0/then/1", "branch"),
        ("day0/then/1/then/0", "task"),
        ("day0/else/0", "wait"),
    ]
    assert list(steps.templates(step.action)) == ["a"]


def test_only_side_effects_act():
    assert {k.name for k in steps.KINDS.values() if not k.acts} == {"wait", "branch"}
