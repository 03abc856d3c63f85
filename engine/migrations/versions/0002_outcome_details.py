"""Outcomes carry what a report needs: reason, objection, champion, approver,
days from signal to close, where the outcome came from, and an idempotency key.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("reason", "objection", "champion", "approver", "source", "key")


def upgrade() -> None:
    with op.batch_alter_table('outcomes', schema=None) as batch_op:
        for name in COLUMNS:
            batch_op.add_column(sa.Column(name, sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('days_to_close', sa.Double(), nullable=True))
        batch_op.create_index('uq_outcomes_key', ['key'], unique=True)
        batch_op.create_index('ix_outcomes_at', ['at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('outcomes', schema=None) as batch_op:
        batch_op.drop_index('ix_outcomes_at')
        batch_op.drop_index('uq_outcomes_key')
        batch_op.drop_column('days_to_close')
        for name in reversed(COLUMNS):
            batch_op.drop_column(name)
