"""The fill of revision 0002: every stored system event's bytes, in pages, newest first."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy import Engine, bindparam, func, select, update

from journey.domain.model import Encode
from journey.storage.records import system_event_from_row
from journey.storage.schema import ID_LENGTH, UtcMicros

log = logging.getLogger(__name__)

# Rows encoded per transaction: each page is one short write, and progress shows per page.
PAGE = 5_000

# The table as this revision knows it: a later revision may add columns that a database being
# upgraded through this one does not have yet.
system_events = sa.table(
    "system_events",
    sa.column("position", sa.BigInteger()),
    sa.column("id", sa.String(36)),
    sa.column("type", sa.SmallInteger()),
    sa.column("occur_time", UtcMicros()),
    sa.column("profile_id", sa.String(ID_LENGTH)),
    sa.column("session_id", sa.String(ID_LENGTH)),
    sa.column("source_id", sa.String(ID_LENGTH)),
    sa.column("properties", sa.JSON()),
    sa.column("encoded", sa.LargeBinary()),
)


class EncoderMissing(Exception):
    """Stored events need encoding, and the caller gave no encoder (config.attributes)."""


def fill(engine: Engine, encode: Encode | None) -> int:
    """Fill `encoded` in every row without it, a page per transaction; returns how many.

    Rows are filled newest first, and every row written since the column exists has it, so
    the rows still without it always start at the first position: one primary-key lookup
    tells whether there is anything to fill, however long the log.
    """
    c = system_events.c
    with engine.connect() as connection:
        first = connection.execute(select(c.encoded).order_by(c.position).limit(1)).first()
        if first is None or first.encoded is not None:
            return 0
        missing = connection.scalar(
            select(func.count()).select_from(system_events).where(c.encoded.is_(None))
        )
    if encode is None:
        raise EncoderMissing(f"{missing} stored system events need encoding; pass an encoder")
    log.info("encoding %d stored system events for replay (once, after an upgrade)", missing)
    columns = [column for column in c if column.name != "encoded"]
    page = select(*columns).where(c.encoded.is_(None)).order_by(c.position.desc())
    write = update(system_events).where(c.position == bindparam("key"))
    write = write.values(encoded=bindparam("data"))
    done = 0
    while True:
        with engine.begin() as connection:
            rows = connection.execute(page.limit(PAGE)).all()
            if not rows:
                break
            connection.execute(
                write,
                [{"key": r.position, "data": encode(system_event_from_row(r))} for r in rows],
            )
        done += len(rows)
        log.info("encoded %d of %d stored system events", done, missing)
    return done
