"""Load for fault tests: writers that track with client ids, subscribers that resume by position."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

import grpc
from google.protobuf.empty_pb2 import Empty
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from journey.storage.schema import SystemEventRow, TrackedEventRow
from journey_client import pb
from tests.faults.process import Stubs
from tests.integration.harness import all_events as list_all

EOF = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs
SOURCE = "web"


@dataclass
class Outcomes:
    """What every Track call answered, by its session id (one event, one new session each)."""

    acked: dict[str, pb.TrackResponse] = field(default_factory=dict)
    failed: dict[str, grpc.StatusCode] = field(default_factory=dict)


async def write(
    stubs: Stubs, name: str, calls: int, outcomes: Outcomes, give_up_after: int = 1
) -> None:
    """Track up to `calls` times, each on a new session; stop after `give_up_after` failures.

    Going on after a failure, at once and without back-off, is the harshest client for a
    server that is stopping: calls keep arriving all through its shutdown.
    """
    failures = 0
    for seq in range(calls):
        session_id = f"{name}-{seq}"
        request = pb.TrackRequest(
            source_id=SOURCE,
            session_id=session_id,
            events=[pb.TrackedEvent(type="page-view", id=f"{session_id}-event")],
        )
        try:
            outcomes.acked[session_id] = await stubs.tracker.Track(request, timeout=20)
        except grpc.aio.AioRpcError as error:
            outcomes.failed[session_id] = error.code()
            failures += 1
            if failures >= give_up_after:
                return


# The packagings a subscriber may ask for: one event per message, small and large batches.
BATCH_SIZES = (0, 7, 1000)


@dataclass
class Subscriber:
    """Every event one subscriber received, across its resumptions."""

    # 0: one event per message, as v1 clients ask; above 1: batches of up to this many.
    max_batch_size: int = 0
    events: list[pb.SystemEvent] = field(default_factory=list)
    caught_up: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def last(self) -> int:
        """The position of the last event seen; resume after it."""
        return self.events[-1].position if self.events else 0

    async def follow(self, stubs: Stubs, *, until_caught_up: bool = False) -> grpc.StatusCode:
        """Subscribe after the last event seen; read until the stream ends (or caught_up)."""
        request = (
            pb.SubscribeRequest(after_position=self.last)
            if self.events
            else pb.SubscribeRequest(beginning=Empty())
        )
        request.max_batch_size = self.max_batch_size
        self.caught_up.clear()
        stream = stubs.events.Subscribe(request)
        try:
            while (message := await stream.read()) is not EOF:
                assert isinstance(message, pb.SubscribeResponse)
                if message.HasField("event"):
                    self.events.append(message.event)
                elif message.HasField("batch"):
                    self.events.extend(message.batch.events)
                elif message.HasField("caught_up"):
                    self.caught_up.set()
                    if until_caught_up:
                        return grpc.StatusCode.OK
        except grpc.aio.AioRpcError as error:
            return error.code()
        finally:
            stream.cancel()
        return grpc.StatusCode.OK


async def start_load(
    stubs: Stubs,
    subscribers: list[Subscriber],
    outcomes: Outcomes,
    *,
    writers: int,
    calls: int,
    acked: int,
    give_up_after: int = 1,
) -> tuple[list[asyncio.Task[grpc.StatusCode]], list[asyncio.Task[None]]]:
    """Subscribers live, then writers; returns their tasks once `acked` Tracks succeeded."""
    following = [asyncio.create_task(s.follow(stubs)) for s in subscribers]
    async with asyncio.timeout(20):
        await asyncio.gather(*(s.caught_up.wait() for s in subscribers))
    writing = [
        asyncio.create_task(write(stubs, f"w{i}", calls, outcomes, give_up_after))
        for i in range(writers)
    ]
    async with asyncio.timeout(60):
        while len(outcomes.acked) < acked:
            await asyncio.sleep(0.01)
    return following, writing


async def all_events(stubs: Stubs) -> list[pb.SystemEvent]:
    """Every stored system event, via ListSystemEvents."""
    return await list_all(stubs.events)


async def stored_event_counts(database_url: str) -> Counter[str]:
    """How many rows each tracked event id has, read from the database itself."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                select(TrackedEventRow.event_id, func.count()).group_by(TrackedEventRow.event_id)
            )
            return Counter({event_id: count for event_id, count in rows})
    finally:
        await engine.dispose()


async def stored_visit_ends(database_url: str) -> Counter[str]:
    """How many visit-ended events each session has, read from the database itself."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                select(SystemEventRow.session_id, func.count())
                .where(SystemEventRow.type == int(pb.SystemEventType.SYSTEM_EVENT_TYPE_VISIT_ENDED))
                .group_by(SystemEventRow.session_id)
            )
            return Counter({session_id: count for session_id, count in rows})
    finally:
        await engine.dispose()


def assert_exactly_the_log(subscriber: Subscriber, log: list[pb.SystemEvent]) -> None:
    """The subscriber got every event of the log exactly once, in position order."""
    got = [(e.position, e.id) for e in subscriber.events]
    assert got == [(e.position, e.id) for e in log], (len(got), len(log))


def assert_acked_are_stored(
    outcomes: Outcomes, log: list[pb.SystemEvent], counts: Counter[str]
) -> None:
    """Each acknowledged Track's event is stored once, and its system events as answered."""
    by_position = {e.position: e for e in log}
    assert outcomes.acked
    for session_id, response in outcomes.acked.items():
        assert counts[f"{session_id}-event"] == 1, session_id
        assert len(response.system_events) == 3
        for answered in response.system_events:
            assert by_position[answered.position] == answered, session_id
    # No event is stored twice, acknowledged or not.
    assert max(counts.values()) == 1


async def resume_all(stubs: Stubs, subscribers: list[Subscriber]) -> list[pb.SystemEvent]:
    """Resume each subscriber up to caught_up; returns the whole stored log."""
    async with asyncio.timeout(30):
        for subscriber in subscribers:
            assert await subscriber.follow(stubs, until_caught_up=True) == grpc.StatusCode.OK
    log = await all_events(stubs)
    assert [e.position for e in log] == list(range(1, len(log) + 1))
    return log


async def assert_nothing_lost(
    log: list[pb.SystemEvent], subscribers: list[Subscriber], outcomes: Outcomes, database_url: str
) -> None:
    """Every subscriber got the whole log once, in order; every acknowledged call is stored."""
    for subscriber in subscribers:
        assert_exactly_the_log(subscriber, log)
    assert_acked_are_stored(outcomes, log, await stored_event_counts(database_url))
