"""The account store: where the database is, how it is opened, migrated and synced.

    store = Store.open()                  # .playbook/playbook.db, or $PLAYBOOK_DATABASE_URL
    store = Store.open("postgresql://postgres@127.0.0.1:5432/test")
    store.sync_entities(project.catalog)  # add columns for newly declared fields
    accounts = store.table("account")     # Core Table: core + declared columns

Fixed tables are created by Alembic migrations (`engine/migrations/`), run
from Python by `Store.migrate()` (and by `Store.open` unless told not to).
Reading commands open with `Store.open(url, read_only=True)`: nothing is
created, migrated or written, and a store that is missing, empty or behind
the code is `StoreMissing`. A store that cannot be reached is
`StoreUnreachable`; `retrying` runs work again over transient faults.
Declared entity fields become columns through `sync_entities`, which only
ever adds columns: it never drops, renames or retypes one, so no data is
lost when a field disappears from or changes in a .play file; those are
reported instead. See docs/store.md.
"""

from __future__ import annotations

import functools
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar

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
CONNECT_TIMEOUT = 10  # seconds, PostgreSQL
FILL_HINT = "fill it with `playbook demo-data` or `playbook import accounts=FILE`"


T = TypeVar("T")


class StoreError(Exception):
    """The store cannot be used as asked (bad URL, schema conflict)."""


class StoreMissing(StoreError):
    """A reading command found nothing to read: no store at the URL, no tables,
    an older schema, no accounts, or no column for a declared field."""


class StoreUnreachable(Exception):
    """The store could not be reached or used: refused connection, missing
    database, read-only file, server restarting. The environment's fault,
    neither bad input nor a bug.

    `cause` is one line; `url` never shows a password; `transient` says a
    retry may help (what `retrying` did before giving up).
    """

    def __init__(self, url: str, cause: str, *, transient: bool = False):
        super().__init__(f"cannot reach the store{f' at {url}' if url else ''}: {cause}")
        self.url, self.cause, self.transient = url, cause, transient


# Faults worth another try: the server is (re)starting or dropped the
# connection, a SQLite writer held the lock past busy_timeout, or PostgreSQL
# chose this transaction as a deadlock or serialization victim.
_TRANSIENT = re.compile(
    r"connection refused|connection reset|server closed the connection|could not receive data|"
    r"could not send data|terminating connection|the database system is (starting up|shutting down|"
    r"in recovery mode|not yet accepting)|database is locked|ssl syscall error|connection timed out|"
    r"timeout expired|no connection to the server|connection already closed|deadlock detected|"
    r"could not serialize access", re.IGNORECASE)
# Lasting faults of the environment on SQLite (whose OperationalError also
# covers "no such table" and SQL errors, which are not the environment's).
_SQLITE_LASTING = re.compile(
    r"unable to open database file|readonly database|disk i/o error|database disk image is malformed|"
    r"database or disk is full|file is not a database", re.IGNORECASE)

# Seconds slept before each new attempt; tests set it to zeros.
RETRY_DELAYS: tuple[float, ...] = (0.5, 1.0, 2.0)


def _one_line(exc: BaseException) -> str:
    """The first line of a driver's message, without libpq's severity prefix."""
    first = next((line for line in str(exc).splitlines() if line.strip()), "")
    text = re.sub(r"\b(FATAL|ERROR):\s*", "", " ".join(first.split()))
    return text[:300] or type(exc).__name__


def unreachable(exc: BaseException, url: str) -> StoreUnreachable | None:
    """`exc` as a `StoreUnreachable` when it is a fault of the environment, else None.

    PostgreSQL's OperationalError is by definition outside the program's
    control (connection, missing database, authentication, server state); on
    SQLite only the messages that name the file or the lock are.
    """
    if isinstance(exc, StoreUnreachable):
        return exc
    if not isinstance(exc, sa.exc.DBAPIError):
        return None
    orig = exc.orig if exc.orig is not None else exc
    text = _one_line(orig)
    transient = bool(exc.connection_invalidated or _TRANSIENT.search(text))
    if transient:
        return StoreUnreachable(url, text, transient=True)
    is_sqlite = isinstance(orig, sqlite3.Error)
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)) and not is_sqlite:
        return StoreUnreachable(url, text)
    # 42501: permission denied, e.g. a read-only role asked to write; 3F000: the
    # URL's search_path names no existing schema ("no schema has been selected").
    if getattr(orig, "pgcode", None) in ("42501", "3F000") or (is_sqlite and _SQLITE_LASTING.search(text)):
        return StoreUnreachable(url, text)
    return None


