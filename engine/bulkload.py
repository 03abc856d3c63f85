"""Bulk loading: raw text into a staging table, typed set-wise in SQL, written with INSERT ... SELECT.

The importers (engine/importers.py) read a file and hand its rows, as text,
to `Staging.load`: COPY on PostgreSQL (psycopg2's `copy_expert`), one large
`executemany` on SQLite, into a temporary table of text columns. One
INSERT ... SELECT then types every value that is in its plain form (`75`,
`0.85`, `2026-01-31`, `true`, an exact enum value...) into a temporary table
shaped like the target (`_pb_typed`); the rows it cannot type are returned
and checked in Python by the importer, which has the exact messages (and
accepts the looser forms: `$1,200`, `85%`, `3 days`). Only values whose SQL
cast gives the same stored value as `engine.importers.parse_value` are taken
by SQL: numbers of at most 15 characters (so a double compares with a
declared range exactly), dates that round-trip, whole-second UTC times.
"""

from __future__ import annotations

import csv
import io
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dsl import nodes as n

STAGE = "_pb_stage"
TYPED = "_pb_typed"
T = n.TypeName
NUMERIC = {T.NUMBER, T.MONEY, T.PERCENT, T.DURATION}
# Columns that hold a key: empty is never fine.
KEY_COLUMNS = ("id", "account_id", "metric", "date", "value", "event")


@dataclass(frozen=True)
class Column:
    """One column of a file as SQL sees it."""

    name: str
    type: n.TypeRef
    check: str | None = None  # "email", "timezone", "metric", "strip": the column's own rule


