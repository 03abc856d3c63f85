"""What every `playbook` command module shares: exit codes, the usage-problem
exception, and the options that mean the same thing everywhere.

A leaf module on purpose. `Fail` used to live in cli.main, which each command
module could only import lazily (cli.main imports them at its end), and under
`python -m cli.main` that import made a second module with its own `Fail`
class the running guard did not catch. Defined here, there is one class.
"""

from __future__ import annotations

import datetime as dt
import enum
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from dsl.catalog import Catalog
    from engine.settings import EngineSettings
    from engine.store import Store

T = TypeVar("T")

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
# The environment, not the input and not a bug: a store or server (database,
# Temporal) could not be reached (retried first where a retry can help), or this
# Python lacks a package playbook depends on.
EXIT_UNREACHABLE = 4
# Our own top-level packages: a module missing among them is a bug, any other an install.
OWN_PACKAGES = frozenset({"dsl", "engine", "workflows", "connectors", "cli"})


class Fail(Exception):
    """A usage problem found inside a command (exit 2), reported like click's."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE):
        super().__init__(message)
        self.message, self.exit_code = message, exit_code


def failure(exc: BaseException) -> Fail | None:
    """How a command ends when `exc` is no bug: the one mapping from an exception
    to an exit code (and so to the JSON error kind, `error_kind`), shared by
    cli.main's guard and the Temporal commands' way out (cli/workflow_commands.py).

    Modules never imported cannot have raised: they are looked up, not imported.
    """
    if isinstance(exc, Fail):
        return exc
    return (_install_failure(exc) or _temporal_failure(exc) or _store_failure(exc)
            or _settings_failure(exc))


def error_kind(exit_code: int) -> str:
    """The `kind` of the JSON error document for an exit code: one kind per code."""
    return {EXIT_UNREACHABLE: "unreachable", EXIT_INTERNAL: "internal"}.get(exit_code, "usage")


def _install_failure(exc: BaseException) -> Fail | None:
    """A dependency missing from this Python (an install older than pyproject.toml, or
    another interpreter): the environment (4), said with how to repair it."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    package = exc.name.partition(".")[0]
    if package in OWN_PACKAGES:
        return None
    return Fail(f"the package that provides {package!r} is not installed in {sys.executable}: install playbook "
                "with its dependencies (`./run tests` keeps .venv up to date, or `pip install -e .`)",
                EXIT_UNREACHABLE)


def _temporal_failure(exc: BaseException) -> Fail | None:
    """No Temporal answering (4), a malformed Temporal setting found only when connecting (2)."""
    client, temporal_settings = sys.modules.get("workflows.client"), sys.modules.get("workflows.settings")
    if client is not None and isinstance(exc, client.TemporalUnreachable):
        return Fail(str(exc), EXIT_UNREACHABLE)
    if temporal_settings is not None and isinstance(exc, temporal_settings.SettingsError):
        return Fail(f"Temporal settings: {exc}", EXIT_USAGE)
    service = sys.modules.get("temporalio.service")
    if (service is not None and client is not None and isinstance(exc, service.RPCError)
            and exc.status in (service.RPCStatusCode.UNAVAILABLE, service.RPCStatusCode.DEADLINE_EXCEEDED)):
        return Fail(f"Temporal stopped answering ({client.connect_failure(exc)})", EXIT_UNREACHABLE)
    return None


def _store_failure(exc: BaseException) -> Fail | None:
    """The store missing or empty (2: the user names a wrong place or has not filled
    it), or unreachable (4)."""
    store = sys.modules.get("engine.store")
    if store is None:
        return None
    if isinstance(exc, store.StoreError):
        return Fail(str(exc), EXIT_USAGE)
    fault = store.unreachable(exc, "")  # StoreUnreachable, also a raw driver error no command wrapped
    return None if fault is None else Fail(str(fault), EXIT_UNREACHABLE)


def _settings_failure(exc: BaseException) -> Fail | None:
    """A setting that cannot be used, found deep inside a command (the store URL read by
    engine.store.default_url): bad usage, not a bug."""
    module = sys.modules.get("engine.settings")
    if module is None or not isinstance(exc, module.SettingsError):
        return None
    return Fail(f"settings: {exc}", EXIT_USAGE)


class TextOrJson(str, enum.Enum):
    text = "text"
    json = "json"


DbOpt = Annotated[str | None, typer.Option(
    "--db", "--database", help="Store URL [setting database_url: env PLAYBOOK_DATABASE_URL or "
                               ".playbook/settings.toml; default .playbook/playbook.db].",
    show_default=False)]


def settings(exit_code: int = EXIT_USAGE) -> EngineSettings:
    """The decision settings (engine/settings.py) every command reads; a bad one is bad usage."""
    from engine.settings import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError as exc:
        raise Fail(f"settings: {exc}", exit_code) from exc


def parse_day(value: str | None, option: str = "--today", exit_code: int = EXIT_USAGE) -> dt.date | None:
    """The one parser of a day given on the command line (YYYY-MM-DD), with the one message."""
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise Fail(f"{option} wants a date such as 2026-06-01 (YYYY-MM-DD), not {value!r}", exit_code) from None


def today(value: str | None, exit_code: int = EXIT_USAGE) -> dt.date:
    """`--today` if given, else today in the team's time zone (the setting `time_zone`)."""
    return parse_day(value, exit_code=exit_code) or settings(exit_code).today()


TodayOpt = Annotated[str | None, typer.Option(
    "--today", help="Evaluate as of this day, YYYY-MM-DD [default: today in the team's time zone, "
                    "env PLAYBOOK_TIME_ZONE, default UTC].", show_default=False)]


@contextmanager
def reading_store(db: str | None, catalog: Catalog | None = None, exit_code: int = EXIT_USAGE) -> Iterator[Store]:
    """The store opened for reading (nothing created, migrated or written).

    Missing or empty: `exit_code` (2, or 1 under --detailed-exitcode); not
    reachable, also midway: 4.
    """
    import sqlalchemy as sa

    from engine.store import Store, StoreError, StoreUnreachable, unreachable

    try:
        store = Store.open(db, catalog=catalog, read_only=True)
    except StoreUnreachable as e:
        raise Fail(str(e), EXIT_UNREACHABLE) from e
    except StoreError as e:
        raise Fail(str(e), exit_code) from e
    note_missing_columns(store.missing_columns)
    try:
        yield store
    except sa.exc.DBAPIError as e:
        fault = unreachable(e, store.url)
        if fault is None:
            raise
        raise Fail(str(fault), EXIT_UNREACHABLE) from e
    finally:
        store.close()


def note_missing_columns(fields: list[str], where: str = "") -> None:
    """Say on stderr which declared fields a reading command reads as empty (they have no column)."""
    if fields:
        print(f"playbook: note: the store has no column for {', '.join(fields)} (declared by the rules{where} "
              "since its data was written): read as empty; importing data with these fields adds them",
              file=sys.stderr)


def read(store: Store, work: Callable[[Connection], T]) -> T:
    """`work` on a fresh connection, run again over a transient fault (safe: it only reads)."""

    def attempt() -> T:
        with store.connect() as conn:
            return work(conn)

    return store.retry(attempt)
