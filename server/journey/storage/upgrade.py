"""Bring a database made by an earlier Journey up to date: add and fill system_events.encoded."""

from __future__ import annotations

import logging

from sqlalchemy import Connection, LargeBinary, bindparam, func, inspect, select, text, update

from journey.domain.model import Encode
from journey.storage import statements
from journey.storage.database import Database
from journey.storage.records import system_event_from_row

log = logging.getLogger(__name__)

# Rows encoded per transaction: each page is one short write, and progress shows per page.
PAGE = 5_000


def _has_encoded_column(connection: Connection) -> bool:
    return any(c["name"] == "encoded" for c in inspect(connection).get_columns("system_events"))


async def fill_encoded(database: Database, encode: Encode) -> int:
    """Add the `encoded` column if the table lacks it and fill every row without it.

    Rows are filled newest first, and every row written since has the column, so the rows
    still without it always start at the first position: one primary-key lookup at each start
    tells whether there is anything to fill, however long the log. Returns how many rows were
    filled.
    """
    table = statements.system_events
    c = table.c
    async with database.engine.begin() as connection:
        if not await connection.run_sync(_has_encoded_column):
            kind = LargeBinary().compile(dialect=connection.dialect)
            await connection.execute(text(f"ALTER TABLE system_events ADD COLUMN encoded {kind}"))
            log.info("added system_events.encoded, the form in which replays send events")
        first = (await connection.execute(select(c.encoded).order_by(c.position).limit(1))).first()
        if first is None or first.encoded is not None:
            return 0
        missing = await connection.scalar(
            select(func.count()).select_from(table).where(c.encoded.is_(None))
        )
    log.info("encoding %d stored system events for replay (once, after an upgrade)", missing)
    columns = [col for col in c if col.name != "encoded"]
    fill = update(table).where(c.position == bindparam("key")).values(encoded=bindparam("data"))
    done = 0
    while True:
        async with database.engine.begin() as connection:
            page = select(*columns).where(c.encoded.is_(None))
            rows = (await connection.execute(page.order_by(c.position.desc()).limit(PAGE))).all()
            if not rows:
                break
            await connection.execute(
                fill,
                [{"key": r.position, "data": encode(system_event_from_row(r))} for r in rows],
            )
        done += len(rows)
        log.info("encoded %d of %d stored system events", done, missing)
    return done
