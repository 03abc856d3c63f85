"""`playbook sync`: exit codes and what it prints (the sync itself: tests/connectors/test_sources.py)."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from cli.main import run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from store_backends import PG_URL, pg_schema  # noqa: E402


def _warehouse(sql: str) -> None:
    """Run one statement in the PostgreSQL standing for the warehouse."""
    engine = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(sql))
    finally:
        engine.dispose()

RULES = '''\
entity account
  field arr money

source usage from warehouse
  query "select account_id, arr, updated_at from usage"
  incremental by updated_at
  account.id  = account_id
  account.arr = arr
'''


@pytest.fixture()
def rules(tmp_path: Path) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "sources.play").write_text(RULES, encoding="utf-8")
    return folder


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_warehouse_that_answers_nothing_is_exit_4_without_the_password(
        rules: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PLAYBOOK_SOURCE_USAGE_URL", f"postgresql+psycopg2://u:sekrit@127.0.0.1:{closed_port()}/db")
    code = run(["sync", "usage", "--rules", str(rules), "--db", f"sqlite:///{tmp_path}/store.db", "--format", "json"])
    captured = capsys.readouterr()
    assert code == 4
    (src,) = json.loads(captured.out)["sources"]
    assert src["status"] == "failed" and "cannot be reached" in src["error"]
    assert "sekrit" not in captured.out + captured.err


def test_an_unknown_source_is_bad_usage_with_did_you_mean(rules: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["sync", "usag", "--rules", str(rules), "--db", f"sqlite:///{tmp_path}/store.db"]) == 2
    assert "Did you mean 'usage'?" in capsys.readouterr().err


def test_a_source_without_its_url_names_the_setting(rules: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("PLAYBOOK_SOURCE_USAGE_URL", raising=False)
    monkeypatch.setenv("PLAYBOOK_SETTINGS_FILE", str(tmp_path / "none.toml"))
    (tmp_path / "none.toml").write_text("", encoding="utf-8")
    assert run(["sync", "--rules", str(rules), "--db", f"sqlite:///{tmp_path}/store.db"]) == 2
    assert "PLAYBOOK_SOURCE_USAGE_URL or `url` in [sources.usage]" in capsys.readouterr().err


def test_a_sync_prints_what_it_read_and_wrote_and_a_second_reads_nothing_new(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with pg_schema("usage (account_id text, arr numeric, updated_at timestamptz)") as schema:
        _warehouse(f"INSERT INTO \"{schema}\".usage VALUES ('a1', 10, now()), ('a2', 20, now())")
        folder = tmp_path / "rules"
        folder.mkdir()
        (folder / "s.play").write_text(RULES.replace("from usage", f"from {schema}.usage"), encoding="utf-8")
        monkeypatch.setenv("PLAYBOOK_SOURCE_USAGE_URL", PG_URL)
        db = f"sqlite:///{tmp_path}/store.db"
        assert run(["sync", "--rules", str(folder), "--db", db]) == 0
        assert capsys.readouterr().out == ("source usage: ok (from its cursor): 2 read in 1 batch(es), 2 new, "
                                           "0 updated, 0 value(s) changed, 0 refused\n")
        assert run(["sync", "usage", "--rules", str(folder), "--db", db, "--format", "json"]) == 0
        (src,) = json.loads(capsys.readouterr().out)["sources"]
        assert (src["status"], src["read"], src["batches"]) == ("ok", 0, 0)


SERIES = '''\
entity account
  field arr money?

metric api_calls per day

source usage from warehouse
  query "select account_id, day, calls, updated_at from usage"
  incremental by updated_at
  dated by day
  account.id       = account_id
  metric.api_calls = calls
'''


def _store_with_account_a1(tmp_path: Path, rules: str) -> tuple[Path, str]:
    """A rules folder holding `rules`, and a SQLite store (its URL) holding account a1."""
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "s.play").write_text(rules, encoding="utf-8")
    (tmp_path / "accounts.csv").write_text("id,name\na1,Acme\n", encoding="utf-8")
    db = f"sqlite:///{tmp_path}/store.db"
    assert run(["import", f"accounts={tmp_path / 'accounts.csv'}", "--rules", str(folder), "--db", db]) == 0
    return folder, db


def test_a_metric_sync_prints_the_points_it_wrote_and_a_bad_value_exits_1_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with pg_schema("usage (account_id text, day date, calls text, updated_at timestamptz)") as schema:
        _warehouse(f"INSERT INTO \"{schema}\".usage VALUES ('a1', '2026-11-01', '10', now()), "
                   "('a1', '2026-11-02', '12', now())")
        folder, db = _store_with_account_a1(tmp_path, SERIES.replace("from usage", f"from {schema}.usage"))
        monkeypatch.setenv("PLAYBOOK_SOURCE_USAGE_URL", PG_URL)
        capsys.readouterr()
        assert run(["sync", "--rules", str(folder), "--db", db]) == 0
        assert capsys.readouterr().out == ("source usage: ok (from its cursor): 2 read in 1 batch(es), "
                                           "2 metric point(s) written, 0 refused\n")
        _warehouse(f"INSERT INTO \"{schema}\".usage VALUES ('a1', '2026-11-03', 'n/a', now())")
        assert run(["sync", "--rules", str(folder), "--db", db]) == 1
        captured = capsys.readouterr()
        assert "source usage: record a1 2026-11-03 (account_id, day): metric.api_calls <- calls: " in captured.err
        assert captured.out.startswith("source usage: refused (from its cursor): 1 read in 0 batch(es), "
                                       "0 metric point(s) written, 1 refused")


NAMED = '''\
entity account
  field arr money?

event feature_used

source product from warehouse
  query "select account_id, name, at from events"
  incremental by at
  named by name
  account.id         = account_id
  event.feature_used = at
'''


def test_a_named_by_sync_prints_the_rows_it_skipped_by_event_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with pg_schema("events (account_id text, name text, at timestamptz)") as schema:
        _warehouse(f"INSERT INTO \"{schema}\".events VALUES ('a1', 'feature_used', now()), "
                   "('a1', 'Signed Up', now()), ('a1', 'Signed Up', now() - interval '1 hour')")
        folder, db = _store_with_account_a1(tmp_path, NAMED.replace("from events", f"from {schema}.events"))
        monkeypatch.setenv("PLAYBOOK_SOURCE_PRODUCT_URL", PG_URL)
        capsys.readouterr()
        assert run(["sync", "--rules", str(folder), "--db", db]) == 0
        assert capsys.readouterr().out == (
            "source product: ok (from its cursor): 3 read in 1 batch(es), 1 event(s) written, 0 refused, "
            "2 skipped (events this source does not land: 'Signed Up' x2)\n")
