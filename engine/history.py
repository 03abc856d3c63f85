"""The history of account fields: every value with when it was known, and the account as known on a day.

    changed = record_changes(conn, catalog, "_pb_typed", ["arr", "segment"], at)   # the importers
    account = account_as_of(conn, catalog, dt.date(2026, 3, 1))["acme"]          # a backtest

`account_field_history` holds one row per (account, field, valid_from): the
value the field took at `valid_from` (an import or sync), until `valid_to`
(the next change; NULL while current). Writing is set-wise: one INSERT ...
SELECT compares the incoming rows with the stored accounts (before they are
overwritten) and keeps only the values that differ (for a new account, the
non-empty ones); the open rows of those fields are closed at the same
instant. An unchanged value writes nothing. See docs/store.md.
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


def _changes_table(conn: Connection) -> None:
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {CHANGES}")
    sa.Table(CHANGES, sa.MetaData(), sa.Column("account_id", sa.Text), sa.Column("field", sa.Text),
             sa.Column("value_number", sa.Double), sa.Column("value_text", sa.Text),
             sa.Column("existed", sa.Boolean), prefixes=["TEMPORARY"]).create(conn)


def record_changes(conn: Connection, catalog: Catalog, source: str, columns: Sequence[str], at: dt.datetime,
                   where: str = "1 = 1") -> int:
    """Write history for the rows of table `source` (an `id` and typed account columns) before they are upserted.

    `columns`: the columns `source` sets (the others are left unchanged, so
    they have no new value). Returns the number of values that changed.
    """
    fields = tracked_fields(catalog)
    names = [c for c in columns if c in fields]
    if not names:
        return 0
    pg = conn.dialect.name == "postgresql"
    q = conn.dialect.identifier_preparer.quote
    number_cases, text_cases, changed_cases = [], [], []
    for i, name in enumerate(names):
        t_c, a_c = f"t.{q(name)}", f"a.{q(name)}"
        num, txt = _number(pg, fields[name], t_c), _text(pg, fields[name], t_c)
        if num:
            number_cases.append(f"WHEN {i} THEN {num}")
        if txt:
            text_cases.append(f"WHEN {i} THEN {txt}")
        differs = f"{t_c} IS DISTINCT FROM {a_c}" if pg else f"{t_c} IS NOT {a_c}"
        changed_cases.append(f"WHEN {i} THEN (CASE WHEN a.id IS NULL THEN {t_c} IS NOT NULL ELSE {differs} END)")
    fields_sql = " UNION ALL ".join(f"SELECT {i} AS i, '{name}' AS name" for i, name in enumerate(names))
    number = f"CASE f.i {' '.join(number_cases)} END" if number_cases else "NULL"
    text = f"CASE f.i {' '.join(text_cases)} END" if text_cases else "NULL"
    _changes_table(conn)
    # CROSS JOIN keeps SQLite from reordering: one probe of `accounts` per
    # incoming row, then the fields unpivoted from it.
    conn.exec_driver_sql(
        f"INSERT INTO {CHANGES} (account_id, field, value_number, value_text, existed) "
        f"SELECT t.id, f.name, {number}, {text}, a.id IS NOT NULL "
        f"FROM {source} t LEFT JOIN accounts a ON a.id = t.id CROSS JOIN ({fields_sql}) f "
        f"WHERE ({where}) AND (CASE f.i {' '.join(changed_cases)} END)")
    changed = int(conn.exec_driver_sql(f"SELECT count(*) FROM {CHANGES}").scalar_one())
    if not changed:
        return 0
    at_param = sa.bindparam("at", at, type_=schema.UTCDateTime())
    if pg:
        close = (f"UPDATE account_field_history h SET valid_to = :at FROM {CHANGES} c WHERE c.existed "
                 "AND h.account_id = c.account_id AND h.field = c.field AND h.valid_to IS NULL")
    else:
        close = (f"UPDATE account_field_history SET valid_to = :at WHERE valid_to IS NULL AND (account_id, field) "
                 f"IN (SELECT account_id, field FROM {CHANGES} WHERE existed)")
    conn.execute(sa.text(close).bindparams(at_param))
    # A second change at the same instant (two files of one import) replaces the first.
    conn.execute(sa.text(
        "INSERT INTO account_field_history (account_id, field, valid_from, valid_to, value_number, value_text) "
        f"SELECT account_id, field, :at, NULL, value_number, value_text FROM {CHANGES} WHERE 1 = 1 "
        "ON CONFLICT (account_id, field, valid_from) DO UPDATE SET valid_to = NULL, "
        "value_number = excluded.value_number, value_text = excluded.value_text").bindparams(at_param))
    conn.exec_driver_sql(f"DROP TABLE {CHANGES}")
    return changed


def _typed(pg: bool, t: n.TypeRef, value: Any) -> sa.ColumnElement[Any]:
    """A history value back as the declared type."""
    declared = schema.TYPE_MAP[t.name]
    if t.name is T.BOOL:
        return sa.type_coerce(value != 0, sa.Boolean())
    if t.name is T.INT:
        return sa.cast(value, sa.BigInteger())
    if t.name is T.DATE and pg:
        return sa.cast(value, sa.Date())
    if t.name is T.DATETIME and pg:
        return sa.type_coerce(sa.cast(value + "+00", sa.DateTime(timezone=True)), schema.UTCDateTime())
    return sa.type_coerce(value, declared)


def as_of_select(catalog: Catalog, day: dt.date, dialect: str) -> sa.Select[Any]:
    """The accounts as known at the end of `day` (UTC), one row per account, shaped like `accounts`
    (id and the tracked fields, typed): a subquery a backtest can read in place of the table."""
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
    h = HISTORY
    pg = dialect == "postgresql"
    columns: list[sa.ColumnElement[Any]] = [h.c.account_id.label("id")]
    for name, t in tracked_fields(catalog).items():
        source = h.c.value_number if t.name in _NUMBERS else h.c.value_text
        picked = sa.func.max(sa.case((h.c.field == name, source)))
        columns.append(_typed(pg, t, picked).label(name))
    return (sa.select(*columns)
            .where(h.c.valid_from < end, sa.or_(h.c.valid_to.is_(None), h.c.valid_to >= end))
            .group_by(h.c.account_id))


def account_as_of(conn: Connection, catalog: Catalog, day: dt.date,
                  account_ids: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """{account id: {field: value}} as known at the end of `day`; accounts not known yet are absent,
    fields with no value known then are None."""
    query = as_of_select(catalog, day, conn.dialect.name)
    if account_ids is not None:
        query = query.where(HISTORY.c.account_id.in_(list(account_ids)))
    return {r["id"]: {k: v for k, v in r.items() if k != "id"} for r in conn.execute(query).mappings()}


__all__ = ["HISTORY", "account_as_of", "as_of_select", "record_changes", "tracked_fields"]
