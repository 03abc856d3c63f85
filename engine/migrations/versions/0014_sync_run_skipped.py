"""Source syncs: `sync_runs.skipped` and `skipped_names`, the rows of a `named by` source whose event it does not land.

Revision ID: sync_run_skipped
Revises: metric_series
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = 'sync_run_skipped'
down_revision: str | None = 'metric_series'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table('sync_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('skipped', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('skipped_names', JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('sync_runs', schema=None) as batch_op:
        batch_op.drop_column('skipped_names')
        batch_op.drop_column('skipped')
