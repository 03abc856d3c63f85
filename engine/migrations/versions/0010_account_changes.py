"""Incremental sweeps: `account_changes`, `sweep_marks`, `sweep_rechecks`.

Revision ID: account_changes
Revises: sync_runs
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = 'account_changes'
down_revision: str | None = 'sync_runs'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('account_changes',
    sa.Column('id', BIG_ID, autoincrement=True, nullable=False),
    sa.Column('account_id', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_account_changes'))
    )
    op.create_table('sweep_marks',
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('change_id', sa.BigInteger(), nullable=False),
    sa.Column('rules_hash', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_sweep_marks'))
    )
    op.create_table('sweep_rechecks',
    sa.Column('account_id', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('account_id', name=op.f('pk_sweep_rechecks'))
    )


def downgrade() -> None:
    op.drop_table('sweep_rechecks')
    op.drop_table('sweep_marks')
    op.drop_table('account_changes')
