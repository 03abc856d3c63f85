"""Which connector serves each step kind: a setting, never code.

| setting            | environment                   | settings file, `[connectors]` | default   |
|--------------------|-------------------------------|-------------------------------|-----------|
| one step kind      | `PLAYBOOK_CONNECTOR_<KIND>`   | `<kind> = "NAME"`             | `default` |
| every other kind   | `PLAYBOOK_CONNECTOR_DEFAULT`  | `default = "NAME"`            | `store`   |

Provider rate limits, per connector (activities per second over all
workers; Temporal's task queue rate limit, see workflows/queues.py):

| setting            | environment                   | settings file, `[rates]`      | default   |
|--------------------|-------------------------------|-------------------------------|-----------|
| one connector      | `PLAYBOOK_RATE_<NAME>`        | `<name> = 10`                 | unlimited |

`<KIND>` is an acting step kind (connectors/base.py `ACTIONS`: email, task,
stage, opportunity, notify, webhook, set, trial, and any kind added later),
NAME a connector of `REGISTRY`. The settings file is engine/settings.py's
(`$PLAYBOOK_SETTINGS_FILE`, default `.playbook/settings.toml`, outside
git); the environment wins over it. With nothing set, the built-in store
connector serves every kind, so the demo and the tests need no credentials.

A connector that needs credentials reads them with its own pydantic-settings
class, as `SecretStr`, so they are never printed; this module only ever
prints connector names, and does not echo a value that is not a plain name
(a URL with a password put here by mistake stays out of errors and logs).
It reads the file through engine/settings.py and builds the store
connector over an engine Store, as the built-in store connector may.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import ValidationError, create_model
from pydantic.fields import FieldInfo
from pydantic_settings import PydanticBaseSettingsSource, SettingsConfigDict

from connectors import base as cb
from dsl.suggest import closest
from engine.settings import FileBackedSettings, SettingsError, read_settings_file, settings_file
from engine.store import Store

ENV_PREFIX = "PLAYBOOK_CONNECTOR_"
TABLE = "connectors"
DEFAULT = "store"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,40}$")


class ConnectorSettingsError(SettingsError):
    """A connector setting names an unknown step kind or connector."""


@dataclass(frozen=True)
class Implementation:
    """A connector by name: what it is and how to build it."""

    name: str
    about: str
    build: Callable[[Store | None], cb.Connector]
    # Its own settings read and judged without building it (no store, no network), so a
    # missing token stops `playbook worker` before it connects (`choose` runs it).
    check: Callable[[], None] | None = None
    # Which step kinds it can act on (None: any); choosing it for another is a settings error.
    serves: Callable[[str], bool] | None = None
    local: bool = False  # keeps messages on this machine (sandbox mode needs no target for it)


def _store(store: Store | None) -> cb.Connector:
    from connectors.store import StoreConnector

    if store is None:
        raise ConnectorSettingsError("the store connector needs a store (--db or PLAYBOOK_DATABASE_URL)")
    return StoreConnector(store)


def _memory(store: Store | None) -> cb.Connector:
    from connectors.memory import MemoryConnector

    return MemoryConnector()


def _hubspot_settings() -> Any:
    from connectors.hubspot import load_hubspot_settings

    try:
        settings = load_hubspot_settings()
    except SettingsError as exc:
        raise ConnectorSettingsError(f"hubspot: {exc}") from None
    if settings.token is None or not settings.token.get_secret_value().strip():
        raise ConnectorSettingsError(f"the hubspot connector needs a private-app token: set {settings.where('token')}")
    return settings


def _hubspot(store: Store | None) -> cb.Connector:
    from connectors.hubspot import HubSpotConnector
    from connectors.store import account_field

    settings = _hubspot_settings()
    field = settings.company_field
    company_of = account_field(store, field) if store is not None and field not in (None, "id") else None
    return HubSpotConnector(settings, company_of=company_of)


def _slack(store: Store | None) -> cb.Connector:
    from connectors import slack

    return slack.build(store)


def _slack_settings() -> None:
    from connectors import slack

    slack.checked_settings()


def _webhooks_settings() -> None:
    from connectors import webhooks

    webhooks.checked_settings()


def _postmark_settings() -> None:
    from connectors import postmark

    postmark.checked_settings()


def _postmark(store: Store | None) -> cb.Connector:
    from connectors import postmark

    return postmark.build(store)


def _webhooks(store: Store | None) -> cb.Connector:
    from connectors import webhooks

    return webhooks.build(store)


def _smtp(store: Store | None) -> cb.Connector:
    from connectors.smtp import build

    return build(store)


def _smtp_settings() -> None:
    from connectors.smtp import checked_settings

    checked_settings()


REGISTRY: dict[str, Implementation] = {i.name: i for i in [
    Implementation("store", "the built-in store: outbox, tasks, pipeline, audit log", _store, local=True),
    Implementation("memory", "kept in memory, lost at exit (tests)", _memory, local=True),
    Implementation("hubspot", "HubSpot CRM: tasks, deals, stage moves, notes (connectors/hubspot.py)", _hubspot,
                   check=_hubspot_settings, serves=lambda kind: not issubclass(cb.ACTIONS[kind], cb.OutboxMessage)),
    Implementation("slack", "notify steps as Slack messages (chat.postMessage; PLAYBOOK_SLACK_*)", _slack,
                   check=_slack_settings),
    Implementation("webhooks", "webhook steps as POSTs signed per Standard Webhooks (PLAYBOOK_WEBHOOKS_*)",
                   _webhooks, check=_webhooks_settings),
    Implementation("smtp", "email over SMTP (connectors/smtp.py), the store's outbox as its ledger", _smtp,
                   check=_smtp_settings),
    Implementation("postmark", "email over Postmark's HTTP API (PLAYBOOK_POSTMARK_*), the outbox as its ledger",
                   _postmark, check=_postmark_settings),
]}


class _FileTable(PydanticBaseSettingsSource):
    """The settings file's `[connectors]` table; a key that is no step kind is an error."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        raise NotImplementedError  # __call__ reads the whole table at once

    def __call__(self) -> dict[str, Any]:
        path, data = read_settings_file()
        table = data.get(TABLE, {})
        if not isinstance(table, dict):
            raise ConnectorSettingsError(f"settings file {path}: `{TABLE}` must be a table ([{TABLE}])")
        known = list(self.settings_cls.model_fields)
        for key in table:
            if key not in known:
                close = closest(key, known)
                hint = f"did you mean '{close}'?" if close else f"step kinds: {', '.join(known)}"
                raise ConnectorSettingsError(f"settings file {path}: [{TABLE}] {_shown(key)} is no step kind; {hint}")
        return dict(table)


