"""Indexes that lead with a series' day: metric_points (metric, date, account_id), events (event, occurred_on, account_id).

An incremental sweep on a new day looks up the accounts with a point at a
window's edges (engine/changes.py); keyed by account first, that read every
point of the metric or event.

Revision ID: series_day_indexes
Revises: sync_run_owner
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = 'series_day_indexes'
down_revision: str | None = 'sync_run_owner'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('ix_metric_points_metric_date_account_id', 'metric_points', ['metric', 'date', 'account_id'])
    op.create_index('ix_events_event_occurred_on_account_id', 'events', ['event', 'occurred_on', 'account_id'])


def downgrade() -> None:
    op.drop_index('ix_events_event_occurred_on_account_id', table_name='events')
    op.drop_index('ix_metric_points_metric_date_account_id', table_name='metric_points')
