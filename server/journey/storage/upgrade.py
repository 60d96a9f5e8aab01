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

    A database the current version made has nothing to fill and costs one query. Returns how
    many rows were filled.
    """
    table = statements.system_events
    c = table.c
    async with database.engine.begin() as connection:
        if not await connection.run_sync(_has_encoded_column):
            kind = LargeBinary().compile(dialect=connection.dialect)
            await connection.execute(text(f"ALTER TABLE system_events ADD COLUMN encoded {kind}"))
            log.info("added system_events.encoded, the form in which replays send events")
        missing = await connection.scalar(
            select(func.count()).select_from(table).where(c.encoded.is_(None))
        )
    if not missing:
        return 0
    log.info("encoding %d stored system events for replay (once, after an upgrade)", missing)
    columns = [col for col in c if col.name != "encoded"]
    fill = update(table).where(c.position == bindparam("key")).values(encoded=bindparam("data"))
    done, after = 0, 0
    while True:
        async with database.engine.begin() as connection:
            page = select(*columns).where(c.encoded.is_(None), c.position > after)
            rows = (await connection.execute(page.order_by(c.position).limit(PAGE))).all()
            if not rows:
                break
            await connection.execute(
                fill,
                [{"key": r.position, "data": encode(system_event_from_row(r))} for r in rows],
            )
        after = rows[-1].position
        done += len(rows)
        log.info("encoded %d of %d stored system events", done, missing)
    return done
