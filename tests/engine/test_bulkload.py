"""The SQL typing of staged text agrees with `parse_value` on every value it takes; the rest is left to Python."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa

from dsl import nodes as n
from engine import schema
from engine.bulkload import TYPED, Column, Refused, Staging
from engine.importers import parse_value
from engine.store import Store
from store_backends import BACKENDS, fresh_store

T = n.TypeName


def t(name: T, **kw) -> n.TypeRef:
    return n.TypeRef(name=name, **kw)


OPTIMISTIC_DAYS = ["2026-01-31", "2024-02-29", "1000-01-01", "0999-12-31", "2026-1-31", "20260131", "2026-12-31",
                   "infinity", "-infinity", "today", "Jan 5 2026", "01/05/2026", "2026/01/31", "2026-01-31 ",
                   "2026-01-05 BC", " 2026-01-31"]

CASES: list[tuple[n.TypeRef, list[str]]] = [
    (t(T.INT), ["12", "-3", "0", "007", "12.0", "1e3", " 4", "9223372036854775807", "99999999999999999999", "abc",
                "", "   ", "-9223372036854775808", "-9223372036854775807", "9223372036854775808", "-0", "+4", "4 ",
                "1.00000000000000001", "0x10", "1_000", "٣"]),
    (t(T.INT, low=1, high=10), ["1", "10", "0", "11", "-5"]),
    (t(T.NUMBER, low=0, high=100), ["75", "88.5", "100", "100.0000000000001", "-1", "101", "1.5e1", ".5", "5.",
                                    "NaN", "inf", "0.1234567890123", "-0", "0.12345678901234567890123", "12345678901234567890.5",
                                    "1e-5", "+5", " 7 ", "1_000", "0x10", "99.99999999999999999"]),
    (t(T.PERCENT), ["0.85", "1", "1.0", "1.0000000001", "85", "85%", "-0.05", "0", "0.999999999999999"]),
    (t(T.PERCENT, low=-1), ["-0.05", "-1", "-1.01"]),
    (t(T.MONEY), ["12000", "$12,000.00", "1250.50", "€300", "12,00"]),
    (t(T.DURATION), ["3", "3 days", "2 weeks", "0.5"]),
    (t(T.BOOL), ["true", "True", "YES", "n", "0", "1", "2", "maybe", " yes"]),
    (t(T.ENUM, values=["smb", "mid_market"]), ["smb", "SMB", "mid_market", "Mid Market", " smb", "x"]),
    (t(T.DATE), ["2026-01-31", "2026-02-30", "2026-13-01", "2024-02-29", "2025-02-29", "0999-01-01", "2026-1-31",
                 "2026-01-31T00:00", " 2026-01-31"]),
    # Days PostgreSQL's CAST reads (its optimistic typing takes these in one statement; see below).
    (t(T.DATE), OPTIMISTIC_DAYS),
    (t(T.DATE), ["2026-01-3x", "2026-W05-3", "+026-01-01", "", "n/a", "2026-01-31", "1999-12-31"]),
    (t(T.DATE), ["0000-01-01", "0001-01-01", "1000-01-01", "9999-12-31", "2026-04-31", "2026-04-30", "2026-00-10",
                 "2026-01-00", "2026-06-01Z", "2461000.5", "2026-06-1 ", "2026-6-01", "now", "2026-06-01 00:00"]),
    (t(T.DATETIME), ["2026-01-31T14:00:00Z", "2026-01-31T14:00:00", "2026-01-31", "2026-01-31T24:00:00",
                     "2026-02-30T10:00:00", "2026-01-31T14:00:00+02:00", "2026-01-31 14:00:00", "2026-01-31T14:00"]),
    (t(T.TEXT), ["Acme", " padded ", "Müller", "日本", "\u00a0", "\t", "a\nb", "", " \u3000 ", "\u3000x", "\x1c"]),
]


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    with fresh_store(request.param, tmp_path) as s:
        yield s


@pytest.mark.parametrize(("type_", "raws"), CASES, ids=[f"{c[0].name.value}-{i}" for i, c in enumerate(CASES)])
def test_sql_takes_only_values_it_types_like_python(store: Store, type_: n.TypeRef, raws: list[str]) -> None:
    column = sa.Column("v", schema.TYPE_MAP[type_.name])
    with store.begin() as conn:
        staging = Staging(conn, [Column("v", type_)], [column])
        staging.load([[i + 1, 0, raw] for i, raw in enumerate(raws)])
        left = set(staging.type_rows())
        typed = dict(conn.execute(sa.select(staging.typed.c._row, staging.typed.c.v)).all())
        staging.drop()
    for i, raw in enumerate(raws):
        try:
            expected = parse_value(type_, raw)
        except ValueError:
            assert i + 1 in left, f"SQL took {raw!r}, which Python refuses"
            continue
        if i + 1 in left:
            continue  # Python will type it
        got = typed[i + 1]
        if isinstance(expected, dt.datetime) and got is not None and got.tzinfo is None:
            got = got.replace(tzinfo=dt.timezone.utc)
        assert got == expected and type(got) is type(expected), (raw, got, expected)


def _write_one(store: Store, target: sa.Table, columns: list[Column], values: list[Any],
               required: list[str]) -> tuple[int, Any]:
    """One staged row written by `write_checked` into `target` (a temporary table made and dropped here),
    in a savepoint: (rows written, the value of its last column that `target` holds then)."""
    with store.begin() as conn:
        target.create(conn)
        staging = Staging(conn, columns, [])
        staging.load([[1, 0, *values]])
        savepoint = conn.begin_nested()
        try:
            written = staging.write_checked(target.name, required)
            savepoint.commit()
        except (sa.exc.IntegrityError, sa.exc.DataError, Refused):
            savepoint.rollback()
            written = 0
        got = conn.execute(sa.select(target.c[columns[-1].name])).scalar()
        staging.drop()
        target.drop(conn)
    return written, got


@pytest.mark.parametrize(("type_", "raws"), CASES, ids=[f"{c[0].name.value}-{i}" for i, c in enumerate(CASES)])
@pytest.mark.parametrize("required", [False, True], ids=["optional", "required"])
def test_a_one_statement_write_takes_only_values_it_types_like_python(store: Store, type_: n.TypeRef, raws: list[str],
                                                                     required: bool) -> None:
    """`write_checked` (a first load's one statement) writes a value as Python types it or stops (the
    caller then takes the checked path): one row per statement, so each value is seen alone."""
    target = sa.Table("_t_target", sa.MetaData(), sa.Column("id", sa.Text, primary_key=True),
                      sa.Column("v", schema.TYPE_MAP[type_.name]), prefixes=["TEMPORARY"])
    for raw in raws:
        written, got = _write_one(store, target, [Column("id", t(T.TEXT), "strip"), Column("v", type_)],
                                  ["a-1", raw], ["v"] if required else [])
        try:
            expected = parse_value(type_, raw)
        except ValueError:
            assert not written, f"the statement took {raw!r}, which Python refuses"
            continue
        if required and expected is None:
            assert not written, f"the statement took {raw!r} for a required field"
            continue
        if not written:
            continue  # the checked path types it
        if isinstance(expected, dt.datetime) and got is not None and got.tzinfo is None:
            got = got.replace(tzinfo=dt.timezone.utc)
        assert got == expected and type(got) is type(expected), (raw, got, expected)


def test_a_one_statement_write_takes_only_ids_with_nothing_to_strip(store: Store) -> None:
    """An id `write_checked` writes is one Python's strip() leaves as it is; the others stop the statement."""
    target = sa.Table("_t_ids", sa.MetaData(), sa.Column("id", sa.Text, primary_key=True), prefixes=["TEMPORARY"])
    for raw in dict(SPECIAL)["strip"] + [""]:
        written, got = _write_one(store, target, [Column("id", t(T.TEXT), "strip")], [raw], [])
        if written:
            assert raw.strip() == raw != "" and got == raw, raw
        else:
            assert raw != "acc-1", "the plain form is not written"


