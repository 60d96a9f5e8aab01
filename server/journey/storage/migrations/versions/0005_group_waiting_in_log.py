"""Consumer groups: an event waiting behind its key stays in the log instead of in an entry.

With per-key ordering, every event read while an earlier one of its key was unsettled got a
BLOCKED entry: inserted, later updated to be handed out, then deleted at its ack. Now the
newest entry of a key read from the log is marked as its `tail`, and the key's later events
read since wait in the log behind it; when the tail is settled, its key's next event is looked
up in the log by the session or profile index. Rows written before this revision have no tail
(0), which keeps their meaning: every waiting event of theirs has its entry.

`consumer_groups.scanned_position` becomes `read_position`. Its meaning changed (an event up to
it may now wait in the log, with no entry), so a replica of an earlier release, which would
take such an event for acknowledged, must not run a round on this schema: it names the old
column in every statement on groups and fails instead.

Revision ID: 0005_group_waiting_in_log
Revises: 0004_group_entry_indexes
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_group_waiting_in_log"
down_revision = "0004_group_entry_indexes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the tail flag; rename the scan position."""
    op.add_column(
        "consumer_group_entries",
        sa.Column("tail", sa.SmallInteger(), nullable=False, server_default=sa.text("0")),
    )
    op.execute("ALTER TABLE consumer_groups RENAME COLUMN scanned_position TO read_position")


def downgrade() -> None:
    """Refused while an unsettled tail may have events waiting behind it in the log.

    The earlier schema has no way to say that they wait: its code would take them for
    acknowledged.
    """
    tails = op.get_bind().scalar(
        sa.text("SELECT count(*) FROM consumer_group_entries WHERE tail = 1 AND state <> 2")
    )
    if tails:
        raise RuntimeError(
            f"{tails} consumer-group entries may have events waiting behind them in the log; "
            "let the groups' members acknowledge them (or delete the groups) first"
        )
    op.execute("ALTER TABLE consumer_groups RENAME COLUMN read_position TO scanned_position")
    with op.batch_alter_table("consumer_group_entries") as batch:
        batch.drop_column("tail")
