"""The history of account fields: every value an account field had, with when it was known.

    changed = record_changes(conn, catalog, "_pb_typed", ["id", "arr"], at)   # the importers, before the upsert
    accounts = account_as_of(conn, catalog, dt.date(2026, 3, 1))            # a backtest: {id: {field: value}}

`account_field_history` keeps what the `accounts` table no longer shows:

* one row `(account, "*", valid_from)` per account: since when it is known
  (its first import; accounts written before this table existed get it at
  the next import that touches them);
* one row per value that was replaced: the old value, `valid_from` when it
  became current (the previous change of that field, or the account's
  first import) and `valid_to` the import that replaced it.

So a value that never changes costs nothing, a new account one row, and a
changed value one row; the current value is the account's own column. A
value as known at instant T is the replaced value whose interval holds T,
else (T after the account's "*" row) the current one. Writing is set-wise:
one INSERT ... SELECT compares the incoming rows with the stored accounts
before they are overwritten. See docs/store.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dsl import nodes as n
from dsl.catalog import Catalog
from engine import schema

HISTORY = schema.AccountFieldHistory.__table__
CHANGES = "_pb_changes"
T = n.TypeName
_NUMBERS = {T.INT, T.NUMBER, T.MONEY, T.PERCENT, T.DURATION, T.BOOL}


def tracked_fields(catalog: Catalog) -> dict[str, n.TypeRef]:
    """The account fields whose values are kept: `name` and every declared field but `id`."""
    fields: dict[str, n.TypeRef] = {"name": n.TypeRef(name=T.TEXT)}
    for f in catalog.account.fields if catalog.account else []:
        if f.name != "id":
            fields[f.name] = f.type
    return fields


def _number(pg: bool, t: n.TypeRef, c: str) -> str | None:
    if t.name not in _NUMBERS:
        return None
    if t.name is T.BOOL and pg:
        return f"(CASE WHEN {c} THEN 1.0 WHEN NOT {c} THEN 0.0 END)"
    return f"CAST({c} AS {'DOUBLE PRECISION' if pg else 'REAL'})"


def _text(pg: bool, t: n.TypeRef, c: str) -> str | None:
    if t.name in _NUMBERS:
        return None
    if pg and t.name is T.DATE:
        return f"to_char({c}, 'YYYY-MM-DD')"
    if pg and t.name is T.DATETIME:
        return f"to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"
    return c  # SQLite keeps dates and UTC datetimes as ISO text already


KNOWN = "*"  # the field of an account's "known since" row


def _changes_table(conn: Connection) -> None:
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {CHANGES}")
    sa.Table(CHANGES, sa.MetaData(), sa.Column("account_id", sa.Text), sa.Column("field", sa.Text),
             sa.Column("value_number", sa.Double), sa.Column("value_text", sa.Text),
             prefixes=["TEMPORARY"]).create(conn)


def record_changes(conn: Connection, catalog: Catalog, source: str, columns: Sequence[str], at: dt.datetime,
                   where: str = "1 = 1", *, new: bool = False) -> int:
    """Write history for the rows of table `source` (an `id` and typed account columns) before they are upserted.

    `columns`: the columns `source` sets (the others stay as they are).
    `new`: the caller knows no id of `source` has a "known since" row yet (no test per id).
    Returns the number of stored values that change.
    """
    fields = tracked_fields(catalog)
    names = [c for c in columns if c in fields]
    pg = conn.dialect.name == "postgresql"
    q = conn.dialect.identifier_preparer.quote
    at_param = sa.bindparam("at", at, type_=schema.UTCDateTime())
    changed = 0
    if names:
        number_cases, text_cases, changed_cases = [], [], []
        for i, name in enumerate(names):
            t_c, a_c = f"t.{q(name)}", f"a.{q(name)}"
            num, txt = _number(pg, fields[name], a_c), _text(pg, fields[name], a_c)
            if num:
                number_cases.append(f"WHEN {i} THEN {num}")
            if txt:
                text_cases.append(f"WHEN {i} THEN {txt}")
            changed_cases.append(f"WHEN {i} THEN {t_c} IS DISTINCT FROM {a_c}" if pg else
                                 f"WHEN {i} THEN {t_c} IS NOT {a_c}")
        fields_sql = " UNION ALL ".join(f"SELECT {i} AS i, '{name}' AS name" for i, name in enumerate(names))
        number = f"CASE f.i {' '.join(number_cases)} END" if number_cases else "NULL"
        text = f"CASE f.i {' '.join(text_cases)} END" if text_cases else "NULL"
        _changes_table(conn)
        # The old values of the fields that change. CROSS JOIN keeps SQLite from
        # reordering: one probe of `accounts` per incoming row, then the fields
        # unpivoted from it.
        conn.exec_driver_sql(
            f"INSERT INTO {CHANGES} (account_id, field, value_number, value_text) "
            f"SELECT t.id, f.name, {number}, {text} "
            f"FROM {source} t JOIN accounts a ON a.id = t.id CROSS JOIN ({fields_sql}) f "
            f"WHERE ({where}) AND (CASE f.i {' '.join(changed_cases)} END)")
        changed = int(conn.exec_driver_sql(f"SELECT count(*) FROM {CHANGES}").scalar_one())
        if changed:
            # Each old value held from the field's previous change (or since the
            # account is known) until now; unknown start (an account older than
            # the history, a second change at the same instant): nothing to keep.
            conn.execute(sa.text(
                "INSERT INTO account_field_history (account_id, field, valid_from, valid_to, value_number, "
                "value_text) SELECT account_id, field, since, :at, value_number, value_text FROM ("
                "SELECT c.account_id, c.field, c.value_number, c.value_text, coalesce("
                "(SELECT max(h.valid_to) FROM account_field_history h WHERE h.account_id = c.account_id "
                "AND h.field = c.field), (SELECT h.valid_from FROM account_field_history h "
                f"WHERE h.account_id = c.account_id AND h.field = '{KNOWN}')) AS since FROM {CHANGES} c) s "
                "WHERE since < :at").bindparams(at_param))
        conn.exec_driver_sql(f"DROP TABLE {CHANGES}")
    conn.execute(sa.text(
        "INSERT INTO account_field_history (account_id, field, valid_from) "
        f"SELECT t.id, '{KNOWN}', :at FROM {source} t WHERE ({where})" + ("" if new else " AND NOT EXISTS (SELECT 1 "
        f"FROM account_field_history h WHERE h.account_id = t.id AND h.field = '{KNOWN}')")).bindparams(at_param))
    return changed


def known_since_sql(source: str, at: dt.datetime, *, empty: bool = False) -> tuple[str, dt.datetime]:
    """PostgreSQL: the "known since" rows of the ids of `source` (a table or WITH name with `id`) that
    have none yet, as `record_changes` writes them for new accounts; its `%(at)s` parameter's value.
    `empty`: the history holds no row at all, so no id has one (no test per id)."""
    have_none = "" if empty else (f" WHERE NOT EXISTS (SELECT 1 FROM account_field_history h "
                                  f"WHERE h.account_id = t.id AND h.field = '{KNOWN}')")
    return (f"INSERT INTO account_field_history (account_id, field, valid_from) SELECT t.id, '{KNOWN}', %(at)s "
            f"FROM {source} t{have_none}",
            (at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc))


def _typed(pg: bool, t: n.TypeRef, value: Any) -> sa.ColumnElement[Any]:
    """A stored history value as the SQL type of the account's column."""
    if t.name is T.BOOL:
        return (value != 0) if pg else sa.cast(value, sa.Integer())
    if t.name is T.INT:
        return sa.cast(value, sa.BigInteger())
    if t.name is T.DATE and pg:
        return sa.cast(value, sa.Date())
    if t.name is T.DATETIME and pg:
        return sa.cast(value + "+00", sa.DateTime(timezone=True))
    return value  # numbers are doubles; text, and SQLite's ISO dates, are stored as the column stores them


