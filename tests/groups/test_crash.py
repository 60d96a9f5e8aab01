"""SIGKILL the server while four members consume 20,000 events with nacks and member crashes."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf.empty_pb2 import Empty
from sqlalchemy import insert

from journey.api.encoding import encode
from journey.domain.model import SystemEvent, SystemEventType
from journey.storage.database import open_database
from journey.storage.schema import SystemEventRow
from journey_client import pb
from tests.faults.process import running, write_config
from tests.groups.checker import Checker, Worker

pytestmark = pytest.mark.slow

EVENTS = 20_000
SESSIONS = 1000
# The kill comes once this many events were acknowledged.
ACKED_BEFORE_KILL = 6000


async def seed(database_url: str, count: int) -> None:
    """Store `count` system events over SESSIONS sessions, as the writer would have."""
    database = await open_database(database_url)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = []
    for position in range(1, count + 1):
        session = position % SESSIONS
        event = SystemEvent(
            position=position,
            id=str(uuid.UUID(int=position)),
            type=SystemEventType.VISIT_STARTED,
            occur_time=start + timedelta(milliseconds=position),
            profile_id=f"p{session}",
            session_id=f"s{session}",
            source_id="web",
            properties={},
        )
        rows.append(
            {
                "position": position,
                "id": event.id,
                "type": int(event.type),
                "occur_time": event.occur_time,
                "profile_id": event.profile_id,
                "session_id": event.session_id,
                "source_id": event.source_id,
                "properties": {},
                "encoded": encode(event),
            }
        )
    try:
        async with database.engine.begin() as connection:
            await connection.execute(insert(SystemEventRow), rows)
    finally:
        await database.close()


async def progress(
    groups: pb.ConsumerGroupServiceAsyncStub,
    checker: Checker,
    acked: int,
    seconds: float,
    total: int = EVENTS,
) -> pb.ConsumerGroup:
    """Until `acked` events were acked (and, at `total`, the group has nothing left)."""
    async with asyncio.timeout(seconds):
        while True:
            if len(checker.ack_sent) >= acked:
                state = await groups.GetConsumerGroup(pb.GetConsumerGroupRequest(name="g"))
                # An ack sent is not an ack applied (a crash can lose it): the group decides.
                if acked < total or state.pending_count == 0:
                    return state
            await asyncio.sleep(0.1)


async def test_sigkill_while_four_members_consume_loses_no_ack_and_keeps_order(
    tmp_path: Path, database_url: str
) -> None:
    await seed(database_url, EVENTS)
    config = write_config(tmp_path, database_url)
    checker = Checker()
    address = {"target": ""}
    channels: dict[str, grpc.aio.Channel] = {}

    def stub() -> pb.ConsumerGroupServiceAsyncStub:
        # The server's port changes when it restarts: a channel per address.
        target = address["target"]
        if target not in channels:
            channels[target] = grpc.aio.insecure_channel(target)
        return pb.ConsumerGroupServiceStub(channels[target])

    workers = [
        Worker(
            i,
            stub,
            "g",
            checker,
            nack_rate=0.02,
            crash_rate=0.0005,
            rng=random.Random(i),
        )
        for i in range(4)
    ]
    tasks: list[asyncio.Task[None]] = []
    try:
        async with running(config) as server:
            address["target"] = server.target
            async with server.stubs() as stubs:
                groups = pb.ConsumerGroupServiceStub(stubs.channel)
                await groups.CreateConsumerGroup(
                    pb.CreateConsumerGroupRequest(
                        name="g",
                        beginning=Empty(),
                        max_attempts=100,
                        ordering=pb.ConsumerGroupOrdering.CONSUMER_GROUP_ORDERING_SESSION,
                    )
                )
                tasks = [asyncio.create_task(w.run()) for w in workers]
                await progress(groups, checker, ACKED_BEFORE_KILL, 40)
            server.kill()  # mid-flight: acks on the wire, rounds committing, Settled unsent
            assert await server.wait() == -9
        async with running(config) as server:
            address["target"] = server.target
            async with server.stubs() as stubs:
                groups = pb.ConsumerGroupServiceStub(stubs.channel)
                state = await progress(groups, checker, EVENTS, 50)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in channels.values():
            await channel.close(None)
    assert checker.errors == []
    assert (state.pending_count, state.dead_letter_count, state.ack_floor) == (0, 0, EVENTS)
    # Every event acked at least once, some more than once (the crash cut acks off).
    assert len(checker.ack_sent) == EVENTS
    assert sum(w.crashes for w in workers) > 0
    for key, seen in checker.by_key.items():
        assert seen == sorted(seen), key
