"""Copy a whole store to another database through each database's bulk path.

    python benchmarks/copy_store.py SRC_URL DST_URL [--analyze] [--quiet]

Every table of engine/schema.py with its rows, the declared account and
contact columns, and the Alembic revision (the destination is migrated to
the source's). The destination must hold no accounts. Rows stream in chunks
(memory is bounded by a chunk, never by the store):

* into PostgreSQL: `COPY t FROM STDIN` (psycopg2 copy_expert). From SQLite,
  SQLite itself formats each row as a line of COPY text (one string per row,
  no per-value Python); from PostgreSQL, `COPY t TO STDOUT` is piped through.
  Foreign-key triggers are off for the load (session_replication_role =
  replica, when the role may set it): the rows come from a store that
  already satisfied them. Sequences are then set past the copied ids.
* into SQLite: executemany in large transactions (synchronous off for the
  load), from rows the source gives in SQLite's stored forms (UTC times as
  naive text, dates as ISO text, booleans as 0/1, JSON as text).

Why: benchmarks need the same million-account store on both databases, and
generating it twice costs far more than copying it once.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from dsl import nodes as n  # noqa: E402
from engine import schema  # noqa: E402
from engine.store import Store, create_engine  # noqa: E402

CHUNK = 50_000  # rows per fetch
SQLITE_TXN = 500_000  # rows per SQLite transaction

Report = Callable[[str], None]


class CopyError(Exception):
    """The copy cannot be done as asked (destination not empty, unknown database)."""


def _kind(column_type: sa.types.TypeEngine[Any]) -> str:
    """The copy-relevant family of a reflected column type."""
    if isinstance(column_type, sa.Boolean):
        return "bool"
    if isinstance(column_type, sa.DateTime):
        return "datetime"
    if isinstance(column_type, sa.Date):
        return "date"
    if isinstance(column_type, (sa.Float, sa.Numeric)) and not isinstance(column_type, sa.Integer):
        return "float"
    if isinstance(column_type, sa.Integer):
        return "int"
    if isinstance(column_type, sa.JSON) or type(column_type).__name__.upper() in ("JSON", "JSONB"):
        return "json"
    return "text"


def _tables(metadata: sa.MetaData) -> list[str]:
    """The schema's tables, parents before children (foreign keys)."""
    return [t.name for t in metadata.sorted_tables]


# --------------------------------------------------------------------------
# Reading


def _sqlite_copy_line(columns: list[tuple[str, str]]) -> str:
    """A SELECT expression giving each row as one line of PostgreSQL COPY text (no newline)."""
    parts = []
    for name, kind in columns:
        c = f'"{name}"'
        if kind == "float":
            # 17 significant digits round-trip every double ('!': past SQLite's default 16).
            expr = f"iif({c} IS NULL, NULL, printf('%!.17g', {c}))"  # printf makes NULL '0.0'
        elif kind in ("int", "bool"):
            expr = f"CAST({c} AS TEXT)"
        elif kind in ("date", "datetime"):
            expr = c  # ISO text; naive times are UTC and the COPY session's zone is UTC
        else:
            expr = c
            for raw, escaped in (("'\\'", "'\\\\'"), ("char(9)", "'\\t'"), ("char(10)", "'\\n'"),
                                 ("char(13)", "'\\r'")):
                expr = f"replace({expr}, {raw}, {escaped})"
        parts.append(f"coalesce({expr}, '\\N')")
    return " || char(9) || ".join(parts)


