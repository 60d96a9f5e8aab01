"""Schema migrations: a fresh database, one from before `encoded`, a newer schema, the fill."""

from __future__ import annotations

import asyncio
import logging

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from google.protobuf.empty_pb2 import Empty
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from journey.api import convert
from journey.api.encoding import encode
from journey.app import StartupError, create_server
from journey.domain.model import Encode, SystemEvent, SystemEventFilter
from journey.storage import migrate
from journey.storage.database import open_database
from journey.storage.migrations import DIRECTORY, encoded
from journey.storage.queries import Queries
from journey.storage.schema import Base
from journey_client import pb
from tests.conftest import SettingsFactory
from tests.integration.harness import serving, stored_system_events


async def run_sql(url: str, *statements: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


async def make_pre_encoded_release(url: str) -> None:
    """Make the database as a version before batched delivery (and before migrations) left it."""
    await run_sql(
        url,
        "ALTER TABLE system_events DROP COLUMN encoded",
        "DROP TABLE alembic_version",
        # Revision 0003's tables came later still.
        "DROP TABLE consumer_groups",
        "DROP TABLE consumer_group_entries",
        "DROP TABLE consumer_group_members",
    )


def differences(connection: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))


def revision(connection: Connection) -> tuple[str, ...]:
    return MigrationContext.configure(connection).get_current_heads()


async def test_a_fresh_database_gets_exactly_the_schema_of_the_code(database_url: str) -> None:
    database = await open_database(database_url)
    try:
        assert database.migration == migrate.Outcome(
            (
                "0001_baseline",
                "0002_fill_encoded",
                "0003_consumer_groups",
                "0004_group_entry_indexes",
                "0005_group_waiting_in_log",
            ),
            migrate.head(),
        )
        async with database.engine.connect() as connection:
            assert await connection.run_sync(differences) == []
            assert await connection.run_sync(revision) == (migrate.head(),)
    finally:
        await database.close()
    # Opened again, nothing is pending.
    database = await open_database(database_url)
    await database.close()
    assert database.migration == migrate.Outcome((), migrate.head())


async def test_the_comparison_sees_a_schema_that_differs(database_url: str) -> None:
    # The test above could pass with a comparison that finds nothing: show that it finds this.
    database = await open_database(database_url)
    try:
        async with database.engine.begin() as connection:
            await connection.execute(text("DROP INDEX ix_sessions_profile_id"))
        async with database.engine.connect() as connection:
            found = await connection.run_sync(differences)
    finally:
        await database.close()
    assert [d[0] for d in found] == ["add_index"]  # type: ignore[index]


