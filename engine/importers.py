"""Import CSV and JSON Lines files into the store, checked against the `entity` declarations.

    report = import_files(store, catalog, [("accounts", "accounts.csv"), ("metrics", "usage.jsonl")])

Guarantees (docs/store.md has the full rules):

* Every row of every file is checked; each problem is a `RowError` with the
  file, the row (the line number in the file; a CSV header is line 1), the
  column and a reason. Problems are raised together as `ImportFailed`.
* All-or-nothing: all files of one call are written in one transaction. On
  the first problem writing stops (checking goes on) and the transaction
  is rolled back, so nothing is half-written.
* Idempotent: accounts, contacts and users upsert by `id`; metric points
  by (metric, account_id, date); events by their `key` (the source's `id`
  column when given, else account|event|occurred_at). Importing the same
  files twice leaves the same rows.

Files go through each database's bulk path (engine/bulkload.py): COPY of
the file itself on PostgreSQL, or rows read here and staged in chunks of
100,000 with one executemany/COPY; values are typed and checked set-wise
in SQL, and only the rows SQL cannot type come back to the Python checks
below, which give every message its wording. Accounts' replaced values go
to the field history (engine/history.py). Memory stays bounded by the
chunk; duplicate ids across chunks are found in a temporary table.
"""

from __future__ import annotations

import csv
import datetime as dt
import gc
import heapq
import itertools
import json
import math
import operator
import re
import zoneinfo
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dsl import nodes as n
from dsl.catalog import INBOUND_EVENTS, Catalog
from dsl.suggest import closest
from engine import bulkload, changes, history, indexes, rollups, schema
from engine.bulkload import TYPED, Staging
from engine.store import Store, StoreError
from engine.store import unreachable as store_unreachable

Kind = Literal["users", "accounts", "contacts", "metrics", "events"]
KINDS: tuple[Kind, ...] = ("users", "accounts", "contacts", "metrics", "events")
# Files are imported in this order whatever order they are given in, so a
# contacts file may refer to accounts of the same import.
_ORDER = {k: i for i, k in enumerate(KINDS)}
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


# --------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class RowError:
    file: str
    row: int  # line number in the file (CSV header = 1); 0 = the file as a whole
    column: str | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.row}" if self.row else self.file
        return f"{where}: {self.column}: {self.reason}" if self.column else f"{where}: {self.reason}"


SHOWN_IN_MESSAGE = 20  # problems listed in ImportFailed's message (all are in `errors`)


class ImportFailed(Exception):
    """The import was rolled back; `errors` says why (at most `max_errors` of `total`)."""

    def __init__(self, errors: list[RowError], total: int) -> None:
        self.errors = errors
        self.total = total
        shown = errors[:SHOWN_IN_MESSAGE]
        # Counted against what the message shows, not what `errors` holds.
        more = f" (and {total - len(shown)} more)" if total > len(shown) else ""
        lines = "\n".join(f"  {e}" for e in shown)
        super().__init__(f"import failed with {total} problem(s){more}; nothing was written\n{lines}")


@dataclass
class FileResult:
    kind: Kind
    file: str
    rows: int = 0
    created: int = 0  # entity files: ids that were new
    updated: int = 0  # entity files: ids that existed


@dataclass
class ImportReport:
    files: list[FileResult] = field(default_factory=list)
    changed_values: int = 0  # account field values that differ from what the store held

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)


# --------------------------------------------------------------------------
# Values: text or JSON in, typed Python value out (ValueError says why not)

# One list of spellings for both paths: the SQL typing (engine/bulkload.py) reads the same words.
_TRUE = frozenset(bulkload.TRUE_FORMS)
_FALSE = frozenset(bulkload.FALSE_FORMS)
_MONEY = re.compile(r"^[$€£]?\s?-?\d{1,3}(,\d{3})+(\.\d+)?$")
_DURATION = re.compile(r"^(-?\d+(?:\.\d+)?)\s*(hours?|days?|weeks?|months?)$")
_DURATION_DAYS = {"hour": 1 / 24, "day": 1.0, "week": 7.0, "month": 30.0}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# A bare percent is a fraction (0.85); above this it is ambiguous (85 for 85%? 7.5 for 7.5%?).
PERCENT_BARE_MAX = 1.0


def _decimal(raw: Any, what: str) -> Decimal:
    if isinstance(raw, bool):
        raise ValueError(f"expected {what}, found a boolean")
    if isinstance(raw, (int, float)):
        if isinstance(raw, float) and not math.isfinite(raw):
            raise ValueError(f"expected {what}, found {raw}")
        return Decimal(str(raw))
    if not isinstance(raw, str):
        raise ValueError(f"expected {what}, found {type(raw).__name__}")
    try:
        d = Decimal(raw.strip())
    except InvalidOperation:
        raise ValueError(f"expected {what}, found {raw!r}") from None
    if not d.is_finite():
        raise ValueError(f"expected {what}, found {raw!r}")
    return d


def _in_range(value: float, t: n.TypeRef) -> float:
    if not math.isfinite(value):  # e.g. 1e400: finite as a Decimal, not as a double
        raise ValueError(f"{value} is too large a number")
    if t.low is not None and value < t.low or t.high is not None and value > t.high:
        lo = "" if t.low is None else f"{t.low:g}"
        hi = "" if t.high is None else f"{t.high:g}"
        raise ValueError(f"{value:g} is outside the declared range {lo}..{hi}")
    return value


def _int(raw: Any, t: n.TypeRef) -> int:
    d = _decimal(raw, "a whole number")
    if d != d.to_integral_value():
        raise ValueError(f"expected a whole number, found {raw!r}")
    if abs(d) >= 2**63:  # the column is a 64-bit integer
        raise ValueError(f"{raw} is too large for a whole number")
    _in_range(float(d), t)
    return int(d)


def _number(raw: Any, t: n.TypeRef) -> float:
    return _in_range(float(_decimal(raw, "a number")), t)


def _money(raw: Any, t: n.TypeRef) -> float:
    # CRM exports write "$12,000.00"; accept that shape and nothing looser.
    if isinstance(raw, str) and _MONEY.match(raw.strip()):
        raw = raw.strip().lstrip("$€£").strip().replace(",", "")
    elif isinstance(raw, str) and raw.strip()[:1] in "$€£":
        raw = raw.strip()[1:].strip()
    return _in_range(float(_decimal(raw, "an amount of money")), t)


def _percent(raw: Any, t: n.TypeRef) -> float:
    if isinstance(raw, str) and raw.strip().endswith("%"):
        # Decimal first: "85%" must give exactly float("0.85"), or a
        # re-import written the other way would not be idempotent.
        d = _decimal(raw.strip()[:-1], "a percentage") / 100
    else:
        d = _decimal(raw, "a percentage (85% or 0.85)")
        if abs(d) > PERCENT_BARE_MAX:
            # Both readings, the fraction one first: the store keeps usage over a limit as 1.09.
            raise ValueError(f"{raw} is ambiguous: write {(d * 100).normalize():f}% if it is a fraction "
                             f"(how the store keeps percentages), or {raw}% if it is a percentage")
    if d < 0 and (t.low is None or t.low >= 0):  # a share: negative only where the field declares it
        raise ValueError(f"{raw} is negative; a percentage here is 0% or more")
    return _in_range(float(d), t)


def _bool(raw: Any, t: n.TypeRef) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str):
        s = raw.strip().lower()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
    raise ValueError(f"expected true or false, found {raw!r}")


