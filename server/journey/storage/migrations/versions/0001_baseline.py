"""Baseline: the tables as Journey made them before migrations (Base.metadata.create_all).

A database made by that release, which has no alembic_version table, is stamped at this
revision and upgraded from here (journey.storage.migrate).

Revision ID: 0001_baseline
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.String(128)
# Times are integer microseconds since the epoch (schema.UtcMicros).
TIME = sa.BigInteger()
# On SQLite only an INTEGER PRIMARY KEY is the rowid itself (schema.AutoId).
AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the four tables and their indexes."""
    op.create_table(
        "profiles",
        sa.Column("id", ID, primary_key=True),
        sa.Column("create_time", TIME, nullable=False),
        sa.Column("last_activity_time", TIME, nullable=False),
        sa.Column("visit_count", sa.Integer(), nullable=False),
        sa.Column("session_count", sa.Integer(), nullable=False),
    )
    op.create_table(
        "sessions",
        sa.Column("id", ID, primary_key=True),
        sa.Column("profile_id", ID, nullable=False),
        sa.Column("source_id", ID, nullable=False),
        sa.Column("state", sa.SmallInteger(), nullable=False),
        sa.Column("open_time", TIME, nullable=False),
        sa.Column("last_activity_time", TIME, nullable=False),
        sa.Column("close_time", TIME, nullable=True),
        sa.Column("event_count", sa.BigInteger(), nullable=False),
        sa.Column("visit_count", sa.Integer(), nullable=False),
        sa.Column("visit_start_time", TIME, nullable=False),
        sa.Column("visit_event_count", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_sessions_state_activity", "sessions", ["state", "last_activity_time"])
    op.create_index("ix_sessions_profile_id", "sessions", ["profile_id"])
    op.create_table(
        "system_events",
        sa.Column("position", AUTO_ID, primary_key=True, autoincrement=False),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("type", sa.SmallInteger(), nullable=False),
        sa.Column("occur_time", TIME, nullable=False),
        sa.Column("profile_id", ID, nullable=False),
        sa.Column("session_id", ID, nullable=False),
        sa.Column("source_id", ID, nullable=False),
        sa.Column("properties", sa.JSON(), nullable=False),
        sa.Column("encoded", sa.LargeBinary(), nullable=True),
    )
    op.create_index(
        "ix_system_events_session_position", "system_events", ["session_id", "position"]
    )
    op.create_index(
        "ix_system_events_profile_position", "system_events", ["profile_id", "position"]
    )
    op.create_table(
        "tracked_events",
        sa.Column("seq", AUTO_ID, primary_key=True, autoincrement=True),
        sa.Column("event_id", ID, nullable=False),
        sa.Column("source_id", ID, nullable=False),
        sa.Column("type", ID, nullable=False),
        sa.Column("properties", sa.LargeBinary(), nullable=False),
        sa.Column("occur_time", TIME, nullable=False),
        sa.Column("receive_time", TIME, nullable=False),
        sa.Column("profile_id", ID, nullable=False),
        sa.Column("session_id", ID, nullable=False),
    )
    op.create_index(
        "ux_tracked_events_source_event", "tracked_events", ["source_id", "event_id"], unique=True
    )


def downgrade() -> None:
    """Drop the four tables."""
    for table in ("tracked_events", "system_events", "sessions", "profiles"):
        op.drop_table(table)
