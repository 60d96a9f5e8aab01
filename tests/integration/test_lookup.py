"""The writer's compiled statements on both databases: lookups, bulk writes, prepared statements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest_asyncio
from sqlalchemy import Connection, bindparam, insert, select, update

from journey.domain.model import Session, SessionState
from journey.storage import statements
from journey.storage.bulk import Bulk
from journey.storage.database import Database, open_database
from journey.storage.lookup import Lookup
from journey.storage.prepared import Prepared
from journey.storage.records import field_names, from_values, row, values

T0 = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest_asyncio.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = await open_database(database_url)
    try:
        yield db
    finally:
        await db.close()


def _session(i: int) -> Session:
    return Session(
        id=f"s{i}",
        profile_id=f"p{i}",
        source_id="web",
        state=SessionState.ACTIVE if i % 2 else SessionState.IDLE,
        open_time=T0,
        last_activity_time=T0,
        close_time=None if i % 3 else T0,
        event_count=i,
        visit_count=1,
        visit_start_time=T0,
        visit_event_count=i,
    )


async def test_every_batch_size_finds_exactly_the_stored_rows(database: Database) -> None:
    stored = {s.id: s for s in map(_session, range(40))}
    sessions = Lookup(statements.sessions_by_ids)
    stored_events = Lookup(statements.stored_events)

    def check(connection: Connection) -> None:
        connection.execute(statements.sessions.insert(), [values(s) for s in stored.values()])
        connection.execute(
            statements.tracked_events.insert(),
            [_tracked(f"e{i}", "web" if i % 2 else "app") for i in range(40)],
        )
        # Sizes around the powers of two the SQLite statements are padded to, with keys that
        # match nothing and a repeated key among them.
        for size in (1, 2, 3, 4, 5, 17, 33):
            keys = [f"s{i}" for i in range(0, 2 * size, 2)] + ["s0", "missing"]
            found = [from_values(Session, r) for r in sessions.rows(connection, keys)]
            assert sorted(found, key=lambda s: s.id) == sorted(
                {stored[k] for k in keys if k in stored}, key=lambda s: s.id
            )
            ids = [f"e{i}" for i in range(size)] + ["nope"]
            rows = stored_events.rows(connection, ids, source_id="web")
            assert sorted(tuple(r) for r in rows) == sorted(
                (f"e{i}", "p", "s") for i in range(size) if i % 2
            ), size
        assert sessions.rows(connection, []) == []

    async with database.engine.begin() as connection:
        await connection.run_sync(check)


def _tracked(event_id: str, source_id: str) -> dict[str, object]:
    return {
        "event_id": event_id,
        "source_id": source_id,
        "type": "page-view",
        "properties": b"",
        "occur_time": T0,
        "receive_time": T0,
        "profile_id": "p",
        "session_id": "s",
    }


async def test_bulk_inserts_store_every_value_as_given(database: Database) -> None:
    # What the group commit writes comes back through its lookups as it was: NULLs, bytes,
    # microseconds, enums, and the rows' order.
    stored = [_session(i) for i in range(7)]
    inserts = Bulk(insert(statements.sessions), field_names(Session))
    tracked = Bulk(
        insert(statements.tracked_events),
        (
            "event_id",
            "source_id",
            "type",
            "properties",
            "occur_time",
            "receive_time",
            "profile_id",
            "session_id",
        ),
    )

    def check(connection: Connection) -> None:
        inserts.execute(connection, [row(s) for s in stored])
        tracked.execute(
            connection,
            [(f"e{i}", "web", "view", bytes([i, 0, 255]), T0, T0, "p", "s") for i in range(5)],
        )
        found = Lookup(statements.sessions_by_ids).rows(connection, [s.id for s in stored])
        assert sorted((from_values(Session, r) for r in found), key=lambda s: s.id) == stored
        order = statements.tracked_events.c.seq
        rows = connection.execute(select(statements.tracked_events).order_by(order)).all()
        assert [(r.event_id, r.properties, r.occur_time) for r in rows] == [
            (f"e{i}", bytes([i, 0, 255]), T0) for i in range(5)
        ]

    async with database.engine.begin() as connection:
        await connection.run_sync(check)


async def test_prepared_statements_bind_and_read_as_core_does(database: Database) -> None:
    # Times bound through UtcMicros, a fixed IN list expanded into the SQL, rows read through
    # the columns' result processors: each as Core's own execution of the same statement.
    stored = [_session(i) for i in range(9)]
    for i, session in enumerate(stored):
        stored[i] = session._replace(last_activity_time=T0 + timedelta(minutes=i))
    c = statements.sessions.c
    cutoff = T0 + timedelta(minutes=4)
    query = (
        select(c.id, c.last_activity_time, c.close_time)
        .where(c.last_activity_time <= bindparam("cutoff", type_=c.last_activity_time.type))
        .where(c.state.in_([int(SessionState.ACTIVE)]))
        .order_by(c.id)
    )
    touch = (
        update(statements.sessions)
        .where(c.id == bindparam("key", type_=c.id.type))
        .values(close_time=bindparam("closed", type_=c.close_time.type))
    )

    def check(connection: Connection) -> None:
        connection.execute(statements.sessions.insert(), [values(s) for s in stored])
        prepared = Prepared(query).rows(connection, cutoff=cutoff)
        core = connection.execute(query.params(cutoff=cutoff)).all()
        assert [tuple(r) for r in prepared] == [tuple(r) for r in core]
        assert [r[0] for r in prepared] == ["s1", "s3"]
        assert all(isinstance(r[1], datetime) for r in prepared)
        Prepared(touch).execute(connection, key="s3", closed=cutoff)
        closed = connection.execute(select(c.close_time).where(c.id == "s3")).scalar_one()
        assert closed == cutoff

    async with database.engine.begin() as connection:
        await connection.run_sync(check)
