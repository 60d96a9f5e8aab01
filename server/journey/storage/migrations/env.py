"""Alembic's environment: runs the revisions on the connection that journey.storage.migrate gives.

Online, the caller (journey.storage.migrate) has opened the connection, on the async engine
through `run_sync`, and taken the migration lock on it. Offline (`journey migrate --sql`) the
SQL is written for the dialect of the configured URL.
"""

from __future__ import annotations

from typing import Any

from alembic import context

config = context.config


def _record(ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
    # `journey migrate` prints what it applied; a stamp applies nothing.
    if step.is_upgrade and not step.is_stamp:
        config.attributes.setdefault("applied", []).append(step.up_revision_id)


if context.is_offline_mode():
    context.configure(
        url=config.attributes["url"],
        literal_binds=True,
        transaction_per_migration=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    context.configure(
        connection=config.attributes["connection"],
        # Each revision commits on its own: a long fill can commit page by page
        # (autocommit_block), and a failed revision leaves the ones before it applied.
        transaction_per_migration=True,
        # SQLite alters a table by copying it; batch mode does that for revisions that need it.
        render_as_batch=True,
        on_version_apply=_record,
    )
    with context.begin_transaction():
        context.run_migrations()
