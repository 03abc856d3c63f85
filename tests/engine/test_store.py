"""The store: migrations, declared columns, constraints other packages rely on; SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import sqlite3

import psycopg2
import psycopg2.errors
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from dsl.project import load_text
from engine import schema
from engine import store as store_module
from engine.store import ENV_URL, Store, StoreMissing, StoreUnreachable, default_url, insert_ignore, retrying
from store_backends import BACKENDS, fresh_store, pg_reason

V1 = """\
entity account
  field segment enum(smb, mid_market, enterprise)
  field arr money
  field usage_percent percent
  field renewal_date date
"""
# v2 adds one field to each entity and drops `arr` from the declaration.
V2 = """\
entity account
  field segment enum(smb, mid_market, enterprise)
  field usage_percent percent
  field renewal_date date
  field health_score number 0..100
entity contact
  field email text
  field title text?
"""


@pytest.fixture(params=BACKENDS)
def empty(request, tmp_path):
    with fresh_store(request.param, tmp_path, migrate=False) as store:
        yield store


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    with fresh_store(request.param, tmp_path) as s:
        yield s


def test_migrations_apply_from_empty_and_match_the_models(empty: Store) -> None:
    assert empty.revision() is None
    empty.migrate()
    head = ScriptDirectory.from_config(Store.alembic_config()).get_current_head()
    assert empty.revision() == head
    names = set(sa.inspect(empty.engine).get_table_names())
    assert set(schema.Base.metadata.tables) <= names
    with empty.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(ctx, schema.Base.metadata) == []
    empty.migrate()  # a second run is a no-op
    assert empty.revision() == head


def test_sqlite_pragmas(tmp_path) -> None:
    with fresh_store("sqlite", tmp_path) as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_default_url_is_a_file_under_the_project_unless_the_environment_says(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(ENV_URL, raising=False)
    assert default_url(tmp_path) == f"sqlite:///{tmp_path.resolve()}/.playbook/playbook.db"
    store = Store.open(project_dir=tmp_path)
    assert (tmp_path / ".playbook" / "playbook.db").exists()
    store.close()
    monkeypatch.setenv(ENV_URL, "sqlite:////elsewhere/x.db")
    assert default_url(tmp_path) == "sqlite:////elsewhere/x.db"


def test_sync_adds_a_new_field_without_losing_data(store: Store) -> None:
    v1 = load_text(V1).catalog
    first = store.sync_entities(v1)
    assert [(t, c) for t, c, _ in first.added] == [
        ("accounts", "segment"), ("accounts", "arr"), ("accounts", "usage_percent"), ("accounts", "renewal_date")]
    accounts = store.table("account")
    with store.begin() as conn:
        conn.execute(accounts.insert().values(id="a1", segment="smb", arr=1200.5, usage_percent=0.85,
                                              renewal_date=dt.date(2026, 9, 1)))

    v2 = load_text(V2).catalog
    second = store.sync_entities(v2)
    assert ("accounts", "health_score", "number") in second.added
    assert ("contacts", "title", "text") in second.added
    assert second.orphaned == [("accounts", "arr")]  # kept, reported
    assert second.conflicts == []
    assert store.sync_entities(v2).added == []  # idempotent

    with store.engine.connect() as conn:
        # The old value survives, including in the column v2 no longer declares.
        row = conn.execute(sa.text("SELECT segment, arr, usage_percent, health_score FROM accounts")).one()
    assert tuple(row) == ("smb", 1200.5, 0.85, None)
    wide = store.table("account")
    with store.begin() as conn:
        conn.execute(wide.update().values(health_score=77))
        assert conn.execute(sa.select(wide.c.health_score, wide.c.renewal_date)).one() == (77, dt.date(2026, 9, 1))


def test_a_changed_type_is_reported_and_left_alone(store: Store) -> None:
    store.sync_entities(load_text(V1).catalog)
    report = store.sync_entities(load_text(V1.replace("arr money", "arr text")).catalog)
    assert report.added == []
    assert report.conflicts == ["account.arr: declared text but the column was created as money; left unchanged"]


def test_a_core_column_cannot_change_type(store: Store) -> None:
    report = store.sync_entities(load_text("entity account\n  field name int\n").catalog)
    assert report.conflicts and "built-in column" in report.conflicts[0]


def _account(store: Store, account_id: str = "a1") -> None:
    with store.begin() as conn:
        conn.execute(schema.Account.__table__.insert().values(id=account_id))


def test_outbox_idempotency_key_is_unique(store: Store) -> None:
    outbox = schema.OutboxMessage.__table__
    msg = {"idempotency_key": "play:usage_limit:a1:day1", "channel": "email", "recipient": "x@y.example",
           "subject": "Hi", "body": "b"}
    with store.begin() as conn:
        conn.execute(outbox.insert().values(**msg))
    with pytest.raises(sa.exc.IntegrityError), store.begin() as conn:
        conn.execute(outbox.insert().values(**msg))
    with store.begin() as conn:  # what a retried activity does
        insert_ignore(conn, outbox, [msg], ["idempotency_key"])
        row = conn.execute(sa.select(outbox)).mappings().one()
    assert row["status"] == "pending" and row["attempts"] == 0
    assert row["created_at"].tzinfo == dt.timezone.utc


def test_tasks_idempotency_key_is_unique(store: Store) -> None:
    _account(store)
    tasks = schema.Task.__table__
    with store.begin() as conn:
        conn.execute(tasks.insert().values(idempotency_key="k", account_id="a1", title="Call"))
    with pytest.raises(sa.exc.IntegrityError), store.begin() as conn:
        conn.execute(tasks.insert().values(idempotency_key="k", account_id="a1", title="Call"))


def test_one_running_enrollment_per_play_and_account(store: Store) -> None:
    _account(store)
    enr = schema.Enrollment.__table__
    row = {"workflow_id": "play:p:a1", "play": "p", "account_id": "a1", "plan_hash": "h"}
    with store.begin() as conn:
        conn.execute(enr.insert().values(**row, status="completed"))
        conn.execute(enr.insert().values(**row, status="running"))
    with pytest.raises(sa.exc.IntegrityError), store.begin() as conn:
        conn.execute(enr.insert().values(**row, status="running"))


def test_foreign_keys_hold(store: Store) -> None:
    with pytest.raises(sa.exc.IntegrityError), store.begin() as conn:
        conn.execute(schema.Contact.__table__.insert().values(id="c1", account_id="nobody"))


def test_pipeline_with_stage_history_through_the_orm(store: Store) -> None:
    _account(store)
    with store.session() as session, session.begin():
        session.add(schema.Opportunity(id="o1", account_id="a1", play="p", stage="Qualified", amount=2400.0,
                                       idempotency_key="play:p:a1:opp"))
        session.add(schema.StageChange(opportunity_id="o1", stage="Qualified", actor="play:p"))
        session.add(schema.StageChange(opportunity_id="o1", from_stage="Qualified", stage="Closed Won", actor="crm"))
        session.add(schema.Outcome(account_id="a1", play="p", outcome="closed_won", value=2400.0, opportunity_id="o1"))
        session.add(schema.EnrollmentDecision(account_id="a1", play="p", decision="skipped",
                                              reasons=[{"rule": "cooldown", "days_left": 12}]))
        session.add(schema.AuditEntry(actor="cli", action="stage", subject="o1", detail={"to": "Closed Won"}))
    with store.session() as session:
        stages = session.scalars(sa.select(schema.StageChange.stage).order_by(schema.StageChange.id)).all()
        decision = session.scalars(sa.select(schema.EnrollmentDecision)).one()
    assert stages == ["Qualified", "Closed Won"]
    assert decision.reasons == [{"rule": "cooldown", "days_left": 12}]


def test_datetimes_come_back_aware_utc(store: Store) -> None:
    audit = schema.AuditEntry.__table__
    naive = dt.datetime(2026, 6, 1, 9, 30)
    paris = dt.datetime(2026, 6, 1, 11, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    with store.begin() as conn:
        conn.execute(audit.insert(), [{"at": naive, "actor": "t", "action": "a"},
                                      {"at": paris, "actor": "t", "action": "b"}])
        got = conn.execute(sa.select(audit.c.at).order_by(audit.c.id)).scalars().all()
    want = dt.datetime(2026, 6, 1, 9, 30, tzinfo=dt.timezone.utc)
    assert got == [want, want] and all(v.tzinfo == dt.timezone.utc for v in got)


def test_concurrent_read_then_write_transactions_wait_instead_of_failing(tmp_path):
    """Two writers that each read first: the second waits for the first (BEGIN IMMEDIATE)."""
    import threading

    import sqlalchemy as sa

    from engine.store import Store

    store = Store.open(f"sqlite:///{tmp_path}/w.db")
    errors: list[Exception] = []

    def writer(k: int) -> None:
        try:
            for i in range(20):
                with store.begin() as conn:
                    conn.execute(sa.text("SELECT count(*) FROM users")).scalar()
                    conn.execute(sa.text("INSERT INTO users (id, name) VALUES (:id, 'x')"), {"id": f"u{k}-{i}"})
        except Exception as e:  # noqa: BLE001 - the assertion below shows it
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.count("users") == 80


# -- reading without creating, and faults of the environment ------------------------------------

CLOSED_PORT = "postgresql://postgres@127.0.0.1:1/test"


@pytest.fixture
def no_waits(monkeypatch):
    monkeypatch.setattr(store_module, "RETRY_DELAYS", (0.0, 0.0, 0.0))


def test_reading_a_missing_sqlite_file_creates_nothing(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/wrong/dir/x.db"
    with pytest.raises(StoreMissing, match=r"no store at .*x\.db .*playbook demo-data"):
        Store.open(url, read_only=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", BACKENDS)
def test_reading_a_store_without_tables_is_missing_and_leaves_it_empty(kind, tmp_path) -> None:
    with fresh_store(kind, tmp_path, migrate=False) as empty:
        empty.connect().close()  # the SQLite file exists, without tables
        with pytest.raises(StoreMissing, match="is empty"):
            Store.open(empty.engine.url.render_as_string(hide_password=False), read_only=True)
        assert empty.revision() is None and sa.inspect(empty.engine).get_table_names() == []


def test_reading_a_store_without_accounts_is_missing(store: Store) -> None:
    with pytest.raises(StoreMissing, match="holds no accounts"):
        Store.open(store.engine.url.render_as_string(hide_password=False), read_only=True)


def test_declared_fields_without_a_column_read_as_empty_and_nothing_is_written(store: Store) -> None:
    url = store.engine.url.render_as_string(hide_password=False)
    with store.begin() as conn:
        conn.execute(sa.text("INSERT INTO accounts (id, name) VALUES ('a1', 'A')"))
    with Store.open(url, read_only=True, catalog=load_text(V1).catalog) as reader:
        assert reader.missing_columns == ["account.segment", "account.arr", "account.usage_percent",
                                          "account.renewal_date"]
        assert reader.read_missing_as_empty(load_text(V2).catalog) == [
            "account.segment", "account.usage_percent", "account.renewal_date", "account.health_score",
            "contact.title"]
        accounts = reader.table("account", load_text(V2).catalog)
        for _ in range(2):  # also on a connection the pool hands out again
            with reader.connect() as conn:
                assert conn.execute(sa.select(accounts.c.id, accounts.c.segment, accounts.c.health_score)).one() \
                    == ("a1", None, None)
                assert conn.execute(sa.text("SELECT arr FROM accounts")).scalar_one() is None
    assert {c["name"] for c in sa.inspect(store.engine).get_columns("accounts")} == {"id", "name"}
    store.sync_entities(load_text(V1).catalog)
    with Store.open(url, read_only=True, catalog=load_text(V1).catalog) as reader:
        assert reader.missing_columns == []


def test_a_sqlite_store_opened_for_reading_refuses_writes(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    with Store.open(url) as s, s.begin() as conn:
        conn.execute(sa.text("INSERT INTO accounts (id, name) VALUES ('a1', 'A')"))
    with Store.open(url, read_only=True) as reader, reader.connect() as conn:
        with pytest.raises(sa.exc.OperationalError, match="readonly"):
            conn.execute(sa.text("INSERT INTO accounts (id, name) VALUES ('a2', 'B')"))


def test_a_writer_on_a_read_only_sqlite_file_is_unreachable(tmp_path) -> None:
    Store.open(f"sqlite:///{tmp_path}/s.db").close()
    ro = f"sqlite:///file:{tmp_path}/s.db?mode=ro&uri=true"
    with Store.open(ro) as s:
        def write() -> None:
            with s.begin() as conn:
                conn.execute(sa.text("INSERT INTO accounts (id, name) VALUES ('a1', 'A')"))

        with pytest.raises(StoreUnreachable, match="readonly database") as info:
            s.retry(write)
    assert not info.value.transient


def test_a_closed_port_is_unreachable_after_the_retries(no_waits) -> None:
    retries: list[float] = []
    with pytest.raises(StoreUnreachable, match=r"at postgresql://postgres@127\.0\.0\.1:1/test: .*Connection refused"):
        retrying(lambda: Store.open(CLOSED_PORT, read_only=True), CLOSED_PORT,
                 on_retry=lambda fault, wait: retries.append(wait))
    assert retries == [0.0, 0.0, 0.0]


def test_a_missing_postgresql_database_is_unreachable_at_once(no_waits) -> None:
    if reason := pg_reason():
        pytest.skip(reason)
    url = "postgresql://postgres:secret@127.0.0.1:5432/pb_no_such_db"
    with pytest.raises(StoreUnreachable) as info:
        Store.open(url, read_only=True)
    assert str(info.value) == ('cannot reach the store at postgresql://postgres:***@127.0.0.1:5432/pb_no_such_db: '
                               'connection to server at "127.0.0.1", port 5432 failed: '
                               'database "pb_no_such_db" does not exist')
    assert not info.value.transient


def test_a_transient_fault_is_retried_until_it_passes(no_waits) -> None:
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise sa.exc.OperationalError("SELECT 1", {}, sqlite3.OperationalError("database is locked"))
        return "done"

    assert retrying(flaky, "sqlite:///x.db") == "done"
    assert len(attempts) == 3


def test_an_sql_error_is_not_taken_for_a_fault(no_waits) -> None:
    def broken() -> None:
        raise sa.exc.OperationalError("SELECT nope", {}, sqlite3.OperationalError("no such column: nope"))

    with pytest.raises(sa.exc.OperationalError):
        retrying(broken, "sqlite:///x.db")


@pytest.mark.parametrize(("orig", "transient"), [
    (sqlite3.OperationalError("database is locked"), True),
    (sqlite3.OperationalError("unable to open database file"), False),
    (sqlite3.OperationalError("attempt to write a readonly database"), False),
    (psycopg2.OperationalError("server closed the connection unexpectedly\n\tThis probably means..."), True),
    (psycopg2.OperationalError("FATAL:  the database system is starting up"), True),
    (psycopg2.errors.DeadlockDetected("deadlock detected"), True),
    (psycopg2.OperationalError('FATAL:  password authentication failed for user "x"'), False),
])
def test_driver_errors_of_the_environment_are_faults(orig: Exception, transient: bool) -> None:
    fault = store_module.unreachable(sa.exc.OperationalError("SELECT 1", {}, orig), "db")
    assert fault is not None and fault.transient is transient
    assert "\n" not in fault.cause and not fault.cause.startswith("FATAL")


def test_sql_errors_are_not_faults() -> None:
    for orig in (sqlite3.OperationalError("no such table: accounts"), sqlite3.IntegrityError("UNIQUE constraint")):
        assert store_module.unreachable(sa.exc.DBAPIError("SELECT 1", {}, orig), "db") is None


def test_copy_sqlite_copies_a_store_and_refuses_anything_else(tmp_path) -> None:
    with Store.open(f"sqlite:///{tmp_path}/a.db") as s, s.begin() as conn:
        conn.execute(schema.Base.metadata.tables["users"].insert().values(id="u1"))
    url = store_module.copy_sqlite(f"sqlite:///{tmp_path}/a.db", tmp_path / "b.db")
    assert url == f"sqlite:///{tmp_path}/b.db"
    with Store.open(url, migrate=False) as copy:
        assert copy.count("users") == 1
    with pytest.raises(ValueError, match="no SQLite store at"):
        store_module.copy_sqlite(f"sqlite:///{tmp_path}/none.db", tmp_path / "c.db")
    with pytest.raises(ValueError, match="SQLite stores only"):
        store_module.copy_sqlite("postgresql://h/db", tmp_path / "c.db")
