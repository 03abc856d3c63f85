"""Account field history: a row per changed value (none for an unchanged one), and the account as known on a day."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa

from dsl.project import load_text
from engine.history import HISTORY, account_as_of
from engine.importers import ImportFailed, import_file
from engine.store import Store
from store_backends import BACKENDS, fresh_store

CATALOG = load_text("""\
entity account
  field segment       enum(smb, mid_market, enterprise)
  field arr           money
  field seats         int
  field champion      bool
  field renewal_date  date?
  field last_login_at datetime?
  field note          text?
""").catalog

DAY1 = dt.datetime(2026, 3, 1, 9, tzinfo=dt.timezone.utc)
DAY2 = dt.datetime(2026, 3, 5, 9, tzinfo=dt.timezone.utc)
DAY3 = dt.datetime(2026, 3, 9, 9, tzinfo=dt.timezone.utc)
HEADER = "id,name,segment,arr,seats,champion,renewal_date,last_login_at,note\n"


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    with fresh_store(request.param, tmp_path, CATALOG) as s:
        yield s


def load(store: Store, tmp_path: Path, name: str, text: str, at: dt.datetime) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    import_file(store, CATALOG, "accounts", path, known_at=at)


def rows(store: Store) -> list[tuple]:
    h = HISTORY
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            sa.select(h.c.account_id, h.c.field, h.c.valid_from, h.c.valid_to, h.c.value_number, h.c.value_text)
            .order_by(h.c.account_id, h.c.field, h.c.valid_from))]


def test_a_new_account_gets_one_row_saying_since_when_it_is_known(store: Store, tmp_path: Path) -> None:
    load(store, tmp_path, "a.csv", HEADER + "a1,Acme,smb,12000,10,yes,2026-09-30,2026-02-27T10:00:00Z,\n", DAY1)
    assert rows(store) == [("a1", "*", DAY1, None, None, None)]


def test_only_a_changed_value_gets_a_row_holding_the_value_it_replaced(store: Store, tmp_path: Path) -> None:
    load(store, tmp_path, "a.csv", HEADER + "a1,Acme,smb,12000,10,yes,2026-09-30,,\na2,Beta,smb,5000,3,no,,,\n", DAY1)
    before = rows(store)
    # The same values again, written differently: nothing changes.
    load(store, tmp_path, "b.csv", HEADER + "a1,Acme,smb,\"$12,000.00\",10,true,2026-09-30,,\n", DAY2)
    assert rows(store) == before
    # One field of one account changes; a partial file leaves the other fields alone.
    load(store, tmp_path, "c.csv", "id,arr\na1,15000\na2,5000\n", DAY3)
    load(store, tmp_path, "d.csv", "id,arr,segment\na1,16000,enterprise\n", DAY3 + dt.timedelta(days=1))
    assert [r for r in rows(store) if r not in before] == [
        ("a1", "arr", DAY1, DAY3, 12000.0, None),
        ("a1", "arr", DAY3, DAY3 + dt.timedelta(days=1), 15000.0, None),
        ("a1", "segment", DAY1, DAY3 + dt.timedelta(days=1), None, "smb"),
    ]


def test_emptying_a_field_is_a_change(store: Store, tmp_path: Path) -> None:
    load(store, tmp_path, "a.csv", HEADER + "a1,Acme,smb,12000,10,yes,2026-09-30,2026-02-27T10:00:00Z,\n", DAY1)
    load(store, tmp_path, "b.csv", "id,renewal_date,last_login_at,champion\na1,,,no\n", DAY2)
    assert [r for r in rows(store) if r[1] != "*"] == [
        ("a1", "champion", DAY1, DAY2, 1.0, None),
        ("a1", "last_login_at", DAY1, DAY2, None, "2026-02-27 10:00:00.000000"),
        ("a1", "renewal_date", DAY1, DAY2, None, "2026-09-30")]


def test_the_account_as_known_on_a_day(store: Store, tmp_path: Path) -> None:
    load(store, tmp_path, "a.csv", HEADER + "a1,Acme,smb,12000,10,yes,2026-09-30,2026-02-27T10:00:00Z,hello\n", DAY1)
    load(store, tmp_path, "b.csv", "id,segment,arr,champion,note\na1,mid_market,15000,no,\n", DAY2)
    load(store, tmp_path, "c.csv", HEADER + "a2,Beta,enterprise,90000,40,no,,,\n", DAY3)
    load(store, tmp_path, "d.csv", "id,seats\na1,11\n", DAY3)
    with store.engine.connect() as conn:
        assert account_as_of(conn, CATALOG, dt.date(2026, 2, 28)) == {}
        day1 = account_as_of(conn, CATALOG, dt.date(2026, 3, 1))
        day4 = account_as_of(conn, CATALOG, dt.date(2026, 3, 4))
        day5 = account_as_of(conn, CATALOG, dt.date(2026, 3, 5))
        day9 = account_as_of(conn, CATALOG, dt.date(2026, 3, 9), ["a2"])
    assert day1 == day4 == {"a1": {
        "name": "Acme", "segment": "smb", "arr": 12000.0, "seats": 10, "champion": True,
        "renewal_date": dt.date(2026, 9, 30), "last_login_at": dt.datetime(2026, 2, 27, 10, tzinfo=dt.timezone.utc),
        "note": "hello"}}
    assert day5["a1"] == {**day1["a1"], "segment": "mid_market", "arr": 15000.0, "champion": False, "note": None}
    with store.engine.connect() as conn:
        assert account_as_of(conn, CATALOG, dt.date(2026, 3, 8))["a1"] == day5["a1"]
        assert account_as_of(conn, CATALOG, dt.date(2026, 3, 9))["a1"] == {**day5["a1"], "seats": 11}
    assert day9 == {"a2": {"name": "Beta", "segment": "enterprise", "arr": 90000.0, "seats": 40, "champion": False,
                           "renewal_date": None, "last_login_at": None, "note": None}}


def test_a_failed_import_writes_no_history(store: Store, tmp_path: Path) -> None:
    load(store, tmp_path, "a.csv", HEADER + "a1,Acme,smb,12000,10,yes,,,\n", DAY1)
    before = rows(store)
    with pytest.raises(ImportFailed):
        load(store, tmp_path, "b.csv", "id,arr,seats\na1,13000,10\na2,1,many\n", DAY2)
    assert rows(store) == before


def test_demo_accounts_are_known_since_the_start_of_their_metric_history(store: Store) -> None:
    from dsl.project import load
    from engine.demo_data import generate

    catalog = load(["playbooks"]).catalog
    store.sync_entities(catalog)
    generate(catalog, 30, seed=7, today=dt.date(2026, 6, 1), store=store)
    with store.engine.connect() as conn:
        assert account_as_of(conn, catalog, dt.date(2025, 5, 31)) == {}  # 366 days before
        known = account_as_of(conn, catalog, dt.date(2025, 6, 1))
        accounts = store.table("account", catalog)
        current = {r["id"]: dict(r) for r in conn.execute(sa.select(accounts)).mappings()}
    assert len(known) == 30
    assert all(known[i] == {k: v for k, v in current[i].items() if k in known[i]} for i in known)


def test_an_account_stored_before_the_history_gets_its_known_since_row_from_an_unchanged_re_import(
        store: Store, tmp_path: Path) -> None:
    load(store, tmp_path, "a.csv", HEADER + "a1,Acme,smb,12000,10,yes,2026-09-30,,\na2,Beta,smb,5000,3,no,,,\n", DAY1)
    with store.engine.begin() as conn:  # as if a1 was written before account_field_history existed
        conn.execute(HISTORY.delete().where(HISTORY.c.account_id == "a1"))
    # The same values: a2 is left alone (already known since DAY1), a1 gets known from DAY2 on.
    load(store, tmp_path, "b.csv", HEADER + "a1,Acme,smb,12000,10,yes,2026-09-30,,\na2,Beta,smb,5000,3,no,,,\n", DAY2)
    assert rows(store) == [("a1", "*", DAY2, None, None, None), ("a2", "*", DAY1, None, None, None)]
