"""Consumer-group entries lose their delivery-id and member-id indexes.

Each was written at every hand-out and every ack, for lookups that need neither: a round finds
the entries its requests name by position (the member keeps them), and a member that left
gives back the in-flight entries of its group, a short range of the state index.

Revision ID: 0004_group_entry_indexes
Revises: 0003_consumer_groups
"""

from __future__ import annotations

from alembic import op

revision = "0004_group_entry_indexes"
down_revision = "0003_consumer_groups"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Drop the two indexes."""
    op.drop_index("ix_consumer_group_entries_delivery", table_name="consumer_group_entries")
    op.drop_index("ix_consumer_group_entries_member", table_name="consumer_group_entries")


def downgrade() -> None:
    """Create them again."""
    op.create_index("ix_consumer_group_entries_delivery", "consumer_group_entries", ["delivery_id"])
    op.create_index("ix_consumer_group_entries_member", "consumer_group_entries", ["member_id"])
