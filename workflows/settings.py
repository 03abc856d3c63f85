"""Where the worker and the CLI find Temporal: address, namespace, TLS, task queue.

Read from the environment, overridden by explicit values (CLI options):

| variable                              | default            |
|---------------------------------------|--------------------|
| `PLAYBOOK_TEMPORAL_ADDRESS`           | `localhost:7233`   |
| `PLAYBOOK_TEMPORAL_NAMESPACE`         | `default`          |
| `PLAYBOOK_TEMPORAL_TASK_QUEUE`        | `playbook`         |
| `PLAYBOOK_TEMPORAL_TLS`               | off (`1`: TLS with the system roots) |
| `PLAYBOOK_TEMPORAL_TLS_CERT`          | client certificate (PEM file, mTLS) |
| `PLAYBOOK_TEMPORAL_TLS_KEY`           | its private key (PEM file)          |
| `PLAYBOOK_TEMPORAL_TLS_CA`            | server CA (PEM file; default: system roots) |
| `PLAYBOOK_TEMPORAL_TLS_SERVER_NAME`   | SNI / name to verify, if not the host |
| `PLAYBOOK_TEMPORAL_API_KEY`           | API key (Temporal Cloud); implies TLS |
| `PLAYBOOK_TEMPORAL_UI`                | Web UI address for `playbook status` links (default: port + 1000 on localhost, cloud.temporal.io for Cloud) |
| `PLAYBOOK_WORKER_SHUTDOWN_SECONDS`    | `30`: in-flight activities get this long to finish at SIGTERM |
| `PLAYBOOK_WORKER_MAX_ACTIVITIES`      | `100`                                |
| `PLAYBOOK_WORKER_STICKY_TIMEOUT_SECONDS` | `10`: how long a play's next task waits for the worker that has it cached before any worker takes it (after a worker died) |

Below the environment, the `[temporal]` table of the settings file
(engine/settings.py: `$PLAYBOOK_SETTINGS_FILE`, default
`.playbook/settings.toml`, outside git) gives the same values by field name
(`address = "temporal.internal:7233"`, `tls_cert = "/etc/pki/c.pem"`, ...);
an unknown key there is an error with a suggestion.

Any TLS file given turns TLS on. A certificate without its key (or the
reverse) is refused here rather than failing at the handshake.
Plain pydantic: `from_env()` reads the file and a given environment mapping
(tests pass a dict), which pydantic-settings' sources do not take.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, model_validator

from dsl.suggest import closest
from engine import settings as engine_settings
from workflows.client import TASK_QUEUE

PREFIX = "PLAYBOOK_TEMPORAL_"
TABLE = "temporal"  # of the settings file
ENV = {
    "address": f"{PREFIX}ADDRESS",
    "namespace": f"{PREFIX}NAMESPACE",
    "task_queue": f"{PREFIX}TASK_QUEUE",
    "tls": f"{PREFIX}TLS",
    "tls_cert": f"{PREFIX}TLS_CERT",
    "tls_key": f"{PREFIX}TLS_KEY",
    "tls_ca": f"{PREFIX}TLS_CA",
    "tls_server_name": f"{PREFIX}TLS_SERVER_NAME",
    "api_key": f"{PREFIX}API_KEY",
    "ui_url": f"{PREFIX}UI",
    "shutdown_seconds": "PLAYBOOK_WORKER_SHUTDOWN_SECONDS",
    "max_activities": "PLAYBOOK_WORKER_MAX_ACTIVITIES",
    "sticky_timeout_seconds": "PLAYBOOK_WORKER_STICKY_TIMEOUT_SECONDS",
}


class SettingsError(engine_settings.SettingsError):
    """Settings that cannot work (a TLS file missing, a key without its certificate)."""


class TemporalSettings(BaseModel):
    address: str = "localhost:7233"
    namespace: str = "default"
    task_queue: str = TASK_QUEUE
    tls: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    tls_server_name: str | None = None
    api_key: str | None = Field(default=None, repr=False)
    ui_url: str | None = None
    shutdown_seconds: float = Field(default=30.0, ge=0)
    max_activities: int = Field(default=100, ge=1)
    sticky_timeout_seconds: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _tls_pairs(self) -> TemporalSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS client certificate and key go together: give both or neither")
        return self

    @property
    def uses_tls(self) -> bool:
        return self.tls or self.api_key is not None or any(
            p is not None for p in (self.tls_cert, self.tls_key, self.tls_ca))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> TemporalSettings:
        """`overrides` whose value is not None (CLI options), then the environment, then the
        settings file's `[temporal]` table."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = _file_table()
        for field, var in ENV.items():
            raw = env.get(var, "").strip()
            if raw:
                values[field] = raw.lower() in ("1", "true", "yes", "on") if field == "tls" else raw
        values |= {k: v for k, v in overrides.items() if v is not None}
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{ENV.get(str(e['loc'][0]), e['loc'][0]) if e['loc'] else 'settings'}: {e['msg']}"
                for e in exc.errors()
            )
            raise SettingsError(problems) from None

    def tls_config(self) -> Any:
        """False, or a temporalio TLSConfig with the files read (errors name the variable)."""
        from temporalio.service import TLSConfig

        if not self.uses_tls:
            return False

        def read(path: Path | None, field: str) -> bytes | None:
            if path is None:
                return None
            try:
                return path.expanduser().read_bytes()
            except OSError as exc:
                raise SettingsError(f"{ENV[field]}: cannot read {path}: {exc.strerror or exc}") from None

        return TLSConfig(
            server_root_ca_cert=read(self.tls_ca, "tls_ca"),
            client_cert=read(self.tls_cert, "tls_cert"),
            client_private_key=read(self.tls_key, "tls_key"),
            domain=self.tls_server_name,
        )

    def describe(self) -> str:
        tls = "off"
        if self.uses_tls:
            tls = "mTLS" if self.tls_cert else ("API key" if self.api_key else "on")
        return f"{self.address} namespace {self.namespace} task queue {self.task_queue} (TLS {tls})"


def _file_table() -> dict[str, Any]:
    try:
        path, data = engine_settings.read_settings_file()
    except engine_settings.SettingsError as exc:
        raise SettingsError(str(exc)) from None
    table = data.get(TABLE, {})
    if not isinstance(table, dict):
        raise SettingsError(f"settings file {path}: `{TABLE}` must be a table ([{TABLE}])")
    for key in table:
        if key not in ENV:
            close = closest(key, ENV)
            hint = f"did you mean '{close}'?" if close else f"known: {', '.join(ENV)}"
            raise SettingsError(f"settings file {path}: [{TABLE}] has no setting '{key}'; {hint}")
    return dict(table)


async def connect(settings: TemporalSettings) -> Any:
    """A client with the project's data converter.

    Raises TemporalUnreachable, with the cause in a few words, when no server
    answers: the SDK's own message is a Rust debug dump of several hundred
    characters. A malformed address is a SettingsError."""
    from temporalio.client import Client

    from workflows.client import DATA_CONVERTER, TemporalUnreachable, connect_failure

    tls = settings.tls_config()
    try:
        return await Client.connect(
            settings.address,
            namespace=settings.namespace,
            tls=tls,
            api_key=settings.api_key,
            data_converter=DATA_CONVERTER,
        )
    except RuntimeError as exc:  # "Failed client connect: ..."
        raise TemporalUnreachable(f"cannot reach Temporal at {settings.address} ({connect_failure(exc)})") from exc
    except ValueError as exc:  # "invalid target URL: ..."
        raise SettingsError(f"address {settings.address!r}: {exc}") from exc
