"""`source` declarations: parsed into the AST, checked with their own codes, shown by the summary."""

from __future__ import annotations

import pytest

from dsl import nodes as n
from dsl.parser import parse
from test_checker import findings  # pytest puts tests/dsl on sys.path

HUBSPOT = '''\
source crm from hubspot companies
  incremental by hs_lastmodifieddate
  account.id  = hs_object_id
  account.arr = annualrevenue
'''

WAREHOUSE = '''\
source product_usage from warehouse
  query """
    select account_id, "Health" from usage_daily
    """
  incremental by updated_at
  account.id           = account_id
  account.health_score = "Health"
'''


def test_hubspot_source_parses_into_system_object_cursor_and_mapping():
    result = parse(HUBSPOT)
    assert result.diagnostics == []
    (decl,) = result.module.declarations
    assert isinstance(decl, n.SourceDecl)
    assert (decl.name, decl.system, decl.object, decl.incremental) == ("crm", "hubspot", "companies",
                                                                       "hs_lastmodifieddate")
    assert [(m.entity, m.field, m.column) for m in decl.mappings] == [
        ("account", "id", "hs_object_id"), ("account", "arr", "annualrevenue")]
    assert decl.key is not None and decl.key.column == "hs_object_id"


def test_warehouse_source_keeps_its_query_and_quoted_columns():
    (decl,) = parse(WAREHOUSE).module.declarations
    assert isinstance(decl, n.SourceDecl)
    assert decl.query == 'select account_id, "Health" from usage_daily\n'
    assert decl.mappings[-1].column == "Health"


METRICS = '''\
source daily_usage from warehouse
  query """
    select account_id, day, calls, updated_at from usage_daily
    """
  incremental by updated_at
  dated by day
  account.id        = account_id
  metric.api_calls  = calls
'''

EVENTS = '''\
source rounds from warehouse
  query "select account_id, announced_at, amount from funding_rounds"
  account.id                       = account_id
  event.funding_announced          = announced_at
  event.funding_announced.amount   = amount
'''

NAMED = '''\
event churned
source product from warehouse
  query "select account_id, name, at, reason, amount from product_events"
  named by name
  account.id                     = account_id
  event.funding_announced        = at
  event.funding_announced.amount = amount
  event.churned                  = at
  event.churned.reason           = reason
'''


def test_a_metric_source_says_which_column_dates_its_points():
    (decl,) = parse(METRICS).module.declarations
    assert isinstance(decl, n.SourceDecl)
    assert (decl.fills, decl.dated, decl.key and decl.key.column) == ("metric", "day", "account_id")
    assert [m.target for m in decl.mappings] == ["account.id", "metric.api_calls"]


def test_an_event_source_lands_one_event_and_its_properties():
    (decl,) = parse(EVENTS).module.declarations
    assert isinstance(decl, n.SourceDecl)
    assert decl.fills == "event"
    assert [(m.target, m.prop) for m in decl.mappings] == [
        ("account.id", None), ("event.funding_announced", None), ("event.funding_announced.amount", "amount")]


def test_a_named_by_source_lands_several_events_each_with_its_own_properties():
    (_, decl) = parse(NAMED).module.declarations
    assert isinstance(decl, n.SourceDecl)
    assert (decl.fills, decl.named) == ("event", "name")
    assert [(m.field, m.prop) for m in decl.mappings if m.entity == "event"] == [
        ("funding_announced", None), ("funding_announced", "amount"), ("churned", None), ("churned", "reason")]


def test_series_sources_check_clean():
    assert findings(METRICS + "\n" + EVENTS + "\n" + NAMED) == []


def test_well_formed_sources_check_clean():
    assert findings(HUBSPOT + "\n" + WAREHOUSE) == []


def test_a_mapping_onto_more_than_entity_field_is_a_syntax_error():
    diags = parse("source s from warehouse\n  query \"select 1\"\n  account.a.b = x\n").diagnostics
    assert [(d.code, d.range.start.line) for d in diags] == [("PB006", 3)]