def retrying(work: Callable[[], T], url: str, *, on_retry: Callable[[StoreUnreachable, float], None] | None = None,
             delays: Sequence[float] | None = None) -> T:
    """`work()`, run again after a transient fault (up to len(RETRY_DELAYS) more times).

    A lasting fault, or a transient one still there after the last attempt,
    raises `StoreUnreachable`; any other error passes through. `work` must be
    safe to repeat: open its own connection, write nothing it would write twice.
    """
    waits = RETRY_DELAYS if delays is None else tuple(delays)
    for attempt in range(len(waits) + 1):
        try:
            return work()
        except (sa.exc.DBAPIError, StoreUnreachable) as exc:
            fault = unreachable(exc, url)
            if fault is None:
                raise
            if not fault.transient or attempt == len(waits):
                if fault is exc:
                    raise
                raise fault from exc
            if on_retry is not None:
                on_retry(fault, waits[attempt])
            time.sleep(waits[attempt])
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover


def default_url(project_dir: str | Path | None = None) -> str:
    """The `database_url` setting ($PLAYBOOK_DATABASE_URL, or the settings file; engine/settings.py)
    if set, else a SQLite file in `<project>/.playbook/`."""
    from engine.settings import load_settings  # lazily: the settings import enroll, which imports this module

    configured = load_settings().database_url
    if configured:
        return configured
    base = Path(project_dir) if project_dir is not None else Path.cwd()
    return f"sqlite:///{(base / DEFAULT_DIR / DEFAULT_FILE).resolve()}"


def _sqlite_on_connect(dbapi_conn: Any, _record: Any, *, read_only: bool = False) -> None:
    # Take transaction control away from the sqlite3 module, whose implicit
    # BEGIN (only before DML) breaks SAVEPOINTs and transactional DDL; the
    # `begin` hook below emits BEGIN itself (SQLAlchemy's documented recipe).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    if not read_only:  # setting the journal mode writes the file's header
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


def _sqlite_file(parsed: sa.URL) -> Path | None:
    """The file of a SQLite URL; None for memory and `file:` URI forms."""
    db = parsed.database
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db)


@contextmanager
def removed_if_failed(url: str | None, project_dir: str | Path | None = None) -> Iterator[None]:
    """Run the block; if it fails, remove the SQLite store it created at `url`: the
    file and the folders made for it. A failed first import (all or nothing) then
    leaves nothing behind, and a mistyped --db does not become an empty store that
    later reads as "holds no accounts" instead of "no store". A store that existed
    before, or a PostgreSQL one, is never touched. Close the store inside the block."""
    created = _would_create(url or default_url(project_dir))
    try:
        yield
    except BaseException:
        for path in created:
            try:
                if path.is_dir():
                    path.rmdir()  # only if empty: nothing else is ever removed
                else:
                    for extra in ("", "-journal", "-wal", "-shm"):
                        path.with_name(path.name + extra).unlink(missing_ok=True)
            except OSError:
                pass  # best effort: the command's own error is the one to report
        raise


