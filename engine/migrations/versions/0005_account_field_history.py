"""The history of account field values (valid_from / valid_to), written by the importers.

Revision ID: account_field_history
Revises: pipeline_stages
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'account_field_history'
down_revision: str | None = 'pipeline_stages'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('account_field_history',
    sa.Column('account_id', sa.Text(), nullable=False),
    sa.Column('field', sa.Text(), nullable=False),
    sa.Column('valid_from', sa.DateTime(timezone=True), nullable=False),
    sa.Column('valid_to', sa.DateTime(timezone=True), nullable=True),
    sa.Column('value_number', sa.Double(), nullable=True),
    sa.Column('value_text', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('account_id', 'field', 'valid_from', name=op.f('pk_account_field_history')),
    sqlite_with_rowid=False
    )


def downgrade() -> None:
    op.drop_table('account_field_history')
