"""Webhook endpoints disabled by a 410 Gone: table webhook_endpoints.

Revision ID: webhook_endpoints
Revises: account_field_history
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'webhook_endpoints'
down_revision: str | None = 'account_field_history'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('webhook_endpoints',
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('disabled_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('url', name=op.f('pk_webhook_endpoints'))
    )


def downgrade() -> None:
    op.drop_table('webhook_endpoints')
