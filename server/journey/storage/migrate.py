"""Bring a database's schema to this Journey's newest revision (Alembic), once, under a lock.

`journey serve` runs `upgrade` at start and `journey migrate` runs it on demand. On
PostgreSQL the run holds an advisory lock, so replicas that start together migrate one after
another (the later ones find nothing pending). SQLite is one process (storage/sqlite_lock.py).
A database made by the release before migrations (tables, no alembic_version) is stamped at
the baseline first and then upgraded with all its data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import IO, Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import ResolutionError
from alembic.util import CommandError
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from journey.domain.model import Encode
from journey.storage.migrations import DIRECTORY

log = logging.getLogger(__name__)
# Alembic says at INFO which plugins and dialect it set up, on every start; what was applied is
# logged below.
logging.getLogger("alembic").setLevel(logging.WARNING)

BASELINE = "0001_baseline"
# The tables of the baseline: a database with all of them and no alembic_version was made by
# the release before migrations.
BASELINE_TABLES = ("profiles", "sessions", "tracked_events", "system_events")
# The pg_advisory_lock key that migrations hold ("JrnyMigr"); nothing else may use it.
LOCK_KEY = 0x4A726E794D696772


class MigrationError(Exception):
    """The database cannot be brought to this Journey's schema; the message says why."""


class SchemaTooNew(MigrationError):
    """The database is at a revision that this Journey does not know: a newer one migrated it."""

    def __init__(self, current: str, head: str) -> None:
        super().__init__(
            f"the database's schema is at revision {current}, which this Journey does not know "
            f"(its newest is {head}): a newer Journey has upgraded it; run that version"
        )
        self.current = current
        self.head = head


@dataclass(frozen=True)
class Outcome:
    """What a run did: the revisions applied, in order, and where the database stands now."""

    applied: tuple[str, ...]
    head: str
    # Recognised as made by the release before migrations, and stamped at the baseline.
    stamped: bool = False


def head() -> str:
    """The newest revision this Journey knows."""
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert revision is not None
    return revision


def _config(**attributes: Any) -> Config:
    # No alembic.ini: everything Alembic needs is here, and the caller's objects (connection,
    # encoder, URL) travel in `attributes`, never through an ini file's interpolation.
    config = Config(output_buffer=attributes.pop("output", None))
    config.set_main_option("script_location", str(DIRECTORY))
    config.attributes.update(attributes)
    return config


async def upgrade(engine: AsyncEngine, encode: Encode | None = None) -> Outcome:
    """Apply every pending revision; SchemaTooNew or MigrationError if the database is not ours.

    `encode` turns a stored event into its bytes; it is needed only when an older database has
    events to fill (revision 0002), so a fresh database can be migrated without it.
    """
    async with engine.connect() as connection:
        postgres = connection.dialect.name == "postgresql"
        if postgres:
            await connection.exec_driver_sql(f"SELECT pg_advisory_lock({LOCK_KEY})")
            await connection.commit()
        try:
            return await connection.run_sync(_upgrade, encode)
        finally:
            if postgres:
                # The lock belongs to this session: closing the connection ends it whatever
                # state a failed revision left the connection in.
                await connection.invalidate()


def upgrade_connection(connection: Connection, encode: Encode | None = None) -> Outcome:
    """`upgrade` on a synchronous connection, without the lock, for one-process tools.

    The benchmark's seeder makes the database files it fills with it.
    """
    return _upgrade(connection, encode)


def _upgrade(connection: Connection, encode: Encode | None) -> Outcome:
    config = _config(connection=connection, encode=encode)
    script = ScriptDirectory.from_config(config)
    newest = script.get_current_head()
    assert newest is not None
    current = MigrationContext.configure(connection).get_current_heads()
    stamped = False
    if not current:
        present = [name for name in BASELINE_TABLES if inspect(connection).has_table(name)]
        if len(present) == len(BASELINE_TABLES):
            stamped = True
        elif present:
            raise MigrationError(
                f"the database has some of Journey's tables ({', '.join(present)}) but not all, "
                "and no alembic_version: it was not made by Journey"
            )
    for revision in current:
        try:
            known = script.get_revision(revision)
        except (ResolutionError, CommandError):
            known = None
        if known is None:
            raise SchemaTooNew(revision, newest)
    # Alembic manages its own transactions (one per revision): end the one these reads began.
    connection.commit()
    if stamped:
        log.info("a database made before migrations: stamping it at %s", BASELINE)
        command.stamp(config, BASELINE)
    command.upgrade(config, "head")
    applied = tuple(config.attributes.get("applied", ()))
    for revision in applied:
        log.info("applied schema revision %s", revision)
    return Outcome(applied, newest, stamped)


def write_sql(url: str, output: IO[str]) -> None:
    """Write the SQL that makes an empty database of `url`'s kind current (Alembic offline)."""
    command.upgrade(_config(url=url, output=output), "head", sql=True)
