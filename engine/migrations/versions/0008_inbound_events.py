"""Inbound provider events (`playbook serve`, IMAP): `inbound_events`.

Revision ID: inbound_events
Revises: contact_bounces
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = 'inbound_events'
down_revision: str | None = 'contact_bounces'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('inbound_events',
    sa.Column('id', BIG_ID, autoincrement=True, nullable=False),
    sa.Column('key', sa.Text(), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('account_id', sa.Text(), nullable=False),
    sa.Column('contact', sa.Text(), nullable=True),
    sa.Column('play', sa.Text(), nullable=True),
    sa.Column('stage', sa.Text(), nullable=True),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('payload', JSON, nullable=True),
    sa.Column('signal_state', sa.Text(), nullable=False),
    sa.Column('signalled', JSON, nullable=True),
    sa.Column('signal_attempts', sa.Integer(), nullable=False),
    sa.Column('signal_error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_inbound_events')),
    sa.UniqueConstraint('key', name=op.f('uq_inbound_events_key'))
    )
    with op.batch_alter_table('inbound_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_inbound_events_account_id'), ['account_id'], unique=False)
        batch_op.create_index('ix_inbound_events_signal_state_id', ['signal_state', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('inbound_events', schema=None) as batch_op:
        batch_op.drop_index('ix_inbound_events_signal_state_id')
        batch_op.drop_index(batch_op.f('ix_inbound_events_account_id'))
    op.drop_table('inbound_events')
