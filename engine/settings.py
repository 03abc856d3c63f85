"""The settings that change decisions, read from one place by every command.

Who is enrolled and what is sent depend on a few knobs the .play files do not
say: the team's time zone (which day "today" is), the email frequency cap and
the route that says the motion. `playbook plan` and `why` preview exactly what
`sweep`, the worker and the Schedule decide only if all of them read these
values the same way, so they all call `load_settings()`:

| setting          | environment              | default  |
|------------------|--------------------------|----------|
| `time_zone`      | `PLAYBOOK_TIME_ZONE`     | `UTC` (an IANA name: `Europe/Berlin`) |
| `email_cap`      | `PLAYBOOK_EMAIL_CAP`     | `3` emails per contact, across plays ... |
| `email_cap_days` | `PLAYBOOK_EMAIL_CAP_DAYS`| `7` ... in this many days |
| `route`          | `PLAYBOOK_ROUTE`         | `touch` (empty: no route) |
| `database_url`   | `PLAYBOOK_DATABASE_URL`  | `.playbook/playbook.db` under the working folder |
| `pipeline_holidays` | `PLAYBOOK_PIPELINE_HOLIDAYS` | none: regions (`US, US-CA`) whose public holidays are no business days for pipeline SLAs (counted in `time_zone`) |
| `sla_grace_days` | `PLAYBOOK_SLA_GRACE_DAYS`| `1` business day after an SLA breach before the owner's manager is told |

Highest first: the environment, the settings file
(`$PLAYBOOK_SETTINGS_FILE`, default `.playbook/settings.toml`: outside git,
so secrets and per-team values stay out of the repository), the defaults.
The file's top-level keys are the settings above; its tables belong to other
modules: `[connectors]` and `[temporal]` to connectors/settings.py and
workflows/settings.py, a connector's own (`[hubspot]`, `[slack]`, ...:
OTHER_TABLES) to that connector, read with `table_source`.
"""

from __future__ import annotations

import datetime as dt
import os
import tomllib
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from dsl.suggest import closest
from engine import enroll

ENV_PREFIX = "PLAYBOOK_"
SETTINGS_FILE_ENV = "PLAYBOOK_SETTINGS_FILE"
DEFAULT_SETTINGS_FILE = Path(".playbook") / "settings.toml"
# Tables of the settings file that other modules read; the engine leaves them alone.
OTHER_TABLES = (
    "connectors",
    "temporal",
    "hubspot",
    "slack",
    "webhooks",
    "sandbox",
    "postmark",
    "email",
    "smtp",
    "serve",
    "sources",
    "doctor",
)


def clock() -> dt.datetime:
    """The instant now, in UTC (tests replace it to stand near midnight)."""
    return dt.datetime.now(dt.timezone.utc)


class SettingsError(ValueError):
    """Settings that cannot be used: a bad value, an unreadable or malformed file, an unknown key."""


def settings_file() -> tuple[Path, bool]:
    """The settings file and whether it was named explicitly (then it must exist)."""
    named = os.environ.get(SETTINGS_FILE_ENV, "").strip()
    return (Path(named).expanduser(), True) if named else (DEFAULT_SETTINGS_FILE, False)


def read_settings_file() -> tuple[Path, dict[str, Any]]:
    """The settings file's content ({} when the default file does not exist)."""
    path, explicit = settings_file()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if explicit:
            raise SettingsError(f"{SETTINGS_FILE_ENV}={path}: no such file") from None
        return path, {}
    except OSError as exc:
        raise SettingsError(f"settings file {path}: cannot read it: {exc.strerror or exc}") from None
    try:
        return path, tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"settings file {path}: not valid TOML: {exc}") from None


class _FileSource(PydanticBaseSettingsSource):
    """The top-level keys of the settings file; an unknown key is an error (a typo would
    otherwise leave a cap silently at its default)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        raise NotImplementedError  # __call__ reads the whole file at once

    def __call__(self) -> dict[str, Any]:
        path, data = read_settings_file()
        known = set(self.settings_cls.model_fields)
        for key in data:
            if key not in known and key not in OTHER_TABLES:
                close = closest(key, [*known, *OTHER_TABLES])
                hint = f"; did you mean '{close}'?" if close else f"; known: {', '.join(sorted(known))}"
                raise SettingsError(f"settings file {path}: unknown setting '{key}'{hint}")
        return {k: v for k, v in data.items() if k in known}


class TableSource(PydanticBaseSettingsSource):
    """One table of the settings file (`[slack]`, `[sandbox]`, ...), named by `table` in a
    subclass (`table_source`); a key the settings class does not have is an error with a
    did-you-mean, and values are never echoed (the table may hold a token)."""

    table: ClassVar[str]

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        raise NotImplementedError  # __call__ reads the whole table at once

    def __call__(self) -> dict[str, Any]:
        path, data = read_settings_file()
        table = data.get(self.table, {})
        if not isinstance(table, dict):
            raise SettingsError(f"settings file {path}: `{self.table}` must be a table ([{self.table}])")
        refuse_unknown(path, self.table, table, list(self.settings_cls.model_fields))
        return dict(table)


def refuse_unknown(path: Path, where: str, table: dict[str, Any], known: list[str]) -> None:
    """A key of the settings file's `[where]` table that is no setting: an error with a did-you-mean."""
    for key in table:
        if key not in known:
            close = closest(key, known)
            hint = f"did you mean '{close}'?" if close else f"known: {', '.join(known)}"
            raise SettingsError(f"settings file {path}: [{where}] has no setting '{key}'; {hint}")


