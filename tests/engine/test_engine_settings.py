"""engine/settings.py: one place for the settings that change decisions (env, file, defaults)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from engine.settings import EngineSettings, SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No PLAYBOOK_ setting of the machine leaks in; the default file is looked for in an empty folder."""
    for name in ("TIME_ZONE", "EMAIL_CAP", "EMAIL_CAP_DAYS", "ROUTE", "DATABASE_URL", "SETTINGS_FILE",
                 "PIPELINE_HOLIDAYS", "SLA_GRACE_DAYS"):
        monkeypatch.delenv(f"PLAYBOOK_{name}", raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults_without_env_or_file() -> None:
    s = load_settings()
    assert (s.time_zone, s.email_cap, s.email_cap_days, s.route, s.database_url) == ("UTC", 3, 7, "touch", None)


def test_environment_wins_over_the_file_and_the_file_over_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    Path(".playbook").mkdir()
    Path(".playbook/settings.toml").write_text('email_cap = 5\nemail_cap_days = 14\ntime_zone = "Europe/Berlin"\n'
                                               '[connectors]\nemail = "smtp"\n')
    monkeypatch.setenv("PLAYBOOK_EMAIL_CAP", "2")
    s = load_settings()
    assert (s.email_cap, s.email_cap_days, s.time_zone) == (2, 14, "Europe/Berlin")


def test_the_settings_file_can_be_named_by_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    f = tmp_path / "team.toml"
    f.write_text("email_cap = 9\n")
    monkeypatch.setenv("PLAYBOOK_SETTINGS_FILE", str(f))
    assert load_settings().email_cap == 9
    monkeypatch.setenv("PLAYBOOK_SETTINGS_FILE", str(tmp_path / "missing.toml"))
    with pytest.raises(SettingsError, match=r"PLAYBOOK_SETTINGS_FILE=.*missing.toml: no such file"):
        load_settings()


def test_an_unknown_key_in_the_file_is_an_error_with_a_suggestion() -> None:
    Path(".playbook").mkdir()
    Path(".playbook/settings.toml").write_text("email_capp = 5\n")
    with pytest.raises(SettingsError, match=r"unknown setting 'email_capp'; did you mean 'email_cap'\?"):
        load_settings()


def test_malformed_toml_names_the_file_and_line() -> None:
    Path(".playbook").mkdir()
    Path(".playbook/settings.toml").write_text("email_cap = 5\nemail_cap_days = \n")
    with pytest.raises(SettingsError, match=r"settings\.toml: not valid TOML: .*line 2"):
        load_settings()


@pytest.mark.parametrize(("name", "value", "message"), [
    ("EMAIL_CAP", "-1", r"email_cap \(PLAYBOOK_EMAIL_CAP or 'email_cap' in .*\): Input should be greater than"),
    ("EMAIL_CAP_DAYS", "0", r"email_cap_days .*greater than or equal to 1"),
    ("EMAIL_CAP", "three", r"email_cap .*valid integer"),
    ("TIME_ZONE", "Mars/Olympus", r"unknown time zone 'Mars/Olympus' \(an IANA name"),
    ("PIPELINE_HOLIDAYS", "US, XX", r"pipeline_holidays \(PLAYBOOK_PIPELINE_HOLIDAYS .*unknown holiday country 'XX'"),
    ("SLA_GRACE_DAYS", "-1", r"sla_grace_days .*greater than or equal to 0"),
])
def test_a_bad_value_names_the_setting_and_where_it_comes_from(
        monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str) -> None:
    monkeypatch.setenv(f"PLAYBOOK_{name}", value)
    with pytest.raises(SettingsError, match=message):
        load_settings()


@pytest.mark.parametrize(("value", "suggestion"), [("Europe/Berln", "Europe/Berlin"), ("europe/paris", "Europe/Paris")])
def test_a_misspelt_time_zone_gets_a_suggestion(monkeypatch: pytest.MonkeyPatch, value: str, suggestion: str) -> None:
    monkeypatch.setenv("PLAYBOOK_TIME_ZONE", value)
    with pytest.raises(SettingsError, match=rf"unknown time zone '{value}' .*; did you mean '{suggestion}'\?"):
        load_settings()


def test_an_empty_route_means_no_route(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLAYBOOK_ROUTE", "")
    assert load_settings().route is None
    assert load_settings().enrollment().route is None


def test_today_is_the_team_date_near_midnight() -> None:
    # 23:30 UTC on May 31 is already June 1 in Berlin, and still May 31 in New York.
    now = dt.datetime(2026, 5, 31, 23, 30, tzinfo=dt.timezone.utc)
    assert EngineSettings(time_zone="Europe/Berlin").today(now) == dt.date(2026, 6, 1)
    assert EngineSettings(time_zone="America/New_York").today(now) == dt.date(2026, 5, 31)
    assert EngineSettings(time_zone="UTC").today(now.replace(tzinfo=None)) == dt.date(2026, 5, 31)


def test_the_enrollment_knobs_follow_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLAYBOOK_EMAIL_CAP", "4")
    monkeypatch.setenv("PLAYBOOK_EMAIL_CAP_DAYS", "30")
    knobs = load_settings().enrollment()
    assert (knobs.email_cap, knobs.email_cap_days, knobs.route) == (4, 30, "touch")


def test_pipeline_holidays_are_a_comma_separated_list_of_regions(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (load_settings().pipeline_regions, load_settings().sla_grace_days) == ([], 1)
    monkeypatch.setenv("PLAYBOOK_PIPELINE_HOLIDAYS", "US, US-CA ,")
    assert load_settings().pipeline_regions == ["US", "US-CA"]
