"""Which connector serves each step kind comes from settings (connectors/settings.py)."""

from __future__ import annotations

import pytest

from connectors import base as cb
from connectors import settings as cs
from connectors.memory import MemoryConnector
from connectors.store import StoreConnector
from engine.store import Store

ACTING = list(cb.ACTIONS)  # every acting kind, however many there are


@pytest.fixture(autouse=True)
def clean(monkeypatch, tmp_path):
    """No connector setting from the machine: an empty working folder, no PLAYBOOK_CONNECTOR_*."""
    import os

    for name in list(os.environ):
        if name.startswith((cs.ENV_PREFIX, cs.RATE_ENV_PREFIX)) or name == "PLAYBOOK_SETTINGS_FILE":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def settings_file(tmp_path, monkeypatch, text: str) -> None:
    path = tmp_path / "outside-git" / "settings.toml"
    path.parent.mkdir()
    path.write_text(text)
    monkeypatch.setenv("PLAYBOOK_SETTINGS_FILE", str(path))


def test_with_nothing_set_the_store_serves_every_acting_kind():
    assert cs.choose() == dict.fromkeys(ACTING, "store")


def test_one_kind_is_chosen_by_its_environment_variable(monkeypatch):
    monkeypatch.setenv("PLAYBOOK_CONNECTOR_EMAIL", "memory")
    assert cs.choose() == {**dict.fromkeys(ACTING, "store"), "email": "memory"}


def test_the_default_serves_the_kinds_not_named(monkeypatch):
    monkeypatch.setenv("PLAYBOOK_CONNECTOR_DEFAULT", "memory")
    monkeypatch.setenv("PLAYBOOK_CONNECTOR_TASK", "store")
    assert cs.choose() == {**dict.fromkeys(ACTING, "memory"), "task": "store"}


def test_the_settings_file_chooses_and_the_environment_wins(tmp_path, monkeypatch):
    settings_file(tmp_path, monkeypatch, '[connectors]\nemail = "memory"\nnotify = "memory"\n')
    monkeypatch.setenv("PLAYBOOK_CONNECTOR_NOTIFY", "store")
    chosen = cs.choose()
    assert (chosen["email"], chosen["notify"], chosen["task"]) == ("memory", "store", "store")


def test_connectors_are_built_once_per_name_and_shared_by_their_kinds(tmp_path, monkeypatch):
    monkeypatch.setenv("PLAYBOOK_CONNECTOR_EMAIL", "memory")
    monkeypatch.setenv("PLAYBOOK_CONNECTOR_NOTIFY", "memory")
    store = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        connectors = cs.load_connectors(store)
    finally:
        store.close()
    assert isinstance(connectors.by_kind["email"], MemoryConnector)
    assert connectors.by_kind["email"] is connectors.by_kind["notify"]
    assert isinstance(connectors.by_kind["task"], StoreConnector)


def test_an_unknown_connector_names_the_setting_and_the_known_connectors(monkeypatch):
    monkeypatch.setenv("PLAYBOOK_CONNECTOR_EMAIL", "sendgrid")
    with pytest.raises(cs.ConnectorSettingsError) as err:
        cs.choose()
    message = str(err.value)
    assert "PLAYBOOK_CONNECTOR_EMAIL" in message and "'sendgrid' is not a connector" in message
    assert "known: store, memory, hubspot, slack, webhooks, smtp" in message


def test_a_misspelt_connector_gets_a_suggestion(monkeypatch):
    monkeypatch.setenv("PLAYBOOK_CONNECTOR_TASK", "memroy")
    with pytest.raises(cs.ConnectorSettingsError, match="'memroy' is not a connector; did you mean 'memory'"):
        cs.choose()


def test_a_value_that_is_not_a_plain_name_is_never_echoed(monkeypatch):
    monkeypatch.setenv("PLAYBOOK_CONNECTOR_EMAIL", "smtp://mailer:hunter2@mail.example.com")
    with pytest.raises(cs.ConnectorSettingsError) as err:
        cs.choose()
    assert "hunter2" not in str(err.value) and "PLAYBOOK_CONNECTOR_EMAIL" in str(err.value)


def test_a_file_key_that_is_no_step_kind_is_an_error_with_a_suggestion(tmp_path, monkeypatch):
    settings_file(tmp_path, monkeypatch, '[connectors]\nemial = "store"\n')
    with pytest.raises(cs.ConnectorSettingsError, match="'emial' is no step kind; did you mean 'email'"):
        cs.choose()


def test_a_kind_added_to_the_actions_is_a_setting_at_once(monkeypatch):
    before = dict(cb.ACTIONS)

    class Fax(cb.Action):
        kind = "fax"

    try:
        monkeypatch.setenv("PLAYBOOK_CONNECTOR_FAX", "memory")
        assert cs.choose()["fax"] == "memory"
    finally:
        cb.ACTIONS.clear()
        cb.ACTIONS.update(before)


def test_playbook_worker_refuses_an_unknown_connector_before_it_connects(monkeypatch, capsys):
    from cli.main import run

    monkeypatch.setenv("PLAYBOOK_CONNECTOR_TASK", "salesforce")
    assert run(["worker", "--address", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "connector settings: PLAYBOOK_CONNECTOR_TASK" in err and "'salesforce' is not a connector" in err


def test_the_workers_activities_act_through_the_chosen_connectors(tmp_path, monkeypatch):
    from dsl.catalog import Catalog
    from workflows.worker import store_activities

    monkeypatch.setenv("PLAYBOOK_CONNECTOR_EMAIL", "memory")
    store = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        acts = store_activities(store, Catalog())
    finally:
        store.close()
    assert isinstance(acts.connectors.by_kind["email"], MemoryConnector)
    assert isinstance(acts.connectors.by_kind["stage"], StoreConnector)


def test_the_workers_activities_take_the_unsubscribe_link_from_the_email_settings(tmp_path, monkeypatch):
    from dsl.catalog import Catalog
    from workflows.worker import store_activities

    monkeypatch.setenv("PLAYBOOK_EMAIL_UNSUBSCRIBE_URL", "https://acme.test/u/{key}")
    store = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        acts = store_activities(store, Catalog())
    finally:
        store.close()
    assert acts.unsubscribe_url == "https://acme.test/u/{key}"


# ---------------------------------------------------------------------------
# Rates: activities per second of each connector's task queue (workflows/queues.py)


def test_no_rate_is_set_by_default():
    assert cs.rates() == {}


def test_rates_come_from_the_file_and_the_environment_wins(tmp_path, monkeypatch):
    settings_file(tmp_path, monkeypatch, "[rates]\nhubspot = 9\nstore = 2.5\n")
    monkeypatch.setenv("PLAYBOOK_RATE_HUBSPOT", "4")
    assert cs.rates() == {"hubspot": 4.0, "store": 2.5}


def test_a_rate_for_an_unknown_connector_is_an_error_with_a_suggestion(tmp_path, monkeypatch):
    settings_file(tmp_path, monkeypatch, "[rates]\nhubspt = 9\n")
    with pytest.raises(cs.ConnectorSettingsError, match=r"\[rates\] 'hubspt' is not a connector; did you mean 'hubspot'"):
        cs.rates()


@pytest.mark.parametrize("value", ["0", "-1", "fast", "inf"])
def test_a_rate_must_be_a_number_above_zero(monkeypatch, value):
    monkeypatch.setenv("PLAYBOOK_RATE_STORE", value)
    with pytest.raises(cs.ConnectorSettingsError, match="PLAYBOOK_RATE_STORE: a rate is activities per second"):
        cs.rates()
