"""CSV and JSON Lines imports: typed, checked row by row, all-or-nothing, idempotent; SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from dsl import nodes as n
from dsl.project import load_text
from engine import schema
from engine.importers import ImportFailed, RowError, import_file, import_files, parse_value
from engine.store import Store
from store_backends import BACKENDS, fresh_store

DECLARATIONS = """\
entity account
  field segment            enum(smb, mid_market, enterprise)
  field arr                money
  field health_score       number 0..100
  field usage_percent      percent
  field seats_active       int
  field exec_sponsor       bool
  field last_expansion_at  date?
  field csm                user
  field nps                number? 0..10
entity contact
  field email      text
  field first_name text
  field timezone   text
  field title      text?
metric api_calls per day
event funding_announced
event ticket_opened
"""
CATALOG = load_text(DECLARATIONS).catalog

ACCOUNTS_CSV = """\
id,name,segment,arr,health_score,usage_percent,seats_active,exec_sponsor,last_expansion_at,csm,nps
a1,Acme,smb,"$12,000.00",75,85%,12,yes,,u1,9
a2,Beta,mid_market,50000,88.5,0.4,40,false,2025-01-15,u2,
"""
CONTACTS_JSONL = """\
{"id": "c1", "account_id": "a1", "email": "ana@acme.example", "name": "Ana Ruiz", "first_name": "Ana", "timezone": "America/Chicago"}
{"id": "c2", "account_id": "a2", "email": "bo@beta.example", "first_name": "Bo", "timezone": "Europe/Berlin", "title": "CTO"}
"""
METRICS_CSV = """\
account_id,metric,date,value
a1,api_calls,2026-05-01,100
a1,api_calls,2026-05-02,120.5
a2,api_calls,2026-05-01,7
"""
EVENTS_JSONL = """\
{"account_id": "a1", "event": "funding_announced", "occurred_at": "2026-05-20T10:00:00Z", "payload": {"round": "Series B"}}
{"account_id": "a1", "event": "ticket_opened", "date": "2026-05-21", "id": "T-1", "priority": "P2"}
{"account_id": "a1", "event": "ticket_opened", "date": "2026-05-21", "id": "T-2"}
"""


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    with fresh_store(request.param, tmp_path, CATALOG) as s:
        yield s


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def good_files(folder: Path) -> list[tuple[str, Path]]:
    # Deliberately out of order: accounts are imported before what refers to them.
    return [("events", write(folder, "events.jsonl", EVENTS_JSONL)),
            ("contacts", write(folder, "contacts.jsonl", CONTACTS_JSONL)),
            ("metrics", write(folder, "metrics.csv", METRICS_CSV)),
            ("accounts", write(folder, "accounts.csv", ACCOUNTS_CSV))]


def dump(store: Store) -> dict[str, list[tuple]]:
    """Every imported row, without generated ids and timestamps."""
    tables = {"accounts": store.table("account"), "contacts": store.table("contact"),
              "metric_points": schema.MetricPoint.__table__}
    out: dict[str, list[tuple]] = {}
    with store.engine.connect() as conn:
        for name, t in tables.items():
            out[name] = sorted(tuple(r) for r in conn.execute(sa.select(t)))
        ev = schema.Event.__table__
        out["events"] = sorted(
            (r.key, r.account_id, r.event, r.occurred_at, r.occurred_on, json.dumps(r.payload, sort_keys=True))
            for r in conn.execute(sa.select(ev)))
    return out


def count(store: Store, table: str) -> int:
    return store.count(table)


def test_good_files_are_imported_typed(store: Store, tmp_path: Path) -> None:
    report = import_files(store, CATALOG, good_files(tmp_path))
    assert [(f.kind, f.rows, f.created, f.updated) for f in report.files] == [
        ("accounts", 2, 2, 0), ("contacts", 2, 2, 0), ("metrics", 3, 0, 0), ("events", 3, 0, 0)]
    accounts = store.table("account")
    with store.engine.connect() as conn:
        a1 = conn.execute(sa.select(accounts).where(accounts.c.id == "a1")).mappings().one()
        a2 = conn.execute(sa.select(accounts).where(accounts.c.id == "a2")).mappings().one()
        events = conn.execute(sa.select(schema.Event.__table__).order_by(schema.Event.key)).mappings().all()
    assert dict(a1) == {"id": "a1", "name": "Acme", "segment": "smb", "arr": 12000.0, "health_score": 75.0,
                        "usage_percent": 0.85, "seats_active": 12, "exec_sponsor": True, "last_expansion_at": None,
                        "csm": "u1", "nps": 9.0}
    assert a2["usage_percent"] == 0.4 and a2["last_expansion_at"] == dt.date(2025, 1, 15) and a2["nps"] is None
    assert [(e["key"], e["occurred_on"], e["payload"]) for e in events] == [
        ("a1|funding_announced|2026-05-20T10:00:00+00:00", dt.date(2026, 5, 20), {"round": "Series B"}),
        ("id:ticket_opened:T-1", dt.date(2026, 5, 21), {"priority": "P2"}),
        ("id:ticket_opened:T-2", dt.date(2026, 5, 21), None),
    ]
    assert events[0]["occurred_at"] == dt.datetime(2026, 5, 20, 10, tzinfo=dt.timezone.utc)
    assert count(store, "metric_points") == 3 and count(store, "contacts") == 2
    assert count(store, "audit_log") == 4  # one entry per imported file


def test_reimport_is_idempotent(store: Store, tmp_path: Path) -> None:
    files = good_files(tmp_path)
    import_files(store, CATALOG, files)
    before = dump(store)
    again = import_files(store, CATALOG, files)
    assert [(f.created, f.updated) for f in again.files if f.kind == "accounts"] == [(0, 2)]
    assert dump(store) == before
    # The same values written the other way round change nothing either.
    import_file(store, CATALOG, "accounts", write(tmp_path, "other.csv", ACCOUNTS_CSV.replace("85%", "0.85")))
    assert dump(store) == before


def test_metric_points_upsert_by_account_metric_date(store: Store, tmp_path: Path) -> None:
    import_files(store, CATALOG, good_files(tmp_path))
    import_file(store, CATALOG, "metrics", write(tmp_path, "fix.jsonl",
                '{"account_id": "a1", "metric": "api_calls", "date": "2026-05-02", "value": 130}\n'))
    mp = schema.MetricPoint.__table__
    with store.engine.connect() as conn:
        v = conn.execute(sa.select(mp.c.value).where(mp.c.date == dt.date(2026, 5, 2))).scalar_one()
    assert v == 130 and count(store, "metric_points") == 3


BAD_ACCOUNTS = """\
id,name,segment,arr,health_score,usage_percent,seats_active,exec_sponsor,last_expansion_at,csm,nps,colour
a1,Acme,smb,12000,75,85%,12,yes,,u1,9,red
a3,Gamma,Small,abc,175,85,12.5,maybe,2026-13-01,u1,11,blue
a4,Delta,enterprise,1,1,1%,1,no,,,,green
a1,Again,smb,1,1,1%,1,no,,u1,,
"""


def test_bad_rows_are_all_reported_and_nothing_is_written(store: Store, tmp_path: Path) -> None:
    good = write(tmp_path, "good.csv", ACCOUNTS_CSV.replace("a1,", "g1,").replace("a2,", "g2,"))
    bad = write(tmp_path, "bad.csv", BAD_ACCOUNTS)
    with pytest.raises(ImportFailed) as info:
        import_files(store, CATALOG, [("accounts", good), ("accounts", bad)])
    b = str(bad)
    assert info.value.errors == [
        RowError(b, 1, "colour", "unknown column; expected one of: arr, csm, exec_sponsor, health_score, id, "
                                 "last_expansion_at, name, nps, seats_active, segment, usage_percent"),
        RowError(b, 3, "segment", "'Small' is not a declared value; expected one of smb, mid_market, enterprise"),
        RowError(b, 3, "arr", "expected an amount of money, found 'abc'"),
        RowError(b, 3, "health_score", "175 is outside the declared range 0..100"),
        RowError(b, 3, "usage_percent", "85 is ambiguous: write 8500% if it is a fraction (how the store keeps "
                                        "percentages), or 85% if it is a percentage"),
        RowError(b, 3, "seats_active", "expected a whole number, found '12.5'"),
        RowError(b, 3, "exec_sponsor", "expected true or false, found 'maybe'"),
        RowError(b, 3, "last_expansion_at", "expected a date like 2026-01-31, found '2026-13-01'"),
        RowError(b, 3, "nps", "11 is outside the declared range 0..10"),
        RowError(b, 5, "id", "duplicate id 'a1' (first at row 2)"),
        RowError(b, 4, "csm", "is empty; the field is not declared optional (`?`)"),
    ]
    assert info.value.total == 11
    assert "nothing was written" in str(info.value)
    # The good file of the same call was rolled back too.
    assert count(store, "accounts") == 0 and count(store, "audit_log") == 0


def test_jsonl_problems_carry_their_line(store: Store, tmp_path: Path) -> None:
    import_file(store, CATALOG, "accounts", write(tmp_path, "accounts.csv", ACCOUNTS_CSV))
    path = write(tmp_path, "m.jsonl", "\n".join([
        '{"account_id": "a1", "metric": "api_calls", "date": "2026-05-01", "value": 1}',
        '{"account_id": "a1", "metric": "api_calls", "date": "2026-05-01"',
        '[1, 2]',
        '',
        '{"account_id": "zz", "metric": "api_calls", "date": "2026-05-01", "value": 1}',
        '{"account_id": "a1", "metric": "logins", "date": "01/05/2026", "value": 1}',
        '{"account_id": "a1", "metric": "api_calls", "date": "2026-05-03"}',
    ]) + "\n")
    with pytest.raises(ImportFailed) as info:
        import_file(store, CATALOG, "metrics", path)
    p = str(path)
    assert [(e.row, e.column) for e in info.value.errors] == [
        (2, None), (3, None), (6, "metric"), (6, "date"), (7, "value"), (5, "account_id")]
    assert info.value.errors[0].reason.startswith("not valid JSON")
    assert info.value.errors[1].reason == "expected a JSON object, found list"
    assert info.value.errors[2].reason == "'logins' is not a declared metric; declared: api_calls"
    assert info.value.errors[4].reason == "missing (required)"
    assert info.value.errors[5] == RowError(p, 5, "account_id", "unknown account 'zz'")
    assert count(store, "metric_points") == 0


def test_partial_file_updates_existing_accounts_only(store: Store, tmp_path: Path) -> None:
    import_file(store, CATALOG, "accounts", write(tmp_path, "accounts.csv", ACCOUNTS_CSV))
    result = import_file(store, CATALOG, "accounts", write(tmp_path, "health.csv", "id,health_score\na1,42\n"))
    assert (result.created, result.updated) == (0, 1)
    accounts = store.table("account")
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(accounts.c.health_score, accounts.c.arr).where(accounts.c.id == "a1")).one() \
            == (42.0, 12000.0)
    with pytest.raises(ImportFailed) as info:
        import_file(store, CATALOG, "accounts", write(tmp_path, "new.csv", "id,health_score\nnew1,42\n"))
    assert {e.column for e in info.value.errors} == {"segment", "arr", "usage_percent", "seats_active",
                                                     "exec_sponsor", "csm"}


def test_contacts_check_email_zone_and_account(store: Store, tmp_path: Path) -> None:
    import_file(store, CATALOG, "accounts", write(tmp_path, "accounts.csv", ACCOUNTS_CSV))
    path = write(tmp_path, "c.csv", "id,account_id,email,first_name,timezone\n"
                                    "c1,a1,not-an-email,Ana,Mars/Olympus\n"
                                    "c2,nope,bo@b.example,Bo,UTC\n")
    with pytest.raises(ImportFailed) as info:
        import_file(store, CATALOG, "contacts", path)
    assert [(e.row, e.column, e.reason) for e in info.value.errors] == [
        (2, "email", "'not-an-email' is not an email address"),
        (2, "timezone", "'Mars/Olympus' is not an IANA time zone (e.g. America/Chicago)"),
        (3, "account_id", "unknown account 'nope'"),
    ]


def test_a_missing_key_column_is_reported_once(store: Store, tmp_path: Path) -> None:
    with pytest.raises(ImportFailed) as info:
        import_file(store, CATALOG, "metrics", write(tmp_path, "m.csv", "account_id,date,value\na1,2026-01-01,1\n"))
    assert [(e.row, e.column, e.reason) for e in info.value.errors] == [(1, "metric", "missing column (required)")]


def test_errors_are_capped_but_counted(store: Store, tmp_path: Path) -> None:
    rows = "".join(f"x{i},Acme,huge,1,1,1%,1,no,,u1,\n" for i in range(50))
    path = write(tmp_path, "many.csv", ACCOUNTS_CSV.splitlines()[0] + "\n" + rows)
    with pytest.raises(ImportFailed) as info:
        import_file(store, CATALOG, "accounts", path, max_errors=10)
    assert len(info.value.errors) == 10 and info.value.total == 50
    assert "(and 40 more)" in str(info.value)


def test_the_message_counts_the_problems_it_does_not_list(store: Store, tmp_path: Path) -> None:
    rows = "".join(f"x{i},Acme,huge,1,1,1%,1,no,,u1,\n" for i in range(50))
    path = write(tmp_path, "many.csv", ACCOUNTS_CSV.splitlines()[0] + "\n" + rows)
    with pytest.raises(ImportFailed) as info:
        import_file(store, CATALOG, "accounts", path)
    assert len(info.value.errors) == 50
    message = str(info.value)
    assert message.startswith("import failed with 50 problem(s) (and 30 more); nothing was written\n")
    assert len(message.splitlines()) == 1 + 20


def test_a_nul_character_is_a_row_error_and_nothing_is_written(store: Store, tmp_path: Path) -> None:
    accounts = write(tmp_path, "accounts.csv", ACCOUNTS_CSV.replace("Beta", "Be\x00ta"))
    events = write(tmp_path, "events.jsonl", EVENTS_JSONL.replace('"Series B"', '"Series\\u0000B"'))
    with pytest.raises(ImportFailed) as info:
        import_files(store, CATALOG, [("accounts", accounts), ("events", events)])
    reason = "contains a NUL character (\\0), which the store cannot keep (PostgreSQL refuses it): remove it"
    assert info.value.errors == [RowError(str(accounts), 3, "name", reason), RowError(str(events), 1, "payload", reason)]
    assert count(store, "accounts") == 0 and count(store, "events") == 0


def test_a_file_that_is_not_utf8_is_named_by_line_and_column(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes((ACCOUNTS_CSV + "a3,Café Olé,smb,1,1,1%,1,no,,u1,\n").encode("latin-1"))
    with pytest.raises(ImportFailed) as info:
        import_file(store, CATALOG, "accounts", path)
    assert info.value.errors == [RowError(str(path), 4, None, "not UTF-8 text: byte 0xe9 at column 7 (save the file "
                                                              "as UTF-8; it may be Latin-1 or Windows-1252)")]
    assert count(store, "accounts") == 0


def t(name: str, **kw) -> n.TypeRef:
    return n.TypeRef(name=n.TypeName(name), **kw)


@pytest.mark.parametrize(("type_", "raw", "value"), [
    (t("percent"), "85%", 0.85), (t("percent"), "0.85", 0.85), (t("percent"), 0.85, 0.85), (t("percent"), "120%", 1.2),
    (t("percent"), " 7.5 % ", 0.075), (t("percent"), "1", 1.0), (t("percent", low=-1), "-5%", -0.05), (t("money"), "$1,250.50", 1250.5), (t("money"), "€300", 300.0),
    (t("int"), "12", 12), (t("int"), 12.0, 12), (t("number", low=0, high=100), "100", 100.0),
    (t("bool"), "Yes", True), (t("bool"), 0, False), (t("enum", values=["a", "b"]), "b", "b"),
    (t("date"), "2026-02-28", dt.date(2026, 2, 28)),
    (t("datetime"), "2026-02-28T10:00:00+02:00", dt.datetime(2026, 2, 28, 8, tzinfo=dt.timezone.utc)),
    (t("datetime"), "2026-02-28", dt.datetime(2026, 2, 28, tzinfo=dt.timezone.utc)),
    (t("duration"), "2 weeks", 14.0), (t("duration"), "3", 3.0), (t("text"), 12345, "12345"),
    (t("text"), "", None), (t("int"), None, None),
])
def test_parse_value(type_: n.TypeRef, raw: object, value: object) -> None:
    assert parse_value(type_, raw) == value


@pytest.mark.parametrize(("type_", "raw", "reason"), [
    (t("percent"), "85",
     "85 is ambiguous: write 8500% if it is a fraction (how the store keeps percentages), or 85% if it is a percentage"),
    (t("percent"), "7.5",
     "7.5 is ambiguous: write 750% if it is a fraction (how the store keeps percentages), or 7.5% if it is a percentage"),
    (t("percent"), "1.0936", "1.0936 is ambiguous: write 109.36% if it is a fraction (how the store keeps "
     "percentages), or 1.0936% if it is a percentage"),
    (t("percent"), "-5%", "-5% is negative; a percentage here is 0% or more"),
    (t("percent"), "-0.05", "-0.05 is negative; a percentage here is 0% or more"),
    (t("percent", high=1), "120%", "1.2 is outside the declared range ..1"),
    (t("enum", values=["smb", "mid_market"]), "Mid Market", "'Mid Market' is not a declared value; did you mean mid_market?"),
    (t("enum", values=["smb", "mid_market"]), "midmarket", "'midmarket' is not a declared value; did you mean mid_market?"),
    (t("enum", values=["smb", "mid_market"]), "Enterprize", "'Enterprize' is not a declared value; expected one of smb, mid_market"),
    (t("number", low=0, high=10), "-1", "-1 is outside the declared range 0..10"),
    (t("int"), "1e400", "1e400 is too large for a whole number"),
    (t("number"), "1e400", "inf is too large a number"),
    (t("number"), "NaN", "expected a number, found 'NaN'"),
    (t("money"), "12,00", "expected an amount of money, found '12,00'"),
    (t("date"), "2026-02-28T10:00", "expected a date like 2026-01-31, found '2026-02-28T10:00'"),
    (t("bool"), "2", "expected true or false, found '2'"),
    (t("text"), {"a": 1}, "expected text, found dict"),
])
def test_parse_value_rejects(type_: n.TypeRef, raw: object, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_value(type_, raw)
    assert str(info.value) == reason


PLAIN_ACCOUNTS = """\
id,name,segment,arr,health_score,usage_percent,seats_active,exec_sponsor,last_expansion_at,csm,nps
p1,Plain,smb,12000,75,0.85,12,true,,u1,9
p2,Plain Two,mid_market,50000.5,88.5,0.4,40,false,2025-01-15,u2,
p1,Again,smb,1,1,0.01,1,false,,u1,
p3,,enterprise,1,1,0.5,1,no,,,
"""


def test_plain_files_are_checked_set_wise_with_lines_named(store: Store, tmp_path: Path, monkeypatch) -> None:
    from engine import bulkload

    copies: list[str] = []
    real_copy = bulkload.Staging.copy_file
    monkeypatch.setattr(bulkload.Staging, "copy_file", lambda self, path: copies.append(path.name) or real_copy(self, path))
    accounts = write(tmp_path, "plain.csv", PLAIN_ACCOUNTS)
    metrics = write(tmp_path, "plain_metrics.csv", "account_id,metric,date,value\np1,api_calls,2026-05-01,1\n"
                                                   "zz,api_calls,2026-05-01,2\n")
    with pytest.raises(ImportFailed) as info:
        import_files(store, CATALOG, [("accounts", accounts), ("metrics", metrics)])
    assert info.value.errors == [
        RowError(str(accounts), 4, "id", "duplicate id 'p1' (first at row 2)"),
        RowError(str(accounts), 5, "csm", "is empty; the field is not declared optional (`?`)"),
        RowError(str(metrics), 3, "account_id", "unknown account 'zz'"),
    ]
    assert count(store, "accounts") == 0 and count(store, "metric_points") == 0
    # PostgreSQL COPYs plain CSV files as they are; SQLite has no COPY.
    assert copies == (["plain.csv", "plain_metrics.csv"] if store.dialect == "postgresql" else [])
    good = write(tmp_path, "plain_good.csv", "\n".join(PLAIN_ACCOUNTS.splitlines()[:3]) + "\n")
    result = import_file(store, CATALOG, "accounts", good)
    assert (result.rows, result.created) == (2, 2)
    with store.engine.connect() as conn:
        accounts_t = store.table("account")
        assert conn.execute(sa.select(accounts_t.c.arr, accounts_t.c.exec_sponsor, accounts_t.c.seats_active)
                            .order_by(accounts_t.c.id)).all() == [(12000.0, True, 12), (50000.5, False, 40)]


def test_a_later_row_with_the_same_metric_key_wins(store: Store, tmp_path: Path) -> None:
    import_file(store, CATALOG, "accounts", write(tmp_path, "accounts.csv", ACCOUNTS_CSV))
    import_file(store, CATALOG, "metrics", write(tmp_path, "twice.csv", "account_id,metric,date,value\n"
                                                 "a1,api_calls,2026-05-01,1\na2,api_calls,2026-05-01,5\n"
                                                 "a1,api_calls,2026-05-01,2\n"))
    mp = schema.MetricPoint.__table__
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(mp.c.account_id, mp.c.value).order_by(mp.c.account_id)).all() == [
            ("a1", 2.0), ("a2", 5.0)]


def test_a_day_that_does_not_exist_in_a_plain_file_is_named_and_nothing_is_written(store: Store,
                                                                                    tmp_path: Path) -> None:
    """PostgreSQL CASTs plain days without testing them first; a 02-30 sends the rows to the checked typing."""
    text = PLAIN_ACCOUNTS.splitlines()
    rows = [text[0], text[1], text[2].replace("2025-01-15", "2025-02-30"), "p4,Four,smb,1,1,0.5,1,no,2024-02-29,u1,"]
    path = write(tmp_path, "days.csv", "\n".join(rows) + "\n")
    with pytest.raises(ImportFailed) as info:
        import_file(store, CATALOG, "accounts", path)
    assert info.value.errors == [
        RowError(str(path), 3, "last_expansion_at", "expected a date like 2026-01-31, found '2025-02-30'")]
    assert count(store, "accounts") == 0 and count(store, "account_field_history") == 0
    fixed = write(tmp_path, "days_fixed.csv", "\n".join(rows).replace("2025-02-30", "2025-02-28") + "\n")
    assert import_file(store, CATALOG, "accounts", fixed).created == 3
    accounts_t = store.table("account")
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(accounts_t.c.id, accounts_t.c.last_expansion_at).order_by(accounts_t.c.id)).all() \
            == [("p1", None), ("p2", dt.date(2025, 2, 28)), ("p4", dt.date(2024, 2, 29))]


def test_a_first_import_inserts_and_the_next_updates(store: Store, tmp_path: Path) -> None:
    """Into an empty table the rows are plainly inserted; a second file with old and new ids upserts."""
    first = import_file(store, CATALOG, "accounts", write(tmp_path, "a.csv", ACCOUNTS_CSV))
    second = import_file(store, CATALOG, "accounts", write(tmp_path, "b.csv", ACCOUNTS_CSV.replace(
        "a2,Beta", "a3,Gamma").replace("a1,Acme", "a1,Acme Two")))
    assert (first.created, first.updated, second.created, second.updated) == (2, 0, 1, 1)
    accounts_t = store.table("account")
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(accounts_t.c.id, accounts_t.c.name).order_by(accounts_t.c.id)).all() == [
            ("a1", "Acme Two"), ("a2", "Beta"), ("a3", "Gamma")]
    assert count(store, "account_field_history") == 4  # known since: a1, a2, a3; a1's old name


def test_a_first_load_in_chunks_that_repeats_a_key_across_them_keeps_the_later_row(store: Store,
                                                                                    tmp_path: Path) -> None:
    import_file(store, CATALOG, "accounts", write(tmp_path, "accounts.csv", ACCOUNTS_CSV))
    rows = [("a1", "2026-05-01", 1), ("a2", "2026-05-01", 2), ("a2", "2026-05-02", 3), ("a1", "2026-05-01", 4),
            ("a1", "2026-05-03", 5)]
    text = "".join(json.dumps({"account_id": a, "metric": "api_calls", "date": d, "value": v}) + "\n"
                   for a, d, v in rows)
    import_files(store, CATALOG, [("metrics", write(tmp_path, "points.jsonl", text))], chunk_size=2)
    mp = schema.MetricPoint.__table__
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(mp.c.account_id, mp.c.date, mp.c.value)
                            .order_by(mp.c.account_id, mp.c.date)).all() == [
            ("a1", dt.date(2026, 5, 1), 4.0), ("a1", dt.date(2026, 5, 3), 5.0),
            ("a2", dt.date(2026, 5, 1), 2.0), ("a2", dt.date(2026, 5, 2), 3.0)]


PLAIN_GOOD = "\n".join(PLAIN_ACCOUNTS.splitlines()[:3] + ["p3,Three,enterprise,1,1,0.5,1,no,2024-02-29,u3,"]) + "\n"


def test_a_plain_first_load_is_written_straight_from_the_stage(store: Store, tmp_path: Path, monkeypatch) -> None:
    """No typed copy of the rows: typed and written in one statement, with history and change marks."""
    from engine import bulkload

    typed: list[int] = []
    real_type_rows = bulkload.Staging.type_rows
    monkeypatch.setattr(bulkload.Staging, "type_rows", lambda self: typed.append(1) or real_type_rows(self))
    result = import_files(store, CATALOG, [("accounts", write(tmp_path, "plain.csv", PLAIN_GOOD))], chunk_size=2)
    assert typed == []
    assert (result.files[0].rows, result.files[0].created, result.files[0].updated) == (3, 3, 0)
    accounts_t = store.table("account")
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(accounts_t.c.id, accounts_t.c.arr, accounts_t.c.usage_percent,
                                      accounts_t.c.exec_sponsor, accounts_t.c.last_expansion_at, accounts_t.c.nps)
                            .order_by(accounts_t.c.id)).all() == [
            ("p1", 12000.0, 0.85, True, None, 9.0), ("p2", 50000.5, 0.4, False, dt.date(2025, 1, 15), None),
            ("p3", 1.0, 0.5, False, dt.date(2024, 2, 29), None)]
    assert count(store, "account_field_history") == 3 and count(store, "account_changes") == 1  # changes.EVERY


def _history_key(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        return list(sa.inspect(conn).get_pk_constraint("account_field_history")["constrained_columns"])


def _known_since(store: Store) -> list[tuple[str, int]]:
    with store.engine.connect() as conn:
        return conn.exec_driver_sql("SELECT account_id, count(*) FROM account_field_history WHERE field = '*' "
                                    "GROUP BY account_id ORDER BY account_id").all()


@pytest.mark.parametrize("chunk_size", [2, 100_000])
def test_a_first_load_gives_the_history_its_key_back_with_one_known_since_row_per_account(
        store: Store, tmp_path: Path, chunk_size: int, monkeypatch) -> None:
    """PostgreSQL's first load sets the history's key aside while it writes the "known since" rows; it is
    there again after the file, also where a later chunk took the checked path (a looser form: the file
    is read row by row, the first chunk written in one statement, the second checked)."""
    from engine import indexes

    key = _history_key(store)
    assert key == ["account_id", "field", "valid_from"]
    set_aside: list[str] = []
    real_drop_key = indexes.drop_key
    monkeypatch.setattr(indexes, "drop_key", lambda conn, table, defs: set_aside.append(table) or
                        real_drop_key(conn, table, defs))
    looser = PLAIN_GOOD + 'p4,Four,smb,"$1,200",1,0.01,1,no,,u4,\np5,Five,smb,1,1,0.01,1,no,,u5,\n'
    report = import_files(store, CATALOG, [("accounts", write(tmp_path, "plain.csv", looser))], chunk_size=chunk_size)
    assert (report.files[0].rows, report.files[0].created) == (5, 5)
    # (The accounts' own key may be set aside too, for a statement that writes the whole file.)
    assert _history_key(store) == key and set(set_aside) - {"accounts"} == (
        {"account_field_history"} if store.dialect == "postgresql" else set())
    assert _known_since(store) == [(f"p{i}", 1) for i in range(1, 6)]
    with store.engine.connect() as conn:
        marked = sorted(r[0] for r in conn.exec_driver_sql("SELECT account_id FROM account_changes"))
    # A chunk written in one statement marks every account (once); one the checked path wrote marks its own.
    assert marked == (["", "p3", "p4"] if chunk_size == 2 else ["p1", "p2", "p3", "p4", "p5"])


def _accounts_keys(store: Store) -> list[tuple[str, str]]:
    """The accounts' primary key and the foreign keys that reference accounts, as the database states them."""
    with store.engine.connect() as conn:
        inspector = sa.inspect(conn)
        keys = [("accounts", str(inspector.get_pk_constraint("accounts")))]
        for table in inspector.get_table_names():
            keys += [(table, str(fk)) for fk in inspector.get_foreign_keys(table) if fk["referred_table"] == "accounts"]
    return sorted(keys)


