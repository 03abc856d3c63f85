"""Syncing a declared `source` into the store: batches from a reader, written by the bulk importer.

    result = await run_sync(store, catalog, decl, reader, full=False)

A reader (connectors/sources.py: HubSpot, a warehouse) yields batches of
records, each with the cursor to resume from once the batch is stored. Each
batch is mapped onto the entity's columns (the declaration's `ENTITY.FIELD =
column` lines), written as a JSON Lines file and imported through
engine/importers.py (staging table, set-wise checks, account_field_history):
all or nothing per batch, and the cursor is stored by the import's own
transaction (`then`), so after a crash the next sync starts after the last
batch that was written, never after one that was not. A batch the importer
refuses stops the sync: nothing of it is written, the cursor stays, and the
problems name the source, the record (its key) and the field
(`source crm: record 4711 (hs_object_id): account.arr <- annualrevenue: ...`).

Every sync is a `sync_runs` row: what it read, created, updated, changed and
refused, and how it ended (ok, refused, failed). A process killed mid-sync
leaves its row 'running'; the next sync of that source marks it
'interrupted' (and `runs` shows it so) once its process is gone from this
host or it gave no sign of life for `LEASE`. Its written batches stay, and
the next sync resumes from their cursor.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import socket
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dsl import nodes as n
from dsl.catalog import Catalog
from engine import schema
from engine.importers import ImportFailed, ImportReport, Kind, RowError, import_files
from engine.store import Store

KIND: dict[str, Kind] = {"account": "accounts", "contact": "contacts", "metric": "metrics", "event": "events"}
SHOWN_IN_MESSAGE = 20
# The most frequent event names a run keeps of the rows it skipped (`named by`): enough to spot a
# misspelt name or an event worth declaring, bounded however many kinds the stream has.
SKIPPED_NAMES_KEPT = 20
# How long a run on another host may go without a sign of life (its start,
# each batch) before it counts as interrupted: a run on this host is checked
# by its process id at once.
LEASE = dt.timedelta(hours=1)


@dataclass
class Batch:
    """Records read from a source, and the cursor to store once they are written."""

    records: Sequence[Mapping[str, Any]]
    cursor: Any  # JSON; None: the next sync starts from the beginning (a full load that ended)


class Reader(Protocol):
    """What a system's reader does (connectors/sources.py)."""

    def batches(self, cursor: Any, *, full: bool) -> AsyncIterator[Batch]:
        """Batches from `cursor` (None or `full`: everything), in cursor order."""
        ...

    async def aclose(self) -> None: ...


class SourceUnreachable(Exception):
    """The source could not be read (network, server errors after retries, bad credentials): nothing of
    the current batch is written; the next sync resumes from the stored cursor."""


class SourceProblem(Exception):
    """The source answered something the declaration cannot use (a query that fails, a missing column)."""


@dataclass(frozen=True)
class MappingError:
    source: str
    record: str  # the record's key as the source names it (`4711`), or its position when it has none
    field: str | None  # `account.arr <- annualrevenue`
    reason: str

    def __str__(self) -> str:
        where = f"source {self.source}: record {self.record}"
        return f"{where}: {self.field}: {self.reason}" if self.field else f"{where}: {self.reason}"


class SyncRefused(Exception):
    """A batch the importer refused: nothing of it written, the cursor where it was."""

    def __init__(self, source: str, errors: list[MappingError], total: int, records: int) -> None:
        self.source, self.errors, self.total, self.records = source, errors, total, records
        shown = errors[:SHOWN_IN_MESSAGE]
        more = f" (and {total - len(shown)} more)" if total > len(shown) else ""
        lines = "\n".join(f"  {e}" for e in shown)
        super().__init__(f"source {source}: a batch of {records} record(s) was refused with {total} problem(s)"
                         f"{more}; nothing of it was written\n{lines}")


@dataclass
class SyncResult:
    source: str
    run_id: int
    status: str = "running"
    full: bool = False
    batches: int = 0
    read: int = 0
    created: int = 0
    updated: int = 0
    changed: int = 0
    refused: int = 0
    skipped: int = 0  # rows of a `named by` source naming an event it does not land
    skipped_names: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    cursor: Any = None
    problems: list[MappingError] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"source": self.source, "run": self.run_id, "status": self.status, "full": self.full,
                "batches": self.batches, "read": self.read, "created": self.created, "updated": self.updated,
                "changed": self.changed, "refused": self.refused, "skipped": self.skipped,
                "skipped_names": self.skipped_names or None, "error": self.error, "cursor": self.cursor,
                "problems": [{"record": p.record, "field": p.field, "reason": p.reason} for p in self.problems]}


