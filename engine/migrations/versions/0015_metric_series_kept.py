"""The metric rollup keeps each series' newest 16 points (`kept`, `p<i>_day`, `p<i>_value`), so a
window within them is read from the row alone (engine/rollups.py); rebuilt from the points stored.

Revision ID: metric_series_kept
Revises: sync_run_skipped
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'metric_series_kept'
down_revision: str | None = 'sync_run_skipped'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEPT = 16  # engine/schema.py's KEPT when this was written


def _day(date: str) -> str:
    if op.get_bind().dialect.name == "sqlite":
        return f"CAST(julianday({date}) - 2440587.5 AS INTEGER)"
    return f"({date} - DATE '1970-01-01')"


def _create(kept: bool) -> None:
    extra = [sa.Column('kept', sa.Integer(), nullable=True)] if kept else []
    if kept:
        for i in range(1, KEPT):
            extra += [sa.Column(f'p{i}_day', sa.Integer(), nullable=True),
                      sa.Column(f'p{i}_value', sa.Double(), nullable=True)]
    op.create_table('metric_series',
    sa.Column('metric', sa.Text(), nullable=False),
    sa.Column('account_id', sa.Text(), nullable=False),
    sa.Column('last_date', sa.Date(), nullable=False),
    sa.Column('last_value', sa.Double(), nullable=True),
    *extra,
    sa.PrimaryKeyConstraint('metric', 'account_id', name=op.f('pk_metric_series')),
    sqlite_with_rowid=False
    )


def upgrade() -> None:
    # A new table filled in one pass over the points (each series' newest KEPT, pivoted),
    # not an UPDATE of every row.
    op.drop_table('metric_series')
    _create(True)
    pivot = ["max(CASE WHEN k = 1 THEN date END)", "max(CASE WHEN k = 1 THEN value END)", "count(*)"]
    columns = ["metric", "account_id", "last_date", "last_value", "kept"]
    for i in range(1, KEPT):
        pivot += [f"max(CASE WHEN k = {i + 1} THEN {_day('date')} END)", f"max(CASE WHEN k = {i + 1} THEN value END)"]
        columns += [f"p{i}_day", f"p{i}_value"]
    op.execute(f"INSERT INTO metric_series ({', '.join(columns)}) "
               f"SELECT metric, account_id, {', '.join(pivot)} FROM ("
               "SELECT metric, account_id, date, value, "
               "row_number() OVER (PARTITION BY metric, account_id ORDER BY date DESC) AS k FROM metric_points) r "
               f"WHERE k <= {KEPT} GROUP BY metric, account_id")


def downgrade() -> None:
    op.drop_table('metric_series')
    _create(False)
    op.execute("INSERT INTO metric_series (metric, account_id, last_date, last_value) "
               "SELECT p.metric, p.account_id, p.date, p.value FROM metric_points p "
               "JOIN (SELECT metric, account_id, max(date) AS d FROM metric_points GROUP BY metric, account_id) b "
               "ON p.metric = b.metric AND p.account_id = b.account_id AND p.date = b.d")
