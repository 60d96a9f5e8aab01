"""Consumer groups: the groups, their entries (pending, in flight, dead) and their members.

Revision ID: 0003_consumer_groups
Revises: 0002_fill_encoded
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_consumer_groups"
down_revision = "0002_fill_encoded"
branch_labels = None
depends_on = None

ID = sa.String(128)
UUID = sa.String(36)
# Times are integer microseconds since the epoch (schema.UtcMicros).
TIME = sa.BigInteger()


def upgrade() -> None:
    """Create the three tables and their indexes."""
    op.create_table(
        "consumer_groups",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("filter", sa.JSON(), nullable=False),
        sa.Column("ack_timeout_us", sa.BigInteger(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("ordering", sa.SmallInteger(), nullable=False),
        sa.Column("create_time", TIME, nullable=False),
        sa.Column("scanned_position", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "consumer_group_entries",
        sa.Column("group_id", UUID, primary_key=True),
        sa.Column("position", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("key", ID, nullable=False),
        sa.Column("occur_time", TIME, nullable=False),
        sa.Column("state", sa.SmallInteger(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("visible_at", TIME, nullable=False),
        sa.Column("member_id", UUID, nullable=True),
        sa.Column("delivery_id", UUID, nullable=True),
        sa.Column("lease_until", TIME, nullable=True),
        sa.Column("reason", sa.String(1024), nullable=True),
        sa.Column("dead_letter_time", TIME, nullable=True),
    )
    op.create_index(
        "ix_consumer_group_entries_state",
        "consumer_group_entries",
        ["group_id", "state", "position"],
    )
    op.create_index(
        "ix_consumer_group_entries_key",
        "consumer_group_entries",
        ["group_id", "state", "key", "position"],
    )
    op.create_index("ix_consumer_group_entries_delivery", "consumer_group_entries", ["delivery_id"])
    op.create_index("ix_consumer_group_entries_member", "consumer_group_entries", ["member_id"])
    op.create_table(
        "consumer_group_members",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("group_id", UUID, nullable=False),
        sa.Column("replica_id", UUID, nullable=False),
        sa.Column("heartbeat_time", TIME, nullable=False),
    )
    op.create_index("ix_consumer_group_members_group_id", "consumer_group_members", ["group_id"])
    op.create_index(
        "ix_consumer_group_members_replica_id", "consumer_group_members", ["replica_id"]
    )


def downgrade() -> None:
    """Drop the three tables."""
    for table in ("consumer_group_members", "consumer_group_entries", "consumer_groups"):
        op.drop_table(table)
