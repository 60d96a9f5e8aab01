"""Give every stored system event its `encoded` bytes (what Journey did at start before this).

A database made before batched delivery has no `system_events.encoded` column: it is added.
Rows without the bytes (all of them then, or the rest of an interrupted fill) are filled in
pages, newest first, each page its own transaction, with progress in the log
(journey.storage.migrations.encoded). An interrupted fill leaves this revision unapplied, so
the next start finishes it. A database made with the column from the start has nothing to fill.

Revision ID: 0002_fill_encoded
Revises: 0001_baseline
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

from journey.storage.migrations import encoded

revision = "0002_fill_encoded"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the column if missing, then fill it where it is empty."""
    if context.is_offline_mode():
        # The bytes come from Journey's own encoder: plain SQL cannot make them. On a database
        # made by the baseline above there is nothing to fill.
        op.get_context().impl.static_output(
            "-- 0002_fill_encoded: an older database's events are encoded by `journey migrate`"
        )
        return
    bind = op.get_bind()
    columns = sa.inspect(bind).get_columns("system_events")
    if not any(column["name"] == "encoded" for column in columns):
        op.add_column("system_events", sa.Column("encoded", sa.LargeBinary(), nullable=True))
    # Commit the column first: each page of the fill is a transaction of its own, on
    # another connection of the same engine, so that an interruption keeps the pages done.
    with op.get_context().autocommit_block():
        encoded.fill(bind.engine, context.config.attributes.get("encode"))


def downgrade() -> None:
    """Nothing to undo: the column belongs to the baseline, and the bytes are harmless."""
