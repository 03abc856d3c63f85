"""`playbook serve` as a process: listens, stores a signed event while Temporal is down, stops on SIGTERM;
a port in use or a bad setting is exit 2 before anything starts."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from engine import schema
from engine.store import Store

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def env(tmp_path):
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    with Store.open(url) as store, store.begin() as conn:
        conn.execute(schema.Account.__table__.insert(), [{"id": "acme", "name": "Acme"}])
    return {**os.environ, "PYTHONPATH": str(ROOT), "PLAYBOOK_DATABASE_URL": url, "PLAYBOOK_SETTINGS_FILE": "",
            "PLAYBOOK_SERVE_WEBHOOK_SECRET": SECRET, "PLAYBOOK_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}"}


def serve(env: dict[str, str], cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "cli.main", "serve", *args], env=env, cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def test_serve_stores_a_signed_event_while_temporal_is_down_and_stops_on_sigterm(env, tmp_path):
    proc = serve(env, tmp_path, "--port", "0")
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert "listening on http://127.0.0.1:" in line, line + (proc.stderr.read() if proc.stderr else "")
        base = line.split("listening on ", 1)[1].split()[0]
        body = json.dumps({"type": "replied", "data": {"account_id": "acme"}}).encode()
        now = dt.datetime.now(dt.timezone.utc)
        headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(now.timestamp())),
                   "webhook-signature": Webhook(SECRET).sign("msg_1", now, body)}
        assert httpx.post(base + "/events", content=body, headers=headers, timeout=10).status_code == 202
        assert httpx.get(base + "/healthz", timeout=10).json() == {"ok": True, "pending_signals": 1}
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err
    assert SECRET not in out + err and "Traceback" not in err


def test_a_port_in_use_is_bad_usage(env, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = serve(env, tmp_path, "--port", str(port))
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and f"127.0.0.1:{port}: in use" in err


def test_a_bad_serve_setting_is_named_and_its_value_never_shown(env, tmp_path):
    proc = serve({**env, "PLAYBOOK_SERVE_RETRY_SECONDS": "-1"}, tmp_path)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "PLAYBOOK_SERVE_RETRY_SECONDS" in err and SECRET not in err
