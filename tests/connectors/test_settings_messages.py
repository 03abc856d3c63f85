"""The wording of a bad connector or source setting: the variable, the settings-file table, the reason; never
the value (pydantic's input may be a secret)."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.hubspot import HubSpotSettingsError, load_hubspot_settings
from connectors.mail import MailSettingsError
from connectors.mail import load as load_mail
from connectors.smtp import SmtpSettingsError
from connectors.smtp import load_settings as load_smtp
from connectors.sources import SourceSettingsError, load_source_settings


@pytest.fixture
def path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    file = tmp_path / "playbook.toml"
    file.write_text("", encoding="utf-8")
    monkeypatch.setenv("PLAYBOOK_SETTINGS_FILE", str(file))
    return file


def message(exc: pytest.ExceptionInfo[Exception], path: Path) -> str:
    return str(exc.value).replace(str(path), "FILE")


def test_smtp_names_the_variable_and_the_table_or_its_whole_settings(path, monkeypatch):
    monkeypatch.setenv("PLAYBOOK_SMTP_PORT", "0")
    with pytest.raises(SmtpSettingsError) as exc:
        load_smtp()
    assert message(exc, path) == ("PLAYBOOK_SMTP_PORT (or `port` in [smtp] of FILE): "
                                  "Input should be greater than or equal to 1")
    monkeypatch.delenv("PLAYBOOK_SMTP_PORT")
    monkeypatch.setenv("PLAYBOOK_SMTP_PASSWORD", "s3cret")
    with pytest.raises(SmtpSettingsError) as exc:
        load_smtp()
    assert message(exc, path) == "SMTP settings: a password without a username: set PLAYBOOK_SMTP_USERNAME too"
    assert "s3cret" not in str(exc.value)


def test_email_names_the_variable_and_the_table_or_its_whole_settings(path, monkeypatch):
    monkeypatch.setenv("PLAYBOOK_EMAIL_UNSUBSCRIBE_URL", "ftp://x")
    with pytest.raises(MailSettingsError) as exc:
        load_mail()
    assert message(exc, path) == ("PLAYBOOK_EMAIL_UNSUBSCRIBE_URL (or `unsubscribe_url` in [email] of FILE): "
                                  "must be an https:// URL (RFC 8058 one-click unsubscribe needs HTTPS)")
    monkeypatch.delenv("PLAYBOOK_EMAIL_UNSUBSCRIBE_URL")
    monkeypatch.setenv("PLAYBOOK_EMAIL_MESSAGE_ID_DOMAIN", "not a domain")
    with pytest.raises(MailSettingsError) as exc:
        load_mail()
    assert message(exc, path) == "email settings: message_id_domain: a domain name such as mail.acme.test"


def test_hubspot_names_the_variable_and_the_table_or_the_table_alone(path, monkeypatch):
    monkeypatch.setenv("PLAYBOOK_HUBSPOT_TIMEOUT", "-1")
    with pytest.raises(HubSpotSettingsError) as exc:
        load_hubspot_settings()
    assert message(exc, path) == "PLAYBOOK_HUBSPOT_TIMEOUT or `timeout` in [hubspot] of FILE: Input should be greater than 0"
    monkeypatch.delenv("PLAYBOOK_HUBSPOT_TIMEOUT")
    monkeypatch.setenv("PLAYBOOK_HUBSPOT_NEW_DEAL_STAGE", "Closed Won")
    with pytest.raises(HubSpotSettingsError) as exc:
        load_hubspot_settings()
    assert message(exc, path).startswith("[hubspot] of FILE: new_deal_stage 'Closed Won' must be an open stage")


def test_a_source_names_its_own_variable_and_table(path, monkeypatch):
    monkeypatch.setenv("PLAYBOOK_SOURCE_USAGE_BATCH_SIZE", "0")
    with pytest.raises(SourceSettingsError) as exc:
        load_source_settings("usage")
    assert message(exc, path) == ("PLAYBOOK_SOURCE_USAGE_BATCH_SIZE or `batch_size` in [sources.usage] of FILE: "
                                  "Input should be greater than or equal to 1")