# --------------------------------------------------------------------------
# Cursors and runs


def stored_cursor(conn: Connection, source: str) -> Any:
    t = schema.SyncCursor.__table__
    row = conn.execute(sa.select(t.c.cursor).where(t.c.source == source)).first()
    return row[0] if row is not None else None


def store_cursor(conn: Connection, source: str, cursor: Any) -> None:
    t = schema.SyncCursor.__table__
    now = schema.utcnow()
    if conn.execute(sa.update(t).where(t.c.source == source).values(cursor=cursor, updated_at=now)).rowcount == 0:
        conn.execute(sa.insert(t).values(source=source, cursor=cursor, updated_at=now))


def runs(conn: Connection, source: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """The latest sync runs, newest first; a 'running' one whose process is gone shows as 'interrupted'
    (written so by the next sync of its source)."""
    t = schema.SyncRun.__table__
    q = sa.select(t).order_by(t.c.id.desc()).limit(limit)
    if source is not None:
        q = q.where(t.c.source == source)
    out = [dict(r._mapping) for r in conn.execute(q)]
    now = schema.utcnow()
    for r in out:
        if r["status"] == "running" and _abandoned(r["owner"], r["heartbeat_at"] or r["started_at"], now):
            r["status"], r["error"] = "interrupted", _interrupted(r["owner"])
    return out


def _owner() -> str:
    return f"{socket.gethostname()} {os.getpid()}"


def _abandoned(owner: str | None, alive_at: dt.datetime, now: dt.datetime) -> bool:
    """Whether a 'running' run's process has ended: gone from this host, or silent for `LEASE`."""
    host, _, pid = (owner or "").rpartition(" ")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            return True
        except PermissionError:
            return False  # it exists, as another user's
        return False
    return now - alive_at > LEASE


def _interrupted(owner: str | None) -> str:
    return (f"interrupted: its process ({owner or 'unknown'}) ended before the sync finished; the batches it "
            "wrote stay, and the next sync resumes from their cursor")


def mark_interrupted(conn: Connection, source: str) -> int:
    """Mark `source`'s runs left 'running' by a process that is gone as 'interrupted'; how many."""
    t = schema.SyncRun.__table__
    now = schema.utcnow()
    found = conn.execute(sa.select(t.c.id, t.c.owner, t.c.started_at, t.c.heartbeat_at)
                         .where(t.c.source == source, t.c.status == "running")).all()
    gone = [r for r in found if _abandoned(r.owner, r.heartbeat_at or r.started_at, now)]
    for r in gone:  # finished at its last sign of life: when it was last known to run
        conn.execute(sa.update(t).where(t.c.id == r.id, t.c.status == "running").values(
            status="interrupted", error=_interrupted(r.owner), finished_at=r.heartbeat_at or r.started_at))
    return len(gone)


def _update_run(conn: Connection, result: SyncResult, **extra: Any) -> None:
    t = schema.SyncRun.__table__
    conn.execute(sa.update(t).where(t.c.id == result.run_id).values(
        status=result.status, batches=result.batches, read=result.read, created=result.created,
        updated=result.updated, changed=result.changed, refused=result.refused, skipped=result.skipped,
        skipped_names=result.skipped_names or None, error=result.error, cursor=result.cursor,
        heartbeat_at=schema.utcnow(), **extra))


# --------------------------------------------------------------------------
# Mapping records onto the entity's columns


def _plain(value: Any) -> Any:
    """A source value as the importer reads JSON: text, a number, a bool, or None."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return str(value)


@dataclass
class Mapped:
    """A batch as written for the importer: what each line stands for, and the rows that gave no line
    because their event is not one the source lands (`named by`), counted per name."""

    lines: list[Line]
    skipped: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class Line:
    """What one line of a mapped batch stands for: its record, and the mapping behind each imported column."""

    record: str  # `4711 (hs_object_id)`, `a2 2026-11-03 (account_id, day)`
    targets: Mapping[str, str]  # imported column -> `account.arr <- annualrevenue`


def _record(values: Sequence[Any], columns: Sequence[str], i: int) -> str:
    if all(v in (None, "") for v in values):
        return f"#{i + 1} of the batch ({', '.join(columns)})"
    return " ".join(str(_plain(v)) if v not in (None, "") else "(empty)" for v in values) + f" ({', '.join(columns)})"


def map_batch(decl: n.SourceDecl, records: Sequence[Mapping[str, Any]], path: Path) -> Mapped:
    """Write `records` mapped as the import of `decl.fills` reads them (JSON Lines at `path`); what each line is.

    Fields: one line per record. Metric points: one line per record and mapped metric with a value (an
    empty value is no point). Events: one line per record whose time is not empty and, with `named by`,
    whose name is one of the source's events (the others are counted as skipped).
    """
    fills = decl.fills or "account"
    if fills in n.SOURCE_SERIES:
        return _map_series(decl, fills, records, path)
    lines: list[Line] = []
    key = decl.key
    entity = decl.entity or "account"
    targets = {m.field: f"{entity}.{m.field} <- {m.column}" for m in decl.mappings}
    with path.open("w", encoding="utf-8") as fh:
        for i, rec in enumerate(records):
            row = {m.field: _plain(rec.get(m.column)) for m in decl.mappings}
            raw_key = rec.get(key.column) if key is not None else None
            label = _record([raw_key], [key.column], i) if key is not None else f"#{i + 1} of the batch"
            lines.append(Line(label, targets))
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return Mapped(lines)


def _day(value: Any) -> Any:
    """A point's date: a timestamp column (a warehouse's `date_trunc`) gives its day, in UTC when it has an offset."""
    if isinstance(value, dt.datetime):
        return (value.astimezone(dt.timezone.utc) if value.tzinfo else value).date()
    return value


def _map_series(decl: n.SourceDecl, fills: str, records: Sequence[Mapping[str, Any]], path: Path) -> Mapped:
    out = Mapped([])
    lines = out.lines
    account = decl.key.column if decl.key is not None else "account_id"
    landed = [m for m in decl.mappings if m.entity == fills and m.prop is None]
    props = [m for m in decl.mappings if m.entity == fills and m.prop is not None]
    by_name = {m.field: m for m in landed}
    # Per event, once per batch rather than per row: its properties, and the columns naming its record.
    props_of = {m.field: [p for p in props if p.field == m.field] for m in landed}
    record_columns = [account, *([decl.named] if decl.named is not None else [])]
    account_target = f"account.id <- {account}"
    with path.open("w", encoding="utf-8") as fh:
        for i, rec in enumerate(records):
            acct = _plain(rec.get(account))
            if fills == "metric":
                assert decl.dated is not None
                day = _plain(_day(rec.get(decl.dated)))
                label = _record([acct, day], [account, decl.dated], i)
                for m in landed:
                    value = _plain(rec.get(m.column))
                    if value is None or value == "":
                        continue  # no measurement that day
                    row = {"account_id": acct, "metric": m.field, "date": day, "value": value}
                    lines.append(Line(label, {"account_id": account_target, "date": f"dated by {decl.dated}",
                                              "value": f"metric.{m.field} <- {m.column}"}))
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                continue
            if decl.named is not None:  # the row's event is the one its column names
                name = _plain(rec.get(decl.named))
                if name not in by_name:
                    out.skipped[str(name)] += 1
                    continue
                events = [by_name[name]]
            else:
                events = landed  # the checker allows one event per source without `named by`
            for m in events:
                at = _plain(rec.get(m.column))
                if at is None or at == "":
                    continue  # the event did not happen to this row's account
                mine = props_of[m.field]
                payload = {p.prop: v for p in mine if (v := _plain(rec.get(p.column))) not in (None, "")}
                row = {"account_id": acct, "event": m.field, "occurred_at": at, "payload": payload}
                named = [name, at] if decl.named is not None else [at]
                lines.append(Line(_record([acct, *named], [*record_columns, m.column], i), {
                    "account_id": account_target, "occurred_at": f"event.{m.field} <- {m.column}",
                    "payload": ", ".join(f"event.{m.field}.{p.prop} <- {p.column}" for p in mine) or "properties"}))
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return out


def _named(decl: n.SourceDecl, lines: list[Line], errors: list[RowError]) -> list[MappingError]:
    out = []
    for e in errors:
        line = lines[e.row - 1] if 0 < e.row <= len(lines) else None
        record = line.record if line is not None else "(the batch)"
        target = line.targets.get(e.column, e.column) if line is not None and e.column else e.column
        out.append(MappingError(decl.name, record, target, e.reason))
    return out


# --------------------------------------------------------------------------
# The sync


async def run_sync(store: Store, catalog: Catalog, decl: n.SourceDecl, reader: Reader, *, full: bool = False,
                   max_errors: int = 100) -> SyncResult:
    """Sync `decl` from `reader` into `store`; the result says how it ended (also in `sync_runs`).

    Raises SyncRefused (the batch's data) or SourceUnreachable/SourceProblem (the source) after
    recording the run; batches written before stay written, with their cursor.
    """
    kind = KIND[decl.fills or "account"]
    result = await asyncio.to_thread(_start_run, store, decl.name, full)
    cursor = None if full else await asyncio.to_thread(_read_cursor, store, decl.name)
    result.cursor = cursor
    try:
        with tempfile.TemporaryDirectory(prefix="playbook-sync-") as tmp:
            path = Path(tmp) / f"{decl.name}.jsonl"
            async for batch in reader.batches(cursor, full=full):
                if batch.records:
                    await asyncio.to_thread(_write_batch, store, catalog, decl, kind, batch, path, result, max_errors)
                else:
                    await asyncio.to_thread(_move_cursor, store, decl.name, batch.cursor, result.run_id)
                result.cursor = batch.cursor
        result.status = "ok"
    except SyncRefused as exc:
        result.status, result.error = "refused", str(exc)
        await asyncio.to_thread(_finish_run, store, result)
        raise
    except (SourceUnreachable, SourceProblem) as exc:
        result.status, result.error = "failed", str(exc)
        await asyncio.to_thread(_finish_run, store, result)
        raise
    except BaseException as exc:
        result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"[:2000]
        await asyncio.shield(asyncio.to_thread(_finish_run, store, result))
        raise
    finally:
        await reader.aclose()
    await asyncio.to_thread(_finish_run, store, result)
    return result


def _start_run(store: Store, source: str, full: bool) -> SyncResult:
    t = schema.SyncRun.__table__

    def work() -> int:
        with store.engine.begin() as conn:
            mark_interrupted(conn, source)
            now = schema.utcnow()
            return int(conn.execute(sa.insert(t).values(
                source=source, started_at=now, status="running", full=full, batches=0, read=0,
                created=0, updated=0, changed=0, refused=0, owner=_owner(), heartbeat_at=now)
                .returning(t.c.id)).scalar_one())

    return SyncResult(source=source, run_id=store.retry(work), full=full)


def _read_cursor(store: Store, source: str) -> Any:
    def work() -> Any:
        with store.engine.connect() as conn:
            return stored_cursor(conn, source)
    return store.retry(work)


def _move_cursor(store: Store, source: str, cursor: Any, run_id: int) -> None:
    t = schema.SyncRun.__table__

    def work() -> None:
        with store.engine.begin() as conn:
            store_cursor(conn, source, cursor)
            conn.execute(sa.update(t).where(t.c.id == run_id).values(heartbeat_at=schema.utcnow()))
    store.retry(work)


def _finish_run(store: Store, result: SyncResult) -> None:
    def work() -> None:
        with store.engine.begin() as conn:
            _update_run(conn, result, finished_at=schema.utcnow())
    store.retry(work)


def _write_batch(store: Store, catalog: Catalog, decl: n.SourceDecl, kind: Kind, batch: Batch, path: Path,
                 result: SyncResult, max_errors: int) -> None:
    mapped = map_batch(decl, batch.records, path)
    lines = mapped.lines

    def then(conn: Connection, report: ImportReport) -> None:
        f = report.files[0]
        store_cursor(conn, decl.name, batch.cursor)
        result.batches += 1
        result.read += len(batch.records)
        if mapped.skipped:
            result.skipped += mapped.skipped.total()
            names = Counter(result.skipped_names) + mapped.skipped
            result.skipped_names = dict(names.most_common(SKIPPED_NAMES_KEPT))
        # Metric points and events have no new/updated split: `created` counts those written.
        result.created += f.created if kind in ("accounts", "contacts") else f.rows
        result.updated += f.updated
        result.changed += report.changed_values
        result.cursor = batch.cursor
        _update_run(conn, result)  # the run's counters move with the batch

    before = (result.batches, result.read, result.created, result.updated, result.changed, result.cursor,
              result.skipped, result.skipped_names)
    try:
        # One transaction per batch (all or nothing): safe to retry over a transient store fault.
        def attempt() -> ImportReport:
            (result.batches, result.read, result.created, result.updated, result.changed, result.cursor,
             result.skipped, result.skipped_names) = before
            return import_files(store, catalog, [(kind, path)], max_errors=max_errors, actor=f"sync.{decl.name}",
                                then=then)
        store.retry(attempt)
    except ImportFailed as exc:
        problems = _named(decl, lines, exc.errors)
        result.read += len(batch.records)
        # Records, not lines: a record may be several metric points.
        result.refused = len({p.record for p, e in zip(problems, exc.errors) if e.row}) or len(batch.records)
        result.problems = problems
        raise SyncRefused(decl.name, problems, exc.total, len(batch.records)) from None
