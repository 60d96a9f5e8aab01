"""A database from before system_events.encoded existed is upgraded at start and replays in full."""

from __future__ import annotations

import asyncio
import logging

import pytest
from google.protobuf.empty_pb2 import Empty
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from journey.api import convert
from journey.api.encoding import encode
from journey.domain.model import SystemEvent, SystemEventFilter
from journey.storage import upgrade
from journey.storage.database import open_database
from journey.storage.queries import Queries
from journey_client import pb
from tests.conftest import SettingsFactory
from tests.integration.harness import serving


async def drop_encoded_column(url: str) -> None:
    """Make the table as a version before batched delivery made it."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("ALTER TABLE system_events DROP COLUMN encoded"))
    finally:
        await engine.dispose()


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
    await drop_encoded_column(settings.database_url)
    # Pages of 4, so that the fill takes several and shows its progress.
    monkeypatch.setattr(upgrade, "PAGE", 4)
    with caplog.at_level(logging.INFO, logger=upgrade.__name__):
        async with serving(settings) as h:
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
    assert replayed == listed
    assert listed[:15] == before
    assert [e.position for e in listed] == list(range(1, 19))
    messages = [r.getMessage() for r in caplog.records]
    assert "encoding 15 stored system events for replay (once, after an upgrade)" in messages
    assert "encoded 12 of 15 stored system events" in messages
    assert "encoded 15 of 15 stored system events" in messages


async def test_an_interrupted_fill_is_finished_at_the_next_start_and_then_costs_nothing(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings()
    async with serving(settings) as h:
        for i in range(5):
            await h.track("page-view", session_id=f"s{i}")
    await drop_encoded_column(settings.database_url)
    monkeypatch.setattr(upgrade, "PAGE", 4)
    calls = 0

    def failing_in_the_second_page(event: SystemEvent) -> bytes:
        nonlocal calls
        calls += 1
        if calls > 6:
            raise RuntimeError("the process stopped here")
        return encode(event)

    database = await open_database(settings.database_url)
    try:
        with pytest.raises(RuntimeError, match="stopped here"):
            await upgrade.fill_encoded(database, failing_in_the_second_page)
        # The first page (the 4 newest events) committed; the 11 before them are left.
        assert await upgrade.fill_encoded(database, encode) == 11
        assert await upgrade.fill_encoded(database, encode) == 0
        stored = await Queries(database).system_events(SystemEventFilter(), 0, 100)
        replayed = await Queries(database).encoded_system_events(SystemEventFilter(), 0, 100)
    finally:
        await database.close()
    assert len(stored) == 15
    assert [pb.SubscribeResponse.FromString(e.data).event for e in replayed] == [
        convert.system_event(e) for e in stored
    ]