class _Base(FileBackedSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)
    file_source = _FileTable

    default: str = DEFAULT


@cache
def _settings_class(kinds: tuple[str, ...]) -> type[_Base]:
    """One optional field per acting kind, so a kind added to ACTIONS is a setting at once."""
    fields: dict[str, Any] = {kind: (str | None, None) for kind in kinds}
    return create_model("ConnectorSettings", __base__=_Base, **fields)


def choose(**overrides: str) -> dict[str, str]:
    """The connector name for every acting kind: `overrides`, then the environment, the file, `default`."""
    cls: Callable[..., _Base] = _settings_class(tuple(cb.ACTIONS))  # fields made at run time
    try:
        settings = cls(**overrides)
    except ValidationError as exc:
        raise ConnectorSettingsError("; ".join(
            f"{ENV_PREFIX}{e['loc'][0]}".upper() + f": {e['msg']}" if e.get("loc") else str(e["msg"])
            for e in exc.errors())) from None
    chosen = {kind: getattr(settings, kind) or settings.default for kind in cb.ACTIONS}
    for kind, name in [("default", settings.default), *chosen.items()]:
        if name not in REGISTRY:
            path, _ = settings_file()
            where = f"{ENV_PREFIX}{kind.upper()} or `{kind}` in [{TABLE}] of {path}"
            close = closest(name, REGISTRY)
            hint = f"did you mean '{close}'? " if close else ""
            raise ConnectorSettingsError(
                f"{where}: {_shown(name)} is not a connector; {hint}known: {', '.join(REGISTRY)}")
    for kind, name in chosen.items():
        serves = REGISTRY[name].serves
        if serves is not None and not serves(kind):
            path, _ = settings_file()
            where = (f"{ENV_PREFIX}{kind.upper()} or `{kind}` in [{TABLE}] of {path}" if getattr(settings, kind)
                     else f"{ENV_PREFIX}DEFAULT or `default` in [{TABLE}] of {path}")
            able = ", ".join(k for k in cb.ACTIONS if serves(k))
            raise ConnectorSettingsError(f"{where}: the {name} connector does not act on {kind} steps "
                                         f"(it acts on {able}); choose another for {kind}")
    for name in sorted(set(chosen.values())):
        check = REGISTRY[name].check
        if check is not None:
            check()
    # Sandbox mode that would let a message kind out unrewritten stops here, before anything is built.
    from connectors import sandbox

    local = frozenset(name for name, i in REGISTRY.items() if i.local)
    sandbox.check(chosen, sandbox.load_sandbox_settings(), local)
    return chosen