@pytest.mark.parametrize("twice", [False, True], ids=["clean", "an-id-twice"])
def test_a_first_load_gives_the_accounts_their_key_and_foreign_keys_back(store: Store, tmp_path: Path,
                                                                         twice: bool, monkeypatch) -> None:
    """PostgreSQL's first load from COPY sets the accounts' key (and the foreign keys to it) aside while it
    writes them, and builds it again after: an id twice fails there and is named by the checked path."""
    from engine import indexes

    keys = _accounts_keys(store)
    assert len(keys) > 3  # the key; contacts, enrollments, ... refer to accounts
    set_aside: list[str] = []
    real_drop_key = indexes.drop_key
    monkeypatch.setattr(indexes, "drop_key", lambda conn, table, defs: set_aside.append(table) or
                        real_drop_key(conn, table, defs))
    text = PLAIN_GOOD + ("p1,Again,smb,1,1,0.01,1,false,,u1,\n" if twice else "")
    path = write(tmp_path, "plain.csv", text)
    if twice:
        with pytest.raises(ImportFailed) as info:
            import_files(store, CATALOG, [("accounts", path)])
        assert [(e.row, e.column, e.reason) for e in info.value.errors] == \
            [(5, "id", "duplicate id 'p1' (first at row 2)")]
        assert count(store, "accounts") == 0
    else:
        assert import_files(store, CATALOG, [("accounts", path)]).files[0].created == 3
    assert _accounts_keys(store) == keys
    assert ("accounts" in set_aside) == (store.dialect == "postgresql")
    with store.engine.connect() as conn:  # the key holds again
        with pytest.raises(sa.exc.IntegrityError):
            conn.exec_driver_sql("INSERT INTO accounts (id, name) VALUES ('x', 'X'), ('x', 'X')")


