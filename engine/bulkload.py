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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dsl import nodes as n

STAGE = "_pb_stage"
TYPED = "_pb_typed"
T = n.TypeName
NUMERIC = {T.NUMBER, T.MONEY, T.PERCENT, T.DURATION}
# Typed by COPY itself (PostgreSQL reads them as Python does, but for NaN, infinities and the
# smallest bigint, which the checks refuse). Not percentages: Python compares the exact decimal
# with 1 (`1.0000000000000001` is ambiguous), which a double cannot tell from 1.
PRESTAGED = {T.NUMBER, T.MONEY, T.DURATION, T.INT}
# The spellings of a boolean (after strip and lower), here and in `engine.importers`' Python path.
TRUE_FORMS = ("true", "t", "yes", "y", "1")
FALSE_FORMS = ("false", "f", "no", "n", "0")
BIGINT_MIN = -(2**63)  # PostgreSQL's bigint takes it; Python refuses it (the magnitude must stay below 2**63)
# Columns that hold a key: empty is never fine.
KEY_COLUMNS = ("id", "account_id", "metric", "date", "value", "event")
# SQLite: the function a statement of `Staging.write_checked` calls where a value is not SQL's to take
# (registered on the connection by `Staging`); it raises, which stops the statement.
REFUSE = "_pb_refuse"
# From this many typed rows on, PostgreSQL gets statistics of `_pb_typed` before joining it.
ANALYZE_ROWS = 10_000


@dataclass(frozen=True)
class Column:
    """One column of a file as SQL sees it."""

    name: str
    type: n.TypeRef
    check: str | None = None  # "email", "timezone", "metric", "strip": the column's own rule
    prestaged: bool = False  # COPY already typed it (a number column of a COPY stage)


class Refused(Exception):
    """SQLite: `Staging.write_checked` met a value SQL cannot take as it is (nothing was written)."""


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


# What str.strip() strips: SQL's trim with these characters empties exactly
# the values `engine.importers.is_empty` calls empty.
WHITESPACE = "".join(chr(i) for i in range(0x110000) if chr(i).isspace())