def _text(raw: Any, t: n.TypeRef) -> str:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return str(raw)  # ids and zip codes that a JSON writer turned into numbers
    raise ValueError(f"expected text, found {type(raw).__name__}")


def _enum(raw: Any, t: n.TypeRef) -> str:
    s = _text(raw, t).strip()
    if s in t.values:
        return s
    folded = {v.lower(): v for v in t.values}
    guess = folded.get(s.lower().replace(" ", "_").replace("-", "_")) or closest(s.lower(), t.values)
    hint = f"; did you mean {guess}?" if guess else f"; expected one of {', '.join(t.values)}"
    raise ValueError(f"{s!r} is not a declared value{hint}")


def _date(raw: Any, t: n.TypeRef) -> dt.date:
    if isinstance(raw, str) and len(raw.strip()) == 10:
        try:
            return dt.date.fromisoformat(raw.strip())
        except ValueError:
            pass
    raise ValueError(f"expected a date like 2026-01-31, found {raw!r}")


def _datetime(raw: Any, t: n.TypeRef) -> dt.datetime:
    if isinstance(raw, str):
        try:
            v = dt.datetime.fromisoformat(raw.strip())
        except ValueError:
            pass
        else:
            # No offset means UTC: the store keeps every instant in UTC.
            return v.replace(tzinfo=dt.timezone.utc) if v.tzinfo is None else v.astimezone(dt.timezone.utc)
    raise ValueError(f"expected a date and time like 2026-01-31T14:00:00Z, found {raw!r}")


def _duration(raw: Any, t: n.TypeRef) -> float:
    if isinstance(raw, str):
        m = _DURATION.match(raw.strip().lower())
        if m:
            return float(m.group(1)) * _DURATION_DAYS[m.group(2).rstrip("s")]
    try:
        return float(_decimal(raw, "a duration"))  # a bare number is days
    except ValueError:
        raise ValueError(f"expected a duration like '3 days' or a number of days, found {raw!r}") from None


_PARSE: dict[n.TypeName, Any] = {
    n.TypeName.INT: _int,
    n.TypeName.NUMBER: _number,
    n.TypeName.PERCENT: _percent,
    n.TypeName.MONEY: _money,
    n.TypeName.BOOL: _bool,
    n.TypeName.TEXT: _text,
    n.TypeName.ENUM: _enum,
    n.TypeName.DATE: _date,
    n.TypeName.DATETIME: _datetime,
    n.TypeName.DURATION: _duration,
    n.TypeName.USER: _text,
    n.TypeName.CONTACT: _text,
}


def is_empty(raw: Any) -> bool:
    """CSV cannot tell "" from missing, so an empty string is empty everywhere."""
    return raw is None or (isinstance(raw, str) and raw.strip() == "")


def parse_value(t: n.TypeRef, raw: Any) -> Any:
    """The stored value of `raw` for a field of type `t` (None if empty); ValueError if invalid."""
    if is_empty(raw):
        return None
    return _PARSE[t.name](raw, t)


# --------------------------------------------------------------------------
# Reading files: (line number, {column: raw value}) per row, plus errors


@dataclass
class _Source:
    path: Path
    name: str
    columns: list[str] | None = None  # CSV header; None for JSON Lines


def _read(src: _Source, errors: _Errors, *, lists: bool = False) -> Iterator[tuple[int, Any]]:
    """(line, {column: raw value}); with `lists`, a CSV row is its list of values in header order."""
    fmt = FORMATS.get(src.path.suffix.lower())
    if fmt is None:
        errors.add(RowError(src.name, 0, None, f"unknown file type {src.path.suffix!r}: use .csv or .jsonl"))
        return
    try:
        fh = src.path.open(encoding="utf-8-sig", newline="")
    except OSError as e:
        errors.add(RowError(src.name, 0, None, f"cannot read: {e.strerror or e}"))
        return
    with fh:
        try:
            if fmt == "csv":
                yield from _read_csv(src, fh, errors, lists)
            else:
                yield from _read_jsonl(src, fh, errors)
        except UnicodeDecodeError:
            errors.add(_not_utf8(src))


def _not_utf8(src: _Source) -> RowError:
    """Where the file stops being UTF-8, as line and column (the decoder's offset is into a buffer)."""
    with src.path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            if number == 1:
                line = line.removeprefix(b"\xef\xbb\xbf")
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                column = len(line[:e.start].decode("utf-8")) + 1
                return RowError(src.name, number, None,
                                f"not UTF-8 text: byte 0x{line[e.start]:02x} at column {column} "
                                "(save the file as UTF-8; it may be Latin-1 or Windows-1252)")
    return RowError(src.name, 0, None, "not UTF-8 text")  # pragma: no cover - the decoder found a byte


def _read_csv(src: _Source, fh: Any, errors: _Errors, lists: bool = False) -> Iterator[tuple[int, Any]]:
    reader = csv.reader(fh, strict=True)
    try:
        header = next(reader, None)
    except csv.Error as e:
        errors.add(RowError(src.name, 1, None, f"bad CSV header: {e}"))
        return
    if not header:
        errors.add(RowError(src.name, 1, None, "empty file: expected a header row"))
        return
    src.columns = [h.strip() for h in header]
    seen: set[str] = set()
    for col in src.columns:
        if col in seen:
            errors.add(RowError(src.name, 1, col, "column appears twice in the header"))
        seen.add(col)
    while True:
        start = reader.line_num + 1  # where this record begins (it may span lines)
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            errors.add(RowError(src.name, start, None, f"bad CSV: {e}"))
            return
        # A blank row (every value blank) is skipped; a first value that is not blank settles it.
        if not record or ((not record[0] or record[0].isspace()) and not "".join(record).strip()):
            continue
        if len(record) != len(src.columns):
            errors.add(RowError(src.name, start, None,
                                f"expected {len(src.columns)} values (as in the header), found {len(record)}"))
            continue
        yield start, record if lists else dict(zip(src.columns, record))


