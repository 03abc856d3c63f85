"""Checker findings: each case states one mistake and the exact finding."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cli.rules import load_and_check
from dsl.checker import check
from dsl.project import load_text

PRELUDE = '''\
entity account
  field segment enum(smb, mid_market, enterprise)
  field arr money
  field health_score number 0..100
  field usage_percent percent
  field plan text
  field renewal_date date
  field last_expansion_at date?
  field exec_sponsor bool
  field admin contact
  field csm user
  let seat_ratio = account.arr / 10

entity contact
  field first_name text
  field email text

metric api_calls per day
event funding_announced

gate ready
  require account.health_score >= 60

trigger usage
  when account.usage_percent >= 80%
  then start usage_limit

template hello
  subject "Hi {{ first_name }}"
  body """
    Hello {{ first_name }}, you use {{ usage_percent }} of {{ plan }}.
    """

play usage_limit "Usage limit"
  gate ready
  day 1 email account.admin template hello
'''

PRELUDE_LINES = PRELUDE.count("\n")


def findings(extra: str) -> list[tuple[str, str, int, int, str]]:
    project = load_text(PRELUDE + extra, "t.play")
    diags = project.diagnostics + check(project)
    return [(d.code, d.severity.value, d.range.start.line - PRELUDE_LINES, d.range.start.column, d.summary) for d in diags]


def test_prelude_is_clean():
    assert findings("") == []


CASES = [
    # (name, source appended to the prelude, expected (code, severity, line, column, summary))
    ("unknown field with did-you-mean", "trigger t\n  when account.helth_score > 5\n  then start usage_limit\n",
     ("PB102", "error", 2, 16, "unknown field 'helth_score'")),
    ("unknown namespace", "trigger t\n  when acount.arr > 5\n  then start usage_limit\n",
     ("PB103", "error", 2, 8, "unknown name 'acount'")),
    ("percent compared with text", "trigger t\n  when account.usage_percent > \"80%\"\n  then start usage_limit\n",
     ("PB201", "error", 2, 8, "cannot compare a percentage with text")),
    ("date compared with number", "trigger t\n  when account.renewal_date > 30\n  then start usage_limit\n",
     ("PB201", "error", 2, 8, "cannot compare a date with a number")),
    ("unknown play", "trigger t\n  when account.arr > 5\n  then start usage_limmit\n",
     ("PB105", "error", 3, 14, "unknown play 'usage_limmit'")),
    ("unknown template", "play p\n  ungated\n  day 1 email account.admin template helo\n",
     ("PB106", "error", 3, 38, "unknown template 'helo'")),
    ("unknown gate", "play p\n  gate redy\n  day 1 stage \"Qualified\"\n",
     ("PB107", "error", 2, 8, "unknown gate 'redy'")),
    ("unknown score in a ref", "trigger t\n  when score.expansoin > 5\n  then start usage_limit\n",
     ("PB104", "error", 2, 14, "unknown score 'expansoin'")),
    ("unknown enum value", "trigger t\n  when account.segment == smbb\n  then start usage_limit\n",
     ("PB112", "error", 2, 27, "'smbb' is not one of (smb, mid_market, enterprise)")),
    ("negative day without anchor", "play p\n  ungated\n  day -90 stage \"Qualified\"\n",
     ("PB301", "error", 3, 3, "day -90 needs an anchor date")),
    ("steps out of order", "play p\n  ungated\n  day 7 stage \"A\"\n  day 3 stage \"B\"\n",
     ("PB302", "error", 4, 3, "this step (day 3) comes after a step on day 7")),
    ("placeholder naming no field", "template t2\n  subject \"x\"\n  body \"Hi {{ frist_name }}\"\n",
     ("PB401", "error", 3, 15, "placeholder '{{ frist_name }}' names no known field")),
    ("template syntax error", "template t3\n  subject \"x\"\n  body \"Hi {{ first_name \"\n",
     ("PB402", "error", 3, 8, "template syntax error: unexpected end of template, expected 'end of print statement'.")),
    ("contradiction", "trigger t\n  when account.arr > 5 and account.arr < 3\n  then start usage_limit\n",
     ("PB501", "error", 2, 28, "this condition of trigger 't' can never be true")),
    ("outside declared range", "trigger t\n  when account.health_score > 150\n  then start usage_limit\n",
     ("PB503", "warning", 2, 8, "`account.health_score > 150` is never true: account.health_score is declared >= 0 and <= 100")),
    ("play that can never start", "play lonely\n  ungated\n  day 1 stage \"A\"\n",
     ("PB306", "warning", 1, 6, "play 'lonely' can never start: no trigger starts it")),
    ("play without gate", "trigger t\n  when account.arr > 5\n  then start p\nplay p\n  day 1 stage \"A\"\n",
     ("PB307", "error", 4, 6, "play 'p' has no gate")),
    ("duplicate name across the folder", "score usage\n  = account.arr\n",
     ("PB101", "error", 1, 1, "duplicate name 'usage': already declared at t.play:24")),
    ("condition that is not a condition", "trigger t\n  when account.arr\n  then start usage_limit\n",
     ("PB203", "error", 2, 8, "a condition must be true or false, but this is a number")),
    ("email to a user", "play p\n  ungated\n  day 1 email account.csm template hello\n",
     ("PB204", "error", 3, 15, "an email recipient must be a contact field, but 'account.csm' is a user")),
    ("unknown function", "trigger t\n  when dayz_since(account.renewal_date) > 5\n  then start usage_limit\n",
     ("PB110", "error", 2, 8, "unknown function 'dayz_since'")),
    ("unknown metric in a window", "trigger t\n  when growth(api_cals, 60 days) > 10%\n  then start usage_limit\n",
     ("PB109", "error", 2, 15, "unknown metric or event 'api_cals'")),
    ("unknown inbound event", "play p\n  ungated\n  exit when repled\n  day 1 stage \"A\"\n",
     ("PB111", "error", 3, 13, "unknown name 'repled'")),
    ("test naming an unknown play", "test \"x\"\n  expect start nope\n",
     ("PB601", "error", 2, 16, "unknown start 'nope'")),
    ("given with an unknown field", "test \"x\"\n  given account helth=5\n  expect start usage_limit\n",
     ("PB602", "error", 2, 17, "account has no field 'helth'")),
    ("exit reading account data", "play p\n  ungated\n  exit when replied or account.arr > 5\n  day 1 stage \"A\"\n",
     ("PB162", "error", 3, 24, "an exit can only test events and the stage, not 'account.arr'")),
    ("stage outside the pipeline", "play p\n  ungated\n  day 1 stage \"Proposal sent\"\n",
     ("PB163", "error", 3, 16, "unknown pipeline stage 'Proposal sent'")),
    ("stage step back to the start", "play p\n  ungated\n  day 1 stage \"Trigger Fired\"\n",
     ("PB163", "error", 3, 9, "a deal cannot move to 'Trigger Fired': it is where deals start")),
    ("misspelt stage in an exit", "play p\n  ungated\n  exit when stage in [\"Closed Wn\"]\n  day 1 stage \"Qualified\"\n",
     ("PB112", "error", 3, 23, "'Closed Wn' is not one of (Trigger Fired, CSQL Created, Qualified, Proposal Sent, "
                               "Negotiation, Closed Won, Closed Lost)")),
    ("notify @owner in a play with no owner", "play p\n  ungated\n  day 1 notify \"@owner\" \"hi\"\n",
     ("PB164", "error", 3, 17, 'notify "@owner" in a play with no owner')),
    ("notify @owner in an owned play", "play p\n  ungated\n  owner account.csm\n  day 1 notify \"@owner\" \"hi\"\n",
     None),
    ("notify another @ name", "play p\n  ungated\n  owner account.csm\n  day 1 notify \"@ownr\" \"hi\"\n",
     ("PB164", "error", 4, 17, 'notify channel "@ownr" names no owner or route')),
    ("step inside a wait", "play p\n  ungated\n  day 1 wait up to 5 days for replied\n  day 3 stage \"A\"\n",
     ("PB312", "warning", 4, 3, "this step (day 3) falls inside the wait on day 1")),
    ("weights that do not add up to 1", "score s\n  = account.arr * 0.4 + account.health_score * 0.5\n",
     ("PB134", "warning", 2, 5, "the weights of score 's' add up to 0.9, not 1")),
    ("percent compared with a bare number", "trigger t\n  when account.usage_percent > 80\n  then start usage_limit\n",
     ("PB207", "error", 2, 32, "80 is not a percentage here; write 80%")),
    ("percent given as a bare number", "test \"x\"\n  given account usage_percent=85\n  expect start usage_limit\n",
     ("PB207", "error", 2, 31, "85 is not a percentage here; write 85%")),
    ("percent expected as a bare number", "test \"x\"\n  given account usage_percent=85%\n  expect field usage_percent > 90\n",
     ("PB207", "error", 3, 32, "90 is not a percentage here; write 90%")),
    ("negative percent given", "test \"x\"\n  given account usage_percent=-5%\n  expect start usage_limit\n",
     ("PB603", "error", 2, 31, "-5% is negative; account.usage_percent is a percentage of 0% or more")),
    ("given outside the declared range", "test \"x\"\n  given account health_score=150\n  expect start usage_limit\n",
     ("PB603", "error", 2, 30, "150 is outside the declared range of account.health_score (0..100)")),
    ("let cycle", "entity deal\n  field x int\n",
     None),
    ("holdout without a unit", "play p\n  ungated\n  holdout 10\n  day 1 stage \"Qualified\"\n",
     ("PB313", "error", 3, 3, "`holdout 10` needs a unit")),
    ("holdout above half", "play p\n  ungated\n  holdout 60%\n  day 1 stage \"Qualified\"\n",
     ("PB314", "error", 3, 3, "holdout 60% is outside 0% to 50%")),
    ("holdout of nothing", "play p\n  ungated\n  holdout 0%\n  day 1 stage \"Qualified\"\n",
     ("PB314", "error", 3, 3, "holdout 0% is outside 0% to 50%")),
    ("holdout of half is allowed", "play p\n  ungated\n  holdout 50%\n  day 1 stage \"Qualified\"\n",
     None),
]


@pytest.mark.parametrize("name,source,expected", CASES, ids=[c[0] for c in CASES])
def test_checker_reports(name, source, expected):
    got = findings(source)
    if expected is None:
        assert [f for f in got if f[1] == "error"] == []
        return
    assert expected in got, got


@pytest.mark.parametrize("op", ["!=", "=="])
def test_comparing_with_null_points_to_is_empty(op):
    project = load_text(PRELUDE + f"trigger t\n  when account.usage_percent {op} null\n  then start usage_limit\n",
                        "t.play")
    [d] = check(project)
    assert (d.code, d.summary) == ("PB111", "unknown name 'null'")
    assert d.detail == "to test for a missing value, write `is empty` (or `is not empty`)"
    assert d.fix is None


@pytest.mark.parametrize("period,detail,fix", [
    ("dy", "Did you mean 'day'?", "day"),
    ("fortnight", "write per day, per week or per month", None),
])
def test_a_metric_per_unknown_period_is_an_error(period, detail, fix):
    project = load_text(PRELUDE + f"metric seats per {period}\n", "t.play")
    [d] = check(project)
    assert (d.code, d.summary, d.detail) == ("PB125", f"metric 'seats' is measured per '{period}', which is no period",
                                             detail)
    assert (d.fix.replace if d.fix else None) == fix
    assert d.range.start.column == len("metric seats per ") + 1


def test_notify_to_an_unknown_route_names_the_routes_and_offers_the_close_one():
    routes = "route touch\n  when account.arr < 10000 -> low_touch\n  otherwise -> high_touch\n"
    project = load_text(PRELUDE + routes + "play p\n  ungated\n  day 1 notify \"@route.tuch\" \"hi\"\n", "t.play")
    [d] = [d for d in check(project) if d.code != "PB306"]  # PB306: nothing starts play p
    assert (d.code, d.summary) == ("PB164", "notify \"@route.tuch\": unknown route 'tuch'")
    assert d.detail == "routes: touch. Did you mean 'touch'?" and d.fix is not None and d.fix.replace == "@route.touch"
    ok = load_text(PRELUDE + routes + "play p\n  ungated\n  day 1 notify \"@route.touch\" \"hi\"\n", "t.play")
    assert [d.code for d in check(ok)] == ["PB306"]


def test_did_you_mean_offers_a_fix():
    project = load_text(PRELUDE + "trigger t\n  when account.helth_score > 5\n  then start usage_limit\n", "t.play")
    [d] = check(project)
    assert d.detail == "account has no field 'helth_score'. Did you mean 'health_score'?"
    assert d.fix is not None and d.fix.replace == "health_score"
    assert (d.range.end.column - d.range.start.column) == len("helth_score")


@pytest.mark.parametrize("written,summary,suggestion", [
    ("UK-ENGLAND", "unknown subdivision 'ENGLAND' of UK (UK's subdivisions: ENG, NIR, SCT, WLS)", "ENG"),
    ("US-CAL", "unknown subdivision 'CAL' of US (US's subdivisions: AK, AL, AR, AS, AZ, CA, CO, CT, DC, DE, FL, "
     "GA, …)", "CA"),
    ("DE-Bayern", "unknown subdivision 'Bayern' of DE (DE's subdivisions: BB, BE, BW, BY, HB, HE, HH, MV, NI, NW, "
     "RP, SH, …)", "BY"),
    ("Germany", "unknown holiday country 'Germany'", "DE"),
    ("us", "unknown holiday country 'us'", "US"),
])
def test_an_unknown_holiday_region_is_an_error_with_did_you_mean(written, summary, suggestion):
    project = load_text(PRELUDE + f"calendar ops\n  holidays {written}\n", "t.play")
    [d] = check(project)
    wrong = written.partition("-")[2] or written
    assert (d.code, d.summary) == ("PB124", summary)
    assert d.detail == f"Did you mean '{suggestion}'?"
    assert d.fix is not None and d.fix.replace == suggestion
    assert (d.range.start.line - PRELUDE_LINES, d.range.end.column - d.range.start.column) == (2, len(wrong))


def test_a_holiday_region_with_nothing_close_says_what_codes_are():
    [d] = check(load_text(PRELUDE + "calendar ops\n  holidays QQ\n", "t.play"))
    assert d.code == "PB124" and d.fix is None and "ISO 3166" in (d.detail or "")


def test_a_holiday_region_listed_twice_is_a_warning_at_the_second():
    got = findings("calendar ops\n  holidays US-CA\n  holidays US\n  holidays US-CA\n")
    assert got == [("PB123", "warning", 4, 3, "calendar 'ops' lists `holidays US-CA` twice")]


def test_known_holiday_regions_are_clean():
    assert findings("calendar ops \"Ops\"\n  holidays US\n  holidays GB-SCT\n  holidays FR\n  2026-12-24\n") == []


def test_every_error_of_a_file_is_reported():
    src = ("trigger a\n  when account.nope > 1\n  then start usage_limit\n"
           "trigger b\n  when account.arr > \n  then start usage_limit\n"
           "trigger c\n  when account.zip > 1\n  then start nowhere\n")
    codes = [f[0] for f in findings(src)]
    assert codes.count("PB102") == 2 and "PB002" in codes and "PB105" in codes


def test_derived_field_cycle_is_an_error():
    src = PRELUDE.replace("  let seat_ratio = account.arr / 10\n",
                          "  let a = account.b + 1\n  let b = account.a + 1\n")
    project = load_text(src, "t.play")
    assert any(d.code == "PB701" for d in check(project))


def test_unknown_symbol_after_unknown_field_does_not_cascade():
    got = findings("trigger t\n  when account.nope == smb\n  then start usage_limit\n")
    assert [f[0] for f in got] == ["PB102"]


def test_a_declaration_that_did_not_parse_is_not_reported_again_where_it_is_used():
    src = ("trigger t\n  when account.arr > 5\n  then start broken_play\n"
           "play broken_play\n  gate ready\n  day 1 stage \"A\" unless (\n")
    got = findings(src)
    assert [f[0] for f in got] == ["PB002"], got


def test_weights_that_add_up_to_one_or_100_percent_are_clean():
    src = ("score a\n  = account.arr * 0.4 + account.health_score * 0.3 + account.arr * 0.2 + 0.1 * account.arr\n"
           "score b\n  = account.arr * 40% + account.health_score * 60%\n"
           "score c\n  = account.arr + account.health_score * 0.5\n")  # not a weighted sum: no finding
    assert findings(src) == []


def test_percent_weights_name_their_sum_in_percent():
    [d] = check(load_text(PRELUDE + "score s\n  = account.arr * 40% + account.health_score * 50%\n", "t.play"))
    assert (d.code, d.summary) == ("PB134", "the weights of score 's' add up to 90%, not 100%")
    assert d.detail.startswith("40% + 50% = 90%")


SHIPPED = Path(__file__).resolve().parents[2] / "playbooks"

# A syntax error in one declaration, in the shipped folder: (file, text, broken text).
BREAKAGES = [
    ("entity, a field's type", "account.play", "number? 0..10", "number?? 0..10"),
    ("entity contact", "account.play", "entity contact", "entity contact (("),
    ("metric", "account.play", "metric api_calls          per day", "metric api_calls per day (("),
    ("score", "scores.play", 'score expansion "Expansion opportunity score"', 'score expansion "Expansion opportunity score" (('),
    ("route", "routes.play", "route touch", "route touch touch"),
    ("play", "plays/usage_limit.play", "  kind upsell", "  kind upsell (("),
    ("misspelt keyword", "plays/usage_limit.play", "play usage_limit", "paly usage_limit"),
]


@pytest.mark.parametrize("what,file,text,broken", BREAKAGES, ids=[b[0] for b in BREAKAGES])
def test_a_declaration_that_did_not_parse_causes_no_knock_on_finding_anywhere(tmp_path, what, file, text, broken):
    folder = tmp_path / "playbooks"
    shutil.copytree(SHIPPED, folder)
    path = folder / file
    assert text in path.read_text()
    path.write_text(path.read_text().replace(text, broken, 1))
    _, diagnostics = load_and_check([folder], strict=True)
    assert [d.code for d in diagnostics] == ["PB002"], [f"{d.file}:{d.range.start.line} {d.code} {d.summary}" for d in diagnostics]


def test_syntax_errors_come_first_whatever_the_file_order(tmp_path):
    (tmp_path / "a.play").write_text(PRELUDE + "trigger t\n  when account.helth_score > 5\n  then start usage_limit\n")
    (tmp_path / "z.play").write_text("trigger z\n  when account.arr >\n  then start usage_limit\n")
    _, diagnostics = load_and_check([tmp_path])
    assert [(d.code, Path(d.file).name) for d in diagnostics] == [("PB002", "z.play"), ("PB102", "a.play")]


def test_bare_percent_fix_is_machine_applicable_and_stops_the_contradiction_check():
    project = load_text(PRELUDE + "trigger t\n  when account.usage_percent > 80 and account.usage_percent < 0.9\n"
                        "  then start usage_limit\n", "t.play")
    [d] = check(project)  # no PB501 from comparing 80 with 0.9
    assert d.code == "PB207" and d.fix is not None and d.fix.replace == "80%"
    assert (d.range.start.column, d.range.end.column) == (32, 34)  # exactly the `80` it replaces
    assert d.detail == "percentages are fractions: 80 means 8000%. Write 80% (or the fraction 0.8)"


def test_fractions_and_percent_literals_for_a_percent_are_clean():
    src = ("trigger t\n  when account.usage_percent > 0.8 or account.usage_percent >= 80% or account.usage_percent < 1\n"
           "  then start usage_limit\n"
           "test \"x\"\n  given account usage_percent=0.85, health_score=100\n  expect start usage_limit\n")
    assert findings(src) == []