def as_of_select(catalog: Catalog, day: dt.date, dialect: str) -> sa.Select[Any]:
    """The accounts as known at the end of `day` (UTC), shaped like `accounts` (id and the tracked
    fields, typed): a subquery a backtest can read in place of the table. Accounts not known by
    then are left out."""
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
    h, k = HISTORY, HISTORY.alias("known")
    accounts = schema.entity_table(catalog.account, "account")
    pg = dialect == "postgresql"
    fields = tracked_fields(catalog)
    replaced: list[sa.ColumnElement[Any]] = [h.c.account_id]
    for i, (name, t) in enumerate(fields.items()):
        source = h.c.value_number if t.name in _NUMBERS else h.c.value_text
        replaced.append(sa.func.max(sa.case((h.c.field == name, 1))).label(f"has{i}"))
        replaced.append(sa.func.max(sa.case((h.c.field == name, source))).label(f"v{i}"))
    old = (sa.select(*replaced)
           .where(h.c.field != KNOWN, h.c.valid_from < end, h.c.valid_to >= end)
           .group_by(h.c.account_id).subquery("replaced"))
    columns: list[sa.ColumnElement[Any]] = [accounts.c.id]
    for i, (name, t) in enumerate(fields.items()):
        value = sa.case((old.c[f"has{i}"] == 1, _typed(pg, t, old.c[f"v{i}"])), else_=accounts.c[name])
        columns.append(sa.type_coerce(value, accounts.c[name].type).label(name))
    return (sa.select(*columns)
            .select_from(accounts.join(k, sa.and_(k.c.account_id == accounts.c.id, k.c.field == KNOWN,
                                                  k.c.valid_from < end))
                         .outerjoin(old, old.c.account_id == accounts.c.id)))


def account_as_of(conn: Connection, catalog: Catalog, day: dt.date,
                  account_ids: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """{account id: {field: value}} as known at the end of `day`; accounts not known yet are absent."""
    query = as_of_select(catalog, day, conn.dialect.name)
    if account_ids is not None:
        query = query.where(query.selected_columns.id.in_(list(account_ids)))
    return {r["id"]: {k: v for k, v in r.items() if k != "id"} for r in conn.execute(query).mappings()}


__all__ = ["HISTORY", "KNOWN", "account_as_of", "as_of_select", "known_since_sql", "record_changes",
           "tracked_fields"]