def test_a_first_load_over_a_kept_history_adds_no_second_known_since_row(store: Store, tmp_path: Path) -> None:
    """The accounts emptied, their history kept: a first load of the same ids (one statement per chunk) keeps
    each account's first "known since" row and adds none (the test per id is skipped only where the
    history was empty)."""
    path = write(tmp_path, "plain.csv", PLAIN_GOOD)
    import_files(store, CATALOG, [("accounts", path)], chunk_size=2, known_at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    with store.begin() as conn:
        conn.exec_driver_sql("DELETE FROM accounts")
    import_files(store, CATALOG, [("accounts", path)], chunk_size=2, known_at=dt.datetime(2026, 2, 1, tzinfo=dt.timezone.utc))
    assert _known_since(store) == [("p1", 1), ("p2", 1), ("p3", 1)]


def test_a_failed_first_load_leaves_the_history_and_its_key_as_they_were(store: Store, tmp_path: Path) -> None:
    key = _history_key(store)
    bad = PLAIN_GOOD + "p4,Four,smb,1,1,0.01,1,maybe,,u4,\n"
    with pytest.raises(ImportFailed):
        import_files(store, CATALOG, [("accounts", write(tmp_path, "plain.csv", bad))], chunk_size=2)
    assert _history_key(store) == key and count(store, "account_field_history") == 0
    import_files(store, CATALOG, [("accounts", write(tmp_path, "plain.csv", PLAIN_GOOD))])
    assert _history_key(store) == key and _known_since(store) == [("p1", 1), ("p2", 1), ("p3", 1)]


@pytest.mark.parametrize(("row", "error"), [
    ("p1,Again,smb,1,1,0.01,1,false,,u1,", RowError("", 5, "id", "duplicate id 'p1' (first at row 2)")),
    ("p4,Four,smb,1,1,0.01,1,maybe,,u1,", RowError("", 5, "exec_sponsor", "expected true or false, found 'maybe'")),
    ("p4,Four,smb,1,1,0.01,1,no,,,", RowError("", 5, "csm", "is empty; the field is not declared optional (`?`)")),
])
def test_a_problem_in_a_later_chunk_of_a_plain_first_load_is_named_and_nothing_is_written(
        store: Store, tmp_path: Path, row: str, error: RowError) -> None:
    path = write(tmp_path, "plain.csv", PLAIN_GOOD + row + "\n")
    with pytest.raises(ImportFailed) as info:
        import_files(store, CATALOG, [("accounts", path)], chunk_size=2)
    assert info.value.errors == [RowError(str(path), error.row, error.column, error.reason)]
    assert count(store, "accounts") == 0 and count(store, "account_field_history") == 0
    assert count(store, "account_changes") == 0


def _point_indexes(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        return sorted(i["name"] for i in sa.inspect(conn).get_indexes("metric_points"))


def test_a_first_load_of_points_builds_their_secondary_index_again(store: Store, tmp_path: Path) -> None:
    before = _point_indexes(store)
    assert before  # the (metric, date, account_id) index of incremental sweeps
    import_file(store, CATALOG, "accounts", write(tmp_path, "accounts.csv", ACCOUNTS_CSV))
    bad = write(tmp_path, "bad.csv", METRICS_CSV + "zz,api_calls,2026-05-01,1\n")
    with pytest.raises(ImportFailed):
        import_files(store, CATALOG, [("metrics", bad)], chunk_size=2)
    assert _point_indexes(store) == before
    import_files(store, CATALOG, [("metrics", write(tmp_path, "metrics.csv", METRICS_CSV))], chunk_size=2)
    assert _point_indexes(store) == before and count(store, "metric_points") == 3


def test_a_re_import_writes_and_marks_only_the_accounts_it_changes(store: Store, tmp_path: Path) -> None:
    """Unchanged rows are neither rewritten nor marked for the next sweep; a changed value, an emptied one
    and a new account are, each with its history. A stored account's mark names the fields the file
    writes; a new one's names none (NULL: anything), also in a chunk that mixes both."""
    import_files(store, CATALOG, [("accounts", write(tmp_path, "first.csv", PLAIN_GOOD))],
                 known_at=dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc))
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM account_changes")
    lines = PLAIN_GOOD.splitlines()
    again = "\n".join([lines[0], lines[1].replace(",9", ","), lines[2], lines[3].replace(",1,0.5,", ",2,0.5,"),
                       "p4,Four,smb,1,1,0.01,1,no,,u4,"]) + "\n"
    for chunk_size in (2, 100_000):  # the second time nothing changes at all
        report = import_files(store, CATALOG, [("accounts", write(tmp_path, "again.csv", again))],
                              chunk_size=chunk_size, known_at=dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc))
        assert (report.files[0].rows, report.files[0].created, report.files[0].updated) == \
            ((4, 1, 3) if chunk_size == 2 else (4, 0, 4))
    with store.engine.connect() as conn:
        marked = sorted(conn.exec_driver_sql("SELECT account_id, fields FROM account_changes").all())
        replaced = sorted(conn.exec_driver_sql("SELECT account_id, field, value_number FROM account_field_history "
                                               "WHERE valid_to IS NOT NULL").all())
        accounts_t = store.table("account")
        stored = conn.execute(sa.select(accounts_t.c.id, accounts_t.c.health_score, accounts_t.c.nps)
                              .order_by(accounts_t.c.id)).all()
    written = ",".join(sorted(c for c in lines[0].split(",") if c != "id"))
    assert marked == [("p1", written), ("p3", written), ("p4", None)]
    assert replaced == [("p1", "nps", 9.0), ("p3", "health_score", 1.0)]
    assert stored == [("p1", 75.0, None), ("p2", 88.5, None), ("p3", 2.0, None), ("p4", 1.0, None)]
    assert report.changed_values == 0