def load_connectors(store: Store | None, **overrides: str) -> cb.Connectors:
    """The Connectors the settings choose; one instance per connector name, shared by its kinds."""
    from connectors import sandbox

    chosen = choose(**overrides)  # sandbox mode checked there
    built = {name: REGISTRY[name].build(store) for name in sorted(set(chosen.values()))}
    by_kind = {kind: built[name] for kind, name in chosen.items()}
    return cb.Connectors(sandbox.apply(by_kind, sandbox.load_sandbox_settings()))


RATE_ENV_PREFIX = "PLAYBOOK_RATE_"
RATE_TABLE = "rates"


def rates(environ: Mapping[str, str] | None = None) -> dict[str, float]:
    """Activities per second for the connectors that have a limit: the environment, then `[rates]`.

    Every worker must be given the same rates: the server keeps one rate per
    task queue, and the last worker to poll sets it."""
    env = os.environ if environ is None else environ
    path, data = read_settings_file()
    table = data.get(RATE_TABLE, {})
    if not isinstance(table, dict):
        raise ConnectorSettingsError(f"settings file {path}: `{RATE_TABLE}` must be a table ([{RATE_TABLE}])")
    raw: dict[str, tuple[Any, str]] = {}
    for key, value in table.items():
        if key not in REGISTRY:
            close = closest(key, REGISTRY)
            hint = f"did you mean '{close}'? " if close else ""
            raise ConnectorSettingsError(
                f"settings file {path}: [{RATE_TABLE}] {_shown(key)} is not a connector; {hint}known: {', '.join(REGISTRY)}")
        raw[key] = (value, f"`{key}` in [{RATE_TABLE}] of {path}")
    for name in REGISTRY:
        var = f"{RATE_ENV_PREFIX}{name.upper().replace('-', '_')}"
        if env.get(var, "").strip():
            raw[name] = (env[var].strip(), var)
    out: dict[str, float] = {}
    for name, (value, where) in raw.items():
        try:
            rate = float(value)
        except (TypeError, ValueError):
            rate = -1.0
        if not rate > 0 or rate == float("inf") or isinstance(value, bool):
            raise ConnectorSettingsError(f"{where}: a rate is activities per second, a number above 0 "
                                         f"(got {_shown(str(value)) if not isinstance(value, (int, float)) else value})")
        out[name] = rate
    return out


def describe(chosen: Mapping[str, str]) -> str:
    """`email=store, task=store, ...`: names only, for the worker's first log line."""
    return ", ".join(f"{kind}={name}" for kind, name in chosen.items())


def _shown(value: str) -> str:
    """A value as errors may show it: a plain name, or nothing of it."""
    return f"'{value}'" if _NAME.match(value) else "the value (not shown: not a plain name)"


__all__ = ["REGISTRY", "ConnectorSettingsError", "Implementation", "choose", "describe", "load_connectors", "rates"]
