"""The built-in pipeline: reason codes on stage changes, users' managers, SLA breaches.

Types spelled out (not imported from engine.schema), like 0001.

Revision ID: pipeline_stages
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = "pipeline_stages"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("stage_history", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reason", sa.Text(), nullable=True))
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("manager", sa.Text(), nullable=True))
    op.create_table(
        "sla_breaches",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("opportunity_id", sa.Text(), nullable=False),
        sa.Column("account_id", sa.Text(), nullable=False),
        sa.Column("stage", sa.Text(), nullable=False),
        sa.Column("level", sa.Text(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=True),
        sa.Column("notified", sa.Text(), nullable=True),
        sa.Column("entered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["opportunity_id"], ["opportunities.id"],
                                name=op.f("fk_sla_breaches_opportunity_id_opportunities")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sla_breaches")),
        sa.UniqueConstraint("key", name=op.f("uq_sla_breaches_key")),
    )
    with op.batch_alter_table("sla_breaches", schema=None) as batch_op:
        batch_op.create_index("ix_sla_breaches_opportunity_id", ["opportunity_id"], unique=False)
        batch_op.create_index("ix_sla_breaches_stage_owner", ["stage", "owner"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sla_breaches", schema=None) as batch_op:
        batch_op.drop_index("ix_sla_breaches_stage_owner")
        batch_op.drop_index("ix_sla_breaches_opportunity_id")
    op.drop_table("sla_breaches")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("manager")
    with op.batch_alter_table("stage_history", schema=None) as batch_op:
        batch_op.drop_column("reason")
