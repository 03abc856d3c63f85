"""`playbook webhooks`: endpoints a 410 disabled, listed without their secrets, and enabled again."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from cli.main import run
from engine import endpoints
from engine.store import Store

AT = dt.datetime(2026, 3, 9, 14, 0, tzinfo=dt.timezone.utc)
SECRET_URL = "https://hooks.example.test/in/abc?token=s3cret"


@pytest.fixture()
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/store.db"
    store = Store.open(url)
    with store.begin() as conn:
        conn.execute(store.table("account").insert(), [{"id": "acme", "name": "Acme"}])
        endpoints.disable(conn, SECRET_URL, at=AT, reason="HTTP 410 Gone at play p step s1")
    store.close()
    return url


def test_the_list_shows_when_and_why_without_the_query(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["webhooks", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "https://hooks.example.test/in/abc  disabled 2026-03-09 14:00:00 UTC  (HTTP 410 Gone" in out
    assert "s3cret" not in out
    assert run(["webhooks", "--db", db, "--format", "json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["url"] == "https://hooks.example.test/in/abc" and row["disabled_at"].startswith("2026-03-09T14:00")


def test_enable_by_the_url_as_shown_removes_the_mark(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["webhooks", "--db", db, "--enable", "https://hooks.example.test/in/abc"]) == 0
    assert "enabled https://hooks.example.test/in/abc" in capsys.readouterr().out
    assert run(["webhooks", "--db", db]) == 0
    assert capsys.readouterr().out.strip() == "no webhook endpoint is disabled"


def test_enabling_an_endpoint_that_is_not_disabled_is_bad_usage(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["webhooks", "--db", db, "--enable", "https://other.example.test/x?token=zzz"]) == 2
    err = capsys.readouterr().err
    assert "https://other.example.test/x is not disabled" in err and "zzz" not in err and "s3cret" not in err
