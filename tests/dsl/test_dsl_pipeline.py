"""dsl/pipeline.py: the stage table, the moves it allows and refuses, reason codes."""

from __future__ import annotations

import pytest

from dsl import pipeline as p
from dsl.nodes import DurationUnit


def test_the_stages_are_the_csql_process_in_order_with_two_closed_ends():
    assert p.NAMES == ("Trigger Fired", "CSQL Created", "Qualified", "Proposal Sent", "Negotiation", "Closed Won",
                       "Closed Lost")
    assert p.CLOSED == ("Closed Won", "Closed Lost")
    assert [s.order for s in p.STAGES] == sorted(s.order for s in p.STAGES)


def test_each_sla_lives_on_the_stage_whose_clock_it_is():
    slas = {s.name: (s.sla.within.amount, s.sla.within.unit, s.sla.reach) if s.sla else None for s in p.STAGES}
    assert slas == {
        "Trigger Fired": (48, DurationUnit.HOURS, "CSQL Created"),
        "CSQL Created": (5, DurationUnit.BUSINESS_DAYS, "Qualified"),
        "Qualified": (10, DurationUnit.BUSINESS_DAYS, "Proposal Sent"),
        "Proposal Sent": None,
        "Negotiation": (15, DurationUnit.BUSINESS_DAYS, "a closed stage"),
        "Closed Won": None,
        "Closed Lost": None,
    }


@pytest.mark.parametrize("current, to", [
    (None, "Trigger Fired"), (None, "Proposal Sent"), ("Trigger Fired", "Proposal Sent"),
    ("Negotiation", "Proposal Sent"), ("Qualified", "Closed Lost"), ("New", "Qualified"),
])
def test_allowed_moves(current, to):
    assert p.check_move(current, to).name == to


@pytest.mark.parametrize("current, to, message", [
    ("Closed Won", "Negotiation", "the opportunity is closed \\('Closed Won'\\)"),
    ("Closed Lost", "Closed Won", "cannot move to 'Closed Won'"),
    ("Qualified", "Trigger Fired", "where an opportunity starts"),
    (None, "Closed Won", "cannot start at 'Closed Won'"),
    ("Qualified", "Proposal sent", "unknown stage 'Proposal sent'; did you mean 'Proposal Sent'"),
])
def test_refused_moves_say_why(current, to, message):
    with pytest.raises(p.PipelineError, match=message):
        p.check_move(current, to)


def test_reason_codes_are_tokens():
    assert p.check_reason("lost:price") == "lost:price" and p.check_reason(None) is None
    with pytest.raises(p.PipelineError, match="not a code"):
        p.check_reason("because they said so")