CASES = [
    ("misspelt HubSpot object", "source s from hubspot compnies\n  account.id = hs_object_id\n",
     [("PB170", "error", 1, 23, "source 's' reads 'compnies' from HubSpot, which has objects companies, contacts, deals")]),
    ("unknown system", "source s from salesforce\n  account.id = Id\n",
     [("PB170", "error", 1, 15, "source 's' reads from 'salesforce', which is no system Playbook syncs from")]),
    ("warehouse without a query", "source s from warehouse\n  account.id = id\n",
     [("PB171", "error", 1, 1, "source 's' reads a warehouse but has no `query`")]),
    ("HubSpot with a query", 'source s from hubspot deals\n  query "select 1"\n  account.id = x\n',
     [("PB171", "error", 2, 3, "source 's' reads HubSpot, which takes no SQL query")]),
    ("no key", "source s from hubspot companies\n  account.arr = annualrevenue\n",
     [("PB171", "error", 1, 1, "source 's' does not say which column is the account's id")]),
    ("contact without its account", "source s from hubspot contacts\n  contact.id = hs_object_id\n",
     [("PB171", "error", 1, 1, "source 's' does not say which column is the contact's account_id")]),
    ("unknown field with did-you-mean", "source s from hubspot companies\n  account.id = x\n  account.helth_score = y\n",
     [("PB102", "error", 3, 11, "unknown field 'helth_score'")]),
    ("derived field", "source s from hubspot companies\n  account.id = x\n  account.seat_ratio = y\n",
     [("PB172", "error", 3, 3, "source 's' maps onto 'account.seat_ratio', a derived field")]),
    ("two entities", "source s from hubspot companies\n  account.id = x\n  contact.email = y\n",
     [("PB172", "error", 3, 3, "source 's' fills both account and contact fields")]),
    ("a field twice", "source s from hubspot companies\n  account.id = x\n  account.id = y\n",
     [("PB172", "error", 3, 3, "source 's' maps account.id twice")]),
    ("metric points without a date", 'source s from warehouse\n  query "q"\n  account.id = a\n  metric.api_calls = c\n',
     [("PB173", "error", 1, 1, "source 's' lands metric points but does not say which column is their date")]),
    ("dated fields", 'source s from warehouse\n  query "q"\n  dated by day\n  account.id = a\n',
     [("PB173", "error", 3, 3, "source 's' lands no metric points but says `dated by`")]),
    ("dated events", 'source s from warehouse\n  query "q"\n  dated by day\n  account.id = a\n'
     '  event.funding_announced = at\n',
     [("PB173", "error", 3, 3, "source 's' lands events but says `dated by`")]),
    ("unknown metric", 'source s from warehouse\n  query "q"\n  dated by d\n  account.id = a\n  metric.api_cals = c\n',
     [("PB109", "error", 5, 10, "unknown metric 'api_cals'")]),
    ("unknown event", 'source s from warehouse\n  query "q"\n  account.id = a\n  event.funded = at\n',
     [("PB109", "error", 4, 9, "unknown event 'funded'")]),
    ("metric points beside a field", 'source s from warehouse\n  query "q"\n  dated by d\n  account.id = a\n'
     '  account.arr = arr\n  metric.api_calls = c\n',
     [("PB174", "error", 5, 3, "source 's' lands metric points and also maps account.arr")]),
    ("points and events", 'source s from warehouse\n  query "q"\n  dated by d\n  account.id = a\n'
     '  metric.api_calls = c\n  event.funding_announced = at\n',
     [("PB174", "error", 6, 3, "source 's' lands both metric points and events")]),
    ("two events", 'event churned\nsource s from warehouse\n  query "q"\n  account.id = a\n'
     '  event.funding_announced = at\n  event.churned = c\n',
     [("PB174", "error", 6, 3, "source 's' lands two events, 'funding_announced' and 'churned'")]),
    ("named by: events at two time columns", 'event churned\nsource s from warehouse\n  query "q"\n  named by n\n'
     '  account.id = a\n  event.funding_announced = at\n  event.churned = c\n',
     [("PB174", "error", 7, 3, "source 's' reads event 'churned' at `c` but 'funding_announced' at `at`")]),
    ("named by: a property of an event it does not land", 'event churned\nsource s from warehouse\n  query "q"\n'
     '  named by n\n  account.id = a\n  event.funding_announced = at\n  event.churned.why = c\n',
     [("PB174", "error", 7, 3, "source 's' maps a property of event 'churned', which it does not land")]),
    ("named by on fields", 'source s from warehouse\n  query "q"\n  named by n\n  account.id = a\n',
     [("PB173", "error", 3, 3, "source 's' lands no events but says `named by`")]),
    ("named by on points", 'source s from warehouse\n  query "q"\n  dated by d\n  named by n\n  account.id = a\n'
     '  metric.api_calls = c\n',
     [("PB173", "error", 4, 3, "source 's' lands no events but says `named by`")]),
    ("named by: an undeclared event", 'source s from warehouse\n  query "q"\n  named by n\n  account.id = a\n'
     '  event.funding_anounced = at\n',
     [("PB109", "error", 5, 9, "unknown event 'funding_anounced'")]),
    ("a property of another event", 'event churned\nsource s from warehouse\n  query "q"\n  account.id = a\n'
     '  event.funding_announced = at\n  event.churned.why = c\n',
     [("PB174", "error", 6, 3, "source 's' maps a property of event 'churned', which it does not land")]),
    ("an event's properties without its time", 'source s from warehouse\n  query "q"\n  account.id = a\n'
     '  event.funding_announced.amount = c\n',
     [("PB171", "error", 1, 1, "source 's' does not say which column is the time of event 'funding_announced'")]),
    ("points without their account", 'source s from warehouse\n  query "q"\n  dated by d\n  metric.api_calls = c\n',
     [("PB171", "error", 1, 1, "source 's' does not say which column is the account's id")]),
    ("metric points from HubSpot", 'source s from hubspot companies\n  dated by d\n  account.id = a\n'
     '  metric.api_calls = c\n',
     [("PB174", "error", 4, 3, "source 's' reads HubSpot companies but lands metric points")]),
]


@pytest.mark.parametrize("source,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_source_mistakes_are_named_with_code_and_place(source, expected):
    assert findings("\n" + source) == [(code, sev, line + 1, col, summary) for code, sev, line, col, summary in expected]


def test_unknown_field_suggests_the_declared_one():
    from dsl.checker import check
    from dsl.project import load_text
    from test_checker import PRELUDE

    project = load_text(PRELUDE + "\nsource s from hubspot companies\n  account.id = x\n  account.helth_score = y\n",
                        "t.play")
    (d,) = check(project)
    assert d.fix is not None and "health_score" in str(d.fix)