def _pg_sqlite_forms(columns: list[tuple[str, str]]) -> str:
    """A SELECT list giving PostgreSQL values in the forms the store keeps on SQLite."""
    out = []
    for name, kind in columns:
        c = f'"{name}"'
        if kind == "datetime":
            out.append(f"to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
        elif kind == "date":
            out.append(f"to_char({c}, 'YYYY-MM-DD')")
        elif kind == "bool":
            out.append(f"{c}::int")
        elif kind == "json":
            out.append(f"{c}::text")
        else:
            out.append(c)
    return ", ".join(out)


class _Lines:
    """A file-like object over an iterator of text chunks, for copy_expert (it reads until '')."""

    def __init__(self, chunks: Iterator[str]) -> None:
        self.chunks = chunks

    def read(self, _size: int = -1) -> str:
        return next(self.chunks, "")

    readline = read


def _sqlite_path(url: sa.URL) -> str:
    db = url.database or ""
    if db.startswith("file:"):  # the read-only form engine.store.create_engine makes
        db = db[len("file:"):]
    if not db or db == ":memory:":
        raise CopyError("a SQLite store here must be a file")
    return db


# --------------------------------------------------------------------------
# The copy


def _prepare_destination(src: sa.Engine, dst_url: str, say: Report) -> tuple[Store, list[str]]:
    """Migrate the destination to the source's revision and add the source's declared columns."""
    with src.connect() as conn:
        from alembic.migration import MigrationContext

        revision = MigrationContext.configure(conn).get_current_revision()
        if revision is None:
            raise CopyError("the source holds no store (no Alembic revision)")
        inspector = sa.inspect(conn)
        src_tables = set(inspector.get_table_names())
        declared = {table: [c for c in inspector.get_columns(table) if c["name"] not in schema.CORE_COLUMNS[kind]]
                    for kind, table in schema.ENTITY_TABLES.items()}
        fields_t = schema.EntityField.__table__
        types = {(r.entity, r.field): r.type for r in conn.execute(sa.select(fields_t))}
    dst = Store.open(dst_url, migrate=False)
    dst.migrate(revision)
    with dst.begin() as conn:
        inspector = sa.inspect(conn)
        if conn.execute(sa.text("SELECT count(*) FROM accounts")).scalar_one():
            raise CopyError("the destination already holds accounts; copy into an empty database")
        ident = conn.dialect.identifier_preparer
        for kind, table in schema.ENTITY_TABLES.items():
            have = {c["name"] for c in inspector.get_columns(table)}
            for col in declared[table]:
                if col["name"] in have:
                    continue
                declared_type = types.get((kind, col["name"]))
                col_type = schema.TYPE_MAP[n.TypeName(declared_type)] if declared_type else col["type"]
                conn.exec_driver_sql(f"ALTER TABLE {ident.quote(table)} ADD COLUMN {ident.quote(col['name'])} "
                                     f"{col_type.compile(dialect=conn.dialect)}")
    say(f"destination at revision {revision}")
    return dst, [t for t in _tables(schema.Base.metadata) if t in src_tables]


def _columns(engine: sa.Engine, table: str) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [(c["name"], _kind(c["type"])) for c in sa.inspect(conn).get_columns(table)]


def _into_postgresql(src: sa.Engine, dst: Store, tables: list[str], say: Report) -> dict[str, int]:
    counts: dict[str, int] = {}
    raw = dst.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("SET TIME ZONE 'UTC'")
        try:
            cur.execute("SET session_replication_role = replica")
        except Exception:  # not a superuser: keep the foreign-key checks
            raw.rollback()
            cur = raw.cursor()
            cur.execute("SET TIME ZONE 'UTC'")
        src_is_sqlite = src.dialect.name == "sqlite"
        for table in tables:
            started = time.perf_counter()
            dst_cols = _columns(dst.engine, table)
            names = [name for name, _ in dst_cols]
            target = f"COPY \"{table}\" ({', '.join(chr(34) + c + chr(34) for c in names)}) FROM STDIN"
            if src_is_sqlite:
                lite = sqlite3.connect(f"file:{_sqlite_path(src.url)}?mode=ro", uri=True)
                try:
                    rows = lite.execute(f'SELECT {_sqlite_copy_line(dst_cols)} FROM "{table}"')

                    def chunks(rows: Any = rows) -> Iterator[str]:
                        while batch := rows.fetchmany(CHUNK):
                            yield "\n".join(r[0] for r in batch) + "\n"

                    cur.copy_expert(target, _Lines(chunks()))
                finally:
                    lite.close()
            else:
                _pipe_postgresql(src, table, names, cur, target)
            counts[table] = cur.rowcount
            say(f"  {table}: {cur.rowcount} rows in {time.perf_counter() - started:.1f} s")
        for table in tables:
            if "id" not in {c for c, _ in _columns(dst.engine, table)}:
                continue
            # Ids were copied, not drawn: the next insert must not collide with them.
            cur.execute("SELECT pg_get_serial_sequence(%s, 'id')", (f'"{table}"',))
            seq = cur.fetchone()[0]
            if seq:
                cur.execute(f'SELECT setval(%s, coalesce(max(id), 1), max(id) IS NOT NULL) FROM "{table}"', (seq,))
        raw.commit()
    finally:
        raw.close()
    return counts


def _pipe_postgresql(src: sa.Engine, table: str, names: list[str], cur: Any, target: str) -> None:
    """PostgreSQL to PostgreSQL: the source's COPY TO STDOUT fed to the destination's COPY FROM STDIN."""
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def produce() -> None:
        raw = src.raw_connection()
        try:
            with os.fdopen(write_fd, "w") as out:
                c = raw.cursor()
                c.execute("SET TIME ZONE 'UTC'")
                c.copy_expert(f"COPY \"{table}\" ({', '.join(chr(34) + x + chr(34) for x in names)}) TO STDOUT", out)
        except BaseException as e:  # reported by the consumer
            failure.append(e)
        finally:
            raw.close()

    worker = threading.Thread(target=produce)
    worker.start()
    with os.fdopen(read_fd, "r") as inp:
        cur.copy_expert(target, inp)
    worker.join()
    if failure:
        raise failure[0]


def _into_sqlite(src: sa.Engine, dst: Store, tables: list[str], say: Report) -> dict[str, int]:
    counts: dict[str, int] = {}
    dst.close()
    lite = sqlite3.connect(_sqlite_path(dst.engine.url), isolation_level=None)
    try:
        lite.execute("PRAGMA synchronous=OFF")
        lite.execute("PRAGMA cache_size=-262144")
        for table in tables:
            started = time.perf_counter()
            dst_cols = _columns(dst.engine, table)
            names = [name for name, _ in dst_cols]
            insert = f"INSERT INTO \"{table}\" ({', '.join(chr(34) + c + chr(34) for c in names)}) " \
                     f"VALUES ({', '.join('?' * len(names))})"
            total = 0
            lite.execute("BEGIN")
            in_txn = 0
            for batch in _source_rows(src, table, dst_cols):
                lite.executemany(insert, batch)
                total += len(batch)
                in_txn += len(batch)
                if in_txn >= SQLITE_TXN:
                    lite.execute("COMMIT")
                    lite.execute("BEGIN")
                    in_txn = 0
            lite.execute("COMMIT")
            counts[table] = total
            say(f"  {table}: {total} rows in {time.perf_counter() - started:.1f} s")
    finally:
        lite.close()
    return counts


def _source_rows(src: sa.Engine, table: str, columns: list[tuple[str, str]]) -> Iterator[list[tuple[Any, ...]]]:
    """The source's rows of `table` in SQLite's stored forms, in chunks."""
    names = ", ".join(f'"{c}"' for c, _ in columns)
    if src.dialect.name == "sqlite":
        lite = sqlite3.connect(f"file:{_sqlite_path(src.url)}?mode=ro", uri=True)
        try:
            rows = lite.execute(f'SELECT {names} FROM "{table}"')
            while batch := rows.fetchmany(CHUNK):
                yield batch
        finally:
            lite.close()
        return
    raw = src.raw_connection()
    try:
        cur = raw.cursor(name=f"copy_{table}")  # server-side: streamed, not fetched whole
        cur.itersize = CHUNK
        cur.execute(f'SELECT {_pg_sqlite_forms(columns)} FROM "{table}"')
        while batch := cur.fetchmany(CHUNK):
            yield batch
        cur.close()
    finally:
        raw.close()


def copy_store(src_url: str, dst_url: str, *, analyze: bool = False, say: Report = print) -> dict[str, int]:
    """Copy the store at `src_url` into the empty database at `dst_url`; rows copied per table."""
    src = create_engine(src_url, read_only=True)
    try:
        dst, tables = _prepare_destination(src, dst_url, say)
        try:
            if dst.dialect == "postgresql":
                counts = _into_postgresql(src, dst, tables, say)
            elif dst.dialect == "sqlite":
                counts = _into_sqlite(src, dst, tables, say)
            else:
                raise CopyError(f"cannot copy into {dst.dialect}")
            if analyze:
                # VACUUM too on PostgreSQL: what autovacuum does to a freshly loaded table on a server
                # where it is on (the default), setting the visibility map so that index-only scans
                # need not visit the heap. The servers of these machines run with autovacuum off
                # (`SHOW autovacuum`), so without it a copy would never get there.
                pg = dst.dialect == "postgresql"
                command = "VACUUM (ANALYZE)" if pg else "ANALYZE"
                started = time.perf_counter()
                with dst.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    quote = conn.dialect.identifier_preparer.quote
                    conn.exec_driver_sql(f"{command} {', '.join(quote(t) for t in tables)}" if pg else command)
                say(f"{command} in {time.perf_counter() - started:.1f} s")
        finally:
            dst.close()
    finally:
        src.dispose()
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--analyze", action="store_true",
                        help="ANALYZE the destination afterwards (PostgreSQL: VACUUM (ANALYZE), as autovacuum would)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        counts = copy_store(args.src, args.dst, analyze=args.analyze,
                            say=(lambda _m: None) if args.quiet else print)
    except CopyError as e:
        print(f"copy_store: {e}", file=sys.stderr)
        return 1
    print(f"copied {sum(counts.values())} rows in {len(counts)} tables in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
