"""The account store: where the database is, how it is opened, migrated and synced.

    store = Store.open()                  # .playbook/playbook.db, or $PLAYBOOK_DATABASE_URL
    store = Store.open("postgresql://postgres@127.0.0.1:5432/test")
    store.sync_entities(project.catalog)  # add columns for newly declared fields
    accounts = store.table("account")     # Core Table: core + declared columns

Fixed tables are created by Alembic migrations (`engine/migrations/`), run
from Python by `Store.migrate()` (and by `Store.open` unless told not to).
Declared entity fields become columns through `sync_entities`, which only
ever adds columns: it never drops, renames or retypes one, so no data is
lost when a field disappears from or changes in a .play file; those are
reported instead. See docs/store.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from dsl.catalog import Catalog
from engine import schema

ENV_URL = "PLAYBOOK_DATABASE_URL"
DEFAULT_DIR = ".playbook"
DEFAULT_FILE = "playbook.db"
MIGRATIONS = Path(__file__).with_name("migrations")


class StoreError(Exception):
    """The store cannot be used as asked (bad URL, schema conflict)."""


def default_url(project_dir: str | Path | None = None) -> str:
    """$PLAYBOOK_DATABASE_URL if set, else a SQLite file in `<project>/.playbook/`."""
    env = os.environ.get(ENV_URL, "").strip()
    if env:
        return env
    base = Path(project_dir) if project_dir is not None else Path.cwd()
    return f"sqlite:///{(base / DEFAULT_DIR / DEFAULT_FILE).resolve()}"


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # Take transaction control away from the sqlite3 module, whose implicit
    # BEGIN (only before DML) breaks SAVEPOINTs and transactional DDL; the
    # `begin` hook below emits BEGIN itself (SQLAlchemy's documented recipe).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    # WAL: readers (the CLI, `playbook why`) do not block the worker's writes.
    cur.execute("PRAGMA journal_mode=WAL")
    # NORMAL is durable at every checkpoint and safe with WAL; FULL costs an
    # fsync per commit for nothing a crash could lose that WAL keeps.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    # 64 MB of page cache instead of 2 MB: set-wise rule queries and bulk
    # loads walk large indexes; memory is still bounded per connection.
    cur.execute("PRAGMA cache_size=-65536")
    cur.execute("PRAGMA temp_store=MEMORY")
    cur.close()


def _sqlite_on_begin(conn: Connection) -> None:
    # A write transaction takes the write lock up front (IMMEDIATE): a deferred
    # one that reads, then writes after another connection committed, fails at
    # once with "database is locked" (busy_timeout cannot help a stale
    # snapshot). Readers stay deferred so a long scorecard never blocks writers.
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("playbook_write") else "BEGIN")


def create_engine(url: str) -> Engine:
    """An engine with the store's per-dialect settings."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as e:
        raise StoreError(f"not a database URL: {url!r}") from e
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if db and db != ":memory:" and not db.startswith("file:"):
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed)
        sa.event.listen(engine, "connect", _sqlite_on_connect)
        sa.event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the
            # project depends on psycopg2-binary, so say which driver we mean.
            parsed = parsed.set(drivername="postgresql+psycopg2")
        return sa.create_engine(parsed, pool_pre_ping=True)
    raise StoreError(f"unsupported database {parsed.get_backend_name()!r}: use sqlite:// or postgresql://")


# --------------------------------------------------------------------------
# Upserts: the one place where the dialects differ for writes.

_INSERT: dict[str, Callable[[sa.Table], Any]] = {
    "sqlite": sqlite.insert,
    "postgresql": pg.insert,
}


