"""`playbook render`: a message as a play would send it, through the activity's own rendering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import run_cli
from dsl.project import load
from engine import schema
from engine.store import Store

RULES = '''entity contact
  field email text
  field first_name text
  field name text

entity account
  field admin contact
  field csm user
  field usage_percent percent

template usage_alert
  subject "Your usage at {{ usage_percent }}"
  body """
    Hi {{ first_name }},

    You have used {{ usage_percent }} this month. {{ sender_name }}

    Unsubscribe: {{ unsubscribe_url }}
    """

template orphan
  subject "Hello {{ first_name }}"
  body "Hi {{ first_name }}"

play usage_limit "Usage limit"
  owner account.csm
  ungated
  exit when unsubscribed or bounced
  day 1 email account.admin template usage_alert
'''


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """(rules folder, store URL): acme with a value for every placeholder, blank without usage."""
    monkeypatch.chdir(tmp_path)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.play").write_text(RULES)
    url = f"sqlite:///{tmp_path / 's.db'}"
    with Store.open(url, catalog=load([rules]).catalog) as st, st.begin() as conn:
        conn.execute(st.table("account").insert(), [
            {"id": "acme", "name": "Acme", "admin": "c1", "csm": "carol", "usage_percent": 0.85},
            {"id": "blank", "name": "Blank", "admin": "c2", "csm": "carol", "usage_percent": None}])
        conn.execute(schema.Contact.__table__.insert(), [
            {"id": "c1", "account_id": "acme", "email": "ada@acme.test", "first_name": "Ada", "unsubscribed_at": None},
            {"id": "c2", "account_id": "blank", "email": "bo@blank.test", "first_name": "Bo", "unsubscribed_at": None},
            {"id": "c3", "account_id": "acme", "email": "gone@acme.test", "first_name": "Gone",
             "unsubscribed_at": schema.utcnow()}])
        conn.execute(schema.User.__table__.insert(), [{"id": "carol", "name": "Carol Chen", "email": "carol@us.test"}])
    monkeypatch.setenv("PLAYBOOK_EMAIL_FROM_ADDRESS", "Acme CS <cs@us.test>")
    monkeypatch.setenv("PLAYBOOK_EMAIL_UNSUBSCRIBE_URL", "https://us.test/u/{key}?c={contact}")
    return str(rules), url


def render(project: tuple[str, str], *args: str):
    rules, url = project
    return run_cli("render", *args, "--rules", rules, "--db", url)


def test_render_shows_the_headers_and_body_a_play_would_send(project):
    r = render(project, "usage_alert", "--account", "acme")
    assert r.code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("# template usage_alert (play usage_limit, step day1-email, account acme)")
    assert "From: Acme CS <cs@us.test>" in lines and "To: ada@acme.test" in lines
    assert "Subject: Your usage at 85%" in lines and "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in lines
    [unsubscribe] = [x for x in lines if x.startswith("List-Unsubscribe: ")]
    assert unsubscribe.startswith("List-Unsubscribe: <https://us.test/u/play%3Ausage_limit%3Aacme%3A")
    assert unsubscribe.endswith("?c=c1>")
    assert "You have used 85% this month. Carol Chen" in lines
    link = unsubscribe.removeprefix("List-Unsubscribe: <").removesuffix(">")
    assert f"Unsubscribe: {link}" in lines  # the body's {{ unsubscribe_url }} is the header's link


def test_render_as_json_gives_headers_and_body(project):
    r = render(project, "usage_alert", "--account", "acme", "--format", "json")
    doc = json.loads(r.stdout)
    assert r.code == 0 and doc["play"] == "usage_limit" and doc["headers"]["To"] == "ada@acme.test"
    assert doc["headers"]["Message-ID"].endswith("@us.test>") and doc["body"].startswith("Hi Ada,")


def test_another_contact_of_the_account_can_be_the_recipient(project):
    r = render(project, "orphan", "--account", "acme", "--contact", "c2")
    assert r.code == 0, r.stderr
    assert "To: bo@blank.test" in r.stdout and "Subject: Hello Bo" in r.stdout
    assert "(no play sends it, account acme)" in r.stdout


def test_an_unknown_template_is_bad_usage_with_a_suggestion(project):
    r = render(project, "usage_alrt", "--account", "acme")
    assert r.code == 2 and "no template 'usage_alrt' in the rules. Did you mean 'usage_alert'?" in r.stderr


def test_an_unknown_account_is_bad_usage(project):
    r = render(project, "usage_alert", "--account", "acm")
    assert r.code == 2 and "no account 'acm' in the store (--account)" in r.stderr


def test_a_missing_value_names_the_placeholder(project):
    r = render(project, "usage_alert", "--account", "blank")
    assert r.code == 1 and "{{ usage_percent }} has no value" in r.stderr and r.stdout == ""


def test_a_template_no_play_sends_needs_a_recipient(project):
    r = render(project, "orphan", "--account", "acme")
    assert r.code == 2 and "--contact" in r.stderr


def test_an_unsubscribed_recipient_is_shown_as_not_sent(project):
    r = render(project, "usage_alert", "--account", "acme", "--contact", "c3")
    assert r.code == 1 and "would not be sent: gone@acme.test has unsubscribed" in r.stdout


def test_in_sandbox_mode_the_preview_is_the_test_inbox_message(project, monkeypatch):
    monkeypatch.setenv("PLAYBOOK_SANDBOX_EMAIL", "inbox@us.test")
    r = render(project, "usage_alert", "--account", "acme")
    assert r.code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "To: inbox@us.test" in lines and "Subject: [sandbox] Your usage at 85%" in lines
    assert "X-Playbook-Original-To: ada@acme.test" in lines
    assert "[sandbox] This message was for ada@acme.test." in lines
    assert any(x.startswith("# note: sandbox mode") for x in lines)