def _read_jsonl(src: _Source, fh: Any, errors: _Errors) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(fh, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            errors.add(RowError(src.name, number, None, f"not valid JSON: {e.msg} at column {e.colno}"))
            continue
        if not isinstance(obj, dict):
            errors.add(RowError(src.name, number, None, f"expected a JSON object, found {type(obj).__name__}"))
            continue
        yield number, obj


class _Errors:
    """Collects problems up to a cap, counting the rest."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.items: list[RowError] = []
        self.total = 0

    def add(self, e: RowError) -> None:
        self.total += 1
        if len(self.items) < self.cap:
            self.items.append(e)

    def __bool__(self) -> bool:
        return self.total > 0


# --------------------------------------------------------------------------
# What each kind of file holds


@dataclass(frozen=True)
class _Col:
    name: str
    type: n.TypeRef
    required: bool  # must have a value (for a new row, in entity files)


def _t(name: n.TypeName, nullable: bool = True) -> n.TypeRef:
    return n.TypeRef(name=name, nullable=nullable)


def _entity_columns(kind: Kind, catalog: Catalog) -> dict[str, _Col]:
    """Columns of an entity file: the fixed ones, then the declared fields (which may tighten them)."""
    text = n.TypeName.TEXT
    fixed: dict[Kind, list[_Col]] = {
        "accounts": [_Col("id", _t(text, False), True), _Col("name", _t(text), False)],
        "contacts": [
            _Col("id", _t(text, False), True), _Col("account_id", _t(text, False), True),
            _Col("email", _t(text), False), _Col("name", _t(text), False), _Col("first_name", _t(text), False),
            _Col("timezone", _t(text), False), _Col("unsubscribed_at", _t(n.TypeName.DATETIME), False),
        ],
        "users": [_Col("id", _t(text, False), True), _Col("email", _t(text), False),
                  _Col("name", _t(text), False), _Col("role", _t(text), False), _Col("manager", _t(text), False)],
    }
    cols = {c.name: c for c in fixed[kind]}
    entity = catalog.entities.get({"accounts": "account", "contacts": "contact"}.get(kind, ""))
    for f in entity.fields if entity is not None else []:
        if f.name in cols and cols[f.name].required:
            continue  # id, account_id stay as they are
        cols[f.name] = _Col(f.name, f.type, not f.type.nullable)
    return cols


def entity_columns(kind: Kind, catalog: Catalog) -> list[str]:
    """The columns an accounts, contacts or users file may hold: the fixed ones, then the declared fields."""
    return list(_entity_columns(kind, catalog))


# Event files: these names are the event's time; the first one present wins.
_EVENT_TIME = ("occurred_at", "at", "date", "occurred_on")
# Columns without which a row cannot be placed at all.
_KEY_COLUMNS: dict[Kind, tuple[str, ...]] = {
    "users": ("id",), "accounts": ("id",), "contacts": ("id", "account_id"),
    "metrics": ("account_id", "metric", "date", "value"), "events": ("account_id", "event"),
}


@dataclass
class _Plan:
    """How one file is checked and written."""

    kind: Kind
    table: sa.Table
    keys: tuple[str, ...]
    columns: dict[str, _Col]


# --------------------------------------------------------------------------
# The import


def import_file(store: Store, catalog: Catalog, kind: Kind, path: str | Path, **kw: Any) -> FileResult:
    """Import one file (see `import_files`)."""
    return import_files(store, catalog, [(kind, path)], **kw).files[0]


def import_files(store: Store, catalog: Catalog, files: Sequence[tuple[Kind, str | Path]], *,
                 chunk_size: int = 100_000, max_errors: int = 1000, ignore_unknown_columns: bool = False,
                 actor: str = "import", progress: Callable[[str, int], None] | None = None,
                 known_at: dt.datetime | None = None,
                 then: Callable[[Connection, ImportReport], None] | None = None) -> ImportReport:
    """Check and write `files` ([(kind, path)]) in one transaction; raise ImportFailed on any problem.

    Kinds: users, accounts, contacts, metrics, events. Format by suffix:
    .csv, .jsonl / .ndjson. Unknown columns are errors unless
    `ignore_unknown_columns` (event files put extra columns into the payload).
    `progress(file, rows checked so far)` is called as each file starts and after each chunk.
    `known_at` (default now) is when the imported account values became known: their history's valid_from.
    `then(conn, report)` runs in the import's transaction after a clean import, before the commit (a
    sync stores its cursor there, so the cursor moves exactly when the rows are written).
    """
    for kind, _ in files:
        if kind not in _ORDER:
            raise ValueError(f"unknown import kind {kind!r}: expected one of {', '.join(KINDS)}")
    sync = store.sync_entities(catalog)
    if sync.conflicts:
        raise StoreError("the store's columns do not match the declarations:\n  " + "\n  ".join(sync.conflicts))
    errors = _Errors(max_errors)
    report = ImportReport()
    ordered = sorted(files, key=lambda f: _ORDER[f[0]])
    job = _Job(store, catalog, errors, chunk_size, ignore_unknown_columns, progress or (lambda _file, _rows: None),
               known_at or schema.utcnow())
    conn = store.engine.connect()
    trans = conn.begin()
    if conn.dialect.name == "postgresql":
        # The set-wise checks group and join whole files (a series per account
        # and metric: 5,000,000 groups for 10,000,000 points); the default 4MB
        # spills them to disk in dozens of batches. For this transaction only.
        conn.exec_driver_sql("SET LOCAL work_mem = '256MB'")
        conn.exec_driver_sql("SET LOCAL maintenance_work_mem = '512MB'")  # an index built again (engine/indexes.py)
    # The chunk's rows are millions of small lists that all stay alive until
    # it is written: the cyclic collector would rescan them again and again
    # and free nothing (a third of the time). Reference counting still frees.
    collecting = gc.isenabled()
    gc.disable()
    try:
        for kind, path in ordered:
            result = job.run_file(conn, kind, Path(path))
            report.files.append(result)
            if not errors:
                store.audit(conn, actor, f"import.{kind}", str(path),
                            {"rows": result.rows, "created": result.created, "updated": result.updated})
        if errors:
            trans.rollback()
            raise ImportFailed(errors.items, errors.total)
        report.changed_values = job.changed_values
        if then is not None:
            then(conn, report)
        trans.commit()
    except BaseException:
        if trans.is_active:
            trans.rollback()
        raise
    finally:
        if collecting:
            gc.enable()
        conn.close()
    return report


class _Job:
    def __init__(self, store: Store, catalog: Catalog, errors: _Errors, chunk_size: int, ignore_unknown: bool,
                 progress: Callable[[str, int], None], known_at: dt.datetime) -> None:
        self.store = store
        self.progress = progress
        self.catalog = catalog
        self.errors = errors
        self.sink = errors  # where row checks report: the current chunk's collector
        self.chunk_size = chunk_size
        self.ignore_unknown = ignore_unknown
        self.known_at = known_at
        # Ids of accounts files of this import that were checked but not written
        # (after an error): later files may still refer to them.
        self.unwritten_accounts = False
        self.changed_values = 0
        self.tables = {
            "accounts": store.table("account", catalog),
            "contacts": store.table("contact", catalog),
            "users": schema.User.__table__,
            "metrics": schema.MetricPoint.__table__,
            "events": schema.Event.__table__,
        }

    def plan(self, kind: Kind) -> _Plan:
        if kind in ("accounts", "contacts", "users"):
            return _Plan(kind, self.tables[kind], ("id",), _entity_columns(kind, self.catalog))
        if kind == "metrics":
            columns = {
                "account_id": _Col("account_id", _t(n.TypeName.TEXT, False), True),
                "metric": _Col("metric", _t(n.TypeName.TEXT, False), True),
                "date": _Col("date", _t(n.TypeName.DATE, False), True),
                "value": _Col("value", _t(n.TypeName.NUMBER, False), True),
            }
            return _Plan(kind, self.tables[kind], ("metric", "account_id", "date"), columns)
        columns = {
            "id": _Col("id", _t(n.TypeName.TEXT), False),
            "account_id": _Col("account_id", _t(n.TypeName.TEXT, False), True),
            "event": _Col("event", _t(n.TypeName.TEXT, False), True),
            **{c: _Col(c, _t(n.TypeName.DATETIME, False), False) for c in _EVENT_TIME},
        }
        return _Plan(kind, self.tables[kind], ("key",), columns)

    def run_file(self, conn: Connection, kind: Kind, path: Path) -> FileResult:
        src = _Source(path, str(path))
        result = FileResult(kind, src.name)
        _FileLoad(self, conn, src, self.plan(kind), result).run()
        return result

    def _check_columns(self, src: _Source, plan: _Plan, present: list[str], row: int, reported: set[str]) -> None:
        """Unknown columns (once per file) and, for a CSV header, missing key columns."""
        if plan.kind != "events":  # extra event columns become the payload
            for col in present:
                if col not in plan.columns and not self.ignore_unknown and col not in reported:
                    reported.add(col)
                    known = ", ".join(sorted(plan.columns))
                    self.sink.add(RowError(src.name, row, col, f"unknown column; expected one of: {known}"))
        if src.columns is None:
            return  # JSON Lines: missing keys are reported per row
        for col in _KEY_COLUMNS[plan.kind]:
            if col not in present:
                self.sink.add(RowError(src.name, row, col, "missing column (required)"))
        if plan.kind == "events" and not any(c in present for c in _EVENT_TIME):
            self.sink.add(RowError(src.name, row, "occurred_at",
                                     f"missing column: one of {', '.join(_EVENT_TIME)} is required"))

    def _check_row(self, src: _Source, plan: _Plan, row: int, raw: dict[str, Any]) -> dict[str, Any] | None:
        """The typed record of one row, or None (errors added)."""
        record: dict[str, Any] = {}
        ok = True
        for name, value in raw.items():
            if _has_nul(value):
                self.sink.add(RowError(src.name, row, name, "contains a NUL character (\\0), which the store "
                                                              "cannot keep (PostgreSQL refuses it): remove it"))
                ok = False
                continue
            col = plan.columns.get(name)
            if col is None:
                if plan.kind == "events" and name != "payload":
                    record.setdefault("_extra", {})[name] = value
                elif plan.kind == "events":
                    record["_payload_raw"] = value
                continue  # unknown columns were reported once per file
            try:
                v = parse_value(col.type, value)
                if v is not None:
                    v = self._check_special(plan.kind, name, v)
            except ValueError as e:
                self.sink.add(RowError(src.name, row, name, str(e)))
                ok = False
                continue
            if v is None and col.name in ("id", "account_id", "metric", "date", "value", "event"):
                self.sink.add(RowError(src.name, row, name, "is empty; a value is required"))
                ok = False
                continue
            record[name] = v
        for key in _KEY_COLUMNS[plan.kind]:
            if key not in raw:
                ok = False
                if src.columns is None:  # JSON Lines; a CSV header was reported once
                    self.sink.add(RowError(src.name, row, key, "missing (required)"))
        if plan.kind == "events" and ok:
            ok = self._event_record(src, row, record)
        return record if ok else None

    def _check_special(self, kind: Kind, name: str, v: Any) -> Any:
        """Checks that depend on the column, not only its type."""
        if name == "email" and kind in ("contacts", "users") and not _EMAIL.match(v):
            raise ValueError(f"{v!r} is not an email address")
        if name == "timezone" and kind == "contacts" and not _valid_zone(v):
            raise ValueError(f"{v!r} is not an IANA time zone (e.g. America/Chicago)")
        if name == "metric" and kind == "metrics" and v not in self.catalog.metrics:
            raise ValueError(f"{v!r} is not a declared metric; declared: {', '.join(sorted(self.catalog.metrics)) or 'none'}")
        if name == "event" and kind == "events" and v not in self.catalog.events and v not in INBOUND_EVENTS:
            raise ValueError(f"{v!r} is not a declared event; declared: {', '.join(sorted(self.catalog.events)) or 'none'}")
        if isinstance(v, str) and name in ("id", "account_id"):
            return v.strip()
        return v

    def _event_record(self, src: _Source, row: int, record: dict[str, Any]) -> bool:
        at = next((record.pop(c) for c in _EVENT_TIME if record.get(c) is not None), None)
        for c in _EVENT_TIME:
            record.pop(c, None)
        if at is None:
            self.sink.add(RowError(src.name, row, "occurred_at", "is empty; a value is required"))
            return False
        payload: dict[str, Any] = {}
        raw_payload = record.pop("_payload_raw", None)
        if isinstance(raw_payload, str) and raw_payload.strip():
            try:
                raw_payload = json.loads(raw_payload)
            except json.JSONDecodeError as e:
                self.sink.add(RowError(src.name, row, "payload", f"not valid JSON: {e.msg}"))
                return False
        if isinstance(raw_payload, dict):
            payload.update(raw_payload)
        elif not is_empty(raw_payload):
            self.sink.add(RowError(src.name, row, "payload", "expected a JSON object"))
            return False
        payload.update({k: v for k, v in record.pop("_extra", {}).items() if not is_empty(v)})
        source_id = record.pop("id", None)
        record["key"] = event_key(record["account_id"], record["event"], at, source_id)
        record["occurred_at"] = at
        record["occurred_on"] = at.date()
        record["payload"] = payload or None
        return True

_SLOW = object()  # a JSON value only Python can check (a boolean outside a bool column, an object...)
_ENTITY_KINDS = ("accounts", "contacts", "users")
_SEEN = "_pb_seen"  # ids of the earlier chunks of an entity file, for duplicates
_ACCOUNT_IDS = "_pb_account_ids"  # ids of accounts files checked but not written


class _FileLoad:
    """One file through the bulk path: read, stage, type in SQL (Python for the rest), check set-wise, write.

    Chunks of `chunk_size` rows go through the stage one after the other, so
    memory and temporary tables stay bounded; problems of a chunk are
    reported in line order, as the row-by-row importer did: each row's value
    problems (and duplicate ids) by line, then unknown accounts, then
    missing required fields.
    """

    def __init__(self, job: _Job, conn: Connection, src: _Source, plan: _Plan, result: FileResult) -> None:
        self.job, self.conn, self.src, self.plan, self.result = job, conn, src, plan, result
        self.pending = _Errors(job.errors.cap)  # the reader's problems of the current chunk
        self.entity = plan.kind in _ENTITY_KINDS
        self.reported_unknown: set[str] = set()
        self.chunk: list[tuple[int, Any]] = []  # (line, raw row)
        self.staged: list[list[Any]] = []  # (line, group, text values) of the rows SQL may type
        self.slow: list[int] = []  # lines of rows only Python checks
        self.columns: list[str] = []  # staged columns (plan column names)
        self.groups: dict[tuple[str, ...], int] = {}  # columns a row has -> group number
        self.group_columns: list[tuple[str, ...]] = []
        self.csv_pick: Callable[[list[str]], Any] | None = None
        self.csv_identity = False
        self.jsonl_layouts: dict[tuple[str, ...], int] = {}
        self.seen_table = False
        self.all_in_python = plan.kind == "events"  # events: keys and payloads are made in Python
        self.staging: Staging | None = None
        self.typed_names: list[str] = []
        self.first_load: bool | None = None  # the table was empty when the file started (written to)
        self.deferred: list[tuple[str, str]] = []  # indexes dropped for a first load, made again at the end
        self.history_key: list[tuple[str, str]] | None = None  # the history's key, set aside by a first load
        self.marked_every = False  # a first load of accounts marked every account (changes.EVERY)
        self.history_was_empty: bool | None = None  # SQLite: the history held no row at the file's first write
        self.rollup_at_end = False  # metric points into an empty table: the rollup is computed once, at the end
        self.nul: bool | None = None  # the file holds a NUL byte (None: not looked yet)

    # -- reading -------------------------------------------------------------

    def run(self) -> None:
        job, src, plan = self.job, self.src, self.plan
        job.progress(src.name, 0)
        if self._copy_file():
            return
        header_checked = False
        for row, raw in _read(src, self.pending, lists=True):
            if not header_checked:
                header_checked = True
                self._start()
            if src.columns is not None:
                self._add_csv(row, raw)
            else:
                job.sink = self.pending
                job._check_columns(src, plan, list(raw), row, self.reported_unknown)
                self._add_jsonl(row, raw)
            if len(self.chunk) >= job.chunk_size:
                self._process(final=False)
        if not header_checked:
            self._start()
        self._process(final=True)
        self._restore_indexes()
        assert self.staging is not None
        self.staging.drop()
        if self.seen_table:
            self.conn.exec_driver_sql(f"DROP TABLE {_SEEN}")

    def _start(self, copy: bool = False) -> None:
        """The columns to stage, once the header (or the first object) is known."""
        plan, src = self.plan, self.src
        if src.columns is not None:
            self.job.sink = self.pending
            self.job._check_columns(src, plan, src.columns, 1, self.reported_unknown)
        if src.columns is not None and any(k not in src.columns for k in _KEY_COLUMNS[plan.kind]):
            self.all_in_python = True  # a key column is missing: Python knows what to say (once, at the header)
        if self.all_in_python:
            names: list[str] = []
        elif src.columns is not None:
            last = {c: i for i, c in enumerate(src.columns) if c in plan.columns}
            names = list(last)
            idx = list(last.values())
            self.csv_identity = idx == list(range(len(src.columns)))
            self.csv_pick = operator.itemgetter(*idx) if idx else (lambda r: ())
            self.group_columns = [tuple(names)]
        else:
            names = list(plan.columns)
        self.columns = names
        bulk_columns = [bulkload.Column(c, plan.columns[c].type, _column_check(plan.kind, c)) for c in names]
        if plan.kind in _ENTITY_KINDS:
            typed = [sa.Column(c, plan.table.c[c].type) for c in plan.columns]
        elif plan.kind == "metrics":
            typed = [sa.Column(c.name, c.type) for c in plan.table.columns]
        else:
            typed = [sa.Column(c.name, c.type) for c in plan.table.columns if c.name != "id"]
        self.typed_names = [c.name for c in typed]
        self.staging = Staging(self.conn, bulk_columns, typed, metrics=sorted(self.job.catalog.metrics), copy=copy)

    def _add_csv(self, row: int, record: list[str]) -> None:
        self.chunk.append((row, record))
        if self.all_in_python:
            self.slow.append(row)
            return
        assert self.csv_pick is not None
        if self.csv_identity:
            self.staged.append([row, 0, *record])
        else:
            picked = self.csv_pick(record)
            self.staged.append([row, 0, *(picked if isinstance(picked, tuple) else (picked,))])

    def _add_jsonl(self, row: int, obj: dict[str, Any]) -> None:
        self.chunk.append((row, obj))
        if self.all_in_python:
            self.slow.append(row)
            return
        layout = tuple(obj)
        group = self.jsonl_layouts.get(layout)
        if group is None:
            present = tuple(c for c in self.columns if c in obj)
            group = self.groups.setdefault(present, len(self.groups))
            if group == len(self.group_columns):
                self.group_columns.append(present)
            self.jsonl_layouts[layout] = group
        values: list[Any] = [row, group]
        for c in self.columns:
            v = obj.get(c)
            kind = type(v)
            if v is None or kind is str:
                pass
            elif kind is int or kind is float:
                v = str(v)  # a row SQL cannot type is checked in Python from the object itself
            elif kind is bool and self.plan.columns[c].type.name is n.TypeName.BOOL:
                v = "true" if v else "false"
            else:
                v = _SLOW
            if v is _SLOW or (isinstance(v, str) and "\x00" in v):
                self.slow.append(row)
                return
            values.append(v)
        self.staged.append(values)

    # -- one chunk -----------------------------------------------------------

    def _process(self, *, final: bool) -> None:
        job, src = self.job, self.src
        staging = self.staging
        assert staging is not None
        read_problems, self.pending = self.pending, _Errors(job.errors.cap)
        if self.src.columns is not None and self.staged and self._may_hold_nul():
            # A NUL cannot go through COPY; the rows holding one are Python's to report.
            if "\x00" in "\x1f".join(itertools.chain.from_iterable(raw for _, raw in self.chunk)):
                nul = {row for row, raw in self.chunk if any("\x00" in v for v in raw)}
                self.slow += sorted(nul)
                self.staged = [r for r in self.staged if r[0] not in nul]
        staging.load(self.staged)
        if self._write_direct(read_problems, final):
            self.chunk, self.staged, self.slow = [], [], []
            job.progress(src.name, self.result.rows)
            return
        untyped = staging.type_rows()
        slow = sorted(set(self.slow).union(untyped))
        row_problems = _Errors(job.errors.cap)
        if slow:
            self._check_in_python(slow, row_problems)
        self._check_and_write(final, read_problems, row_problems)
        staging.clear()
        self.chunk, self.staged, self.slow = [], [], []
        job.progress(src.name, self.result.rows)

    def _may_hold_nul(self) -> bool:
        """Whether the file has a NUL byte anywhere (one scan in C, instead of joining every chunk's values)."""
        if self.nul is None:
            self.nul = False
            try:
                with self.src.path.open("rb") as fh:
                    while block := fh.read(1 << 20):
                        if b"\x00" in block:
                            self.nul = True
                            break
            except OSError:
                self.nul = True  # look at the values themselves
        return self.nul

    def _check_and_write(self, final: bool, read_problems: _Errors, row_problems: _Errors) -> None:
        """The set-wise checks of the typed rows, then (no problem so far in the import) the write."""
        job, plan, staging = self.job, self.plan, self.staging
        assert staging is not None
        self.result.rows += staging.count()
        duplicates = self._duplicates(final) if self.entity else []
        for e in heapq.merge(read_problems.items, row_problems.items, duplicates, key=lambda e: e.row):
            job.errors.add(e)
        job.errors.total += (read_problems.total - len(read_problems.items)) + \
            (row_problems.total - len(row_problems.items))
        if plan.kind in ("contacts", "metrics", "events"):
            self._unknown_accounts()
        if self.entity:
            self._required()
        if job.errors:
            if plan.kind == "accounts":
                self._keep_account_ids()
        else:
            self._write()

    def _copy_file(self) -> bool:
        """PostgreSQL, a CSV file: COPY it as it is and check it set-wise. False, with nothing kept,
        when any row needs Python (a looser form, a problem to name, a line break inside a value):
        the file is then read row by row like on SQLite, which names every problem."""
        conn, src, plan = self.conn, self.src, self.plan
        if conn.dialect.name != "postgresql" or conn.dialect.driver != "psycopg2" or plan.kind == "events" \
                or FORMATS.get(src.path.suffix.lower()) != "csv":
            return False
        try:
            with src.path.open(encoding="utf-8-sig", newline="") as fh:
                line = fh.readline()
        except (OSError, UnicodeDecodeError):
            return False
        if '"' in line or not line.endswith("\n"):
            return False
        columns = [h.strip() for h in next(csv.reader([line]))]
        if len(set(columns)) != len(columns) or any(c not in plan.columns for c in columns) \
                or any(k not in columns for k in _KEY_COLUMNS[plan.kind]):
            return False
        import psycopg2  # the driver this path uses (checked above)

        savepoint = conn.begin_nested()
        direct = False
        try:
            src.columns = columns
            self._start(copy=True)
            assert self.staging is not None
            staged = self.staging.copy_file(src.path)
            if self.staging.line_breaks is not None and self.staging.line_breaks not in (staged + 1, staged):
                raise _NeedsPython
            direct = self._write_direct(self.pending, final=True)
            if not direct and self.staging.type_rows():
                raise _NeedsPython
        except (_NeedsPython, sa.exc.DBAPIError, psycopg2.Error) as e:
            # A value COPY cannot read (psycopg2's own error: copy_expert is the
            # driver's) sends the file to Python; a fault of the store does not.
            if isinstance(e, (psycopg2.OperationalError, psycopg2.InterfaceError)) or \
                    (isinstance(e, sa.exc.DBAPIError) and store_unreachable(e, "")):
                raise
            savepoint.rollback()  # with what a first load wrote or set aside in it
            src.columns, self.staging, self.group_columns, self.csv_pick = None, None, [], None
            self.history_key, self.marked_every = None, False
            self.pending = _Errors(self.job.errors.cap)
            return False
        if not direct:
            self._check_and_write(True, self.pending, _Errors(self.job.errors.cap))
        savepoint.commit()
        self._restore_indexes()
        self.staging.drop()
        self.job.progress(src.name, self.result.rows)
        return True

    def _check_in_python(self, lines: list[int], problems: _Errors) -> None:
        job, plan, src = self.job, self.plan, self.src
        wanted = set(lines)
        raws = {row: raw for row, raw in self.chunk if row in wanted}
        job.sink = problems
        records: list[dict[str, Any]] = []
        for row in lines:
            raw = raws[row]
            if src.columns is not None:
                raw = dict(zip(src.columns, raw))
            record = job._check_row(src, plan, row, raw)
            if record is None:
                continue
            if plan.kind == "events":
                group = 0
            else:
                present = tuple(c for c in self.columns if c in raw)
                group = self.groups.setdefault(present, len(self.groups)) if src.columns is None else 0
                if group == len(self.group_columns):
                    self.group_columns.append(present)
            records.append({"_row": row, "_grp": group, **{c: record.get(c) for c in self.typed_names}})
        job.sink = job.errors
        assert self.staging is not None
        self.staging.add_typed(records)

    def _is_first_load(self) -> bool:
        """Whether the file's table was empty when the file started (asked before its first write) and
        has had no key twice since. A first load of metric points sets the table's secondary index
        aside and computes the rollup once at the file's end."""
        if self.first_load is None:
            conn, plan = self.conn, self.plan
            table = conn.dialect.identifier_preparer.quote(plan.table.name)
            self.first_load = not conn.exec_driver_sql(f"SELECT 1 FROM {table} LIMIT 1").first()
            if self.first_load and plan.kind == "metrics":
                # An empty table: its secondary index is built once at the end of the
                # file (one sort) instead of kept row by row (engine/indexes.py); in the
                # import's transaction, so a rollback brings it back as it was.
                self.deferred = indexes.secondary(conn, [plan.table.name])
                indexes.drop(conn, self.deferred)
                # The table holds only this file's points when it ends: one pass over them then
                # (rollups.rebuild) costs less than merging each chunk into the rollup.
                self.rollup_at_end = True
        return self.first_load

    def _write_points_direct(self, read_problems: _Errors) -> bool:
        """SQLite, a first load of metric points from CSV, nothing wrong so far: the staged rows typed,
        checked (the account exists) and written in one statement, without the typed table (which
        cost a write and two reads of every row). False, with nothing written, where any row needs
        the checked path (a value SQL cannot take, an unknown account, a key twice): that path then
        names the problem, or upserts."""
        conn, staging = self.conn, self.staging
        assert staging is not None
        if staging.pg or self.src.columns is None or self.job.errors or read_problems or self.slow \
                or not staging.staged or self.job.unwritten_accounts or not self._is_first_load():
            return False
        savepoint = conn.begin_nested()
        try:
            written = staging.write_checked(conn.dialect.identifier_preparer.quote(self.plan.table.name), [],
                                            key="account_id",
                                            known=("account_id", "accounts"))
            savepoint.commit()
        except (sa.exc.IntegrityError, bulkload.Refused):
            savepoint.rollback()
            return False
        account = staging.names[self.columns.index("account_id")]
        # Every staged row was written as staged: its account is the staged text.
        changes.mark_sql(conn, f"(SELECT {account} AS account_id FROM {bulkload.STAGE})", "account_id")
        self.result.rows += written
        return True

    def _write_direct(self, read_problems: _Errors, final: bool) -> bool:
        """A first load of accounts or users (the table empty when the file started), CSV, nothing wrong so
        far: the staged rows typed and written in one statement (`Staging.write_checked`), without the
        typed table. False, with nothing written, where any row needs the checked path (a value SQL
        cannot take, an empty required field, an id twice): that path then names the problem."""
        conn, plan, staging = self.conn, self.plan, self.staging
        assert staging is not None
        if plan.kind == "metrics":
            return self._write_points_direct(read_problems)
        required = [c.name for c in plan.columns.values() if c.required and c.name != "id"]
        if plan.kind not in ("accounts", "users") or self.src.columns is None or self.job.errors or read_problems \
                or self.slow or not staging.staged or "id" not in self.columns \
                or any(c not in self.columns for c in required):
            return False
        table = conn.dialect.identifier_preparer.quote(plan.table.name)
        if not self._is_first_load():
            return False  # an upsert: the history compares old values with the typed rows
        savepoint = conn.begin_nested()
        try:
            # Into an empty table a plain INSERT: an id twice in the file (or in an
            # earlier chunk) breaks the key and sends the chunk to the checked path.
            key = self.history_key
            if plan.kind == "accounts" and staging.pg:
                # One statement, one read of the stage: the accounts and their "known since" rows (new
                # ids only, so no stored value is replaced).
                # A new store's history is empty: no test per account against it. In the same statement
                # that fills it, that test (an anti-join) twice ran for minutes at 1,000,000 accounts
                # (load_bench, 2026-12-07; the plan was not caught), where the whole load takes 25 s.
                # Its key is set aside until the file ends (a b-tree insert per row cost more than the
                # one sort that builds it again: 2.9 against 1.9 s of backend CPU at 1,000,000); it
                # stays empty of other rows meanwhile, so later chunks need no test either.
                if key is None and conn.exec_driver_sql(f"SELECT 1 FROM {history.HISTORY.name} LIMIT 1").first() is None:
                    key = indexes.primary_key(conn, history.HISTORY.name)
                    indexes.drop_key(conn, history.HISTORY.name, key)
                history_sql, at = history.known_since_sql("w", self.job.known_at, empty=key is not None)
                own: list[tuple[str, str]] = []
                referencing: list[tuple[str, str, str]] = []
                if final and not self.result.rows:
                    # The whole file in this statement (COPY): the accounts' own key is set aside too and
                    # built again by one sort after it, which is where an id twice fails (and sends the
                    # file to the checked path); the foreign keys that reference it go and come back with it
                    # (the tables that hold them are empty of accounts: checking them reads nothing).
                    # Lab, 200,000 accounts, backend CPU, medians of 3: 1.54 s with the key, 1.30 s
                    # without it and its rebuild. The referencing tables stay locked until the commit.
                    referencing = indexes.foreign_keys_to(conn, plan.table.name)
                    own = indexes.primary_key(conn, plan.table.name)
                    indexes.drop_foreign_keys(conn, referencing)
                    indexes.drop_key(conn, plan.table.name, own)
                written = staging.write_checked(table, required, also=[history_sql], params={"at": at})
                indexes.create(conn, own)
                indexes.create(conn, [(name, sql) for _, name, sql in referencing])
            else:
                written = staging.write_checked(table, required)
            savepoint.commit()
        except (sa.exc.IntegrityError, sa.exc.DataError, bulkload.Refused):
            savepoint.rollback()  # and with it a key set aside in it
            return False
        self.history_key = key
        ids = f"(SELECT {staging.names[self.columns.index('id')]} AS id, _row FROM {bulkload.STAGE})"
        if plan.kind == "accounts" and not staging.pg:
            # New ids only, so no stored value is replaced: the history gets each one's "known since".
            # Where it held no row when the file's first chunk was written, it holds rows of this file's
            # accounts only, which the accounts' key kept from coming twice: no test per id (at
            # 1,000,000 accounts, 1.0 of the import's CPU seconds went to that test and the rows).
            if self.history_was_empty is None:
                self.history_was_empty = conn.exec_driver_sql(
                    f"SELECT 1 FROM {history.HISTORY.name} LIMIT 1").first() is None
            history.record_changes(conn, self.job.catalog, ids, ["id"], self.job.known_at, new=self.history_was_empty)
        if plan.kind == "accounts" and not self.marked_every:
            # Into an empty table: every account there is now is this file's (changes.EVERY).
            changes.mark_every(conn)
            self.marked_every = True
        if not final:
            self._remember_ids(ids)
        self.result.rows += written
        self.result.created += written
        return True

    def _restore_indexes(self) -> None:
        """The indexes a first load set aside, built again (after a problem the rollback restores them);
        on PostgreSQL, statistics for the tables a first load filled."""
        if self.deferred and not self.job.errors:
            indexes.create(self.conn, self.deferred)
        self.deferred = []
        self._restore_history_key()
        if self.first_load and not self.job.errors and self.conn.dialect.name == "postgresql" and self.result.rows:
            # Without them the planner takes the table for empty until autovacuum
            # comes by, and the next import's joins with it probe row by row
            # (a re-import of 200,000 accounts: 8 s instead of 1 s for one join).
            # The key columns only: the joins need the row count and the keys' spread, and
            # statistics of fifty columns cost a second at 200,000 rows (autovacuum does the rest).
            quote = self.conn.dialect.identifier_preparer.quote
            keys = ", ".join(quote(k) for k in self.plan.keys)
            extra = ", account_field_history (account_id, field)" if self.plan.kind == "accounts" else ""
            self.conn.exec_driver_sql(f"ANALYZE {quote(self.plan.table.name)} ({keys}){extra}")
        if self.rollup_at_end and not self.job.errors:
            # After the statistics: the rebuild's plan reads all of `metric_points`.
            # The table holds this file's points only, each day written as `YYYY-MM-DD` (by the SQL
            # typing as staged, or by SQLAlchemy from a date): `iso_days` holds.
            rollups.rebuild(self.conn, iso_days=True)  # window functions read the series' latest points
        self.rollup_at_end = False

    def _restore_history_key(self) -> None:
        """The history's key, set aside by a first load, added again: before anything reads the history
        by key, and at the end of the file (after a problem the rollback restores it)."""
        if self.history_key and not self.job.errors:
            indexes.create(self.conn, self.history_key)
        self.history_key = None

    def _remember_ids(self, source: str) -> None:
        """The ids of this chunk (`source`: id and _row), for the duplicates of the file's later chunks."""
        conn = self.conn
        if not self.seen_table:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {_SEEN}")
            # No key: a first load's direct chunks only add to it; the index is made when a chunk that
            # takes the checked path first reads it (`_duplicates`).
            conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {_SEEN} (id TEXT, first BIGINT)")
            self.seen_table = True
        conn.exec_driver_sql(f"INSERT INTO {_SEEN} (id, first) SELECT id, _row FROM {source} s")

    # -- set-wise checks -------------------------------------------------------

    def _duplicates(self, final: bool) -> list[RowError]:
        conn = self.conn
        if self.seen_table:
            conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {_SEEN}_id ON {_SEEN} (id)")
        seen = (f" AND NOT EXISTS (SELECT 1 FROM {_SEEN} s WHERE s.id = t.id)" if self.seen_table else "")
        query = (f"SELECT t._row, t.id, f.first FROM {TYPED} t JOIN (SELECT id, min(_row) AS first FROM {TYPED} "
                 f"GROUP BY id HAVING count(*) > 1) f ON f.id = t.id WHERE t._row > f.first{seen}")
        if self.seen_table:
            query += f" UNION ALL SELECT t._row, t.id, s.first FROM {TYPED} t JOIN {_SEEN} s ON s.id = t.id"
        found = conn.exec_driver_sql(query + " ORDER BY 1").all()
        problems = [RowError(self.src.name, row, "id", f"duplicate id {id_!r} (first at row {first})")
                    for row, id_, first in found]
        assert self.staging is not None
        self.staging.delete([r[0] for r in found])
        if not final:  # later chunks of the file check against these ids
            self._remember_ids(TYPED)
        return problems

    def _unknown_accounts(self) -> None:
        also = (f" AND NOT EXISTS (SELECT 1 FROM {_ACCOUNT_IDS} n WHERE n.id = t.account_id)"
                if self.job.unwritten_accounts else "")
        for row, account in self.conn.exec_driver_sql(
                f"SELECT t._row, t.account_id FROM {TYPED} t WHERE NOT EXISTS "
                f"(SELECT 1 FROM accounts a WHERE a.id = t.account_id){also} ORDER BY t._row"):
            self.job.errors.add(RowError(self.src.name, row, "account_id", f"unknown account {account!r}"))

    def _required(self) -> None:
        required = [c.name for c in self.plan.columns.values() if c.required and c.name not in ("id", "account_id")]
        if not required:
            return
        quote = self.conn.dialect.identifier_preparer.quote
        table = quote(self.plan.table.name)
        tests = []
        for group, present in enumerate(self.group_columns):
            parts = [f"t.{quote(c)} IS NULL" if c in present else "a.id IS NULL" for c in required]
            tests.append(f"(t._grp = {group} AND ({' OR '.join(parts)}))")
        if not tests:
            return
        nulls = ", ".join(f"t.{quote(c)} IS NULL" for c in required)
        for r in self.conn.exec_driver_sql(
                f"SELECT t._row, t._grp, a.id IS NULL, {nulls} FROM {TYPED} t LEFT JOIN {table} a ON a.id = t.id "
                f"WHERE {' OR '.join(tests)} ORDER BY t._row"):
            row, group, new, empty = r[0], r[1], bool(r[2]), r[3:]
            present = self.group_columns[group]
            for c, is_null in zip(required, empty):
                if c in present and is_null:
                    reason = "is empty; the field is not declared optional (`?`)"
                elif c not in present and new:
                    reason = "missing for a new id; the field is not declared optional (`?`)"
                else:
                    continue
                self.job.errors.add(RowError(self.src.name, row, c, reason))

    def _keep_account_ids(self) -> None:
        conn = self.conn
        if not self.job.unwritten_accounts:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {_ACCOUNT_IDS}")
            conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {_ACCOUNT_IDS} (id TEXT PRIMARY KEY)")
            self.job.unwritten_accounts = True
        conn.exec_driver_sql(f"INSERT INTO {_ACCOUNT_IDS} (id) SELECT id FROM {TYPED} t WHERE NOT EXISTS "
                             f"(SELECT 1 FROM {_ACCOUNT_IDS} n WHERE n.id = t.id)")

    # -- writing ---------------------------------------------------------------

    def _mark(self, table: str, group: int, cols: list[str], existing: int, total: int) -> None:
        """Mark the group's accounts for the next incremental sweep, before they are written, with the
        fields written where the account was stored before (a new one's every field is new: NULL)."""
        written = "'" + changes.fields_text(c for c in cols if c != "id").replace("'", "''") + "'"
        known = "NULL" if existing == 0 else written if existing == total else \
            f"CASE WHEN EXISTS (SELECT 1 FROM {table} a WHERE a.id = t.id) THEN {written} END"
        # Duplicates were taken out above.
        changes.mark_sql(self.conn, f"(SELECT * FROM {TYPED} WHERE _grp = {group})", "id", distinct=False,
                         fields=known)

    def _write(self) -> None:
        conn, plan = self.conn, self.plan
        quote = conn.dialect.identifier_preparer.quote
        table = quote(plan.table.name)
        pg = conn.dialect.name == "postgresql"
        if self.entity:
            total = self.staging.count() if self.staging else 0
            existing = 0 if not conn.exec_driver_sql(f"SELECT 1 FROM {table} LIMIT 1").first() else int(
                conn.exec_driver_sql(f"SELECT count(*) FROM {TYPED} t WHERE EXISTS "
                                     f"(SELECT 1 FROM {table} a WHERE a.id = t.id)").scalar_one())
            self.result.created += total - existing
            self.result.updated += existing
            if plan.kind == "accounts":
                self._restore_history_key()  # the history's writes below read it by key
            if existing:
                self._drop_unchanged()
            for group, present in enumerate(self.group_columns):
                cols = ["id"] + [c for c in present if c != "id"]
                if plan.kind == "accounts":
                    self.job.changed_values += history.record_changes(
                        conn, self.job.catalog, TYPED, cols, self.job.known_at, where=f"t._grp = {group}")
                    self._mark(table, group, cols, existing, total)
                names = ", ".join(quote(c) for c in cols)
                update = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in cols if c != "id")
                # No id stored yet (a first import): a plain INSERT, half the upsert's cost on PostgreSQL.
                conflict = "" if not existing else \
                    f"ON CONFLICT (id) DO UPDATE SET {update}" if update else "ON CONFLICT (id) DO NOTHING"
                conn.exec_driver_sql(f"INSERT INTO {table} ({names}) SELECT {names} FROM {TYPED} "
                                     f"WHERE _grp = {group} {conflict}")
            return
        if "account_id" in self.typed_names and plan.kind in ("metrics", "events"):
            changes.mark_sql(conn, TYPED, "account_id")
        keys = list(plan.keys)
        cols = [c for c in self.typed_names]
        names = ", ".join(quote(c) for c in cols)
        key_names = ", ".join(quote(k) for k in keys)
        update = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in cols if c not in keys)
        upsert = f"ON CONFLICT ({key_names}) DO UPDATE SET {update}"
        written = False
        if self._is_first_load():
            # The table was empty when the file started (a first load): a plain
            # INSERT, unless the file repeats a key (then upserts from this chunk on).
            savepoint = conn.begin_nested()
            try:
                conn.exec_driver_sql(f"INSERT INTO {table} ({names}) SELECT {names} FROM {TYPED}")
                savepoint.commit()
                written = True
            except sa.exc.IntegrityError:
                savepoint.rollback()
                self.first_load = False
        # Later rows of a file win over earlier ones with the same key. SQLite
        # applies the rows in line order (the rowid of `_pb_typed` is the line).
        if not written and not pg:
            conn.exec_driver_sql(f"INSERT INTO {table} ({names}) SELECT {names} FROM {TYPED} WHERE 1 = 1 {upsert}")
        elif not written:
            self._write_pg(table, names, key_names, upsert)
        if plan.kind == "metrics" and not self.rollup_at_end:
            rollups.note_points(conn, TYPED)  # window functions read the series' latest points

    def _drop_unchanged(self) -> None:
        """A re-import: the typed rows whose account already holds every value they set, taken out of
        `_pb_typed`, so the history, the upsert and the change marks see only new and changed accounts
        (a 1% change rewrites 1% of the rows, and the next sweep evaluates those). An account stored
        before the field history existed keeps its row: it gets its "known since" row here."""
        conn, plan = self.conn, self.plan
        quote = conn.dialect.identifier_preparer.quote
        table = quote(plan.table.name)
        pg = conn.dialect.name == "postgresql"
        known = (f" AND EXISTS (SELECT 1 FROM {history.HISTORY.name} h WHERE h.account_id = t.id "
                 f"AND h.field = '{history.KNOWN}')" if plan.kind == "accounts" else "")
        for group, present in enumerate(self.group_columns):
            cols = [quote(c) for c in present if c != "id"]
            # The same test as the history's (engine/history.py): NULL and a value differ.
            same = " AND ".join(f"t.{c} IS NOT DISTINCT FROM a.{c}" if pg else f"t.{c} IS a.{c}" for c in cols)
            where = f"t._grp = {group}{' AND ' + same if same else ''}{known}"
            assert self.staging is not None
            dropped = conn.exec_driver_sql(
                f"DELETE FROM {TYPED} t USING {table} a WHERE a.id = t.id AND {where}" if pg else
                f"DELETE FROM {TYPED} WHERE _row IN (SELECT t._row FROM {TYPED} t JOIN {table} a ON a.id = t.id "
                f"WHERE {where})").rowcount
            self.staging.rows -= dropped
            if pg and dropped >= bulkload.ANALYZE_ROWS:
                conn.exec_driver_sql(f"ANALYZE {TYPED} (id)")  # fewer rows: the history's join probes them

    def _write_pg(self, table: str, names: str, key_names: str, upsert: str) -> None:
        conn = self.conn
        # PostgreSQL refuses to update one row twice in a statement: a file
        # that repeats a key (rare) is written again keeping the last row of
        # each, which costs a sort the common case does not pay.
        import psycopg2.errors

        savepoint = conn.begin_nested()
        try:
            conn.exec_driver_sql(f"INSERT INTO {table} ({names}) SELECT {names} FROM {TYPED} {upsert}")
            savepoint.commit()
        except sa.exc.DBAPIError as e:
            if not isinstance(e.orig, psycopg2.errors.CardinalityViolation):
                raise
            savepoint.rollback()
            conn.exec_driver_sql(f"INSERT INTO {table} ({names}) SELECT DISTINCT ON ({key_names}) {names} "
                                 f"FROM {TYPED} ORDER BY {key_names}, _row DESC {upsert}")