# Forms a first load's one statement routes differently from Python's reading: each is either
# refused with Python's message or stored as Python types it (PostgreSQL CASTs days and booleans,
# and COPY types numbers, reading more forms than the importer takes).
ROUTED: list[tuple[str, str, object]] = [
    ("usage_percent", "1.0000000000000001", "ambiguous"), ("usage_percent", "1.0", 1.0),
    ("usage_percent", "1", 1.0), ("usage_percent", "0x1p-1", "expected a percentage"),
    ("usage_percent", "NaN", "expected a percentage"), ("seats_active", "-9223372036854775808", "too large"),
    ("seats_active", " 7 ", 7), ("health_score", "Infinity", "expected a number"), ("health_score", "1e1", 10.0),
    ("exec_sponsor", "on", "expected true or false"), ("exec_sponsor", "tr", "expected true or false"),
    ("exec_sponsor", "YES", True), ("exec_sponsor", " no", False),
    ("last_expansion_at", "infinity", "expected a date"), ("last_expansion_at", "2026-01-5 ", "expected a date"),
    ("last_expansion_at", "01/05/2026", "expected a date"), ("last_expansion_at", "2026-01-05 BC", "expected a date"),
    ("last_expansion_at", " 2026-01-31", dt.date(2026, 1, 31)), ("last_expansion_at", "0999-12-31", dt.date(999, 12, 31)),
    ("segment", " smb", "smb"), ("csm", '" "', "is empty"), ("name", '""', None), ("id", '""', "is empty"),
]