def test_plain_values_are_typed_by_sql(store: Store) -> None:
    """The forms exports use are not left to Python (where the speed would go)."""
    plain = [(t(T.INT), "12"), (t(T.NUMBER), "88.5"), (t(T.PERCENT), "0.85"), (t(T.MONEY), "12000"),
             (t(T.BOOL), "false"), (t(T.ENUM, values=["smb"]), "smb"), (t(T.DATE), "2026-01-31"),
             (t(T.DATETIME), "2026-01-31T14:00:00Z"), (t(T.TEXT), "Acme")]
    with store.begin() as conn:
        for type_, raw in plain:
            staging = Staging(conn, [Column("v", type_)], [sa.Column("v", schema.TYPE_MAP[type_.name])])
            staging.load([[1, 0, raw]])
            assert staging.type_rows() == [], (type_.name, raw)
            assert conn.exec_driver_sql(f"SELECT count(*) FROM {TYPED}").scalar_one() == 1
            staging.drop()


SPECIAL: list[tuple[str, list[str]]] = [
    ("email", ["ana@acme.example", "not-an-email", " ana@acme.example", "a@b@c.io", "x@.com", "ü@x.io", "a@b.c"]),
    ("timezone", ["America/Chicago", "Mars/Olympus", "UTC", " Europe/Berlin", "europe/berlin"]),
    ("strip", ["acc-1", " acc-1", "acc-1 ", "acc\t", "Müller", "\u00a0x", "\x1cacc", "acc\x1f", "acc\u3000",
               "acc\x85", "\x7facc", "acc\x7f", "!", "~", "a", " ", "\u00e9t\u00e9", "x\u2028"]),
]