class _NeedsPython(Exception):
    """A file the COPY path leaves to the row-by-row reader."""


def _column_check(kind: Kind, name: str) -> str | None:
    """The rule of `_Job._check_special` a column falls under, for SQL."""
    if name in ("id", "account_id"):
        return "strip"
    if name == "email" and kind in ("contacts", "users"):
        return "email"
    if name == "timezone" and kind == "contacts":
        return "timezone"
    if name == "metric" and kind == "metrics":
        return "metric"
    return None


def _has_nul(value: Any) -> bool:
    """A NUL anywhere in a text value, also inside a JSON payload."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


_ZONES: dict[str, bool] = {}


def _valid_zone(name: str) -> bool:
    if name not in _ZONES:
        try:
            zoneinfo.ZoneInfo(name)
            _ZONES[name] = True
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            _ZONES[name] = False
    return _ZONES[name]


def event_key(account_id: str, event: str, at: dt.datetime, source_id: str | None = None) -> str:
    """The idempotency key of an event: the source's id when known, else what it says."""
    if source_id:
        return f"id:{event}:{source_id}"
    return f"{account_id}|{event}|{at.astimezone(dt.timezone.utc).isoformat()}"


def read_rows(path: str | Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """(line, row) of a CSV or JSON Lines file, for tools that want the raw rows; raises ImportFailed."""
    errors = _Errors(1000)
    src = _Source(Path(path), str(path))
    yield from _read(src, errors)
    if errors:
        raise ImportFailed(errors.items, errors.total)


__all__ = ["FileResult", "ImportFailed", "ImportReport", "KINDS", "Kind", "RowError", "entity_columns", "event_key",
           "import_file", "import_files", "is_empty", "parse_value", "read_rows"]