class Fragments:
    """SQL over one staged text column `c`: its typed value where SQL can type it (`value`, else NULL),
    and whether that is fine (`ok`, a test of the value; each value is typed once).

    Every test is one function call or one regular expression per value
    where possible: at a million rows of fifty columns, each extra call
    per value costs seconds. Forms the expressions do not recognise are
    simply left to Python (NULL value, not ok).
    """

    def __init__(self, dialect: str, metrics: Sequence[str] = (), *, optimistic: bool = False) -> None:
        """`optimistic` (PostgreSQL, DateStyle ISO): a date is CAST as it is and taken where it reads back
        the same (only `2026-01-31` does); a value the CAST refuses (`2026-02-30`, `n/a`) fails the
        statement, and the caller types again without (every value tested first)."""
        self.pg = dialect == "postgresql"
        self.optimistic = optimistic and self.pg
        self.metrics = list(metrics)
        self.ws = _lit(WHITESPACE)
        # A value of blanks starts with one (ascii('') is 0): the trim runs on those only.
        self.ws_codes = ", ".join(str(i) for i in sorted({0, *map(ord, WHITESPACE)}))

    def empty(self, c: str) -> str:
        if self.pg:
            return f"({c} IS NULL OR (ascii({c}) IN ({self.ws_codes}) AND trim({c}, {self.ws}) = ''))"
        # A first character that is printable ASCII other than a space (most values) is no blank: the
        # trim, whose set of 29 characters SQLite parses again for every value, runs on the others only.
        return f"({c} IS NULL OR NOT ({c} >= '!' AND {c} < {_lit(chr(127))}) AND trim({c}, {self.ws}) = '')"

    def _null_or_empty(self, c: str) -> str:
        # Typed columns: a value of blanks matches no shape and goes to Python,
        # which calls it empty; only a missing value needs no test.
        return f"({c} IS NULL)" if self.pg else f"({c} IS NULL OR {c} = '')"

    def _shape(self, col: Column, c: str) -> tuple[str, str] | None:
        """SQLite: (test, value) of a non-empty `c` whose value is `value` where `test` holds (a plain
        shape); None for the types `_typed` writes otherwise (booleans, text)."""
        t = col.type.name
        if t is T.INT:
            # What reads back as written: no sign but `-`, no leading zero, no blank, at most 19 digits
            # (the cast of more stops at the largest integer); 20 characters would let in -2**63, which
            # Python refuses. Two casts instead of a GLOB and three substr (the rest goes to Python).
            return f"CAST(CAST({c} AS INTEGER) AS TEXT) = {c} AND length({c}) < 20", f"CAST({c} AS INTEGER)"
        if t in NUMERIC:
            # The stage column has REAL affinity: the insert already turned every
            # well-formed number into a double, and left the rest as text.
            return f"typeof({c}) = 'real'", c
        if t is T.ENUM:
            return f"{c} IN ({', '.join(_lit(v) for v in col.type.values) or 'NULL'})", c
        if t is T.DATE:
            return self._date(c, 10), c
        if t is T.DATETIME:
            clock = f"(CASE WHEN length({c}) = 10 THEN '00:00:00' ELSE substr({c}, 12, 8) END)"
            return self._date(c, None), f"(substr({c}, 1, 10) || ' ' || {clock} || '.000000')"
        if col.check == "strip":
            # First and last character printable ASCII other than a space (the rest goes to Python):
            # two comparisons and one substr instead of a trim with a set of 29 characters, which
            # SQLite parses again for every value (2,000,000 ids: 1.7 -> 0.7 s CPU).
            return f"{c} >= '!' AND {c} < {_lit(chr(127))} AND substr({c}, -1) BETWEEN '!' AND '~'", c
        if col.check == "email":
            return f"{c} GLOB '?*@?*.?*' AND {c} NOT GLOB '*@*@*' AND {c} NOT GLOB '*[^!-~]*'", c
        if col.check == "timezone":
            return f"{c} IN ({', '.join(_lit(z) for z in _zones())})", c
        if col.check == "metric":
            return f"{c} IN ({', '.join(_lit(m) for m in self.metrics) or 'NULL'})", c
        return None

    def _typed(self, col: Column, c: str) -> str:
        """The value of a non-empty `c` where its shape is plain, else NULL."""
        t = col.type.name
        pg = self.pg
        if not pg and (shape := self._shape(col, c)):
            return f"CASE WHEN {shape[0]} THEN {shape[1]} END"
        if t is T.INT:
            return f"CASE WHEN {c} ~ '^-?[0-9]{{1,18}}$' THEN CAST({c} AS BIGINT) END"
        if t in NUMERIC:
            return (f"CASE WHEN length({c}) <= 15 AND {c} ~ '^-?[0-9]+(\\.[0-9]+)?$' "
                    f"THEN CAST({c} AS DOUBLE PRECISION) END")
        if t is T.BOOL:
            yes, no = ("true", "false") if pg else ("1", "0")
            cases = " ".join([f"WHEN '{w}' THEN {yes}" for w in TRUE_FORMS] + [f"WHEN '{w}' THEN {no}" for w in FALSE_FORMS])
            return f"CASE lower({c}) {cases} END"
        if t is T.ENUM:
            values = ", ".join(_lit(v) for v in col.type.values) or "NULL"
            return f"CASE WHEN {c} IN ({values}) THEN {c} END"
        if not pg:
            return c  # text: anything not empty, as written
        if t is T.DATE and self.optimistic:
            # Half the cost of the regular expressions: PostgreSQL's own parser, in C, once.
            # Ten bytes keep out 'infinity'; `ok` reads the day back and keeps out looser forms
            # (a value that does not read back the same is not ok, whatever it typed to).
            return f"CASE WHEN octet_length({c}) = 10 THEN CAST({c} AS DATE) END"
        if t is T.DATE:
            return f"CASE WHEN {self._date(c, 10)} THEN CAST({c} AS DATE) END"
        if t is T.DATETIME:
            clock = f"(CASE WHEN length({c}) = 10 THEN '00:00:00' ELSE substr({c}, 12, 8) END)"
            value = f"CAST(substr({c}, 1, 10) || ' ' || {clock} || '+00' AS TIMESTAMPTZ)"
            return f"CASE WHEN {self._date(c, None)} THEN {value} END"
        if col.check == "strip":  # ids: Python strips them; SQL takes those with nothing to strip
            return f"CASE WHEN NOT ({self._strippable(c)}) THEN {c} END"
        if col.check == "email":
            return f"CASE WHEN {c} ~ '^[!-?A-~]+@[!-?A-~]+\\.[!-?A-~]+$' THEN {c} END"
        if col.check == "timezone":
            return f"CASE WHEN {c} IN ({', '.join(_lit(z) for z in _zones())}) THEN {c} END"
        if col.check == "metric":
            return f"CASE WHEN {c} IN ({', '.join(_lit(m) for m in self.metrics) or 'NULL'}) THEN {c} END"
        return c  # text: anything not empty, as written

    def _date(self, c: str, length: int | None) -> str:
        """`c` is an existing day (10 characters), or with `length` None also a whole-second UTC time."""
        if self.pg:
            day = "[1-9][0-9]{3}-(0[1-9]|1[0-2])-"
            tail = "" if length else "(T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z?)?"
            # Days up to 28 exist in every month; for the others, the first of the
            # month plus the days must stay in the month.
            back = (f"to_char((substr({c}, 1, 8) || '01')::date + (substr({c}, 9, 2)::int - 1), 'YYYY-MM-DD') "
                    f"= substr({c}, 1, 10)")
            return (f"(CASE WHEN {c} ~ '^{day}(0[1-9]|1[0-9]|2[0-8]){tail}$' THEN true "
                    f"WHEN {c} ~ '^{day}(29|30|31){tail}$' THEN {back} ELSE false END)")
        if length == 10:
            # A day as SQLite writes it back (so `YYYY-MM-DD`, month and day in range: 02-30 reads as
            # 03-02 after '+0 days'), from the year 1000 on (Python has no year 0): one call instead
            # of a GLOB, three substr and the same call for days past the 28th (2,000,000 days:
            # 2.5 -> 1.1 s CPU).
            return f"({c} > '1' AND date({c}, '+0 days') = {c})"
        shape = (f"substr({c}, 1, 10) GLOB '[1-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]' "
                 f"AND substr({c}, 6, 2) BETWEEN '01' AND '12' AND (substr({c}, 9, 2) BETWEEN '01' AND '28' "
                 f"OR date(substr({c}, 1, 10), '+0 days') = substr({c}, 1, 10))")  # '+0 days': 02-30 is 03-02
        if length:
            return f"(length({c}) = {length} AND {shape})"
        hms = "[0-2][0-9]:[0-5][0-9]:[0-5][0-9]"
        return (f"((length({c}) = 10 OR (({c} GLOB '??????????T{hms}' OR {c} GLOB '??????????T{hms}Z') "
                f"AND datetime(substr({c}, 1, 19), '+0 days') = replace(substr({c}, 1, 19), 'T', ' '))) "
                f"AND {shape})")

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

    def checked(self, col: Column, c: str, f: str, required: bool) -> tuple[str | None, str, str, list[str]]:
        """PostgreSQL, for a statement that fails where any row is not SQL's to take (`Staging.write_checked`):
        of the staged `c`, what is typed once before the row's tests (named `f`; None: nothing), the value
        written, what is NULL where the value is empty (for `required`), and tests that are true where the
        row is not taken as written (NULL counts as false). A CAST that fails (`n/a` as a day) fails the
        statement too. Values of rows that fail a test are never written, so they need no guard."""
        t = col.type.name
        if col.prestaged:
            bounds = self.bounds(col, c)
            if t is T.INT:
                finite = None if col.type.low is not None and col.type.low > BIGINT_MIN else self._finite(col, c)
            else:  # two declared bounds keep out NaN and the infinities already
                finite = None if col.type.low is not None and col.type.high is not None else self._finite(col, c)
            tests = [x for x in (finite, bounds) if x]
            return None, c, c, [f"NOT ({' AND '.join(tests)})"] if tests else []
        if t is T.DATE:
            # Ten characters that read back as written are a day as Python reads it (not `infinity`,
            # `2026-1-5 `, `01/05/2026`, `2026-01-05 BC`); what is no day at all fails the CAST.
            return f"CAST({c} AS DATE)", f, c, [f"octet_length({c}) <> 10 OR CAST({f} AS TEXT) <> {c}"]
        if t is T.PERCENT:
            # The CAST reads a number as Python does, but for NaN and infinities (kept out by the bounds),
            # hexadecimal (`0x1p-1`), and whether 1 is exactly 1 (`1.0000000000000001` is ambiguous).
            return (f"CAST({c} AS DOUBLE PRECISION)", f, c,
                    [f"NOT ({self.bounds(col, f)})", f"abs({f}) = 1 AND {c} !~ '^-?1(\\.0+)?$'",
                     f"strpos({c}, 'x') > 0 OR strpos({c}, 'X') > 0"])
        if t is T.BOOL:
            forms = ", ".join(f"'{w}'" for w in (*TRUE_FORMS, *FALSE_FORMS))
            # The CAST also reads `on`, `of`, `tr`...: the spelling is Python's or the row is not taken.
            return None, f"CAST({c} AS BOOLEAN)", c, [f"{c} <> 'true' AND {c} <> 'false' AND lower({c}) NOT IN ({forms})"]
        if t is T.ENUM and col.type.values:
            return None, c, c, [f"{c} NOT IN ({', '.join(_lit(v) for v in col.type.values)})"]
        if col.check == "strip":
            return None, c, c, [self._strippable(c)]
        if self._is_text(col):
            blank = f"ascii({c}) IN ({self.ws_codes}) AND trim({c}, {self.ws}) = ''"
            if required:  # a value of blanks is empty
                return None, c, c, [blank]
            return None, f"CASE WHEN {blank} THEN NULL ELSE {c} END", c, []
        # The rest (times, emails, zones, numbers staged as text...) is typed as the checked path types it.
        return self.value(col, c), f, f, [f"({self.ok(col, c, f)}) IS NOT TRUE"]

    def refusing(self, col: Column, c: str, required: bool) -> str:
        """SQLite, for a statement that stops where any row is not SQL's to take (`Staging.write_checked`):
        the value of the staged `c` as it is written, or a call of `_pb_refuse()` (which stops the
        statement) where SQL cannot type it, it is out of its range, or it is empty and `required`.
        Each value is typed once in its own expression, with no subquery to keep it (a subquery's rows
        and a test of every value again cost as much as the typing: 1.45 of 2.7 s CPU at 200,000 accounts)."""
        refuse = f"{REFUSE}()"
        empty = refuse if required or col.name in KEY_COLUMNS else "NULL"
        if self._is_text(col):
            return (f"CASE WHEN {c} >= '!' AND {c} < {_lit(chr(127))} THEN {c} "
                    f"WHEN {self.empty(c)} THEN {empty} ELSE {c} END")
        if col.type.name is T.BOOL:
            cases = " ".join([f"WHEN '{w}' THEN 1" for w in TRUE_FORMS] + [f"WHEN '{w}' THEN 0" for w in FALSE_FORMS])
            return f"CASE lower({c}) {cases} ELSE CASE WHEN {self._null_or_empty(c)} THEN {empty} ELSE {refuse} END END"
        shape = self._shape(col, c)
        if shape is None:  # not met by the types there are; typed twice, as `value` and in `ok`
            v = self.value(col, c)
            filled = f" AND {v} IS NOT NULL" if empty == refuse else ""
            return f"CASE WHEN ({self.ok(col, c, v)}) IS TRUE{filled} THEN {v} ELSE {refuse} END"
        test, value = shape
        bounds = self.bounds(col, value)
        return (f"CASE WHEN {test}{' AND ' + bounds if bounds else ''} THEN {value} "
                f"WHEN {self._null_or_empty(c)} THEN {empty} ELSE {refuse} END")

    def _strippable(self, c: str) -> str:
        """PostgreSQL: `c` is empty or Python's strip() would change it: its first or last character is
        a blank (ascii('') is 0, in the set). Two lookups instead of a trim with a set of 29 characters
        (at 200,000 ids 0.06 s of backend CPU less)."""
        return f"ascii({c}) IN ({self.ws_codes}) OR ascii(right({c}, 1)) IN ({self.ws_codes})"

    def _finite(self, col: Column, v: str) -> str:
        """What COPY reads into a number column that Python refuses: NaN and infinities (NaN sorts
        above Infinity), and the smallest bigint."""
        if col.type.name is T.INT:
            return f"{v} > {BIGINT_MIN}"
        return f"{v} > '-Infinity' AND {v} < 'Infinity'"

    def _is_text(self, col: Column) -> bool:
        return col.type.name in (T.TEXT, T.USER, T.CONTACT) and col.check is None

    def value(self, col: Column, c: str) -> str:
        """The typed value of the staged text `c`: NULL where empty or where SQL cannot type it."""
        if col.prestaged:
            return c
        if self._is_text(col):
            return f"CASE WHEN {self.empty(c)} THEN NULL ELSE {c} END"
        return f"CASE WHEN {self._null_or_empty(c)} THEN NULL ELSE {self._typed(col, c)} END"

    def ok(self, col: Column, c: str, v: str) -> str:
        """Whether SQL typed `c` (as `v`, the result of `value`) and it is within its bounds."""
        bounds = self.bounds(col, v)
        if col.prestaged:
            bounds = " AND ".join([self._finite(col, v), *([bounds] if bounds else [])])
        if self.optimistic and col.type.name is T.DATE and not col.prestaged:
            bounds = f"CAST({v} AS TEXT) = {c}"  # see `_typed`: the day reads back as written
        filled = f"({v} IS NOT NULL{' AND ' + bounds if bounds else ''})"
        if col.prestaged and col.name not in KEY_COLUMNS:
            return f"({v} IS NULL OR {filled})"
        if col.name in KEY_COLUMNS:
            return filled
        if self._is_text(col):
            return "true" if self.pg else "1"  # empty or not, text is what was written
        return f"({self._null_or_empty(c)} OR {filled})"