@pytest.mark.parametrize(("check", "raws"), SPECIAL, ids=[c for c, _ in SPECIAL])
def test_sql_takes_only_ids_emails_and_zones_python_takes_as_they_are(store: Store, check: str,
                                                                      raws: list[str]) -> None:
    from engine.importers import _EMAIL, _valid_zone

    python_ok = {"email": lambda v: bool(_EMAIL.match(v)), "timezone": _valid_zone,
                 "strip": lambda v: v.strip() == v}[check]
    with store.begin() as conn:
        staging = Staging(conn, [Column("v", t(T.TEXT), check)], [sa.Column("v", sa.Text)])
        staging.load([[i + 1, 0, raw] for i, raw in enumerate(raws)])
        left = set(staging.type_rows())
        typed = dict(conn.execute(sa.select(staging.typed.c._row, staging.typed.c.v)).all())
        staging.drop()
    assert 1 not in left, f"the plain form {raws[0]!r} is left to Python"
    for i, raw in enumerate(raws):
        if i + 1 not in left:
            assert python_ok(raw) and typed[i + 1] == raw, raw


def test_postgresql_types_days_its_cast_reads_in_one_statement(store: Store, monkeypatch) -> None:
    """The optimistic statement stands when every CAST succeeds (no second typing); what it takes is checked above."""
    if store.dialect != "postgresql":
        pytest.skip("SQLite types days with its own test only")
    calls: list[bool] = []
    real = Staging._type_rows
    monkeypatch.setattr(Staging, "_type_rows", lambda self, f: calls.append(f.optimistic) or real(self, f))
    with store.begin() as conn:
        staging = Staging(conn, [Column("v", t(T.DATE))], [sa.Column("v", sa.Date)])
        staging.load([[i + 1, 0, raw] for i, raw in enumerate(OPTIMISTIC_DAYS)])
        staging.type_rows()
        staging.drop()
        assert calls == [True]
        staging = Staging(conn, [Column("v", t(T.DATE))], [sa.Column("v", sa.Date)])
        staging.load([[1, 0, "2026-01-31"], [2, 0, "2026-02-30"]])
        assert staging.type_rows() == [2] and staging.count() == 1
        staging.drop()
    assert calls == [True, True, False]  # 02-30 failed the CAST: typed again, every day tested
