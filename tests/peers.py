"""Real protocol peers for connector tests: Prism (HubSpot's own OpenAPI specs) and WireMock.

Written by others, installed from npm on first use into `.peers/` at the
repository root (or `$PLAYBOOK_PEERS_DIR`), under a file lock so parallel
test workers install once. Each peer runs as its own process group on a
free loopback port and is stopped by pid. A peer that cannot be installed
or started raises `PeerError`: the test fails loudly, it is never skipped.

    with wiremock() as wm:                     # http://127.0.0.1:PORT
        wm.stub({"request": {...}, "response": {...}})
    with prism_mock(HUBSPOT / "objects.json") as url: ...
    with prism_proxy(HUBSPOT / "objects.json", wm.url) as url: ...   # spec-checked WireMock
    with imap_server("user", "password") as port: ...   # pymap (PyPI), plain IMAP; APPEND to fill it
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
HUBSPOT = Path(__file__).resolve().parent / "peer_specs" / "hubspot"  # copied in: a clean clone is enough
PACKAGES = ["@stoplight/prism-cli@5.14.2", "wiremock@3.13.2"]  # 5.16 needs a newer Node (peers README)


class PeerError(RuntimeError):
    """A peer could not be installed or started: the environment, reported loudly."""


def peers_dir() -> Path:
    return Path(os.environ.get("PLAYBOOK_PEERS_DIR", ROOT / ".peers"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node_tools() -> Path:
    """The folder holding node_modules with Prism and WireMock, installed once."""
    folder = peers_dir()
    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / ".installed"
    wanted = " ".join(PACKAGES)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text() == wanted:
            return folder
        npm = shutil.which("npm")
        if npm is None:
            raise PeerError("npm is not on PATH: Prism and WireMock install from the npm registry")
        done = subprocess.run([npm, "install", "--prefix", str(folder), "--no-audit", "--no-fund", "--silent",
                               *PACKAGES], capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise PeerError(f"npm install {wanted} failed ({done.returncode}): {done.stderr[-2000:]}")
        stamp.write_text(wanted)
    return folder


class Process:
    """One peer process: started in its own session, stopped by pid (its whole group)."""

    def __init__(self, name: str, argv: Sequence[str], port: int, log: Path) -> None:
        self.name, self.port, self.log_path = name, port, log
        self.url = f"http://127.0.0.1:{port}"
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(list(argv), stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, probe: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PeerError(f"{self.name} exited with {self.proc.returncode} at start:\n{self.log_tail()}")
            try:
                httpx.get(self.url + probe, timeout=1.0)
                return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        raise PeerError(f"{self.name} did not answer on {self.url} within {timeout:.0f} s:\n{self.log_tail()}")

    def wait_banner(self, banner: bytes, timeout: float = 60.0) -> None:
        """Ready when a TCP connection to the port is greeted with `banner` (IMAP's `* OK`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PeerError(f"{self.name} exited with {self.proc.returncode} at start:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2.0) as conn:
                    if conn.recv(200).startswith(banner):
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise PeerError(f"{self.name} did not greet on port {self.port} within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, size: int = 3000) -> str:
        self._log.flush()
        return self.log_path.read_bytes()[-size:].decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        self._log.close()


def _logs() -> Path:
    folder = peers_dir() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def _running(name: str, argv: Sequence[str], port: int, probe: str) -> Iterator[Process]:
    proc = Process(name, argv, port, _logs() / f"{name}-{port}.log")
    try:
        proc.wait_ready(probe)
        yield proc
    finally:
        proc.stop()


class WireMock:
    """A running WireMock: stubs and the requests it received, over its admin API."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.admin = httpx.Client(base_url=url + "/__admin", timeout=10.0)

    def stub(self, mapping: dict[str, Any]) -> None:
        r = self.admin.post("/mappings", json=mapping)
        if r.status_code >= 300:
            raise PeerError(f"WireMock refused a stub ({r.status_code}): {r.text}")

    def reset(self) -> None:
        self.admin.post("/reset").raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        """Every request received, oldest first."""
        got = self.admin.get("/requests").json()["requests"]
        return [r["request"] for r in reversed(got)]


@contextmanager
def wiremock() -> Iterator[WireMock]:
    jar = node_tools() / "node_modules" / "wiremock" / "build" / "wiremock-standalone-3.13.2.jar"
    java = shutil.which("java")
    if java is None:
        raise PeerError("java is not on PATH: WireMock needs Java 17")
    port = free_port()
    argv = [java, "-jar", str(jar), "--bind-address", "127.0.0.1", "--port", str(port), "--disable-banner"]
    with _running("wiremock", argv, port, "/__admin/mappings") as proc:
        wm = WireMock(proc.url)
        try:
            yield wm
        finally:
            wm.admin.close()


def _prism() -> str:
    return str(node_tools() / "node_modules" / ".bin" / "prism")


@contextmanager
def prism_mock(spec: Path) -> Iterator[str]:
    """Prism answering from `spec`'s examples, validating every request against it."""
    port = free_port()
    with _running("prism-mock", [_prism(), "mock", "-h", "127.0.0.1", "-p", str(port), str(spec)], port, "/") as p:
        yield p.url


@contextmanager
def prism_proxy(spec: Path, upstream: str) -> Iterator[str]:
    """Prism validating requests and answers against `spec`, passing them to `upstream` (WireMock)."""
    port = free_port()
    argv = [_prism(), "proxy", "--errors", "-h", "127.0.0.1", "-p", str(port), str(spec), upstream]
    with _running("prism-proxy", argv, port, "/") as p:
        yield p.url


# --------------------------------------------------------------------------
# SMTP: aiosmtpd (in-process, on its own thread and event loop)


class SmtpPeer:
    """An aiosmtpd handler that keeps what arrives and answers as a test scripts it.

    `messages`: every accepted message, parsed (email.message.EmailMessage), with
    `envelopes` beside them (MAIL FROM, RCPT TOs). `refuse(address, reply)`
    answers RCPT for that address with `reply` every time ("550 5.1.1 no such
    user"); `script(command, *replies)` answers the next MAIL, RCPT or DATA
    commands with these replies, one each, then 250 again.
    """

    def __init__(self) -> None:
        import threading

        self.messages: list[Any] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.commands: list[str] = []  # MAIL, RCPT, DATA as they came
        self.logins: list[str] = []  # user names that logged in
        self._refused: dict[str, str] = {}
        self._scripted: dict[str, list[str]] = {"MAIL": [], "RCPT": [], "DATA": []}
        self._lock = threading.Lock()

    def refuse(self, address: str, reply: str) -> None:
        self._refused[address.lower()] = reply

    def script(self, command: str, *replies: str) -> None:
        with self._lock:
            self._scripted[command].extend(replies)

    def _next(self, command: str) -> str | None:
        with self._lock:
            self.commands.append(command)
            queue = self._scripted[command]
            return queue.pop(0) if queue else None

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        reply = self._next("MAIL")
        if reply is not None:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        reply = self._next("RCPT")
        if reply is not None:
            return reply
        if address.lower() in self._refused:
            return self._refused[address.lower()]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import email
        import email.policy

        reply = self._next("DATA")
        if reply is not None:
            return reply
        with self._lock:
            self.messages.append(email.message_from_bytes(envelope.original_content or envelope.content,
                                                          policy=email.policy.default))
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"


@contextmanager
def smtp_server(handler: SmtpPeer | None = None, *, implicit_tls: Any = None, starttls: Any = None,
                logins: dict[str, str] | None = None) -> Iterator[tuple[SmtpPeer, int]]:
    """aiosmtpd on a free loopback port: (handler, port).

    `implicit_tls` / `starttls`: a server-side ssl.SSLContext for TLS from the
    first byte or after STARTTLS (then required). `logins`: user -> password
    that AUTH PLAIN/LOGIN accepts (then required, after TLS).
    """
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    peer = handler or SmtpPeer()
    kwargs: dict[str, Any] = {}
    if starttls is not None:
        kwargs |= {"tls_context": starttls, "require_starttls": True}
    if logins is not None:
        def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
            ok = (isinstance(data, LoginPassword)
                  and logins.get(data.login.decode()) == data.password.decode())
            if ok:
                peer.logins.append(data.login.decode())
            return AuthResult(success=ok, handled=False)

        # Implicit TLS is invisible to aiosmtpd's own TLS check: it would never offer AUTH.
        kwargs |= {"authenticator": authenticate, "auth_required": True, "auth_require_tls": implicit_tls is None}
    port = free_port()
    controller = Controller(peer, hostname="127.0.0.1", port=port, ssl_context=implicit_tls,
                            server_hostname="localhost", ready_timeout=10.0, **kwargs)
    try:
        controller.start()
    except Exception as exc:  # noqa: BLE001 - a peer that cannot start fails the test loudly
        raise PeerError(f"aiosmtpd could not start on 127.0.0.1:{port}: {type(exc).__name__}: {exc}") from exc
    try:
        yield peer, port
    finally:
        controller.stop()


@contextmanager
def imap_server(user: str, password: str) -> Iterator[int]:
    """pymap (PyPI, the in-memory `dict` backend) on a free loopback port without TLS: its port.
    One mailbox owner, `user` with `password`; messages are added with IMAP APPEND."""
    pymap = Path(sys.executable).with_name("pymap")
    if not pymap.exists():
        raise PeerError(f"pymap is not installed beside {sys.executable}: pip install -e '.[test]'")
    port = free_port()
    argv = [str(pymap), "--host", "127.0.0.1", "--port", str(port), "--no-tls", "dict",
            "--demo-user", user, "--demo-password", password]
    proc = Process("pymap", argv, port, _logs() / f"pymap-{port}.log")
    try:
        proc.wait_banner(b"* OK")
        yield port
    finally:
        proc.stop()
