"""`account_changes.fields`: the account fields a change wrote (NULL: anything), so a sweep
re-evaluates a play only where a change reaches what the play reads (engine/changes.py).

Revision ID: account_change_fields
Revises: metric_series_kept
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'account_change_fields'
down_revision: str | None = 'metric_series_kept'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('account_changes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('fields', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('account_changes', schema=None) as batch_op:
        batch_op.drop_column('fields')
