"""The metric rollup `metric_series` (engine/rollups.py), built from the points already stored.

Revision ID: metric_series
Revises: series_day_indexes
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'metric_series'
down_revision: str | None = 'series_day_indexes'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('metric_series',
    sa.Column('metric', sa.Text(), nullable=False),
    sa.Column('account_id', sa.Text(), nullable=False),
    sa.Column('last_date', sa.Date(), nullable=False),
    sa.Column('last_value', sa.Double(), nullable=True),
    sa.PrimaryKeyConstraint('metric', 'account_id', name=op.f('pk_metric_series')),
    sqlite_with_rowid=False
    )
    # One pass over the points in key order: each series' last row.
    op.execute("INSERT INTO metric_series (metric, account_id, last_date, last_value) "
               "SELECT p.metric, p.account_id, p.date, p.value FROM metric_points p "
               "JOIN (SELECT metric, account_id, max(date) AS d FROM metric_points GROUP BY metric, account_id) b "
               "ON p.metric = b.metric AND p.account_id = b.account_id AND p.date = b.d")


def downgrade() -> None:
    op.drop_table('metric_series')