@pytest.mark.parametrize(("column", "raw", "expected"), ROUTED, ids=[f"{c}={r}" for c, r, _ in ROUTED])
def test_forms_sql_reads_differently_are_refused_or_typed_as_python_types_them(
        store: Store, tmp_path: Path, column: str, raw: str, expected: object) -> None:
    if store.dialect == "sqlite" and raw == "1.0000000000000001":
        # Known difference, not fixed: SQLite's REAL stage rounds it to 1.0 before any test sees the text.
        pytest.xfail("SQLite stages percentages as REAL")
    header, first, second = PLAIN_GOOD.splitlines()[:3]
    names = header.split(",")
    values = first.split(",")
    values[names.index(column)] = raw
    path = write(tmp_path, "routed.csv", "\n".join([header, second, ",".join(values)]) + "\n")
    if isinstance(expected, str) and column != "segment":
        with pytest.raises(ImportFailed) as info:
            import_file(store, CATALOG, "accounts", path)
        assert [(e.row, e.column) for e in info.value.errors] == [(3, column)]
        assert expected in info.value.errors[0].reason
        assert count(store, "accounts") == 0
        return
    import_file(store, CATALOG, "accounts", path)
    accounts_t = store.table("account")
    with store.engine.connect() as conn:
        got = conn.execute(sa.select(accounts_t.c[column]).where(accounts_t.c.id != "p2")).scalar_one()
    assert got == expected and type(got) is type(expected)


