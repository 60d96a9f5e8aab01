"""Fill a fresh Journey database straight through its schema: stored events, due sessions.

Creating 200,000 system events or 50,000 sessions through Track would take most of a minute
and could not make the sessions time out at one moment; the rows written here are the ones
Journey itself writes (the same tables and domain values), so the server reads them as its own.
One code path for SQLite and PostgreSQL: the database is opened as `journey serve` opens it
(journey.storage.database.open_database, which makes the schema), then filled through
SQLAlchemy's async engine, on aiosqlite or asyncpg.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from sqlalchemy import Table, insert

from journey.api.encoding import encode
from journey.domain.model import Profile, Session, SessionState, SystemEvent, SystemEventType
from journey.storage import statements
from journey.storage.bulk import Bulk
from journey.storage.database import open_database
from journey.storage.records import values

CHUNK = 10_000
TYPES = (
    SystemEventType.PROFILE_CREATED,
    SystemEventType.SESSION_OPENED,
    SystemEventType.VISIT_STARTED,
)


def _write(url: str, table_rows: list[tuple[Table, list[dict[str, object]]]]) -> None:
    asyncio.run(_write_async(url, table_rows))


async def _write_async(url: str, table_rows: list[tuple[Table, list[dict[str, object]]]]) -> None:
    database = await open_database(url, encode=encode)
    try:
        async with database.engine.begin() as connection:
            for table, rows in table_rows:
                names = list(rows[0]) if rows else []
                # The writer's own executemany (storage/bulk.py): a third of the time of
                # Connection.execute with dicts, which took 30 s for 200,000 events here.
                bulk = Bulk(insert(table), names)
                for i in range(0, len(rows), CHUNK):
                    chunk = [tuple(row[n] for n in names) for row in rows[i : i + CHUNK]]
                    await connection.run_sync(bulk.execute, chunk)
    finally:
        await database.close()


def system_events(url: str, count: int, at: datetime) -> None:
    """Store `count` system events at positions 1..count, as if 1/3 as many sessions opened."""
    events = (
        SystemEvent(
            position=position,
            id=f"00000000-0000-4000-8000-{position:012d}",
            type=TYPES[(position - 1) % 3],
            occur_time=at,
            profile_id=f"profile-{(position - 1) // 3}",
            session_id=f"session-{(position - 1) // 3}",
            source_id="bench",
            properties={"visit_number": 1, "trigger_event_types": ["page-view"]},
        )
        for position in range(1, count + 1)
    )
    # Encoded as the writer encodes each event it stores.
    rows = [values(e) | {"encoded": encode(e)} for e in events]
    _write(url, [(statements.system_events, rows)])


def active_sessions(url: str, count: int, last_activity: datetime) -> None:
    """Store `count` sessions in a visit, all last active at `last_activity`."""
    profiles = []
    sessions = []
    for i in range(count):
        profiles.append(values(Profile(f"profile-{i}", last_activity, last_activity, 1, 1)))
        sessions.append(
            values(
                Session(
                    id=f"session-{i}",
                    profile_id=f"profile-{i}",
                    source_id="bench",
                    state=SessionState.ACTIVE,
                    open_time=last_activity - timedelta(seconds=1),
                    last_activity_time=last_activity,
                    close_time=None,
                    event_count=1,
                    visit_count=1,
                    visit_start_time=last_activity - timedelta(seconds=1),
                    visit_event_count=1,
                )
            )
        )
    _write(url, [(statements.profiles, profiles), (statements.sessions, sessions)])