def upsert(conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]], keys: Sequence[str],
           update: Sequence[str] | None = None) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE the given columns (default: all but keys).

    Every row must have the same columns. Rows must be unique by `keys`
    within one call (PostgreSQL refuses to update a row twice in one statement).
    """
    if not rows:
        return
    cols = list(rows[0].keys())
    update = [c for c in (update if update is not None else cols) if c not in keys]
    stmt = _INSERT[conn.dialect.name](table)
    if update:
        stmt = stmt.on_conflict_do_update(index_elements=list(keys),
                                          set_={c: stmt.excluded[c] for c in update})
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
    conn.execute(stmt, list(rows))


def insert_ignore(conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]],
                  keys: Sequence[str]) -> None:
    """INSERT ... ON CONFLICT (keys) DO NOTHING: for outbox/tasks written under an idempotency key."""
    upsert(conn, table, rows, keys, update=[])


# --------------------------------------------------------------------------
# Declared columns


@dataclass
class SyncReport:
    """What `sync_entities` did and what it refused to do."""

    added: list[tuple[str, str, str]] = field(default_factory=list)  # (table, column, type)
    # Declared type differs from the one the column was created with: left as is.
    conflicts: list[str] = field(default_factory=list)
    # Columns in the table that no declaration mentions any more: kept.
    orphaned: list[tuple[str, str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added)


def _type_sql(conn: Connection, t: sa.types.TypeEngine[Any]) -> str:
    return t.compile(dialect=conn.dialect)


def sync_entities(conn: Connection, catalog: Catalog) -> SyncReport:
    """Add a column for every declared account/contact field that has none yet.

    Only ADD COLUMN (nullable, no default), which both databases do without
    rewriting the table. A field whose declared type changed since its
    column was added is reported in `conflicts` and not touched (changing
    it could lose data: write a migration or re-import). Run inside a
    transaction; on PostgreSQL the DDL is transactional, on SQLite too (see
    `_sqlite_on_connect`).
    """
    report = SyncReport()
    inspector = sa.inspect(conn)
    fields_t = schema.EntityField.__table__
    known: dict[tuple[str, str], str] = {
        (r.entity, r.field): r.type for r in conn.execute(sa.select(fields_t.c.entity, fields_t.c.field, fields_t.c.type))
    }
    for kind, table_name in schema.ENTITY_TABLES.items():
        entity = catalog.entities.get(kind)
        existing = {c["name"] for c in inspector.get_columns(table_name)}
        core = set(schema.CORE_COLUMNS[kind])
        declared = {f.name for f in entity.fields} if entity is not None else set()
        for f in entity.fields if entity is not None else []:
            tname = f.type.name.value
            if f.name in core:
                allowed = schema.CORE_COMPATIBLE.get(f.name, set())
                if f.type.name not in allowed:
                    report.conflicts.append(
                        f"{kind}.{f.name}: '{f.name}' is a built-in column of {table_name}; "
                        f"it can only be declared as {' or '.join(sorted(t.value for t in allowed)) or 'nothing'}")
                continue
            before = known.get((kind, f.name))
            if before is not None and before != tname:
                report.conflicts.append(
                    f"{kind}.{f.name}: declared {tname} but the column was created as {before}; left unchanged")
                continue
            if f.name not in existing:
                col = schema.declared_column(f)
                ident = conn.dialect.identifier_preparer
                conn.exec_driver_sql(
                    f"ALTER TABLE {ident.quote(table_name)} ADD COLUMN {ident.quote(f.name)} {_type_sql(conn, col.type)}")
                report.added.append((table_name, f.name, tname))
            if before is None:
                conn.execute(fields_t.insert().values(entity=kind, field=f.name, type=tname))
        for col in sorted(existing - core - declared):
            report.orphaned.append((table_name, col))
    return report


# --------------------------------------------------------------------------
# The store


@dataclass
class Store:
    """A handle on one database: engine, migrations, declared columns, sessions."""

    engine: Engine
    catalog: Catalog | None = None

    @classmethod
    def open(cls, url: str | None = None, *, project_dir: str | Path | None = None, migrate: bool = True,
             catalog: Catalog | None = None) -> Store:
        """Open (and by default migrate) the store at `url`, or the project's default.

        With a catalog, declared fields are synced too and `table()` knows them.
        """
        store = cls(engine=create_engine(url or default_url(project_dir)))
        if migrate:
            store.migrate()
        if catalog is not None:
            store.use(catalog, sync=migrate)
        return store

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ------------------------------------------------------------

    @staticmethod
    def alembic_config() -> Config:
        """Alembic configuration pointing at the packaged migrations (no alembic.ini)."""
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        return cfg

    def migrate(self, revision: str = "head") -> None:
        """Apply the fixed tables' migrations up to `revision`."""
        cfg = self.alembic_config()
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)

    def revision(self) -> str | None:
        """The applied migration revision (None on an empty database)."""
        from alembic.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def sync_entities(self, catalog: Catalog) -> SyncReport:
        with self.engine.begin() as conn:
            report = sync_entities(conn, catalog)
        self.catalog = catalog
        return report

    def use(self, catalog: Catalog, *, sync: bool = True) -> SyncReport | None:
        """Make `catalog`'s declarations the ones `table()` builds on (syncing columns first)."""
        report = self.sync_entities(catalog) if sync else None
        self.catalog = catalog
        return report

    def table(self, kind: str = "account", catalog: Catalog | None = None) -> sa.Table:
        """The Core table of an entity with its declared columns (from `catalog` or the one in use)."""
        cat = catalog or self.catalog
        entity = cat.entities.get(kind) if cat is not None else None
        return schema.entity_table(entity, kind)

    # -- connections -------------------------------------------------------

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A write transaction: committed on success, rolled back on error."""
        with self.engine.connect().execution_options(playbook_write=True) as conn, conn.begin():
            yield conn

    def connect(self) -> Connection:
        return self.engine.connect()

    def session(self) -> Session:
        """An ORM session for the fixed models (tasks, outbox, enrollments, ...)."""
        return sessionmaker(self.engine, expire_on_commit=False)()

    def audit(self, conn: Connection, actor: str, action: str, subject: str | None = None,
              detail: Any = None) -> None:
        conn.execute(schema.AuditEntry.__table__.insert().values(
            at=schema.utcnow(), actor=actor, action=action, subject=subject, detail=detail))

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar_one())


def chunked(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


__all__ = ["ENV_URL", "Store", "StoreError", "SyncReport", "chunked", "create_engine", "default_url",
           "insert_ignore", "sync_entities", "upsert"]