async def test_an_old_database_gets_every_event_encoded_and_replays_it(
    make_settings: SettingsFactory,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings()
    async with serving(settings) as h:
        for i in range(5):
            await h.track("page-view", session_id=f"s{i}")
        before = await h.all_events()
    assert len(before) == 15
    await make_pre_encoded_release(settings.database_url)
    # Pages of 4, so that the fill takes several and shows its progress.
    monkeypatch.setattr(encoded, "PAGE", 4)
    with caplog.at_level(logging.INFO, logger="journey.storage"):
        async with serving(settings) as h:
            assert h.server.database.migration == migrate.Outcome(
                (
                    "0002_fill_encoded",
                    "0003_consumer_groups",
                    "0004_group_entry_indexes",
                    "0005_group_waiting_in_log",
                ),
                migrate.head(),
                stamped=True,
            )
            await h.track("page-view", session_id="after")
            stream = h.events.Subscribe(pb.SubscribeRequest(beginning=Empty(), max_batch_size=1000))
            replayed: list[pb.SystemEvent] = []
            async with asyncio.timeout(10):
                async for message in stream:
                    replayed.extend(message.batch.events)
                    if message.HasField("caught_up"):
                        break
            stream.cancel()
            listed = await h.all_events()
            async with h.server.database.engine.connect() as connection:
                assert await connection.run_sync(differences) == []
    assert replayed == listed
    assert listed[:15] == before
    assert [e.position for e in listed] == list(range(1, 19))
    messages = [r.getMessage() for r in caplog.records]
    assert "a database made before migrations: stamping it at 0001_baseline" in messages
    assert "encoding 15 stored system events for replay (once, after an upgrade)" in messages
    assert "encoded 12 of 15 stored system events" in messages
    assert "encoded 15 of 15 stored system events" in messages
    assert "applied schema revision 0002_fill_encoded" in messages


async def test_an_interrupted_fill_is_finished_at_the_next_start_and_then_costs_nothing(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings()
    async with serving(settings) as h:
        for i in range(5):
            await h.track("page-view", session_id=f"s{i}")
    await make_pre_encoded_release(settings.database_url)
    monkeypatch.setattr(encoded, "PAGE", 4)
    calls = 0

    def failing_in_the_second_page(event: SystemEvent) -> bytes:
        nonlocal calls
        calls += 1
        if calls > 6:
            raise RuntimeError("the process stopped here")
        return encode(event)

    encoded_counts: list[int] = []
    real_fill = encoded.fill

    def counted_fill(engine: Engine, encode: Encode | None) -> int:
        encoded_counts.append(real_fill(engine, encode))
        return encoded_counts[-1]

    monkeypatch.setattr(encoded, "fill", counted_fill)
    with pytest.raises(RuntimeError, match="stopped here"):
        await open_database(settings.database_url, encode=failing_in_the_second_page)
    database = await open_database(settings.database_url, encode=encode)
    try:
        # The first page (the 4 newest events) committed; the 11 before them were left for
        # this start, in which revision 0002 ran again and finished.
        assert encoded_counts == [11]
        assert database.migration == migrate.Outcome(
            (
                "0002_fill_encoded",
                "0003_consumer_groups",
                "0004_group_entry_indexes",
                "0005_group_waiting_in_log",
            ),
            migrate.head(),
        )
        stored = await stored_system_events(database, 100)
        replayed = await Queries(database).encoded_system_events(SystemEventFilter(), 0, 100)
    finally:
        await database.close()
    database = await open_database(settings.database_url, encode=encode)
    await database.close()
    assert database.migration == migrate.Outcome((), migrate.head())
    assert encoded_counts == [11]
    assert len(stored) == 15
    assert [pb.SubscribeResponse.FromString(e.data).event for e in replayed] == [
        convert.system_event(e) for e in stored
    ]


async def test_a_fill_that_needs_the_encoder_without_one_says_so(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings()
    async with serving(settings) as h:
        await h.track("page-view")
    await make_pre_encoded_release(settings.database_url)
    with pytest.raises(encoded.EncoderMissing, match="3 stored system events need encoding"):
        await open_database(settings.database_url)


async def test_a_newer_schema_is_refused_naming_both_revisions(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings()
    async with serving(settings) as h:
        await h.track("page-view")
    await run_sql(settings.database_url, "UPDATE alembic_version SET version_num = '0099_future'")
    with pytest.raises(StartupError) as info:
        await create_server(settings)
    assert info.value.exit_code == 2
    assert "0099_future" in str(info.value)
    assert migrate.head() in str(info.value)


async def test_a_database_with_only_some_of_the_tables_is_refused(database_url: str) -> None:
    await run_sql(database_url, "CREATE TABLE profiles (id VARCHAR(128) PRIMARY KEY)")
    with pytest.raises(migrate.MigrationError, match=r"some of Journey's tables \(profiles\)"):
        await open_database(database_url)
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda c: inspect(c).get_table_names())
    finally:
        await engine.dispose()
    assert tables == ["profiles"]


ENTRY_COLUMNS = (
    "group_id, position, key, occur_time, state, attempt, visible_at, member_id, delivery_id, "
    "lease_until, reason, dead_letter_time"
)
ENTRIES = [
    ("g1", 7, "s1", 100, 1, 1, 100, "m1", "d1", 200, None, None),
    ("g1", 9, "s1", 101, 3, 0, 101, None, None, None, None, None),
    ("g2", 7, "", 102, 2, 5, 102, None, None, None, "max attempts", 300),
]


def _to_revision(connection: Connection, target: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(DIRECTORY))
    config.attributes["connection"] = connection
    current = MigrationContext.configure(connection).get_current_heads()
    connection.commit()
    if current and current[0] > target:
        command.downgrade(config, target)
    else:
        command.upgrade(config, target)


def _entries_and_groups(connection: Connection) -> tuple[list[tuple[object, ...]], list[str]]:
    rows = connection.execute(
        text(f"SELECT {ENTRY_COLUMNS} FROM consumer_group_entries ORDER BY group_id, position")
    ).all()
    columns = [c["name"] for c in inspect(connection).get_columns("consumer_groups")]
    return [tuple(row) for row in rows], columns


def _tails(connection: Connection) -> list[object]:
    return list(connection.scalars(text("SELECT tail FROM consumer_group_entries")))


async def test_revision_0005_keeps_every_entry_and_refuses_to_go_back_over_a_tail(
    database_url: str,
) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_to_revision, "0004_group_entry_indexes")
            values = ", ".join(f":{c.strip()}" for c in ENTRY_COLUMNS.split(","))
            names = [c.strip() for c in ENTRY_COLUMNS.split(",")]
            await connection.execute(
                text(f"INSERT INTO consumer_group_entries ({ENTRY_COLUMNS}) VALUES ({values})"),
                [dict(zip(names, row, strict=True)) for row in ENTRIES],
            )
            await connection.commit()
            before, old_columns = await connection.run_sync(_entries_and_groups)
            await connection.run_sync(_to_revision, "0005_group_waiting_in_log")
            after, new_columns = await connection.run_sync(_entries_and_groups)
            # Written before the revision, every waiting event has its entry: none is a tail.
            assert await connection.run_sync(_tails) == [0] * len(ENTRIES)
            assert await connection.run_sync(differences) == []
            await connection.execute(text("UPDATE consumer_group_entries SET tail = 1"))
            await connection.commit()
            with pytest.raises(RuntimeError, match="2 consumer-group entries may have events"):
                await connection.run_sync(_to_revision, "0004_group_entry_indexes")
            await connection.rollback()
            await connection.execute(text("UPDATE consumer_group_entries SET tail = 0"))
            await connection.commit()
            await connection.run_sync(_to_revision, "0004_group_entry_indexes")
            back, back_columns = await connection.run_sync(_entries_and_groups)
    finally:
        await engine.dispose()
    assert before == after == back == ENTRIES
    assert {"scanned_position", "read_position"} & set(old_columns) == {"scanned_position"}
    assert {"scanned_position", "read_position"} & set(new_columns) == {"read_position"}
    assert back_columns == old_columns
