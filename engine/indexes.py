"""Secondary indexes set aside while a loader fills an empty table, and built again after it.

Keeping a b-tree ordered row by row costs more than the one sort of
CREATE INDEX once the rows are in (10,000,000 metric points: each row an
insert into every index). Only non-unique indexes go: unique ones and the
primary key are checks, not just speed. The definitions are read back from
the database (sqlite_master, pg_get_indexdef), so the indexes come back
exactly as they were. Used by the demo data generator and the importers.

A primary key can be set aside too (PostgreSQL, `primary_key`), where the
loader knows its rows are distinct (the "known since" history rows of a
first load: one per new account), or where adding it back is the check
(a first load of accounts: an id twice fails there); the foreign keys that
reference it go with it and come back after it (`foreign_keys_to`).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection


def secondary(conn: Connection, tables: Sequence[str]) -> list[tuple[str, str]]:
    """(name, CREATE statement) of the non-unique indexes of `tables` in the current schema."""
    if not tables:
        return []
    if conn.dialect.name == "sqlite":
        names = ", ".join(f"'{t}'" for t in tables)
        return [(r[0], r[1]) for r in conn.exec_driver_sql(
            f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name IN ({names}) "
            "AND sql IS NOT NULL AND upper(sql) NOT LIKE 'CREATE UNIQUE%'")]
    return [(r[0], r[1]) for r in conn.execute(sa.text(
        "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        "JOIN pg_class t ON t.oid = x.indrelid WHERE t.relname = ANY(:tables) "
        "AND t.relnamespace = current_schema()::regnamespace AND NOT x.indisunique AND NOT x.indisprimary"),
        {"tables": list(tables)})]


def primary_key(conn: Connection, table: str) -> list[tuple[str, str]]:
    """PostgreSQL: (name, ALTER TABLE statement that adds it) of `table`'s primary key in the current
    schema, for `create`; empty where it has none."""
    quote = conn.dialect.identifier_preparer.quote
    return [(r[0], f"ALTER TABLE {quote(table)} ADD CONSTRAINT {quote(r[0])} {r[1]}") for r in conn.execute(sa.text(
        "SELECT c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid "
        "WHERE t.relname = :table AND t.relnamespace = current_schema()::regnamespace AND c.contype = 'p'"),
        {"table": table})]


def foreign_keys_to(conn: Connection, table: str) -> list[tuple[str, str, str]]:
    """PostgreSQL: (referencing table, name, ALTER TABLE statement that adds it) of the foreign keys in the
    current schema that reference `table`, for `drop_foreign_keys` and `create`."""
    quote = conn.dialect.identifier_preparer.quote
    return [(r[0], r[1], f"ALTER TABLE {quote(r[0])} ADD CONSTRAINT {quote(r[1])} {r[2]}") for r in conn.execute(sa.text(
        "SELECT r.relname, c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c "
        "JOIN pg_class t ON t.oid = c.confrelid JOIN pg_class r ON r.oid = c.conrelid "
        "WHERE c.contype = 'f' AND t.relname = :table AND t.relnamespace = current_schema()::regnamespace "
        "ORDER BY r.relname, c.conname"), {"table": table})]


def drop_foreign_keys(conn: Connection, defs: Sequence[tuple[str, str, str]]) -> None:
    quote = conn.dialect.identifier_preparer.quote
    for table, name, _ in defs:
        conn.exec_driver_sql(f"ALTER TABLE {quote(table)} DROP CONSTRAINT {quote(name)}")


def drop(conn: Connection, defs: Sequence[tuple[str, str]]) -> None:
    for name, _ in defs:
        conn.exec_driver_sql(f"DROP INDEX {conn.dialect.identifier_preparer.quote(name)}")


def drop_key(conn: Connection, table: str, defs: Sequence[tuple[str, str]]) -> None:
    """Drop the primary key `primary_key` read (its index goes with it)."""
    quote = conn.dialect.identifier_preparer.quote
    for name, _ in defs:
        conn.exec_driver_sql(f"ALTER TABLE {quote(table)} DROP CONSTRAINT {quote(name)}")


def create(conn: Connection, defs: Sequence[tuple[str, str]]) -> None:
    for _, sql in defs:
        conn.exec_driver_sql(sql)


__all__ = ["create", "drop", "drop_foreign_keys", "drop_key", "foreign_keys_to", "primary_key", "secondary"]
