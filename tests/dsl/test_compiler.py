"""The Plan: round-trips through JSON, and its hash follows behaviour only."""

from __future__ import annotations

from dsl.compiler import compile_plans
from dsl.plan import Plan
from dsl.project import load_text

SOURCE = '''\
entity account
  field admin contact
  field renewal_date date

calendar us
  2026-12-25 "Christmas"

template t1
  subject "Hi"
  body """
    Hello there.
    """

play renew "Renewal"
  ungated
  anchor account.renewal_date
  calendar us
  exit when replied or stage in ["Closed Won", "Closed Lost"]
  day -90 email account.admin template t1
  day -60 stage "Proposal Sent" unless replied
  day -60 stage "Negotiation"
  day -30
    if replied
      stage "Closed Won"
    else
      email account.admin template t1
'''

# The same play with comments, other spacing and redundant parentheses.
REFORMATTED = '''\
# accounts
entity account
    field admin    contact   # who we write to
    field renewal_date date
calendar us
    2026-12-25 "Christmas"
template t1
    subject "Hi"
    body """
        Hello there.
    """
play renew "Renewal"
    ungated
    anchor account.renewal_date
    calendar us
    exit when (replied) or (stage in ["Closed Won", "Closed Lost"])
    day -90   email account.admin template t1
    day -60   stage "Proposal Sent"   unless replied
    day -60 stage "Negotiation"
    day -30
        if replied
            stage "Closed Won"
        else
            email account.admin template t1
'''


def plan_of(text: str) -> Plan:
    project = load_text(text, "renew.play")
    assert project.diagnostics == []
    [plan] = compile_plans(project)
    return plan


def test_plan_round_trips_through_json():
    plan = plan_of(SOURCE)
    assert Plan.from_json(plan.to_json()) == plan


def test_hash_ignores_comments_layout_and_parentheses():
    assert plan_of(SOURCE).hash == plan_of(REFORMATTED).hash


def test_hash_changes_when_behaviour_changes():
    assert plan_of(SOURCE).hash != plan_of(SOURCE.replace("day -90", "day -91")).hash
    assert plan_of(SOURCE).hash != plan_of(SOURCE.replace("Hello there.", "Hello you.")).hash


def test_source_position_is_kept_but_not_hashed():
    plan = plan_of(SOURCE)
    assert plan.source is not None and plan.source.line == 14
    moved = plan_of("\n\n" + SOURCE)
    assert moved.source.line == 16 and moved.hash == plan.hash


def test_step_labels_are_unique_and_positional():
    labels = [s.label for s in plan_of(SOURCE).steps]
    assert labels == ["day-90-email", "day-60-stage", "day-60-stage-2", "day-30-branch"]


def test_plan_carries_templates_and_holidays():
    plan = plan_of(SOURCE)
    assert list(plan.templates) == ["t1"] and plan.templates["t1"].body == "Hello there.\n"
    assert [d.isoformat() for d in plan.holidays] == ["2026-12-25"]


def test_a_calendar_without_holiday_regions_keeps_the_plan_hash_it_had_before_regions():
    plan = plan_of(SOURCE)
    assert "holiday_regions" not in plan.behaviour_json()
    assert plan.hash == "878aa5e537cb4f8a"  # the hash before `holidays US` existed


def test_plan_carries_the_calendars_holiday_regions_sorted_once():
    source = SOURCE.replace('calendar us\n', 'calendar us "US operations"\n  holidays US-CA\n  holidays US\n'
                            '  holidays US-CA\n', 1)
    plan = plan_of(source)
    assert plan.holiday_regions == ["US", "US-CA"]
    assert [d.isoformat() for d in plan.holidays] == ["2026-12-25"]
    assert plan.hash != plan_of(SOURCE).hash
    assert Plan.from_json(plan.to_json()) == plan


def test_a_play_without_a_holdout_keeps_the_plan_hash_it_had_before_holdouts():
    plan = plan_of(SOURCE)
    assert plan.holdout is None and "holdout" not in plan.behaviour_json()
    assert plan.hash == "878aa5e537cb4f8a"


def test_a_declared_holdout_is_carried_and_changes_the_hash():
    ten = plan_of(SOURCE.replace("  ungated\n", "  ungated\n  holdout 10%\n", 1))
    twelve = plan_of(SOURCE.replace("  ungated\n", "  ungated\n  holdout 12.5%\n", 1))
    assert ten.holdout == 10.0 and twelve.holdout == 12.5
    assert len({ten.hash, twelve.hash, plan_of(SOURCE).hash}) == 3
    assert Plan.from_json(ten.to_json()) == ten
