"""Bulk: a Core statement run with tuples stores what Connection.execute with dicts would."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import bindparam, create_engine, event, insert, select, update
from sqlalchemy.dialects.postgresql import asyncpg
from sqlalchemy.exc import IntegrityError

from journey.storage import statements
from journey.storage.bulk import SQLITE_MAX_VALUES, Bulk
from journey.storage.schema import Base

T = statements.tracked_events
WHEN = datetime(2026, 11, 27, 8, 0, 0, 123456, tzinfo=UTC)
ROW = ("e1", "web", "view", b"\x00\x01", WHEN, WHEN, "p", "s")
NAMES = tuple(c.name for c in T.c if c.name != "seq")


def test_rows_through_the_types_bind_processors_in_the_statements_column_order() -> None:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with engine.begin() as connection:
        Bulk(insert(T), NAMES).execute(connection, [ROW, ("e2", *ROW[1:])])
        # The bind names in another order than the statement's: the key comes first here.
        move = update(T).where(T.c.event_id == bindparam("key")).values(type=bindparam("t"))
        Bulk(move, ("key", "t")).execute(connection, [("e2", "click")])
        Bulk(insert(T), NAMES).execute(connection, [])  # no rows: nothing runs
        stored = connection.execute(select(*(T.c[n] for n in NAMES)).order_by(T.c.seq)).all()
        micros = connection.execute(select(T.c.occur_time.cast(T.c.seq.type))).scalar()
    assert [tuple(r) for r in stored] == [ROW, ("e2", "web", "click", *ROW[3:])]
    assert micros == int(WHEN.timestamp()) * 1_000_000 + 123456  # as UtcMicros stores it
    engine.dispose()


def test_asyncpg_gets_its_own_sql_without_returning() -> None:
    # Its DB-API module only for the types' bind processors: nothing connects.
    dialect = asyncpg.dialect(dbapi=asyncpg.dialect.import_dbapi())  # type: ignore[no-untyped-call]
    compiled = Bulk(insert(T), NAMES)._compile(dialect)
    assert compiled.sql.startswith("INSERT INTO tracked_events (event_id,")
    assert "$8" in compiled.sql
    assert "RETURNING" not in compiled.sql
    assert compiled.convert(ROW)[4] == int(WHEN.timestamp()) * 1_000_000 + 123456
    # asyncpg's executemany already pipelines the rows: no INSERT of many rows there.
    assert compiled.values is None


def test_sqlite_inserts_many_rows_per_statement_in_their_order() -> None:
    engine = create_engine("sqlite://")
    statements_run: list[str] = []

    # Bulk runs on pysqlite's own connection (storage/driver.py), out of SQLAlchemy's events:
    # sqlite3's trace callback sees each execution of a statement.
    @event.listens_for(engine, "connect")
    def trace(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.set_trace_callback(
            lambda sql: statements_run.append(sql) if sql.startswith("INSERT") else None
        )

    Base.metadata.create_all(engine)

    rows = [(f"e{i:04}", *ROW[1:]) for i in range(301)]
    with engine.begin() as connection:
        Bulk(insert(T), NAMES).execute(connection, rows)
        Bulk(insert(T), NAMES).execute(connection, [("one", *ROW[1:])])
        stored = connection.execute(select(*(T.c[n] for n in NAMES)).order_by(T.c.seq)).all()
    assert [tuple(r) for r in stored] == [*rows, ("one", *ROW[1:])]
    # 301 rows of 8 columns: at most 64 rows (512 values) a statement, within what any SQLite
    # takes; 64 * 4 + 32 + 8 + 4 + 1, each chunk one statement; then the lone row.
    # Each chunk executed once, as one statement; the rows' values hold no "), (".
    per_statement = [sql.count("), (") + 1 for sql in statements_run]
    assert per_statement == [64, 64, 64, 64, 32, 8, 4, 1, 1]
    assert max(per_statement) * len(NAMES) <= SQLITE_MAX_VALUES


def test_a_driver_error_arrives_as_sqlalchemys_on_pysqlite_and_the_rows_are_stored() -> None:
    # On pysqlite Bulk runs on the driver's own connection (storage/driver.py); storage's
    # failure handling (storage/failures.py) sorts SQLAlchemy's exceptions, not sqlite3's.
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    inserts = Bulk(insert(T), NAMES)
    with engine.connect() as connection:
        with connection.begin():
            inserts.execute(connection, [ROW])
        for rows in ([ROW], [("e2", *ROW[1:]), ROW]):  # one row, then many in one INSERT
            with pytest.raises(IntegrityError) as raised, connection.begin():
                inserts.execute(connection, rows)
            assert isinstance(raised.value.orig, sqlite3.IntegrityError)
        stored = connection.execute(select(T.c.event_id)).scalars().all()
    assert stored == ["e1"]
