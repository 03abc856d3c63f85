"""The email every email connector sends: headers, Message-ID, refused header injection, settings."""

from __future__ import annotations

import datetime as dt

import pytest

from connectors import base as cb
from connectors import mail

AT = dt.datetime(2026, 3, 9, 14, 0, tzinfo=dt.timezone.utc)
SETTINGS = mail.MailSettings(from_address="Acme <cs@acme.test>")


def action(**kw: object) -> cb.EmailMessage:
    fields: dict = {"key": "play:p:acme:h:e:day1", "account_id": "acme", "actor": "play:p", "play": "p",
                    "step": "day1", "requested_at": AT, "to": "ada@customer.test", "subject": "Hi",
                    "body": "Hello", "template": "t", **kw}
    return cb.EmailMessage(**fields)


def test_the_message_id_depends_on_the_key_only():
    a, b = mail.message_id("k1", "acme.test"), mail.message_id("k2", "acme.test")
    assert a == mail.message_id("k1", "acme.test") and a != b
    assert a.startswith("<") and a.endswith("@acme.test>")


def test_the_message_id_domain_defaults_to_the_senders():
    assert mail.build(action(), SETTINGS)["Message-ID"].endswith("@acme.test>")


def test_the_date_is_the_steps_time():
    assert mail.build(action(), SETTINGS)["Date"] == "Mon, 09 Mar 2026 14:00:00 +0000"


@pytest.mark.parametrize("char", ["\r", "\n", "\x00", "\x1b", "\x7f", "\u2028", "\x85"])
def test_a_control_character_in_the_subject_is_refused_naming_the_field(char):
    with pytest.raises(cb.PermanentError, match="header injection refused: Subject"):
        mail.build(action(subject=f"Hi{char}Bcc: x@evil.test"), SETTINGS)


def test_a_body_may_hold_line_breaks():
    assert "line two" in mail.build(action(body="line one\r\nline two\n"), SETTINGS).get_content()


def test_a_recipient_that_is_two_addresses_is_refused():
    with pytest.raises(cb.PermanentError, match="To: not an email address"):
        mail.build(action(to="ada@customer.test, eve@evil.test"), SETTINGS)


def test_the_unsubscribe_url_values_are_percent_encoded():
    url = mail.format_unsubscribe_url("https://acme.test/u?k={key}&c={contact}", key="play:p:a/b", contact="x&y=z")
    assert url == "https://acme.test/u?k=play%3Ap%3Aa%2Fb&c=x%26y%3Dz"


def test_an_unsubscribe_url_with_an_unknown_placeholder_is_refused(monkeypatch):
    monkeypatch.setenv("PLAYBOOK_EMAIL_UNSUBSCRIBE_URL", "https://acme.test/u/{secret}")
    with pytest.raises(mail.MailSettingsError, match=r"PLAYBOOK_EMAIL_UNSUBSCRIBE_URL.*unknown placeholder \{secret\}"):
        mail.load()


def test_a_sender_with_a_line_break_is_refused_as_a_setting(monkeypatch):
    monkeypatch.setenv("PLAYBOOK_EMAIL_FROM_ADDRESS", "cs@acme.test\nBcc: x@evil.test")
    with pytest.raises(mail.MailSettingsError, match="PLAYBOOK_EMAIL_FROM_ADDRESS"):
        mail.load()


def test_extra_x_headers_are_added_as_given():
    msg = mail.build(action(headers={"X-Playbook-Original-To": "ada@customer.test"}), SETTINGS)
    assert msg["X-Playbook-Original-To"] == "ada@customer.test"


@pytest.mark.parametrize("headers, problem", [({"X-Playbook-Original-To": "a@b.test\r\nBcc: eve@evil.test"},
                                               "header injection refused: X-Playbook-Original-To"),
                                              ({"Bcc": "eve@evil.test"}, "extra headers are X- headers")])
def test_an_extra_header_that_would_inject_is_refused(headers, problem):
    with pytest.raises(cb.PermanentError, match=problem):
        mail.build(action(headers=headers), SETTINGS)


def test_a_non_ascii_address_is_refused_plainly_not_sent_garbled():
    with pytest.raises(cb.PermanentError, match="is not an ASCII address"):
        mail.build(action(to="josé@example.test"), SETTINGS)