def test_a_quoted_line_break_keeps_every_problem_on_its_line(store: Store, tmp_path: Path) -> None:
    """A value holding a line break (quoted) shifts the lines after it: problems are named on the file's lines."""
    header, first, second = PLAIN_GOOD.splitlines()[:3]
    text = "\n".join([header, first.replace("Plain", '"Plain\nCo"'), second.replace(",88.5,", ",101,")]) + "\n"
    path = write(tmp_path, "quoted.csv", text)
    with pytest.raises(ImportFailed) as info:
        import_file(store, CATALOG, "accounts", path)
    assert [(e.row, e.column) for e in info.value.errors] == [(4, "health_score")]
    quoted = write(tmp_path, "quoted_ok.csv", "\n".join([header, first.replace("Plain", '"Plain, Co"'),
                                                          second.replace(",88.5,", ",101,")]) + "\n")
    with pytest.raises(ImportFailed) as info:
        import_file(store, CATALOG, "accounts", quoted)
    assert [(e.row, e.column) for e in info.value.errors] == [(3, "health_score")]


def test_a_first_load_of_plain_points_is_written_in_one_statement_per_chunk(store: Store, tmp_path: Path,
                                                                            monkeypatch) -> None:
    """SQLite: a clean chunk of a first load is typed, checked and written without the typed table; a
    chunk with a problem takes the checked path, which names each problem as before; a key repeated
    from an earlier chunk upserts (the later row wins)."""
    from engine import bulkload

    typed: list[int] = []
    real = bulkload.Staging.type_rows
    monkeypatch.setattr(bulkload.Staging, "type_rows", lambda self: typed.append(self.staged) or real(self))
    import_file(store, CATALOG, "accounts", write(tmp_path, "accounts.csv", ACCOUNTS_CSV))
    header = "account_id,metric,date,value\n"
    bad = write(tmp_path, "bad.csv", header + "a1,api_calls,2026-05-01,1\na2,api_calls,2026-05-01,2\n"
                                             "zz,api_calls,2026-05-02,3\na1,api_calls,2026-02-30,4\n"
                                             " a2,api_calls,2026-05-03,5\n")
    with pytest.raises(ImportFailed) as info:
        import_files(store, CATALOG, [("metrics", bad)], chunk_size=2)
    assert info.value.errors == [
        RowError(str(bad), 5, "date", "expected a date like 2026-01-31, found '2026-02-30'"),
        RowError(str(bad), 4, "account_id", "unknown account 'zz'"),
    ]
    assert count(store, "metric_points") == 0
    typed.clear()
    good = write(tmp_path, "good.csv", header + "a1,api_calls,2026-05-01,1\na2,api_calls,2026-05-01,2\n"
                                               "a1,api_calls,2026-05-02,3\na1,api_calls,2026-05-01,4\n"
                                               " a2,api_calls,2026-05-03,5\n")
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM account_changes")
    assert import_files(store, CATALOG, [("metrics", good)], chunk_size=2).files[0].rows == 5
    mp = schema.MetricPoint.__table__
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(mp.c.account_id, mp.c.date, mp.c.value).order_by(mp.c.account_id, mp.c.date)
                            ).all() == [("a1", dt.date(2026, 5, 1), 4.0), ("a1", dt.date(2026, 5, 2), 3.0),
                                        ("a2", dt.date(2026, 5, 1), 2.0), ("a2", dt.date(2026, 5, 3), 5.0)]
        assert sorted(set(r[0] for r in conn.exec_driver_sql("SELECT account_id FROM account_changes"))) == ["a1", "a2"]
    if store.dialect == "sqlite":
        # The first chunk went in whole; the second repeats a key (checked path, upserts from then on).
        assert typed == [2, 1]
