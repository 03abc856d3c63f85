"""Hard bounces on contacts (`contacts.bounced_at`), and outbox rows found by Message-ID.

A contact whose address a mail server refused (5xx at RCPT) is skipped by
every later send of every play, like an unsubscribed one. Replies and
asynchronous bounces are matched to the sent message by its Message-ID
(`outbox.provider_message_id`), hence the index.

Revision ID: contact_bounces
Revises: webhook_endpoints
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'contact_bounces'
down_revision: str | None = 'webhook_endpoints'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('bounced_at', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outbox_provider_message_id'), ['provider_message_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outbox_provider_message_id'))
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.drop_column('bounced_at')