def quote(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


_ZONE_NAMES: list[str] | None = None


def _zones() -> list[str]:
    global _ZONE_NAMES
    if _ZONE_NAMES is None:
        _ZONE_NAMES = sorted(zoneinfo.available_timezones())
    return _ZONE_NAMES


class Fragments:
    """SQL over one staged text column `c`: when SQL can type it (`ok`), and to what (`value`).

    `value` is only read where `ok` holds; both are guarded by CASE, since
    PostgreSQL does not promise to evaluate AND left to right (a cast of
    'abc' would fail the statement).
    """

    def __init__(self, dialect: str, metrics: Sequence[str] = ()) -> None:
        self.pg = dialect == "postgresql"
        self.metrics = list(metrics)

    def empty(self, c: str) -> str:
        return f"({c} IS NULL OR trim({c}) = '')"

    def _match(self, c: str, regex: str, globs: str) -> str:
        return f"({c} ~ '{regex}')" if self.pg else globs

    def _number_shape(self, c: str, whole: bool) -> str:
        u = f"(CASE WHEN substr({c}, 1, 1) = '-' THEN substr({c}, 2) ELSE {c} END)"
        if whole:
            return self._match(c, "^-?[0-9]{1,18}$", f"({u} <> '' AND {u} NOT GLOB '*[^0-9]*' AND length({u}) <= 18)")
        # At most 15 characters: at most 15 significant digits, which a double
        # keeps exactly, so comparing it with a declared bound is exact too.
        return self._match(
            c, "^-?[0-9]+(\\.[0-9]+)?$",
            f"({u} GLOB '[0-9]*' AND {u} GLOB '*[0-9]' AND {u} NOT GLOB '*[^0-9.]*' AND {u} NOT GLOB '*.*.*')",
        ) + f" AND length({c}) <= 15"

    def _date_shape(self, c: str) -> str:
        if self.pg:
            shape = f"substr({c}, 1, 10) ~ '^[1-9][0-9]{{3}}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$'"
            # The first of the month, plus the days: a 31 February comes out as March.
            back = (f"to_char((substr({c}, 1, 8) || '01')::date + (substr({c}, 9, 2)::int - 1), 'YYYY-MM-DD') "
                    f"= substr({c}, 1, 10)")
            return f"(CASE WHEN {shape} THEN {back} ELSE false END)"
        return (f"(substr({c}, 1, 10) GLOB '[1-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]' "
                f"AND date(substr({c}, 1, 10), '+0 days') = substr({c}, 1, 10))")  # '+0 days' normalises 02-30

    def _datetime_shape(self, c: str) -> str:
        time_re = "T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z?"
        if self.pg:
            return f"(({c} ~ '^.{{10}}$' OR {c} ~ '^.{{10}}{time_re}$') AND {self._date_shape(c)})"
        hms = "[0-2][0-9]:[0-5][0-9]:[0-5][0-9]"
        return (f"(length({c}) = 10 OR (({c} GLOB '??????????T{hms}' OR {c} GLOB '??????????T{hms}Z') "
                f"AND datetime(substr({c}, 1, 19), '+0 days') = replace(substr({c}, 1, 19), 'T', ' '))) "
                f"AND {self._date_shape(c)}")

    def shape(self, col: Column, c: str) -> str:
        """True where SQL can type the non-empty text `c`."""
        t = col.type.name
        if t is T.INT:
            return self._number_shape(c, whole=True)
        if t in NUMERIC:
            return self._number_shape(c, whole=False)
        if t is T.BOOL:
            return f"lower({c}) IN ('true', 't', 'yes', 'y', '1', 'false', 'f', 'no', 'n', '0')"
        if t is T.ENUM:
            return f"{c} IN ({', '.join(_lit(v) for v in col.type.values)})" if col.type.values else "1 = 0"
        if t is T.DATE:
            return f"length({c}) = 10 AND {self._date_shape(c)}"
        if t is T.DATETIME:
            return self._datetime_shape(c)
        # Text: kept as written. A value without any printable ASCII character
        # may be blank to Python's str.strip (a no-break space): Python decides.
        text = self._match(c, "[!-~]", f"{c} GLOB '*[!-~]*'")
        if col.check == "strip":  # ids: Python strips them; SQL takes those with nothing to strip
            return self._match(c, "^[!-~](.*[!-~])?$", f"({c} GLOB '[!-~]*' AND {c} GLOB '*[!-~]')")
        if col.check == "email":
            return self._match(c, "^[!-~]+@[!-~]+\\.[!-~]+$",
                               f"({c} GLOB '?*@?*.?*' AND {c} NOT GLOB '*@*@*' AND {c} NOT GLOB '*[^!-~]*')") + \
                (f" AND {c} !~ '@.*@'" if self.pg else "")
        if col.check == "timezone":
            return f"{c} IN ({', '.join(_lit(z) for z in _zones())})"
        if col.check == "metric":
            return f"{c} IN ({', '.join(_lit(m) for m in self.metrics)})" if self.metrics else "1 = 0"
        return text

    def cast(self, col: Column, c: str) -> str:
        """The stored value of `c`, where `shape` holds."""
        t = col.type.name
        if t is T.INT:
            return f"CAST({c} AS BIGINT)" if self.pg else f"CAST({c} AS INTEGER)"
        if t in NUMERIC:
            return f"CAST({c} AS DOUBLE PRECISION)" if self.pg else f"CAST({c} AS REAL)"
        if t is T.BOOL:
            truth = f"lower({c}) IN ('true', 't', 'yes', 'y', '1')"
            return truth if self.pg else f"(CASE WHEN {truth} THEN 1 ELSE 0 END)"
        if t is T.DATE:
            return f"CAST({c} AS DATE)" if self.pg else c
        if t is T.DATETIME:
            clock = f"(CASE WHEN length({c}) = 10 THEN '00:00:00' ELSE substr({c}, 12, 8) END)"
            if self.pg:
                return f"CAST(substr({c}, 1, 10) || ' ' || {clock} || '+00' AS TIMESTAMPTZ)"
            return f"(substr({c}, 1, 10) || ' ' || {clock} || '.000000')"
        return c

    def bounds(self, col: Column, v: str) -> str | None:
        """The declared range (and a percentage's own rule) over the typed value `v`, or None."""
        t = col.type
        tests = []
        if t.name is T.PERCENT:
            # Above 1 is ambiguous; below 0 only where the field declares it.
            tests.append(f"{v} <= 1 AND {v} >= {-1 if t.low is not None and t.low < 0 else 0}")
        if t.name in NUMERIC or t.name is T.INT:
            if t.low is not None:
                tests.append(f"{v} >= {t.low!r}")
            if t.high is not None:
                tests.append(f"{v} <= {t.high!r}")
        return " AND ".join(tests) or None

    def column(self, col: Column, c: str) -> tuple[str, str]:
        """(ok, value) for one staged column."""
        empty = self.empty(c)
        shape = self.shape(col, c)
        cast = self.cast(col, c)
        value = f"CASE WHEN {empty} THEN NULL WHEN {shape} THEN {cast} END"
        bounds = self.bounds(col, f"(CASE WHEN {shape} THEN {cast} END)")
        filled = f"CASE WHEN {shape} THEN {bounds or ('true' if self.pg else '1')} ELSE {'false' if self.pg else '0'} END"
        if col.name in KEY_COLUMNS:
            ok = f"(CASE WHEN {empty} THEN {'false' if self.pg else '0'} ELSE {filled} END)"
        else:
            ok = f"(CASE WHEN {empty} THEN {'true' if self.pg else '1'} ELSE {filled} END)"
        return ok, value


class Staging:
    """The temporary tables of one file: staged text (`_pb_stage`) and typed rows (`_pb_typed`)."""

    def __init__(self, conn: Connection, columns: Sequence[Column], typed_columns: Sequence[sa.Column[Any]],
                 metrics: Sequence[str] = ()) -> None:
        self.conn = conn
        self.columns = list(columns)
        self.pg = conn.dialect.name == "postgresql"
        self.names = [f"s{i}" for i in range(len(self.columns))]
        md = sa.MetaData()
        self.stage = sa.Table(STAGE, md, sa.Column("_row", sa.BigInteger), sa.Column("_grp", sa.Integer),
                              *(sa.Column(s, sa.Text) for s in self.names), prefixes=["TEMPORARY"])
        self.typed = sa.Table(TYPED, md, sa.Column("_row", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                                                   primary_key=True, autoincrement=False),
                              sa.Column("_grp", sa.Integer), *typed_columns, prefixes=["TEMPORARY"])
        self.drop()
        if self.columns:
            self.stage.create(conn)
        self.typed.create(conn)
        self.fragments = Fragments(conn.dialect.name, metrics)
        self.staged = 0

    def drop(self) -> None:
        for name in (STAGE, TYPED):
            self.conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")

    def load(self, rows: Sequence[Sequence[Any]]) -> None:
        """Rows of (line, group, text values in `columns` order) into the stage, replacing what it held."""
        self.staged = len(rows) if self.columns else 0
        if not self.columns:
            return
        self.conn.exec_driver_sql(f"DELETE FROM {STAGE}")
        if not rows:
            return
        cursor = self.conn.connection.cursor()
        try:
            if self.pg:
                buf = io.StringIO()
                # CSV: csv.writer does the quoting in C. An empty string arrives as
                # NULL, which the checks take as empty anyway.
                csv.writer(buf, lineterminator="\n").writerows(rows)
                buf.seek(0)
                cursor.copy_expert(f"COPY {STAGE} FROM STDIN WITH (FORMAT csv)", buf)
            else:
                cursor.executemany(f"INSERT INTO {STAGE} VALUES ({', '.join('?' * (len(self.names) + 2))})", rows)
        finally:
            cursor.close()

    def type_rows(self) -> list[int]:
        """Type the staged rows SQL can type into `_pb_typed`; the lines of the others, in order."""
        if not self.staged:
            return []
        oks, values = [], []
        for col, s in zip(self.columns, self.names):
            ok, value = self.fragments.column(col, s)
            oks.append(ok)
            values.append(value)
        ok_all = " AND ".join(f"({o})" for o in oks) or "1 = 1"
        q = self.conn.dialect.identifier_preparer.quote
        cols = ", ".join(q(c.name) for c in self.columns)
        self.conn.exec_driver_sql(
            f"INSERT INTO {TYPED} (_row, _grp{', ' if cols else ''}{cols}) "
            f"SELECT _row, _grp{', ' if values else ''}{', '.join(values)} FROM {STAGE} WHERE ({ok_all}) IS TRUE")
        return [r[0] for r in self.conn.exec_driver_sql(
            f"SELECT _row FROM {STAGE} WHERE ({ok_all}) IS NOT TRUE ORDER BY _row")]

    def add_typed(self, records: list[dict[str, Any]]) -> None:
        """Rows typed in Python (with `_row` and `_grp`)."""
        if records:
            self.conn.execute(self.typed.insert(), records)

    def count(self) -> int:
        return int(self.conn.exec_driver_sql(f"SELECT count(*) FROM {TYPED}").scalar_one())

    def clear(self) -> None:
        self.conn.exec_driver_sql(f"DELETE FROM {TYPED}")


__all__ = ["Column", "Fragments", "KEY_COLUMNS", "STAGE", "Staging", "TYPED", "quote"]
