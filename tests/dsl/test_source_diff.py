"""What `playbook plan --against` says about changed `source` declarations."""

from __future__ import annotations

from dsl.project import load_text
from dsl.source_diff import changes

BASE = '''\
entity account
  field arr money?
  field seats int?

source crm from hubspot companies
  incremental by hs_lastmodifieddate
  account.id  = hs_object_id
  account.arr = annualrevenue
'''


def catalog(text: str):
    project = load_text(text, "s.play")
    assert project.diagnostics == []
    return project.catalog


def test_unchanged_sources_are_not_listed():
    assert changes(catalog(BASE), catalog(BASE + "\n# a comment\n")) == []


def test_a_remapped_added_and_dropped_field_are_each_named():
    after = BASE.replace("account.arr = annualrevenue", "account.arr = arr_usd\n  account.seats = seats")
    assert changes(catalog(BASE), catalog(after)) == [
        {"source": "crm", "status": "changed",
         "details": ["~ account.arr = annualrevenue -> arr_usd", "+ account.seats = seats"]}]


def test_a_new_and_a_removed_source_say_what_they_read():
    added = BASE + 'source usage from warehouse\n  query "select 1"\n  account.id = id\n'
    assert changes(catalog(BASE), catalog(added)) == [
        {"source": "usage", "status": "added", "details": ["warehouse, full each sync", "+ account.id = id"]}]
    assert changes(catalog(added), catalog(BASE))[0]["status"] == "removed"


def test_a_cursor_change_is_a_change_of_what_is_read():
    after = BASE.replace("  incremental by hs_lastmodifieddate\n", "")
    assert changes(catalog(BASE), catalog(after))[0]["details"] == [
        "reads hubspot companies, incremental by hs_lastmodifieddate -> hubspot companies, full each sync"]


def test_a_metric_mapping_and_its_date_column_are_shown_like_fields():
    base = BASE + ('metric api_calls per day\nmetric seats per day\n\nsource usage from warehouse\n  query "q"\n'
                   '  dated by day\n  account.id = account_id\n  metric.api_calls = calls\n')
    after = base.replace("dated by day", "dated by usage_date").replace(
        "metric.api_calls = calls", "metric.api_calls = api_calls\n  metric.seats = seats")
    assert changes(catalog(base), catalog(after)) == [
        {"source": "usage", "status": "changed",
         "details": ["reads warehouse, dated by day, full each sync -> warehouse, dated by usage_date, full each sync",
                     "~ metric.api_calls = calls -> api_calls", "+ metric.seats = seats"]}]


def test_an_event_property_is_named_by_event_and_property():
    base = BASE + ('event funding_announced\n\nsource rounds from warehouse\n  query "q"\n  account.id = a\n'
                   '  event.funding_announced = at\n')
    after = base + "  event.funding_announced.amount = amount\n"
    assert changes(catalog(base), catalog(after))[0]["details"] == ["+ event.funding_announced.amount = amount"]


def test_naming_each_rows_event_by_a_column_is_a_change_of_what_is_read_and_each_landed_event_a_line():
    base = BASE + ('event funding_announced\nevent churned\n\nsource product from warehouse\n  query "q"\n'
                   '  account.id = a\n  event.funding_announced = at\n')
    after = base.replace("  account.id = a\n", "  named by name\n  account.id = a\n") + "  event.churned = at\n"
    assert changes(catalog(base), catalog(after))[0]["details"] == [
        "reads warehouse, full each sync -> warehouse, named by name, full each sync", "+ event.churned = at"]