_COPY_BLOCK = 1 << 20  # bytes per read while COPY sends a file (psycopg2's default is 8 KB)


class _Counted:
    """A binary file as COPY reads it, counting its line breaks on the way once it shows a quote
    (without one no value can hold a line break, and the count is not needed: None)."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh
        self.line_breaks: int | None = None
        self.offset = 0

    def read(self, size: int = -1) -> bytes:
        block: bytes = self.fh.read(size)
        if self.line_breaks is None and b'"' in block:
            self.line_breaks = self._count(self.offset)  # what went by before
        if self.line_breaks is not None:
            self.line_breaks += block.count(b"\n")
        self.offset += len(block)
        return block

    def _count(self, end: int) -> int:
        count = 0
        with open(self.fh.name, "rb") as fh:
            while end > 0 and (block := fh.read(min(end, _COPY_BLOCK))):
                count += block.count(b"\n")
                end -= len(block)
        return count


class Staging:
    """The temporary tables of one file: staged text (`_pb_stage`) and typed rows (`_pb_typed`)."""

    def __init__(self, conn: Connection, columns: Sequence[Column], typed_columns: Sequence[sa.Column[Any]],
                 metrics: Sequence[str] = (), *, copy: bool = False) -> None:
        """`copy` (PostgreSQL): the stage is for `copy_file`, its number columns typed by COPY itself."""
        self.conn = conn
        self.pg = conn.dialect.name == "postgresql"
        self.copy = copy
        self.columns = [replace(c, prestaged=True) if copy and c.type.name in PRESTAGED else c for c in columns]
        self.names = [f"s{i}" for i in range(len(self.columns))]
        md = sa.MetaData()
        # SQLite: numbers are staged into REAL columns, whose affinity converts
        # them on insert as fast as a bare executemany would (see Fragments).
        self.stage = sa.Table(STAGE, md, sa.Column("_row", sa.BigInteger), sa.Column("_grp", sa.Integer),
                              *(sa.Column(s, self._stage_type(c)) for s, c in zip(self.names, self.columns)),
                              prefixes=["TEMPORARY"])
        # SQLite: `_row` is the rowid (free); PostgreSQL: no index to maintain on
        # a million inserts for the rare delete of duplicates.
        self.typed = sa.Table(TYPED, md, sa.Column("_row", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                                                   primary_key=not self.pg, autoincrement=False),
                              sa.Column("_grp", sa.Integer), sa.Column("_ok", sa.Boolean, default=True),
                              *typed_columns, prefixes=["TEMPORARY"])
        self.drop()
        if self.columns:
            self.stage.create(conn)
        self.typed.create(conn)
        self.fragments = Fragments(conn.dialect.name, metrics)
        self.staged = 0
        self.line_breaks: int | None = None  # of the file `copy_file` read (None: it quotes no value)
        self.rows = 0  # rows in `_pb_typed`
        self._iso: bool | None = None
        self._refusals = [0]  # calls of `_pb_refuse` (SQLite)
        if not self.pg:
            refusals = self._refusals  # not `self`: the connection outlives the staging

            def refuse() -> None:
                refusals[0] += 1
                raise ValueError("not SQL's to take")  # the statement stops (sqlite3's OperationalError)

            conn.connection.dbapi_connection.create_function(REFUSE, 0, refuse)  # type: ignore[union-attr]

    def _stage_type(self, c: Column) -> sa.types.TypeEngine[Any]:
        if c.prestaged:
            return sa.BigInteger() if c.type.name is T.INT else sa.Double()
        return sa.Double() if not self.pg and c.type.name in NUMERIC else sa.Text()

    def drop(self) -> None:
        for name in (STAGE, TYPED):
            self.conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")

    def copy_file(self, path: Path) -> int:
        """COPY a CSV file as it is (header line skipped, columns in `columns` order) into the stage;
        returns the rows. They get no line number here (a default per row cost a tenth of the COPY):
        `_type_rows` numbers them in the order COPY wrote them, the file's, which gives each its line in
        a file without line breaks inside values (`line_breaks`, counted as COPY reads where the file
        quotes a value, tells; None: no quote, so none)."""
        cursor = self.conn.connection.cursor()
        try:
            with path.open("rb") as fh:
                source = _Counted(fh)
                cursor.copy_expert(f"COPY {STAGE} ({', '.join(self.names)}) FROM STDIN WITH (FORMAT csv, HEADER)",
                                   source, size=_COPY_BLOCK)
            self.staged = cursor.rowcount
            self.line_breaks = source.line_breaks
        finally:
            cursor.close()
        return self.staged

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
        if self.pg and any(c.type.name is T.DATE for c in self.columns) and self._iso_dates():
            # Optimistic first: a day that does not exist fails the CAST, and
            # the rows are typed again with every day tested.
            savepoint = self.conn.begin_nested()
            try:
                bad = self._type_rows(Fragments("postgresql", self.fragments.metrics, optimistic=True))
                savepoint.commit()
                return bad
            except sa.exc.DBAPIError as e:
                code = getattr(e.orig, "pgcode", None) or getattr(e.orig, "sqlstate", None) or ""
                if not code.startswith("22"):  # data exception: the CAST of a day that does not exist
                    raise
                savepoint.rollback()
        return self._type_rows(self.fragments)

    def _iso_dates(self) -> bool:
        """Whether PostgreSQL writes dates as 2026-01-31 in this session (what the optimistic typing compares)."""
        if self._iso is None:
            self._iso = str(self.conn.exec_driver_sql("SHOW DateStyle").scalar_one()).startswith("ISO")
        return self._iso

    def _type_rows(self, fragments: Fragments) -> list[int]:
        q = self.conn.dialect.identifier_preparer.quote
        values = [f"{fragments.value(col, s)} AS v{i}" for i, (col, s) in enumerate(zip(self.columns, self.names))]
        oks = [f"({fragments.ok(col, s, f'v{i}')})" for i, (col, s) in enumerate(zip(self.columns, self.names))]
        cols = "".join(f", {q(c.name)}" for c in self.columns)
        # Each value is typed once: OFFSET keeps both databases from folding the
        # subquery into the outer one (which would type every value twice).
        fence = "OFFSET 0" if self.pg else "LIMIT -1 OFFSET 0"
        # A COPY stage's rows are numbered as a sequential scan returns them: in the order written.
        lines = "row_number() OVER () + 1 AS _row, 0 AS _grp" if self.copy else "_row, _grp"
        inserted = self.conn.exec_driver_sql(
            f"INSERT INTO {TYPED} (_row, _grp, _ok{cols}) "
            f"SELECT _row, _grp, ({' AND '.join(oks) or '1 = 1'}) IS TRUE"
            f"{''.join(f', v{i}' for i in range(len(self.columns)))} "
            f"FROM (SELECT {lines}, {', '.join(self.names + values)} FROM {STAGE} {fence}) s")
        if self.pg and inserted.rowcount >= ANALYZE_ROWS:
            # A temporary table has no statistics unless asked (autovacuum skips it): the
            # checks' joins of many rows with the stored table would probe row by row.
            keys = [c.name for c in self.columns if c.name in ("id", "account_id")]
            q = self.conn.dialect.identifier_preparer.quote
            self.conn.exec_driver_sql(f"ANALYZE {TYPED} ({', '.join(q(k) for k in keys)})" if keys else f"ANALYZE {TYPED}")
        bad = [r[0] for r in self.conn.exec_driver_sql(f"SELECT _row FROM {TYPED} WHERE NOT _ok ORDER BY _row")]
        if bad:
            self.conn.exec_driver_sql(f"DELETE FROM {TYPED} WHERE NOT _ok")
        self.rows += inserted.rowcount - len(bad)
        return bad

    def write_checked(self, table: str, required: Sequence[str], key: str = "id", *, also: Sequence[str] = (),
                      params: dict[str, Any] | None = None, known: tuple[str, str] | None = None) -> int:
        """Type the staged rows and INSERT them into `table` (columns named as `columns`) in one
        statement, without `_pb_typed`; returns the rows written.

        Only for a stage SQL can take whole: a value SQL cannot type, out of its
        range, or empty in a `required` column makes the statement fail (PostgreSQL:
        `key` NULL, which the table refuses; SQLite: `Refused`), and the caller, in a
        savepoint, rolls back and takes the checked path that names the problem.

        `also` (PostgreSQL): statements over `w`, the keys written (`w.id`), run in the same statement
        (data-modifying WITH), so the stage is read once; `params` are their parameters.
        `known` (SQLite): (column, table): that column's value must be an `id` of the table too.
        """
        assert known is None or not self.pg, "`known` is for SQLite"
        insert = self._insert_checked_pg(table, required, key) if self.pg else \
            self._insert_checked(table, required, key, known)
        if also and self.pg:
            # Every statement of `also` sees the keys written, and runs to its end whatever the
            # outer SELECT reads; that counts the keys.
            extra = "".join(f", w{i} AS ({sql})" for i, sql in enumerate(also))
            sql = f"WITH w AS ({insert} RETURNING {quote(self.conn, key)} AS id){extra} SELECT count(*) FROM w"
            return int(self.conn.exec_driver_sql(sql, params or {}).scalar_one())
        assert not also, "`also` is for PostgreSQL"
        if self.pg:
            return int(self.conn.exec_driver_sql(insert).rowcount)
        refusals = self._refusals[0]
        try:
            return int(self.conn.exec_driver_sql(insert).rowcount)
        except sa.exc.OperationalError:
            if self._refusals[0] != refusals:
                raise Refused from None
            raise

    def _insert_checked_pg(self, table: str, required: Sequence[str], key: str) -> str:
        """The INSERT ... SELECT of `write_checked` on PostgreSQL: each value as it is written, and the key
        NULL where any row test (`Fragments.checked`) is true. Only days and percentages (and the rare
        column typed as the checked path types it) are typed in a subquery first, so each is CAST once;
        typing every value NULL-safe there and testing it again cost a third more (3.2 s against 2.3 s
        of backend CPU over the plain INSERT at 1,000,000 accounts)."""
        q = self.conn.dialect.identifier_preparer.quote
        fenced: list[str] = []
        values: list[str] = []
        tests: list[str] = []
        empty: list[str] = []
        for i, (col, s) in enumerate(zip(self.columns, self.names)):
            fence, value, probe, bad = self.fragments.checked(col, s, f"f{i}", col.name in required)
            if fence:
                fenced.append(f"{fence} AS f{i}")
            values.append(value)
            tests += bad
            if col.name in required:
                empty.append(probe)
        if empty:  # one call for every required column, not a test each
            tests.append(f"num_nulls({', '.join(empty)}) > 0")
        k = [c.name for c in self.columns].index(key)
        if tests:
            values[k] = f"CASE WHEN {' OR '.join(f'({t})' for t in tests)} THEN NULL ELSE {values[k]} END"
        source = f"(SELECT *, {', '.join(fenced)} FROM {STAGE} OFFSET 0) s" if fenced else STAGE
        return f"INSERT INTO {table} ({', '.join(q(c.name) for c in self.columns)}) SELECT {', '.join(values)} FROM {source}"

    def _insert_checked(self, table: str, required: Sequence[str], key: str,
                        known: tuple[str, str] | None = None) -> str:
        """The INSERT ... SELECT of `write_checked` on SQLite: each value typed where SQL can type it, and
        `_pb_refuse()` called where it cannot, where a value is out of its range, empty where required
        or (`known`) not an id of the other table (`Fragments.refusing`)."""
        q = self.conn.dialect.identifier_preparer.quote
        pairs = list(zip(self.columns, self.names))
        out = [self.fragments.refusing(col, s, col.name in required or col.name == key) for col, s in pairs]
        if known:
            i = [c.name for c in self.columns].index(known[0])
            # The staged text as it is: a value `refusing` writes otherwise is refused anyway.
            out[i] = f"CASE WHEN EXISTS (SELECT 1 FROM {q(known[1])} k WHERE k.id = {self.names[i]}) THEN {out[i]} ELSE {REFUSE}() END"
        return (f"INSERT INTO {table} ({', '.join(q(c.name) for c in self.columns)}) SELECT {', '.join(out)} "
                f"FROM {STAGE}")

    def add_typed(self, records: list[dict[str, Any]]) -> None:
        """Rows typed in Python (with `_row` and `_grp`)."""
        if records:
            self.conn.execute(self.typed.insert(), records)
            self.rows += len(records)

    def delete(self, lines: Sequence[int]) -> None:
        """Take the rows of `lines` out of `_pb_typed`."""
        for start in range(0, len(lines), 5000):
            part = list(lines[start:start + 5000])
            self.rows -= self.conn.execute(sa.text(f"DELETE FROM {TYPED} WHERE _row IN :rows")
                                           .bindparams(sa.bindparam("rows", part, expanding=True))).rowcount

    def count(self) -> int:
        """The rows in `_pb_typed` (kept count: no scan)."""
        return self.rows

    def clear(self) -> None:
        self.conn.exec_driver_sql(f"DELETE FROM {TYPED}")
        self.rows = 0


__all__ = ["Column", "Fragments", "KEY_COLUMNS", "STAGE", "Staging", "TYPED", "quote"]