def _would_create(url: str) -> list[Path]:
    """What opening `url` for writing would create: a SQLite file that does not exist
    and the missing folders above it, innermost first."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        return []
    path = _sqlite_file(parsed) if parsed.get_backend_name() == "sqlite" else None
    if path is None or path.exists():
        return []
    created = [path]
    folder = path.absolute().parent
    while not folder.exists():
        created.append(folder)
        folder = folder.parent
    return created


def copy_sqlite(url: str, target: Path) -> str:
    """A consistent copy of the SQLite store at `url` in the file `target`, and its URL
    (the backup API: safe while another process writes). ValueError: not a SQLite file."""
    src_file = _sqlite_file(sa.make_url(url)) if url.startswith("sqlite") else None
    if src_file is None:
        raise ValueError("simulate copies SQLite stores only (it never writes to yours); "
                         "export a PostgreSQL store to SQLite first, or simulate on demo data")
    if not src_file.exists():
        raise ValueError(f"no SQLite store at {src_file}")
    with sqlite3.connect(src_file) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    return f"sqlite:///{target}"


def create_engine(url: str, *, read_only: bool = False) -> Engine:
    """An engine with the store's per-dialect settings.

    `read_only` creates nothing: no folder, no file (a missing SQLite file is
    `StoreMissing`), and SQLite opens the file with `mode=ro`, so even a bug
    cannot write. PostgreSQL has no such mode that still allows the temporary
    tables the enrollment queries use: there, reading code simply never
    writes, and a role with SELECT only is enough.
    """
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as e:
        raise StoreError(f"not a database URL: {url!r}") from e
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_file(parsed)
        if read_only and path is not None:
            if not path.is_file():
                raise StoreMissing(f"no store at {_shown(url)} (no such file): {FILL_HINT}")
            parsed = parsed.set(database=f"file:{path}", query={**parsed.query, "mode": "ro", "uri": "true"})
        elif path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:  # a read-only file system, no permission: the environment's
                raise StoreUnreachable(_shown(url), f"cannot create the folder {path.parent}: "
                                                    f"{e.strerror or e}") from e
        engine = sa.create_engine(parsed)
        sa.event.listen(engine, "connect", functools.partial(_sqlite_on_connect, read_only=read_only))
        sa.event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the
            # project depends on psycopg2-binary, so say which driver we mean.
            parsed = parsed.set(drivername="postgresql+psycopg2")
        # A server that drops packets must not hang a command for minutes.
        return sa.create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT})
    raise StoreError(f"unsupported database {parsed.get_backend_name()!r}: use sqlite:// or postgresql://")


_KIND_OF = {table: kind for kind, table in schema.ENTITY_TABLES.items()}


def _shadow_view(dialect: sa.Dialect, owner: str | None, table: str,
                 columns: Mapping[str, sa.types.TypeEngine[Any]]) -> str:
    """CREATE TEMP VIEW `table`: the stored table plus `columns` as typed NULLs."""
    q = dialect.identifier_preparer.quote
    source = f"main.{q(table)}" if dialect.name == "sqlite" else f"{q(owner or 'public')}.{q(table)}"
    extra = ", ".join(f"CAST(NULL AS {t.compile(dialect=dialect)}) AS {q(name)}" for name, t in columns.items())
    return f"CREATE TEMP VIEW {q(table)} AS SELECT t.*, {extra} FROM {source} AS t"


def _create_views(dbapi_conn: Any, _record: Any, *, statements: Sequence[str]) -> None:
    cur = dbapi_conn.cursor()
    for statement in statements:
        cur.execute(statement)
    cur.close()
    dbapi_conn.commit()  # psycopg2 opened a transaction; the pool's reset would roll the views back


def _shown(url: str | sa.URL) -> str:
    """A URL for messages: as written, but never with its password."""
    parsed = sa.make_url(url)
    if isinstance(url, str) and parsed.password is None:
        return url  # SQLAlchemy's rendering would escape a `file:` URI's colon
    return parsed.render_as_string(hide_password=True)


# --------------------------------------------------------------------------
# Upserts: the one place where the dialects differ for writes.

_INSERT: dict[str, Callable[[sa.Table], Any]] = {
    "sqlite": sqlite.insert,
    "postgresql": pg.insert,
}


def upsert(conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]], keys: Sequence[str],
           update: Sequence[str] | None = None) -> int:
    """INSERT ... ON CONFLICT (keys) DO UPDATE the given columns (default: all but keys).

    Every row must have the same columns. Rows must be unique by `keys`
    within one call (PostgreSQL refuses to update a row twice in one statement).
    Returns the rows the database counts as written (a row left alone by DO NOTHING counts 0).
    """
    if not rows:
        return 0
    cols = list(rows[0].keys())
    update = [c for c in (update if update is not None else cols) if c not in keys]
    stmt = _INSERT[conn.dialect.name](table)
    if update:
        stmt = stmt.on_conflict_do_update(index_elements=list(keys),
                                          set_={c: stmt.excluded[c] for c in update})
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
    return int(conn.execute(stmt, list(rows)).rowcount)


def insert_ignore(conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]],
                  keys: Sequence[str]) -> int:
    """INSERT ... ON CONFLICT (keys) DO NOTHING: for outbox/tasks written under an idempotency key.
    Returns how many rows were new."""
    return upsert(conn, table, rows, keys, update=[])


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
        for name in sorted(existing - core - declared):
            report.orphaned.append((table_name, name))
    return report


# --------------------------------------------------------------------------
# The store


@dataclass
class Store:
    """A handle on one database: engine, migrations, declared columns, sessions."""

    engine: Engine
    catalog: Catalog | None = None
    read_only: bool = False
    given_url: str | None = None  # as the user wrote it (password hidden), for messages
    # Reading: declared fields without a column, read as empty (`read_missing_as_empty`).
    missing_columns: list[str] = field(default_factory=list)
    _shadowed: dict[str, dict[str, sa.types.TypeEngine[Any]]] = field(default_factory=dict, repr=False)
    _shadow_listener: Callable[..., None] | None = field(default=None, repr=False)

    @classmethod
    def open(cls, url: str | None = None, *, project_dir: str | Path | None = None, migrate: bool = True,
             catalog: Catalog | None = None, read_only: bool = False) -> Store:
        """Open (and by default migrate) the store at `url`, or the project's default.

        With a catalog, declared fields are synced too and `table()` knows them.
        `read_only` is for reading commands: nothing is created, migrated or
        synced, and a store that is missing, empty (no tables, no accounts)
        or at another schema revision is `StoreMissing`; fields `catalog`
        declares without a column read as empty (`missing_columns` names them). Transient faults are retried; a lasting
        one is `StoreUnreachable`.
        """
        target = url or default_url(project_dir)
        store = cls(engine=create_engine(target, read_only=read_only), read_only=read_only,
                    given_url=_shown(target))
        try:
            if read_only:
                retrying(store.check_filled, store.url)
                if catalog is not None:
                    store.missing_columns = retrying(lambda: store.read_missing_as_empty(catalog), store.url)
                    store.catalog = catalog
            else:
                retrying(lambda: store._prepare(migrate, catalog), store.url)
        except BaseException:
            store.close()
            raise
        return store

    def _prepare(self, migrate: bool, catalog: Catalog | None) -> None:
        if migrate:
            self.migrate()
        if catalog is not None:
            self.use(catalog, sync=migrate)

    @property
    def url(self) -> str:
        return self.given_url or _shown(self.engine.url)

    def retry(self, work: Callable[[], T], on_retry: Callable[[StoreUnreachable, float], None] | None = None,
              delays: Sequence[float] | None = None) -> T:
        """`retrying(work)` with this store's URL in the error (`delays=()`: no retry, faults still typed)."""
        return retrying(work, self.url, on_retry=on_retry, delays=delays)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Self:
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

    def check_filled(self) -> None:
        """`StoreMissing` unless the store has this code's schema and holds accounts."""
        from alembic.script import ScriptDirectory

        current = self.revision()
        if current is None:
            raise StoreMissing(f"the store at {self.url} is empty (no tables): {FILL_HINT}")
        head = ScriptDirectory.from_config(self.alembic_config()).get_current_head()
        if current != head:
            raise StoreMissing(
                f"the store at {self.url} has schema revision {current}, this playbook needs {head}: "
                "a writing command (`playbook import`, `playbook sweep`) migrates an older store")
        if self.count(schema.ENTITY_TABLES["account"]) == 0:
            raise StoreMissing(f"the store at {self.url} holds no accounts: {FILL_HINT}")

    def read_missing_as_empty(self, *catalogs: Catalog) -> list[str]:
        """Let a reading store read declared fields that have no column yet as empty.

        A field declared since the data was written has no column, and a
        reader may not add one. Instead every connection gets, per entity
        table, a temporary view of the same name that adds the missing
        columns as typed NULLs: temporary objects come first in name lookup
        on SQLite and PostgreSQL, so the compiled rules read the view, and
        nothing is written to the store. Returns the fields, as `kind.field`.
        """
        added: dict[str, dict[str, sa.types.TypeEngine[Any]]] = {}
        with self.engine.connect() as conn:
            inspector = sa.inspect(conn)
            owner = inspector.default_schema_name
            for kind, table_name in schema.ENTITY_TABLES.items():
                # The stored table, not a view this method made earlier on this connection.
                existing = {c["name"] for c in inspector.get_columns(table_name, schema=owner)}
                for catalog in catalogs:
                    entity = catalog.entities.get(kind)
                    for f in entity.fields if entity is not None else []:
                        if f.name not in existing:
                            added.setdefault(table_name, {}).setdefault(f.name, schema.declared_column(f).type)
        new = {t: cols for t, cols in added.items() if cols.keys() - self._shadowed.get(t, {}).keys()}
        if new:
            for t, cols in added.items():
                self._shadowed.setdefault(t, {}).update(cols)
            statements = [_shadow_view(self.engine.dialect, owner, t, cols) for t, cols in self._shadowed.items()]
            if self._shadow_listener is not None:
                sa.event.remove(self.engine, "connect", self._shadow_listener)
            self._shadow_listener = functools.partial(_create_views, statements=statements)
            sa.event.listen(self.engine, "connect", self._shadow_listener)
            self.engine.dispose()  # pooled connections predate the views
        return [f"{_KIND_OF[t]}.{c}" for t, cols in added.items() for c in cols]

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


__all__ = ["ENV_URL", "RETRY_DELAYS", "Store", "StoreError", "StoreMissing", "StoreUnreachable", "SyncReport",
           "chunked", "create_engine", "default_url", "insert_ignore", "retrying", "sync_entities", "unreachable",
           "upsert"]