def table_problems(exc: ValidationError, env_prefix: str, table: str) -> str:
    """A settings class's validation errors, each naming its variable and `[table]`: location and
    message only, since pydantic's `input` may be a secret."""
    path, _ = settings_file()
    return "; ".join(f"{env_prefix}{'_'.join(map(str, e['loc'])).upper()} or [{table}] in {path}: "
                     + str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())


def setting_problems(exc: ValidationError, env_prefix: str, table: str, *, whole: str | None = None) -> str:
    """A settings class's validation errors, each naming its variable and where in the settings file it is:
    `PREFIX_NAME or `name` in [table] of FILE: message`; with `whole` (a connector's older wording)
    `PREFIX_NAME (or `name` in [table] of FILE): message` and `whole: message` for the model's own checks,
    else `[table] of FILE: message`. Location and message only: pydantic's `input` may be a secret."""
    path, _ = settings_file()

    def one(e: Any) -> str:
        msg = str(e["msg"]).removeprefix("Value error, ")
        name = e["loc"][0] if e.get("loc") else None
        variable = f"{env_prefix}{name}".upper()
        if whole is not None:
            return f"{variable} (or `{name}` in [{table}] of {path}): {msg}" if name is not None else f"{whole}: {msg}"
        return f"{variable} or `{name}` in [{table}] of {path}: {msg}" if name is not None else f"[{table}] of {path}: {msg}"

    return "; ".join(one(e) for e in exc.errors())


def table_source(name: str) -> type[TableSource]:
    """The source reading the settings file's `[name]` table (add `name` to OTHER_TABLES)."""
    return type(f"TableSource_{name}", (TableSource,), {"table": name})


class FileBackedSettings(BaseSettings):
    """Settings read from the values given, then the environment, then the settings
    file through `file_source` (no .env or secrets folder)."""

    file_source: ClassVar[type[PydanticBaseSettingsSource]]

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, cls.file_source(settings_cls)


class EngineSettings(FileBackedSettings):
    """Decision settings; build with `load_settings()`."""

    file_source = _FileSource

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    time_zone: str = "UTC"
    email_cap: int = Field(default=3, ge=0)
    email_cap_days: int = Field(default=7, ge=1)
    route: str | None = "touch"
    database_url: str | None = None
    pipeline_holidays: str = ""
    sla_grace_days: int = Field(default=1, ge=0)

    @field_validator("pipeline_holidays")
    @classmethod
    def _known_regions(cls, value: str) -> str:
        from dsl.calendars import region_problem, split_region

        for code in cls.regions(value):
            problem = region_problem(*split_region(code))
            if problem is not None:
                hint = f"; did you mean '{problem.suggestion}'?" if problem.suggestion else ""
                raise ValueError(f"{problem.message}{hint}")
        return value

    @staticmethod
    def regions(value: str) -> list[str]:
        return [c.strip() for c in value.split(",") if c.strip()]

    @property
    def pipeline_regions(self) -> list[str]:
        """The holiday regions of the pipeline's business days (`US`, `US-CA`)."""
        return self.regions(self.pipeline_holidays)

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            best = closest(value, available_timezones())
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Berlin or UTC)"
                             + (f"; did you mean {best!r}?" if best else "")) from None
        return value

    @field_validator("route", "database_url")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def today(self, now: dt.datetime | None = None) -> dt.date:
        """The team's date at `now` (default: the clock): the day rules are evaluated on."""
        instant = now if now is not None else clock()
        if instant.tzinfo is None:  # a naive instant is UTC, as the store writes them
            instant = instant.replace(tzinfo=dt.timezone.utc)
        return instant.astimezone(self.zone).date()

    def decisions_json(self) -> dict[str, Any]:
        """The settings a decision depends on, for reports (never the store URL: it may hold a password)."""
        return {"time_zone": self.time_zone, "email_cap": self.email_cap, "email_cap_days": self.email_cap_days,
                "route": self.route}

    def describe(self) -> str:
        return (f"email cap {self.email_cap} per {self.email_cap_days} days, route {self.route or '(none)'}, "
                f"time zone {self.time_zone}")

    def enrollment(self) -> enroll.Settings:
        """The knobs engine/enroll.py decides with."""
        return enroll.Settings(email_cap=self.email_cap, email_cap_days=self.email_cap_days, route=self.route)


def load_settings() -> EngineSettings:
    """The settings now: the environment, then the file, then the defaults (no command-line flag
    overrides them, so no command can decide differently from another)."""
    try:
        return EngineSettings()
    except ValidationError as exc:
        raise SettingsError("; ".join(_problem(e) for e in exc.errors())) from None


def _problem(error: Any) -> str:
    name = str(error["loc"][0]) if error.get("loc") else "settings"
    path, _ = settings_file()
    where = f"{ENV_PREFIX}{name.upper()} or '{name}' in {path}"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{name} ({where}): {message}"


__all__ = ["DEFAULT_SETTINGS_FILE", "SETTINGS_FILE_ENV", "EngineSettings", "SettingsError", "TableSource",
           "load_settings", "read_settings_file", "settings_file", "table_source"]
