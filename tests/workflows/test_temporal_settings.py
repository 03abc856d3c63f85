"""workflows/settings.py reads the settings file's [temporal] table below the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.settings import SettingsError as AnySettingsError
from workflows.settings import SettingsError, TemporalSettings


@pytest.fixture(autouse=True)
def settings_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    path = tmp_path / "settings.toml"
    monkeypatch.setenv("PLAYBOOK_SETTINGS_FILE", str(path))
    return path


def test_the_file_table_gives_values_the_environment_overrides(settings_file: Path) -> None:
    settings_file.write_text('email_cap = 2\n[temporal]\naddress = "temporal.internal:7233"\nnamespace = "revops"\n'
                             "max_activities = 20\n")
    s = TemporalSettings.from_env({"PLAYBOOK_TEMPORAL_NAMESPACE": "from-env"}, task_queue="cli")
    assert (s.address, s.namespace, s.task_queue, s.max_activities) == ("temporal.internal:7233", "from-env", "cli", 20)


def test_an_unknown_key_in_the_table_is_an_error_with_a_suggestion(settings_file: Path) -> None:
    settings_file.write_text('[temporal]\nadress = "x:7233"\n')
    with pytest.raises(SettingsError, match=r"\[temporal\] has no setting 'adress'; did you mean 'address'\?"):
        TemporalSettings.from_env({})


def test_a_bad_file_is_a_settings_error_every_command_reports_as_usage(settings_file: Path) -> None:
    settings_file.write_text("[temporal\n")
    with pytest.raises(AnySettingsError, match="not valid TOML"):
        TemporalSettings.from_env({})
